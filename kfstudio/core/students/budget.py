"""A cost budget: size the students from the teacher so that the assembly of every task costs at
most a share of the teacher's multiply-adds.

The teacher's multiply-adds are counted on one input of its real size (``kfstudio.core.measures.cost``);
the students' on the assembly of all tasks (the common module once, every brick), built as the
run would build them. The common-module and brick widths are scaled together, keeping their
ratio, down a fixed ladder until the assembly fits; the brick input and the latent size are the
run's own (light bricks, ``brick_input`` "stage<k>", are what make a small budget affordable).

Multiply-adds are not time: convolutions whose channel counts are multiples of 16 run on the blocked
kernels of onnxruntime and oneDNN (16 floats a block with AVX-512, 8 with AVX2), others on slower
paths; at the same multiply-adds shapes-hard's assembly ran 1.0-1.2x the teacher's time per
multiply-add in channels of 16 and 1.2-2.9x otherwise (benchmarks.light_bricks --channels). So the
budget takes the widest students that fit and whose channels are all multiples of ``FAST_CHANNELS``,
when such a size does at least ``FAST_AT_LEAST`` of the widest fit's multiply-adds, else the widest fit.

Public API: ``resolve_task_net``, ``wide_middle_fits``, ``parse_budget``, ``Sizing``, ``size_students``,
``conv_channels``, ``teacher_macs``, ``student_macs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch

from kfstudio.core.measures.cost import count_macs
from kfstudio.core.errors import ConfigError
from kfstudio.core.students.networks import CommonModule, Encoded, TaskBrick

# Scales of the configured widths tried, largest first; the last is as small as a width may be.
# What the command line and the studio start from (the library's FactorizeConfig keeps the paper's
# image bricks at fixed widths): the assembly of every brick costs at most the teacher's multiply-adds,
# and bricks read stage 1 of the common module, the cheapest input within reach of the best accuracy
# in benchmarks.light_bricks (docs/benchmarks.md, where its losses are said too).
RECOMMENDED_BUDGET = "1x"
RECOMMENDED_BRICK_INPUT = "stage1"
# Half resolution in the first stage for images of 32 px or more, as such teachers do: with bricks trained
# on shifted images (RECOMMENDED_AUGMENT) shapes-hard kept its accuracy within 0.5 pt of the paper's image
# bricks at under the teacher's latency (benchmarks.light_bricks --defaults; docs/benchmarks.md).
RECOMMENDED_STEM_STRIDE = "auto"
RECOMMENDED_AUGMENT = True
# Task net "auto" (the command line's and the studio's): stage-1 bricks get a wider stage 2 (backbones'
# "tiny-mid") when the budget affords it at the widths it chose for "tiny"; on shapes-hard that won back about
# a quarter of rotation's loss and brought the defaults within 0.5 pt of the paper's bricks, at under the
# teacher's latency (benchmarks.light_bricks --defaults). Where it does not fit (digits' ten bricks at 1x),
# and for other inputs, bricks stay "tiny".
AUTO_TASK_NET = "auto"
WIDE_MIDDLE_TASK_NET, WIDE_MIDDLE_FOR = "tiny-mid", "stage1"
FAST_CHANNELS = 16
FAST_AT_LEAST = 0.5

SCALES = (2.0, 1.75, 1.5, 1.25, 1.0, 0.875, 0.75, 0.625, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125, 0.0625)
MIN_WIDTH = 0.05
_RATIO = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?\s*(x|%)?\s*")


def resolve_task_net(task_net: str, brick_input: str) -> str:
    """``task_net`` itself, or for "auto" with no budget to ask (``factorize.sized_config`` asks one) the
    architecture for bricks that read ``brick_input``."""
    if task_net != AUTO_TASK_NET:
        return task_net
    return WIDE_MIDDLE_TASK_NET if brick_input == WIDE_MIDDLE_FOR else "tiny"


def wide_middle_fits(tiny: Sizing, cost: int, channels: Iterable[int]) -> bool:
    """Whether "tiny-mid" bricks at the widths a budget chose for "tiny" (costing ``cost``, with
    convolution ``channels``) still fit it, with fast channels wherever "tiny" had them."""
    fast = all(c % FAST_CHANNELS == 0 for c in channels)
    return cost <= tiny.budget_macs and (fast or not tiny.fast_channels)


def parse_budget(text: str) -> float:
    """A share of the teacher's cost: "1x", "0.5x", "1/2", "1/4", "50%" or "0.5" -> a positive number."""
    match = _RATIO.fullmatch(str(text))
    if not match or (match.group(2) and match.group(3) == "%"):
        raise ConfigError(f"A budget is a share of the teacher's multiply-adds, such as 1x, 1/2, 1/4 or 50%; "
                          f"'{text}' is not one.")
    num, den, unit = match.groups()
    value = 0.0 if Fraction(den or "1") == 0 else float(Fraction(num) / Fraction(den or "1")) / (100 if unit == "%" else 1)
    if not 0 < value <= 100:
        raise ConfigError(f"A budget of {text} of the teacher is out of range (more than 0, at most 100x).")
    return value


@dataclass(frozen=True)
class Sizing:
    """What a budget chose, recorded in run.json."""

    budget: str
    share: float
    teacher_macs: int
    budget_macs: int
    student_macs: int
    common_width: float
    task_width: float
    fast_channels: bool = False  # every convolution's channels a multiple of FAST_CHANNELS
    task_net: str | None = None  # the bricks' architecture, when the budget chose it (task net "auto")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        fast = f", channels in multiples of {FAST_CHANNELS} (the fast kernels)" if self.fast_channels else ""
        net = {WIDE_MIDDLE_TASK_NET: " (tiny-mid bricks: a wide middle stage)", "tiny": " (tiny bricks)"}.get(
            self.task_net or "", "")
        return (f"Sized for a budget of {self.budget} of the teacher's {self.teacher_macs / 1e6:.2f} M multiply-adds: "
                f"common width {self.common_width:g}, brick width {self.task_width:g}{net}{fast}; the assembly of all "
                f"bricks does {self.student_macs / 1e6:.2f} M ({self.student_macs / self.teacher_macs:.0%} of the teacher).")


@torch.no_grad()
def teacher_macs(module: torch.nn.Module, run: Callable[[torch.Tensor], object], shape: tuple[int, ...]) -> int:
    """Multiply-adds of the teacher on one input of its real size, counted in eval mode (a teacher
    kept in train-mode BatchNorm must not learn statistics from the probe)."""
    modes = {m: m.training for m in module.modules()}
    device = next((t.device for t in module.parameters()), torch.device("cpu"))
    module.eval()
    try:
        return count_macs(lambda: run(torch.zeros(1, *shape, device=device)), module)
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def student_macs(common: CommonModule, bricks: Iterable[TaskBrick], shape: tuple[int, ...]) -> int:
    """Multiply-adds of the assembly of ``bricks`` on ``common`` (the common module once, every brick)
    on one input."""
    x = torch.zeros(1, *shape, device=next(common.parameters()).device)
    common.eval()
    encoded: list[Encoded] = []
    total = count_macs(lambda: encoded.append(common.encode(x)), common)
    return total + sum(count_macs(lambda b=b: encoded[0].run(b.eval()), b) for b in bricks)


def conv_channels(modules: Iterable[torch.nn.Module]) -> list[int]:
    """The output channels of every spatial convolution in ``modules`` (kernel larger than 1x1: where the
    time goes; a light brick's 1x1 entry is cheap at any width)."""
    return [c.out_channels for m in modules for c in m.modules()
            if isinstance(c, torch.nn.Conv2d) and c.kernel_size != (1, 1)]


def size_students(budget: str, teacher_macs: int, common_width: float, task_width: float,
                  cost_at: Callable[[float, float], int],
                  channels_at: Callable[[float, float], Iterable[int]] | None = None) -> Sizing:
    """The largest scale of (``common_width``, ``task_width``) in ``SCALES`` whose assembly costs at most
    ``budget`` of ``teacher_macs``; ``cost_at(common_width, task_width)`` counts a candidate (a handful
    are counted: the search halves the ladder). With ``channels_at`` (a candidate's convolution channel
    counts), a smaller scale whose channels are fast is preferred (``_fast_scale``). A budget no student
    fits is refused in words, with the smallest budget that fits."""
    share = parse_budget(budget)
    allowed = share * teacher_macs
    widths = [(max(MIN_WIDTH, round(common_width * s, 4)), max(MIN_WIDTH, round(task_width * s, 4))) for s in SCALES]
    counted: dict[int, int] = {}

    def cost(i: int) -> int:
        if i not in counted:
            counted[i] = cost_at(*widths[i])
        return counted[i]

    last = len(SCALES) - 1
    if cost(last) > allowed:
        raise ConfigError(
            f"A budget of {budget} of the teacher ({allowed / 1e6:.2f} M multiply-adds) is too small for any student: "
            f"the smallest (widths {widths[last][0]:g} and {widths[last][1]:g}) does {cost(last) / 1e6:.2f} M. The "
            f"smallest budget that fits is {_share_words(cost(last) / teacher_macs)}; or let the bricks read a stage of "
            "the common module (--brick-input stage1 or stage2), which costs less.")
    low, high = 0, last          # cost grows with the scale: find the first (largest) scale that fits
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if cost(mid) <= allowed else (mid + 1, high)
    fast = None if channels_at is None else _fast_scale(low, widths, cost, channels_at)
    chosen = low if fast is None else fast
    return Sizing(budget, share, teacher_macs, int(allowed), cost(chosen), *widths[chosen], fast_channels=fast is not None)


def _fast_scale(widest: int, widths: list[tuple[float, float]], cost: Callable[[int], int],
                channels_at: Callable[[float, float], Iterable[int]]) -> int | None:
    """The first scale from ``widest`` down whose channels are all multiples of FAST_CHANNELS and which
    still does FAST_AT_LEAST of the widest fit's multiply-adds (a far smaller network would lose more
    accuracy than the kernels gain), or None."""
    floor = FAST_AT_LEAST * cost(widest)
    for i in range(widest, len(widths)):
        if cost(i) < floor:
            return None
        if all(c % FAST_CHANNELS == 0 for c in channels_at(*widths[i])):
            return i
    return None


def _share_words(share: float) -> str:
    """A share rounded up so that it fits: 0.312 -> '0.32x'."""
    return f"{(int(share * 100) + 1) / 100:g}x"
