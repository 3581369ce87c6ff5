"""The shapes generator against the shipped teacher that was trained on it: a change to how
shapes are drawn (centre, radius, colour, fill) would be silent in every shape-only test, but the
shipped ``builtin:shapes`` teacher would stop recognising the images."""

from __future__ import annotations

import torch

from kfstudio.core.data.sources import load_data, prepare
from kfstudio.core.data.shapes import make_shapes
from kfstudio.core.teachers.loaders import load_teacher


def _agreement(data) -> dict[str, float]:
    teacher = load_teacher("builtin:shapes")
    x = prepare(data, teacher.input_spec).x
    with torch.no_grad():
        outputs = teacher.outputs(x)
    return {head: (logits.argmax(1) == data.labels[head]).float().mean().item() for head, logits in outputs.items()}


def test_the_shipped_teacher_reads_freshly_drawn_shapes():
    scores = _agreement(make_shapes(500, seed=1))
    assert set(scores) >= {"shape", "colour", "size", "x"}
    assert min(scores.values()) >= 0.97, scores      # 0.99 to 1.0 on this seed


def test_the_builtin_test_split_is_what_the_teacher_was_checked_on():
    split = load_data("builtin:shapes")
    assert min(_agreement(split.test).values()) >= 0.97


def test_the_builtin_split_trains_and_tests_on_different_fixed_images():
    split = load_data("builtin:shapes")
    assert torch.equal(split.train.x, make_shapes(6000, seed=0).x)      # what the shipped teacher saw
    assert not torch.equal(split.train.x[:1500], split.test.x)           # no test image leaks into training
    assert split.note == ("builtin:shapes has a fixed set of 6000 training images (seed 0) and 1500 test "
                          "images (seed 1).")
