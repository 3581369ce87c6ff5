"""Training on shifted copies (``--augment``): each image moves on its own by at most a pixel, the
draw is seeded, and the engine feeds the shifted images to the teacher as well as to the students."""

from __future__ import annotations

import torch

from kfstudio.core.data.sources import random_shifts
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.runs import drain


def _moves(original: torch.Tensor, shifted: torch.Tensor, reach: int) -> list[tuple[int, int]]:
    """For each image, the (dy, dx) that ``torch.roll`` needs to turn ``original`` into ``shifted``."""
    found = []
    for a, b in zip(original, shifted):
        moves = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                 if torch.equal(torch.roll(a, (dy, dx), (1, 2)), b)]
        assert len(moves) == 1, "each image is its own image, moved"
        found.append(moves[0])
    return found


def test_each_image_moves_on_its_own_by_at_most_a_pixel():
    x = torch.randn(64, 3, 9, 7)
    moves = _moves(x, random_shifts(x, torch.Generator().manual_seed(3)), reach=1)
    assert len(set(moves)) > 3               # not one shift for the whole batch
    assert all(abs(dy) <= 1 and abs(dx) <= 1 for dy, dx in moves)
    assert (0, 0) in moves                   # an unmoved image is one of the nine draws


def test_the_draw_is_seeded_and_a_reach_of_two_moves_further():
    x = torch.randn(32, 1, 8, 8)
    once = random_shifts(x, torch.Generator().manual_seed(5))
    again = random_shifts(x, torch.Generator().manual_seed(5))
    assert torch.equal(once, again) and once.shape == x.shape and once.is_contiguous()
    far = _moves(x, random_shifts(x, torch.Generator().manual_seed(5), reach=2), reach=2)
    assert max(max(abs(dy), abs(dx)) for dy, dx in far) == 2


def test_the_teacher_sees_the_images_the_students_are_trained_on(monkeypatch):
    """With augmentation the teacher's outputs are not cached: it labels each shifted batch itself."""
    from kfstudio.core.teachers.loaders import Teacher

    seen, shifted = [], []
    original = Teacher.outputs_and_features

    def recording(self, x):
        seen.append(x.clone())
        return original(self, x)

    def shifting(x, generator):
        out = random_shifts(x, generator)
        shifted.append(out.clone())
        return out

    monkeypatch.setattr(Teacher, "outputs_and_features", recording)
    monkeypatch.setattr("kfstudio.core.runs.random_shifts", shifting)
    config = FactorizeConfig(epochs=1, batch_size=256, device="cpu", augment=True,
                             tasks="one-vs-rest:0,1", calibration_fraction=0)
    drain(iter_factorize(config))
    assert shifted and all(any(torch.equal(s, t) for t in seen) for s in shifted)
