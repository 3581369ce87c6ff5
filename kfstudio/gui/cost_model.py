"""The figures behind the cost panel, made from per-part figures that are each computed once.

An edit must never wait for a count: the panel's totals are sums of figures remembered per
part (the common module, each brick file, the teacher), so attaching a brick costs a lookup.

- Parameters of a part are counted on the GUI thread the first time the part is seen (a sum
  over a few tensors).
- Multiply-adds need a forward pass with hooks on the part's layers: a worker counts them
  once per file, on a private copy (hooks on the shared modules would also count the try-it
  panel's forward passes on the GUI thread).
- Latency needs the fused network of the attached bricks: the worker builds it from the same
  private copies and times it. The answer is remembered per set of attached bricks, so undo
  and redo show the figure again at once.

``measure_job`` is the worker's generator: it yields each answer as it comes, so a newer edit
can stop it between answers (superqt's ``GeneratorWorker.quit``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.core.cost import Cost, count_macs, count_parameters, measure_latency
from kfstudio.core.fused import group_by_architecture

CPU = torch.device("cpu")
LATENCY_RUNS = {"warmup": 2, "repeats": 12, "budget_s": 0.25}
REMEMBERED_LATENCIES = 64   # sets of attached bricks whose latency is kept for undo / redo


@dataclass
class CostFigures:
    """The panel's numbers: the network's cost, the teacher's, and each part's share.
    ``None`` in a figure means it is still being measured."""

    network: Cost
    teacher: Cost | None
    parts: dict[str, Cost] = field(default_factory=dict)   # "common module", then each brick title
    fused: bool = True                                       # the latency is of the fused network


@dataclass
class MeasurePlan:
    """What one worker run is asked for (the modules are the shared ones; the worker copies them)."""

    common: object                       # the CommonFile
    bricks: list                         # the attached BrickFiles, in network order
    count: list                          # the parts whose multiply-adds are unknown (CommonFile / BrickFile)
    signature: tuple | None              # the set of bricks to time (None: the latency is known)
    teacher: object | None = None        # a Teacher whose cost is unknown


def signature(common, bricks) -> tuple:
    """Which network the figures are of: the common module and the attached bricks, in order."""
    return (id(common), *(id(b) for b in bricks))


class CostModel:
    """Per-part figures, remembered; ``figures(...)`` sums them for the attached bricks."""

    def __init__(self) -> None:
        self._parameters: dict[int, tuple[object, int]] = {}   # id(part) -> (part, count); the part keeps its id
        self._macs: dict[int, tuple[object, int]] = {}
        self._latency: OrderedDict[tuple, float] = OrderedDict()
        self._teacher: tuple[object, Cost] | None = None
        self._copies: dict[int, tuple[object, torch.nn.Module]] = {}   # worker-side private copies

    # ------------------------------------------------------------------ on the GUI thread

    def figures(self, common, bricks: list, titles: list[str], teacher) -> CostFigures:
        """The figures known now; what is still unknown is ``None`` (see ``plan``)."""
        parts = {"common module": self._part(common)}
        for brick, title in zip(bricks, titles):
            parts[title] = self._part(brick)
        params = sum(p.parameters for p in parts.values())
        macs = [p.macs for p in parts.values()]
        total_macs = None if None in macs else sum(macs)
        total = Cost(params, total_macs, self._latency.get(signature(common, bricks)))
        return CostFigures(total, self._teacher_cost(teacher), parts, fused=True)

    def plan(self, common, bricks: list, teacher) -> MeasurePlan | None:
        """What a worker must measure for these figures to be complete (None: nothing)."""
        count = [p for p in [common, *bricks] if id(p) not in self._macs]
        sig = signature(common, bricks)
        timed = None if sig in self._latency else sig
        unknown_teacher = teacher if self.teacher_pending(teacher) else None
        if not count and timed is None and unknown_teacher is None:
            return None
        return MeasurePlan(common, list(bricks), count, timed, unknown_teacher)

    def learn(self, answer: tuple) -> None:
        """Take one answer the worker yielded."""
        kind = answer[0]
        if kind == "macs":
            _, part, macs = answer
            self._macs[id(part)] = (part, macs)
        elif kind == "latency":
            _, sig, ms = answer
            self._latency[sig] = ms
            self._latency.move_to_end(sig)
            while len(self._latency) > REMEMBERED_LATENCIES:
                self._latency.popitem(last=False)
        elif kind == "teacher":
            _, teacher, cost = answer
            self._teacher = (teacher, cost)

    def teacher_pending(self, teacher) -> bool:
        """The teacher's multiply-adds and latency are still to be measured."""
        known = self._teacher is not None and self._teacher[0] is teacher
        return teacher is not None and teacher.module is not None and not known

    def _part(self, part) -> Cost:
        known = self._parameters.get(id(part))
        if known is None:
            known = self._parameters[id(part)] = (part, count_parameters(part.module))
        macs = self._macs.get(id(part))
        return Cost(known[1], None if macs is None else macs[1], None)

    def _teacher_cost(self, teacher) -> Cost | None:
        if teacher is None:
            return None
        if self._teacher is not None and self._teacher[0] is teacher:
            return self._teacher[1]
        return Cost(teacher.num_parameters, None, None)

    # ------------------------------------------------------------------ in the worker

    def private(self, part) -> torch.nn.Module:
        """A hook-free CPU eval copy of a part's module, made once per part (worker side only)."""
        known = self._copies.get(id(part))
        if known is None:
            module = copy.deepcopy(part.module).to(CPU).eval()
            for m in module.modules():
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
            known = self._copies[id(part)] = (part, module)
        return known[1]


def runs_as(bricks: list) -> str:
    """Which form the latency is of: the fused network (as it runs and exports)."""
    groups = len(group_by_architecture([b.module for b in bricks]))
    how = "as one network" if groups == 1 else f"as {groups} networks, one per architecture"
    return (f"For one image on this computer's CPU, fused: the bricks run {how} of stacked weights, "
            "as they do when exported.")


@torch.no_grad()
def measure_job(model: CostModel, plan: MeasurePlan):
    """The worker: yields ``("macs", part, n)``, ``("teacher", teacher, Cost)`` and
    ``("latency", signature, ms)`` answers, one at a time."""
    common = model.private(plan.common)
    x = torch.randn(1, *plan.common.input_spec.shape, generator=torch.Generator().manual_seed(0))
    z_c = None
    for part in plan.count:
        module = model.private(part)
        if part is plan.common:
            yield "macs", part, count_macs(lambda: module(x), module)
            continue
        if z_c is None:
            z_c = common(x)[0]
        yield "macs", part, count_macs(lambda: module(x, z_c), module)
    if plan.teacher is not None:
        yield "teacher", plan.teacher, _teacher_cost(model, plan.teacher, x)
    if plan.signature is not None:
        bricks = {b.task.name: model.private(b) for b in plan.bricks}
        network = AssembledNetwork(common, bricks, [b.task for b in plan.bricks], plan.common.input_spec)
        yield "latency", plan.signature, measure_latency(lambda: network(x), CPU, **LATENCY_RUNS)


def _teacher_cost(model: CostModel, teacher, x: torch.Tensor) -> Cost:
    module = model.private(teacher)
    shape_fits = tuple(teacher.input_spec.shape) == tuple(x.shape[1:])
    macs = count_macs(lambda: module(x), module) if shape_fits else None
    ms = measure_latency(lambda: module(x), CPU, **LATENCY_RUNS) if shape_fits else None
    return Cost(teacher.num_parameters, macs, ms)
