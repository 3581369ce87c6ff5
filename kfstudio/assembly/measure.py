"""What an assembled network costs against its teacher, and how well it agrees with it.

Public API: ``CostReport``, ``measure_costs(network, device, teacher=None)``,
``Evaluation``, ``evaluate_tasks(tasks, run, data, spec, teacher=None)``,
``teacher_parity(network, teacher, data)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.core.cost import Cost, measure_latency, module_cost
from kfstudio.core.data import Dataset, prepare
from kfstudio.core.metrics import TaskMetrics, evaluate_logits, group_prediction
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task, group_tasks
from kfstudio.core.teachers import Teacher

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
                    class_counts: dict[str, int]) -> dict[str, torch.Tensor]:
    """Stand-in teacher logits (one-hot of the network's own choice) when no teacher is given,
    so ``evaluate_logits`` still scores accuracy; the agreement it reports is then meaningless."""
    ref: dict[str, torch.Tensor] = {}
    for group in group_tasks(tasks):
        pred = group_prediction(group, logits)
        n = max(class_counts.get(group.source, 0), int(pred.max()) + 1 if pred.numel() else 1)
        ref[group.source] = torch.nn.functional.one_hot(pred, n).float()
    return ref


def evaluate_tasks(tasks: Sequence[Task], run: TaskLogitsFn, data: Dataset, spec: InputSpec,
                   teacher: Teacher | None = None) -> Evaluation:
    """Score ``run`` (input batch -> task logits) on ``data``, against labels and the teacher."""
    x = prepare(data, spec).x
    logits = _run_batched(run, x)
    sources = list(dict.fromkeys(t.source for t in tasks))
    if teacher is not None:
        teacher_x = prepare(data, teacher.input_spec).x.to(teacher.device)
        teacher_logits = {k: v.cpu() for k, v in _run_batched(teacher.outputs, teacher_x).items()}
    else:
        teacher_logits = _self_reference(tasks, logits, {s: len(data.class_names.get(s, [])) for s in sources})
    per_task, per_group = evaluate_logits(tasks, logits, teacher_logits, source_labels(data, sources))
    if teacher is None:
        per_task, per_group = _without_agreement(per_task), _without_agreement(per_group)
    return Evaluation(per_task, per_group, teacher is not None)


def _without_agreement(metrics: dict[str, TaskMetrics]) -> dict[str, TaskMetrics]:
    return {k: TaskMetrics(m.accuracy, float("nan"), None, m.samples) for k, m in metrics.items()}


def teacher_parity(network: AssembledNetwork, teacher: Teacher, data: Dataset) -> Evaluation:
    """Per-task accuracy of the assembled network and its agreement with the teacher on ``data``."""
    network.eval()
    return evaluate_tasks(network.tasks, network.task_logits, data, network.input_spec, teacher)
