"""The figures behind the cost panel, made from per-part figures that are each computed once.

An edit must never wait for a count: the panel's totals are sums of figures remembered per
part (the common module, each brick file, the teacher), so attaching a brick costs a lookup.

- Parameters of a part are counted on the GUI thread the first time the part is seen (a sum
  over a few tensors).
- Multiply-adds need a forward pass with hooks on the part's layers: the measuring child
  process (``kfstudio.gui.build.cost_child``) counts them once per part, on its own copy (hooks on the
  shared modules would also count the try-it panel's forward passes on the GUI thread).
- Latency needs the fused network of the attached bricks: the child builds it from the same
  copies and times it. The answer is remembered per set of attached bricks, so undo and redo
  show the figure again at once.
- The teacher's multiply-adds and latency are measured once per teacher in a worker thread
  (``teacher_job``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from kfstudio.assembly.measure import inference_form
from kfstudio.core.measures.cost import Cost, count_macs, count_parameters, measure_latency
from kfstudio.core.students.fused import group_by_architecture

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
        self._tokens: dict[str, object] = {}   # what the measuring child calls each part

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

    # ------------------------------------------------------------------ for the measuring child

    def child_request(self, plan: MeasurePlan) -> tuple[dict, dict]:
        """What ``cost_child.submit`` needs for ``plan``: the request and the parts it names."""
        parts = [plan.common, *plan.count, *(plan.bricks if plan.signature is not None else [])]
        for part in parts:
            self._tokens[_token(part)] = part
        request = {"common": _token(plan.common), "count": [_token(p) for p in plan.count],
                   "bricks": [(_token(b), b.task) for b in plan.bricks] if plan.signature is not None else [],
                   "shape": tuple(plan.common.input_spec.shape), "spec": plan.common.input_spec}
        return request, {_token(p): p for p in parts}

    def learn_from_child(self, plan: MeasurePlan, answers: list[tuple]) -> None:
        for answer in answers:
            if answer[0] == "macs":
                self.learn(("macs", self._tokens[answer[1]], answer[2]))
            else:
                self.learn(("latency", plan.signature, answer[1]))


def _token(part) -> str:
    return str(id(part))


def runs_as(bricks: list) -> str:
    """Which form the latency is of: the fused network (as it runs and exports)."""
    groups = len(group_by_architecture([b.module for b in bricks]))
    how = "as one network" if groups == 1 else f"as {groups} networks, one per architecture"
    return (f"One image on this CPU, both in eager torch with BatchNorm folded: the bricks run {how} "
            "of stacked weights, as exported.")


@torch.no_grad()
def teacher_job(teacher, shape: tuple) -> tuple:
    """The worker thread's job: the teacher's multiply-adds and latency on a hook-free CPU copy
    (once per teacher; its module may be TorchScript or an exported program, which a child
    process could not be sent)."""
    module = copy.deepcopy(teacher.module).to(CPU).eval()
    for m in module.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    fits = tuple(teacher.input_spec.shape) == tuple(shape)
    macs = count_macs(lambda: module(x), module) if fits else None
    timed = inference_form(module)[0] if fits else None  # timed as the fused network runs: like with like
    ms = measure_latency(lambda: timed(x), CPU, **LATENCY_RUNS) if fits else None
    return "teacher", teacher, Cost(teacher.num_parameters, macs, ms)
