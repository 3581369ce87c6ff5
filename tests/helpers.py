"""Helpers shared by the test packages (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import torch
from torch import nn

# Two runs that do the same arithmetic in another order (processes, streaming, machines) agree
# only to float32 rounding, which grows with the value and with every training step that feeds
# it back. A relative bound follows that; an absolute one on a loss of ~15 fails on machines
# whose reductions round differently (5.2e-4 apart = 3.5e-5 relative, seen on one CI machine).
LOSS_RTOL = 5e-4
# Terms that end near zero keep an absolute floor so that rounding of a tiny value is not "relative".
LOSS_ATOL = 1e-5
# Once such runs have trained for some steps, rounding can also cross a kink: ReLU's gradient
# jumps at 0, so a BatchNorm output that rounds to -5.5e-8 in one run and +5.9e-7 in the other
# (seen in tests/core/test_distributed.py: one element of the 12,800 in a brick's last block, at
# step 5) switches that element's gradient off in one and on in the other, a finite change that
# later steps carry on. On the digits demo at batch 200 and lr 0.05 that one element moved the
# next 11 steps' losses by up to 1.6e-3 relative; flipping the smallest activation of other
# layers at steps 1 to 6 moved them by up to 6e-3. Training on the wrong batch moves them by 9e-2
# or more, so this bound still tells a wrong batch from rounding. Compare the first step (no
# update yet, so no kink) with LOSS_RTOL.
TRAINED_RTOL = 2e-2


def largest_loss_mismatch(a: list[dict], b: list[dict], rtol: float = LOSS_RTOL) -> float:
    """How far two runs' per-step loss dicts are apart, in units of the tolerance (<= 1: equal).

    ``a`` and ``b`` must have the same steps and keys; each value is compared as
    ``|x - y| / (LOSS_ATOL + rtol * max(|x|, |y|))``, the test of ``math.isclose``."""
    assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} steps"
    return max(abs(x[k] - y[k]) / (LOSS_ATOL + rtol * max(abs(x[k]), abs(y[k])))
               for x, y in zip(a, b) for k in x)


class TinyCNN(nn.Module):
    """A teacher small enough for any test: 1x8x8 -> 3 classes through two conv stages
    (8x8 with 4 channels, 4x4 with 8 channels), so feature taps find two stages."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 3)

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = torch.relu(self.conv1(x))
        h2 = torch.relu(self.conv2(h1))
        return h1, h2

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))


class TwoHeadCNN(TinyCNN):
    """The same trunk with two heads returned as a tuple: a 3-way and a 2-way one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.pooled(x)
        return self.fc(p), self.fc2(p)
