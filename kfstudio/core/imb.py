"""The InfoMax-Bottleneck objective, term by term, with the paper's names.

``IMBObjective`` returns a dict: ``loss`` (the weighted total) and the five terms
``loss_cls``, ``loss_task``, ``loss_kd``, ``loss_infomax`` and ``loss_infomin`` (unweighted),
so the plot legend, the CLI table and the logs all read the same keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError
from kfstudio.core.students import BrickOutputs
from kfstudio.core.tasks import TaskGroup

TERMS = ("loss_cls", "loss_task", "loss_kd", "loss_infomax", "loss_infomin")
INFOMAX_VARIANTS = ("authors", "1/B")


@dataclass(frozen=True)
class IMBWeights:
    """Weights of the terms; the defaults are the authors' CIFAR-10 configuration."""

    w_task: float = 1.0
    l_kd: float = 0.1
    temperature: float = 10.0
    l_feat: float = 1.0
    beta: float = 1e-3
    label_smoothing: float = 0.1
    infomax: str = "authors"

    def __post_init__(self) -> None:
        if self.infomax not in INFOMAX_VARIANTS:
            raise ConfigError(f"Unknown InfoMax variant '{self.infomax}'; use one of {', '.join(INFOMAX_VARIANTS)}.")
        if self.temperature <= 0:
            raise ConfigError("The distillation temperature must be positive.")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("Label smoothing must be at least 0 and below 1.")

    def to_dict(self) -> dict:
        return asdict(self)


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed cross-entropy, averaged over samples whose target is not -1."""
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), target[valid], label_smoothing=smoothing)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def infomax_bound(teacher_proj: torch.Tensor, student_feat: torch.Tensor, variant: str = "authors") -> torch.Tensor:
    """Donsker-Varadhan style InfoMax bound between matching rows of two feature batches.

    Both inputs are L2-normalized here; ``s_ij`` is their cosine matrix. The authors compute
    ``E_joint = sum_i s_ii / B^2`` and ``E_marginal = (sum_{i!=j} exp(s_ij) + B) / B^2``
    (the masked diagonal counts exp(0) = 1). The "1/B" variant averages the joint term by B.
    Returns ``-(E_joint - log E_marginal)``.
    """
    t = F.normalize(teacher_proj.float(), dim=1)
    s = F.normalize(student_feat.float(), dim=1)
    batch = t.shape[0]
    sim = t @ s.t()
    diagonal = torch.eye(batch, dtype=torch.bool, device=sim.device)
    joint_scale = batch if variant == "1/B" else batch * batch
    e_joint = sim.diagonal().sum() / joint_scale
    e_marginal = (sim.masked_fill(diagonal, float("-inf")).exp().sum() + batch) / (batch * batch)
    return -(e_joint - torch.log(e_marginal))


def batch_gaussian_kl(z: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, var) || N(0, 1)) with per-dimension batch mean and unbiased variance, mean over dims."""
    z = z.float()
    mu = z.mean(dim=0)
    var = z.var(dim=0, unbiased=True).clamp_min(1e-8)
    return (0.5 * (var + mu.pow(2) - 1.0 - var.log())).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The standard per-sample VAE KL to N(0, I), summed over dimensions, batch mean."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def infomin(brick: BrickOutputs) -> torch.Tensor:
    if brick.mu is not None and brick.logvar is not None:
        return gaussian_kl(brick.mu, brick.logvar)
    return batch_gaussian_kl(brick.z)


def projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """Teacher feature -> common-module stage: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))


def match_stages(num_teacher: int, num_student: int) -> list[int]:
    """Which teacher feature each common-module stage learns from, by relative depth."""
    return [max(0, math.ceil((i + 1) * num_teacher / num_student) - 1) for i in range(num_student)]


class IMBObjective(nn.Module):
    """The five IMB terms over task groups; holds the trainable InfoMax projectors."""

    def __init__(self, groups: Sequence[TaskGroup], teacher_dims: Sequence[int], stage_dims: Sequence[int],
                 weights: IMBWeights = IMBWeights()) -> None:
        super().__init__()
        self.groups = list(groups)
        self.weights = weights
        self.teacher_index = match_stages(len(teacher_dims), len(stage_dims))
        self.projectors = nn.ModuleList(
            projector(teacher_dims[t], d) for t, d in zip(self.teacher_index, stage_dims)
        )

    def forward(self, stages: Sequence[torch.Tensor], bricks: dict[str, BrickOutputs],
                teacher_logits: dict[str, torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.weights
        terms = dict.fromkeys(TERMS)
        cls = task = kd = stages[0].new_zeros(())
        for group in self.groups:
            logits = torch.cat([bricks[t.name].logits for t in group.tasks], dim=1)
            task_logits = torch.cat([bricks[t.name].task_logits for t in group.tasks], dim=1)
            target = targets[group.name]
            cls = cls + smoothed_cross_entropy(logits, target, w.label_smoothing)
            task = task + smoothed_cross_entropy(task_logits, target, w.label_smoothing)
            t_logits = teacher_logits[group.source][:, list(group.classes)]
            kd = kd + distillation(logits, t_logits, w.temperature)
        terms["loss_cls"], terms["loss_task"], terms["loss_kd"] = cls, task, kd
        terms["loss_infomax"] = torch.stack([
            infomax_bound(proj(teacher_feats[t].float()), stage, w.infomax)
            for proj, t, stage in zip(self.projectors, self.teacher_index, stages)
        ]).mean()
        terms["loss_infomin"] = torch.stack([infomin(b) for b in bricks.values()]).sum()
        terms["loss"] = (cls + w.w_task * task + w.l_kd * kd + w.l_feat * terms["loss_infomax"]
                         + w.beta * terms["loss_infomin"])
        return terms


def group_targets(group: TaskGroup, source_labels: torch.Tensor) -> torch.Tensor:
    """Map a source's class labels to positions in the group, -1 where outside the group."""
    lookup = torch.full((max(max(group.classes), int(source_labels.max().item()) if source_labels.numel() else 0) + 1,),
                        -1, dtype=torch.long, device=source_labels.device)
    for position, cls in enumerate(group.classes):
        lookup[cls] = position
    return lookup[source_labels]
