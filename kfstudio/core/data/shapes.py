"""``builtin:shapes``: coloured shapes on a dark noisy background (16x16 RGB), labelled by five
factors (shape, colour, size, x, y): the demo where every task is a head of the teacher, and ``y``
one it never had. Registered as a data source when ``kfstudio.core.data`` is imported.
"""

from __future__ import annotations

import numpy as np
import torch

from kfstudio.core.data.sources import Dataset, DataSplit, register_data_source

SHAPES_FACTORS: dict[str, list[str]] = {
    "shape": ["square", "circle", "triangle"],
    "colour": ["red", "green", "blue", "yellow"],
    "size": ["small", "large"],
    "x": ["left", "centre", "right"],
    "y": ["top", "middle", "bottom"],
}

# Geometry of builtin:shapes on a 16x16 canvas; make_shapes scales it to other sizes.
_SHAPE_RADII = (2.25, 4.0)  # half-extent of a small / large shape, in pixels
_SHAPE_JITTER = 1.0  # position jitter, in pixels
_SHAPE_COLOURS = np.array(
    [[0.95, 0.15, 0.15], [0.15, 0.85, 0.2], [0.2, 0.35, 1.0], [0.95, 0.9, 0.1]], dtype=np.float32
)
_BACKGROUND, _NOISE_STD = 0.1, 0.05


def make_shapes(n: int, *, seed: int = 0, size: int = 16) -> Dataset:
    """``n`` random coloured shapes on a dark noisy background, labelled by every factor."""
    rng = np.random.default_rng(seed)
    f = {name: rng.integers(0, len(classes), n) for name, classes in SHAPES_FACTORS.items()}
    scale = size / 16.0
    radius = np.array(_SHAPE_RADII, dtype=np.float32)[f["size"]] * scale
    cx = _shape_centre(f["x"], radius, size, rng)
    cy = _shape_centre(f["y"], radius, size, rng)
    grid = np.arange(size, dtype=np.float32)
    dx = np.abs(grid[None, None, :] - cx[:, None, None])
    dy = grid[None, :, None] - cy[:, None, None]
    r = radius[:, None, None]
    square, circle = (dx <= r) & (np.abs(dy) <= r), dx**2 + dy**2 <= r**2
    triangle = (dx <= (dy + r) / 2) & (dy <= r)  # upward, apex at the top, base 2r wide
    masks = np.stack([square, circle, triangle])
    mask = masks[f["shape"], np.arange(n)]
    colour = _SHAPE_COLOURS[f["colour"]] * rng.uniform(0.85, 1.0, (n, 1)).astype(np.float32)
    img = np.where(mask[:, None], colour[:, :, None, None], np.float32(_BACKGROUND))
    img = img + rng.normal(0.0, _NOISE_STD, img.shape).astype(np.float32)
    x = torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32))
    labels = {name: torch.from_numpy(v.astype(np.int64)) for name, v in f.items()}
    return Dataset("builtin:shapes", x, labels, {k: list(v) for k, v in SHAPES_FACTORS.items()})


def _shape_centre(third: np.ndarray, radius: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Centre of each shape in its third of the image, jittered, kept inside the image."""
    centre = (third + 0.5) * size / 3.0 - 0.5
    centre = centre + rng.uniform(-_SHAPE_JITTER, _SHAPE_JITTER, len(third)) * size / 16.0
    return np.clip(centre, radius - 0.5, size - 0.5 - radius).astype(np.float32)


def _load_shapes(ref: str) -> DataSplit:
    note = "builtin:shapes has a fixed set of 6000 training images (seed 0) and 1500 test images (seed 1)."
    return DataSplit(make_shapes(6000, seed=0), make_shapes(1500, seed=1), note)


register_data_source("builtin:shapes", _load_shapes, description="coloured shapes, 16x16 RGB, five factors")
