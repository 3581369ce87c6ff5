"""``builtin:shapes-hard``: rotated shapes with a distractor, where some factors need a network.

Each 32x32 RGB image holds one target shape (triangle, L, T or semicircle) drawn at one of
four rotations (pointing up, right, down or left, each jittered by up to 12 degrees), in one
of four colours, small or large, anywhere in the image; beside it a small disc of another
colour (the distractor), on a grey background of random brightness with Gaussian noise. The
edges are anti-aliased from a signed distance to the shape, so a rotation of a few degrees
changes the pixels. Labels: shape, rotation, colour, size, x and y (the third of the image
the target's centre is in).

Shape and rotation are not linearly readable from the pixels (the target is anywhere, so no
fixed pixel template finds its outline; tests/core/test_shapes_hard.py measures a logistic
probe on raw pixels against the shipped teacher). Colour needs the target told apart from the
distractor. Generation is numpy only, seeded, and takes a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import torch

from kfstudio.core.data.sources import Dataset, DataSplit, register_data_source

SIZE = 32
TRAIN_IMAGES, TEST_IMAGES = 2000, 1000
TRAIN_SEED, TEST_SEED = 0, 1

SHAPES_HARD_FACTORS: dict[str, list[str]] = {
    "shape": ["triangle", "L", "T", "semicircle"],
    "rotation": ["up", "right", "down", "left"],
    "colour": ["red", "green", "blue", "yellow"],
    "size": ["small", "large"],
    "x": ["left", "centre", "right"],
    "y": ["top", "middle", "bottom"],
}

_RADII = (5.0, 7.5)  # half-extent of a small / large target, in pixels
_ROTATION_JITTER = np.deg2rad(12.0)
_THIRD_MARGIN = 0.75  # centres keep this far (pixels) from a third's border: x and y labels stay clear
_DISTRACTOR_RADIUS = 2.4
_COLOURS = np.array([[0.95, 0.15, 0.15], [0.15, 0.85, 0.2], [0.2, 0.35, 1.0], [0.95, 0.9, 0.1]], dtype=np.float32)
_NOISE_STD = 0.06


def make_shapes_hard(n: int, *, seed: int = 0) -> Dataset:
    """``n`` images of builtin:shapes-hard drawn with ``seed`` (same seed, same arrays)."""
    rng = np.random.default_rng(seed)
    f = {name: rng.integers(0, len(classes), n) for name, classes in SHAPES_HARD_FACTORS.items()}
    radius = np.array(_RADII, dtype=np.float32)[f["size"]]
    cx, cy = _centre(f["x"], radius, rng), _centre(f["y"], radius, rng)
    angle = f["rotation"] * (np.pi / 2) + rng.uniform(-_ROTATION_JITTER, _ROTATION_JITTER, n)
    grid = np.arange(SIZE, dtype=np.float32)
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    target = _coverage(_target_distance(f["shape"], dx, dy, angle.astype(np.float32), radius))
    dcx, dcy = _distractor_centre(cx, cy, radius, rng)
    d_dist = np.hypot(grid[None, None, :] - dcx[:, None, None], grid[None, :, None] - dcy[:, None, None])
    distractor = _coverage(d_dist - _DISTRACTOR_RADIUS)
    d_colour = (f["colour"] + rng.integers(1, len(_COLOURS), n)) % len(_COLOURS)  # never the target's colour
    colour = _COLOURS[f["colour"]] * rng.uniform(0.8, 1.0, (n, 1)).astype(np.float32)
    colour_d = _COLOURS[d_colour] * rng.uniform(0.8, 1.0, (n, 1)).astype(np.float32)
    background = rng.uniform(0.05, 0.25, (n, 1, 1, 1)).astype(np.float32)
    img = np.broadcast_to(background, (n, 3, SIZE, SIZE))
    img = img + target[:, None] * (colour[:, :, None, None] - img)
    img = img + distractor[:, None] * (colour_d[:, :, None, None] - img)
    img = img + rng.normal(0.0, _NOISE_STD, img.shape).astype(np.float32)
    x = torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32))
    labels = {name: torch.from_numpy(v.astype(np.int64)) for name, v in f.items()}
    return Dataset("builtin:shapes-hard", x, labels, {k: list(v) for k, v in SHAPES_HARD_FACTORS.items()})


def _centre(third: np.ndarray, radius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A centre anywhere in the given third of the image, the shape's radius inside the image."""
    lo = np.maximum(third * SIZE / 3.0 + _THIRD_MARGIN, radius - 0.5)
    hi = np.minimum((third + 1) * SIZE / 3.0 - _THIRD_MARGIN, SIZE - 0.5 - radius)
    return (lo + rng.uniform(0.0, 1.0, len(third)) * (hi - lo)).astype(np.float32)


def _distractor_centre(cx, cy, radius, rng: np.random.Generator, tries: int = 32):
    """A disc centre inside the image and clear of the target (the first of ``tries`` draws that is)."""
    n, r = len(cx), _DISTRACTOR_RADIUS
    px = rng.uniform(r, SIZE - 1 - r, (n, tries)).astype(np.float32)
    py = rng.uniform(r, SIZE - 1 - r, (n, tries)).astype(np.float32)
    clear = np.hypot(px - cx[:, None], py - cy[:, None]) >= radius[:, None] + r + 1.5
    first = np.where(clear.any(1), clear.argmax(1), np.hypot(px - cx[:, None], py - cy[:, None]).argmax(1))
    rows = np.arange(n)
    return px[rows, first], py[rows, first]


def _coverage(distance: np.ndarray) -> np.ndarray:
    """Pixel coverage from a signed distance in pixels (negative inside): a one-pixel ramp."""
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


def _target_distance(shape, dx, dy, angle, radius) -> np.ndarray:
    """Signed distance (pixels) of every pixel to each image's target, rotated by ``angle``.

    Shapes are drawn in local units of the radius, "up" being the shape's pointing direction;
    a rotation by ``angle`` turns up into right (90 degrees), down, left, clockwise on screen."""
    c, s, r = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], radius[:, None, None]
    u = (c * dx + s * dy) / r  # local right
    v = (s * dx - c * dy) / r  # local up (image rows grow downwards)
    out = np.empty_like(u)
    for k, fn in enumerate((_triangle, _ell, _tee, _semicircle)):
        rows = shape == k
        out[rows] = fn(u[rows], v[rows]) * r[rows]
    return out


def _box(u, v, cu: float, cv: float, hu: float, hv: float):
    return np.maximum(np.abs(u - cu) - hu, np.abs(v - cv) - hv)


def _triangle(u, v):
    # Apex (0, 1), base from (-0.85, -0.7) to (0.85, -0.7): three half-planes.
    n = np.array([1.7, 0.85]) / np.hypot(1.7, 0.85)
    return np.maximum.reduce([-0.7 - v, n[0] * u + n[1] * (v - 1.0), -n[0] * u + n[1] * (v - 1.0)])


def _ell(u, v):
    return np.minimum(_box(u, v, -0.45, 0.0, 0.3, 0.85), _box(u, v, 0.0, -0.6, 0.75, 0.25))


def _tee(u, v):
    return np.minimum(_box(u, v, 0.0, 0.62, 0.85, 0.25), _box(u, v, 0.0, -0.1, 0.25, 0.85))


def _semicircle(u, v):
    return np.maximum(np.hypot(u, v + 0.4) - 0.95, -0.4 - v)


def load_shapes_hard(ref: str):
    note = (f"builtin:shapes-hard has a fixed set of {TRAIN_IMAGES} training images (seed {TRAIN_SEED}) and "
            f"{TEST_IMAGES} test images (seed {TEST_SEED}).")
    return DataSplit(make_shapes_hard(TRAIN_IMAGES, seed=TRAIN_SEED), make_shapes_hard(TEST_IMAGES, seed=TEST_SEED),
                     note)


register_data_source("builtin:shapes-hard", load_shapes_hard,
                     description="rotated shapes with a distractor, 32x32 RGB, six factors")
