"""Accuracy and agreement with the teacher, per task and per task group.

A one-vs-rest group whose run left classes out (``TaskGroup.rest``), or an assembled subset
of calibrated bricks (``kfstudio.assembly.build``), also answers "none of these" (``REST``):
its logits, less each brick's calibrated threshold (``thresholds``; 0 when it has none), get
a column fixed at 0, and it is scored on every input, the ones outside its classes included.
Other groups are classifiers over their own classes and are scored on the inputs of those
classes only. Each one-vs-rest brick is also scored alone as a detector of its class (ROC
AUC, and balanced accuracy at its threshold: ``kfstudio.core.measures.detection``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch

from kfstudio.core.measures.detection import (
    balanced_accuracy,
    roc_auc,
    with_none_column,
)
from kfstudio.core.tasks import ONE_VS_REST, Task, TaskGroup, group_tasks

REST = -1  # the "none of these" outcome of a group trained against the rest


@dataclass(frozen=True)
class TaskMetrics:
    """Test-split figures of one task: accuracy against labels (None when the data has no
    labels), agreement with the teacher's prediction, and the teacher's own accuracy.

    ``balanced_accuracy`` (one-vs-rest tasks) is the mean of the hit rates on the class and
    on everything else, so answering "not k" every time scores 50 %, not 90 %.
    ``rest_accuracy`` (groups trained against the rest) is how often an input outside the
    group's classes gets "none of these". ``auc`` and ``detection_accuracy`` (one-vs-rest
    tasks) score the brick's own logit as a detector of its class: ROC AUC, and balanced
    accuracy at its calibrated threshold (0 for an uncalibrated brick). NaN marks a figure
    that cannot be measured.
    """

    accuracy: float | None
    agreement: float
    teacher_accuracy: float | None
    samples: int
    balanced_accuracy: float | None = None
    rest_accuracy: float | None = None
    auc: float | None = None
    detection_accuracy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _rate(hits: torch.Tensor) -> float:
    return float(hits.float().mean()) if hits.numel() else float("nan")


def group_outcomes(group: TaskGroup, device: torch.device | None = None) -> torch.Tensor:
    """The source class of each position of the group's logits (``REST`` for "none of these")."""
    return torch.tensor(group.classes + ((REST,) if group.rest else ()), device=device)


def group_thresholds(group: TaskGroup, thresholds: dict[str, float] | None) -> list[float]:
    """Each brick's calibrated threshold, in group order (0 for a brick without one)."""
    return [float((thresholds or {}).get(t.name, 0.0)) for t in group.tasks]


def group_logits(group: TaskGroup, logits: dict[str, torch.Tensor],
                 thresholds: dict[str, float] | None = None) -> torch.Tensor:
    """The group's concatenated logits; a group that answers "none of these" gets its margins
    above the thresholds and a "none of these" column at 0."""
    stacked = torch.cat([logits[t.name] for t in group.tasks], dim=1)
    if group.rest:
        stacked = with_none_column(stacked, torch.tensor(group_thresholds(group, thresholds), device=stacked.device))
    return stacked


def teacher_group_logits(group: TaskGroup, teacher_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's logits over the group's outcomes, in the group's layout.

    For a group with a "none of these" outcome, the teacher's classes outside the group are
    pooled (log-sum-exp) into that outcome and every column is shifted so it sits at 0: the
    teacher's probability of "none of these" is the sum of the probabilities left out.
    """
    t = teacher_logits[group.source].float()
    inside = t[:, list(group.classes)]
    if not group.rest:
        return inside
    outside = [c for c in range(t.shape[1]) if c not in set(group.classes)]
    rest = t[:, outside].logsumexp(dim=1, keepdim=True)
    return torch.cat([inside - rest, torch.zeros_like(rest)], dim=1)


def group_prediction(group: TaskGroup, logits: dict[str, torch.Tensor],
                     thresholds: dict[str, float] | None = None) -> torch.Tensor:
    """The class (a source class index, or ``REST``) the group's logits choose."""
    stacked = group_logits(group, logits, thresholds)
    return group_outcomes(group, stacked.device)[stacked.argmax(dim=1)]


def teacher_prediction(group: TaskGroup, teacher_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's choice among the group's outcomes."""
    stacked = teacher_group_logits(group, teacher_logits)
    return group_outcomes(group, stacked.device)[stacked.argmax(dim=1)]


def to_outcomes(group: TaskGroup, source_labels: torch.Tensor) -> torch.Tensor:
    """Source labels as the group's outcomes: classes outside the group become ``REST``."""
    inside = torch.isin(source_labels, torch.tensor(group.classes, device=source_labels.device))
    return torch.where(inside, source_labels, torch.full_like(source_labels, REST))


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


def _binary(is_k: torch.Tensor, teacher_is_k: torch.Tensor, label_is_k: torch.Tensor | None,
            mask: torch.Tensor | None) -> TaskMetrics:
    """A one-vs-rest task's decision "this is class k", with its balanced accuracy."""
    m = _metrics(is_k, teacher_is_k, label_is_k, mask)
    if label_is_k is None:
        return m
    if mask is not None:
        is_k, label_is_k = is_k[mask], label_is_k[mask]
    rates = [_rate(is_k[label_is_k]), _rate(~is_k[~label_is_k])]
    measured = [r for r in rates if r == r]
    balanced = sum(measured) / len(measured) if measured else float("nan")
    return TaskMetrics(m.accuracy, m.agreement, m.teacher_accuracy, m.samples, balanced_accuracy=balanced)


def _unmeasurable(samples: int) -> TaskMetrics:
    nan = float("nan")
    return TaskMetrics(nan, nan, nan, samples, nan)


def _detector_figures(m: TaskMetrics, score: torch.Tensor, is_k: torch.Tensor, threshold: float) -> TaskMetrics:
    """``m`` with the brick's own logit scored as a detector of its class (on every input)."""
    return replace(m, auc=roc_auc(score, is_k), detection_accuracy=balanced_accuracy(score, is_k, threshold))


def _one_vs_rest(group: TaskGroup, pred, t_pred, y, reference, per_task, per_group, logits, thresholds) -> None:
    if group.rest:
        y_out = None if y is None else to_outcomes(group, y)
        m = _metrics(pred, t_pred, y_out)
        outside = to_outcomes(group, reference) == REST
        per_group[group.name] = TaskMetrics(m.accuracy, m.agreement, m.teacher_accuracy, m.samples,
                                            rest_accuracy=_rate(pred[outside] == REST))
        mask = None
    else:
        mask = torch.isin(reference, torch.tensor(group.classes, device=reference.device))
        if len(group.classes) == 1:
            # One brick with no "none of these" outcome always answers its class: nothing to measure.
            task, k = group.tasks[0], group.tasks[0].classes[0]
            per_group[group.name] = _unmeasurable(int(mask.sum()))
            per_task[task.name] = _detector_figures(per_group[group.name], logits[task.name][:, 0], reference == k,
                                                    group_thresholds(group, thresholds)[0])
            return
        per_group[group.name] = _metrics(pred, t_pred, y, mask)
    for task, threshold in zip(group.tasks, group_thresholds(group, thresholds)):
        k = task.classes[0]
        m = _binary(pred == k, t_pred == k, None if y is None else y == k, mask)
        per_task[task.name] = _detector_figures(m, logits[task.name][:, 0], reference == k, threshold)


def evaluate_logits(tasks: Sequence[Task], logits: dict[str, torch.Tensor], teacher_logits: dict[str, torch.Tensor],
                    labels: dict[str, torch.Tensor | None], thresholds: dict[str, float] | None = None,
                    ) -> tuple[dict[str, TaskMetrics], dict[str, TaskMetrics]]:
    """Per-task and per-group metrics.

    A one-vs-rest task is scored as the binary decision "the group chose this class"; its
    group (the one-vs-rest tasks of a source) is scored as a classifier over its outcomes.
    A group trained against the rest is scored on every input ("none of these" is right for
    a 4 in a 0/1/7 run); other groups count only the inputs whose label (or teacher choice)
    is one of their classes: a 0/1/7 assembly of a ten-class run is not asked about a 4.
    ``thresholds``: the calibrated bricks' thresholds, by task name (``group_logits``).
    """
    per_task: dict[str, TaskMetrics] = {}
    per_group: dict[str, TaskMetrics] = {}
    for group in group_tasks(tasks):
        pred = group_prediction(group, logits, thresholds)
        t_pred = teacher_prediction(group, teacher_logits)
        y = labels.get(group.source)
        reference = y if y is not None else teacher_logits[group.source].argmax(dim=1)
        if group.tasks[0].kind == ONE_VS_REST:
            _one_vs_rest(group, pred, t_pred, y, reference, per_task, per_group, logits, thresholds)
        else:
            inside = torch.isin(reference, torch.tensor(group.classes, device=reference.device))
            per_task[group.tasks[0].name] = _metrics(pred, t_pred, y, inside if not bool(inside.all()) else None)
    return per_task, per_group
