"""Accuracy and agreement with the teacher, per task and per task group."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from kfstudio.core.tasks import ONE_VS_REST, Task, TaskGroup, group_tasks


@dataclass(frozen=True)
class TaskMetrics:
    """Test-split figures of one task: accuracy against labels (None when the data has no
    labels), agreement with the teacher's prediction, and the teacher's own accuracy."""

    accuracy: float | None
    agreement: float
    teacher_accuracy: float | None
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _rate(hits: torch.Tensor) -> float:
    return float(hits.float().mean()) if hits.numel() else float("nan")


def group_prediction(group: TaskGroup, logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The class (a source class index) the group's concatenated logits choose."""
    stacked = torch.cat([logits[t.name] for t in group.tasks], dim=1)
    classes = torch.tensor(group.classes, device=stacked.device)
    return classes[stacked.argmax(dim=1)]


def teacher_prediction(group: TaskGroup, teacher_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's choice among the group's classes."""
    classes = torch.tensor(group.classes, device=teacher_logits[group.source].device)
    return classes[teacher_logits[group.source][:, classes].argmax(dim=1)]


def _metrics(pred: torch.Tensor, teacher_pred: torch.Tensor, labels: torch.Tensor | None,
             mask: torch.Tensor | None = None) -> TaskMetrics:
    if mask is not None:
        pred, teacher_pred = pred[mask], teacher_pred[mask]
        labels = labels[mask] if labels is not None else None
    return TaskMetrics(
        accuracy=None if labels is None else _rate(pred == labels),
        agreement=_rate(pred == teacher_pred),
        teacher_accuracy=None if labels is None else _rate(teacher_pred == labels),
        samples=int(pred.numel()),
    )


def evaluate_logits(tasks: Sequence[Task], logits: dict[str, torch.Tensor], teacher_logits: dict[str, torch.Tensor],
                    labels: dict[str, torch.Tensor | None]) -> tuple[dict[str, TaskMetrics], dict[str, TaskMetrics]]:
    """Per-task and per-group metrics.

    A one-vs-rest task is scored as the binary decision "the group chose this class"; its
    group (the one-vs-rest tasks of a source) is scored as a classifier over its classes.
    Group and task figures count only the samples whose label (or teacher choice) is one of
    the group's classes: a 0/1/7 network is not asked about a 4.
    """
    per_task: dict[str, TaskMetrics] = {}
    per_group: dict[str, TaskMetrics] = {}
    for group in group_tasks(tasks):
        pred = group_prediction(group, logits)
        t_pred = teacher_prediction(group, teacher_logits)
        y = labels.get(group.source)
        reference = y if y is not None else teacher_logits[group.source].argmax(dim=1)
        inside = torch.isin(reference, torch.tensor(group.classes, device=reference.device))
        if group.tasks[0].kind == ONE_VS_REST:
            per_group[group.name] = _metrics(pred, t_pred, y, inside)
            for task in group.tasks:
                k = task.classes[0]
                per_task[task.name] = _metrics(pred == k, t_pred == k, None if y is None else y == k, inside)
        else:
            per_task[group.tasks[0].name] = _metrics(pred, t_pred, y, inside if not bool(inside.all()) else None)
    return per_task, per_group
