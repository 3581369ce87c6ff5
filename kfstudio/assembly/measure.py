"""What an assembled network costs against its teacher, and how well it agrees with it.

Public API: ``CostReport``, ``measure_costs(network, device, teacher=None)``,
``Evaluation``, ``evaluate_tasks(tasks, run, data, spec, teacher=None, thresholds=None)``,
``teacher_parity(network, teacher, data)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.core.measures.cost import Cost, measure_latency, module_cost
from kfstudio.core.data.sources import Dataset, prepare
from kfstudio.core.errors import DataError
from kfstudio.core.measures.metrics import TaskMetrics, evaluate_logits, group_prediction
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task, group_tasks
from kfstudio.core.teachers.loaders import Teacher

TaskLogitsFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class CostReport:
    """Costs of the whole network, its common module, each brick (by task) and the teacher.

    ``network`` is the network as it runs: fused (bricks of one architecture as one network)
    when ``fused``; ``unfused_latency_ms`` is the same network run brick by brick, for comparison.
    Multiply-adds are the same either way (the same arithmetic, reordered).
    """

    device: str
    network: Cost
    common: Cost
    bricks: dict[str, Cost]
    teacher: Cost | None
    fused: bool = True
    unfused_latency_ms: float | None = None
    fused_groups: int = 1

    def to_dict(self) -> dict:
        return {"device": self.device, "network": self.network.to_dict(), "common": self.common.to_dict(),
                "bricks": {k: v.to_dict() for k, v in self.bricks.items()},
                "teacher": None if self.teacher is None else self.teacher.to_dict(),
                "fused": self.fused, "unfused_latency_ms": self.unfused_latency_ms, "fused_groups": self.fused_groups}


@torch.no_grad()
def measure_costs(network: AssembledNetwork, device: torch.device, teacher: Teacher | None = None,
                  *, latency: bool = True) -> CostReport:
    """Parameters, MACs and latency for one input, on ``device``; the network is copied there.
    Latency is measured fused (as the network runs) and brick by brick."""
    net = copy.deepcopy(network).to(device).eval()
    x = net.example_input(1).to(device)
    z_c, _ = net.common(x)
    bricks = {name: module_cost(net.bricks[key], lambda b=net.bricks[key]: b(x, z_c), device, latency=latency)
              for name, key in net._keys}
    teacher_cost = None
    if teacher is not None:
        teacher.to(device)
        tx = torch.zeros(1, *teacher.input_spec.shape, device=device)
        teacher_cost = module_cost(teacher.module, lambda: teacher.outputs(tx), device, latency=latency)
    unfused = module_cost(net, lambda: net.forward_unfused(x), device, latency=latency)
    as_run = Cost(unfused.parameters, unfused.macs,
                  measure_latency(lambda: net(x), device) if latency and net.fused else unfused.latency_ms)
    return CostReport(str(device), as_run, module_cost(net.common, lambda: net.common(x), device, latency=latency),
                      bricks, teacher_cost, net.fused, unfused.latency_ms, len(net.fused_runner.groups))


@dataclass(frozen=True)
class Evaluation:
    """Per-task and per-one-vs-rest-group metrics; agreement is NaN without a teacher."""

    tasks: dict[str, TaskMetrics]
    groups: dict[str, TaskMetrics]
    with_teacher: bool

    def to_dict(self) -> dict:
        return {"tasks": {k: v.to_dict() for k, v in self.tasks.items()},
                "groups": {k: v.to_dict() for k, v in self.groups.items()}, "with_teacher": self.with_teacher}


def source_labels(data: Dataset, sources: Sequence[str]) -> dict[str, torch.Tensor | None]:
    """True labels per source where the data has them; a lone label serves a lone source."""
    only = next(iter(data.labels)) if len(data.labels) == 1 and len(sources) == 1 else None
    return {s: data.labels.get(s, data.labels.get(only) if only else None) for s in sources}


@torch.no_grad()
def _run_batched(run: TaskLogitsFn, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for chunk in x.split(batch):
        for name, out in run(chunk).items():
            parts.setdefault(name, []).append(out.float())
    return {k: torch.cat(v) for k, v in parts.items()}


def _self_reference(tasks: Sequence[Task], logits: dict[str, torch.Tensor],
                    class_counts: dict[str, int], thresholds: dict[str, float] | None) -> dict[str, torch.Tensor]:
    """Stand-in teacher logits (one-hot of the network's own choice) when no teacher is given,
    so ``evaluate_logits`` still scores accuracy; the agreement it reports is then meaningless."""
    ref: dict[str, torch.Tensor] = {}
    for group in group_tasks(tasks):
        pred = group_prediction(group, logits, thresholds)
        n = max(class_counts.get(group.source, 0), int(pred.max()) + 1 if pred.numel() else 1)
        # "none of these" (-1) has no column; only the discarded agreement sees the stand-in
        ref[group.source] = torch.nn.functional.one_hot(pred.clamp_min(0), n).float()
    return ref


def evaluate_tasks(tasks: Sequence[Task], run: TaskLogitsFn, data: Dataset, spec: InputSpec,
                   teacher: Teacher | None = None, thresholds: dict[str, float] | None = None) -> Evaluation:
    """Score ``run`` (input batch -> task logits) on ``data``, against labels and the teacher.
    ``thresholds``: the calibrated bricks' thresholds (``AssembledNetwork.thresholds``)."""
    sources = list(dict.fromkeys(t.source for t in tasks))
    _check_fits(tasks, data, teacher)
    x = prepare(data, spec).x
    logits = _run_batched(run, x)
    if teacher is not None:
        teacher_x = prepare(data, teacher.input_spec).x.to(teacher.device)
        teacher_logits = {k: v.cpu() for k, v in _run_batched(teacher.outputs, teacher_x).items()}
    else:
        counts = {s: len(data.class_names.get(s, [])) for s in sources}
        teacher_logits = _self_reference(tasks, logits, counts, thresholds)
    per_task, per_group = evaluate_logits(tasks, logits, teacher_logits, source_labels(data, sources), thresholds)
    if teacher is None:
        per_task, per_group = _without_agreement(per_task), _without_agreement(per_group)
    return Evaluation(per_task, per_group, teacher is not None)


def _check_fits(tasks: Sequence[Task], data: Dataset, teacher: Teacher | None) -> None:
    """Refuse, in words, data or a teacher whose classes are not the ones the tasks were made for."""
    for task in tasks:
        need = max(task.classes) + 1
        if teacher is not None:
            have = len(teacher.class_names.get(task.source, []))
            if have < need:
                outputs = ", ".join(teacher.class_names) or "none"
                raise DataError(f"The teacher '{teacher.name}' does not have the classes of '{task.title}' "
                                f"(its outputs: {outputs}); give the teacher these bricks came from.")
        labelled = data.class_names.get(task.source)
        if labelled is not None and len(labelled) < need:
            raise DataError(f"The data '{data.name}' has {len(labelled)} classes of '{task.source}', fewer than "
                            f"'{task.title}' needs; give data of the classes the bricks were made for.")
        if labelled is None and teacher is None:
            known = ", ".join(data.class_names) or "no labels at all"
            raise DataError(f"The data '{data.name}' has no '{task.source}' labels (it has {known}), so "
                            f"'{task.title}' cannot be scored; give labelled data of those classes or --teacher.")


def _without_agreement(metrics: dict[str, TaskMetrics]) -> dict[str, TaskMetrics]:
    return {k: replace(m, agreement=float("nan"), teacher_accuracy=None) for k, m in metrics.items()}


def teacher_parity(network: AssembledNetwork, teacher: Teacher, data: Dataset) -> Evaluation:
    """Per-task accuracy of the assembled network and its agreement with the teacher on ``data``."""
    network.eval()
    return evaluate_tasks(network.tasks, network.task_logits, data, network.input_spec, teacher, network.thresholds)
