"""The InfoMax-Bottleneck objective, term by term, with the paper's names.

``IMBObjective`` returns a dict: ``loss`` (the weighted total) and the five terms
``loss_cls``, ``loss_task``, ``loss_kd``, ``loss_infomax`` and ``loss_infomin`` (unweighted),
so the plot legend, the CLI table and the logs all read the same keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError
from kfstudio.core.measures.metrics import group_logits, teacher_group_logits
from kfstudio.core.students.networks import BrickOutputs
from kfstudio.core.tasks import TaskGroup

TERMS = ("loss_cls", "loss_task", "loss_kd", "loss_infomax", "loss_infomin")
INFOMAX_VARIANTS = ("1/B", "authors")
# How the variants are offered to people; the default (1/B) is the one the few-label benchmark
# favours and the one that does not collapse (see COLLAPSE_SEPARATION).
INFOMAX_LABELS = {"1/B": "1/B joint term (default)", "authors": "as in the authors' code (joint term over B², collapses)"}


@dataclass(frozen=True)
class IMBWeights:
    """Weights of the terms: the authors' CIFAR-10 configuration, except that the InfoMax
    joint term is averaged by B (their code divides it by B², and the term collapses)."""

    w_task: float = 1.0
    l_kd: float = 0.1
    temperature: float = 10.0
    l_feat: float = 1.0
    beta: float = 1e-3
    label_smoothing: float = 0.1
    infomax: str = "1/B"

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


@dataclass(frozen=True)
class StageHealth:
    """Mean cosines of one stage's InfoMax pair over a batch: ``diagonal`` (a sample's
    projected teacher feature with its own common-module feature), ``off_diagonal`` (with
    other samples' features) and ``self_similarity`` (common-module features of different
    samples with each other). A healthy term matches samples: diagonal well above off-diagonal."""

    diagonal: float
    off_diagonal: float
    self_similarity: float

    @property
    def separation(self) -> float:
        return self.diagonal - self.off_diagonal


# Measured on the digits (one-vs-rest, heads, a 3/7 subset) and shapes demos, 2 seeds, every
# report after the first epoch (docs/benchmarks.md, "Does the IMB objective earn its place?"):
# the median stage's diagonal-minus-off-diagonal cosine stays within -0.006..+0.004 with the
# authors' variant and 0.050..0.72 with 1/B; single shallow stages of healthy 1/B runs dip to
# 0.027, hence "half of the stages". At initialization every stage is near 0 and a healthy run
# separates within about 8 steps: judge the figures at the end of an epoch, after warm-up.
COLLAPSE_SEPARATION = 0.02
HEALTH_WARMUP_STEPS = 10


def infomax_collapsed(stages: Sequence[StageHealth]) -> bool:
    """True when the InfoMax term no longer tells a sample's own pair from the others on at
    least half of the stages: the bound is then met by a degenerate solution."""
    flat = [h for h in stages if h.separation < COLLAPSE_SEPARATION]
    return bool(stages) and 2 * len(flat) >= len(stages)


def health_summary(stages: Sequence[StageHealth]) -> str:
    """One line: the diagonal / off-diagonal cosines of each stage."""
    return ", ".join(f"stage {i + 1} {h.diagonal:+.2f}/{h.off_diagonal:+.2f}" for i, h in enumerate(stages))


def collapse_warning(stages: Sequence[StageHealth], weights: IMBWeights, step: int) -> str | None:
    """A one-line warning in plain words when the InfoMax term has collapsed, else None
    (always None during the first ``HEALTH_WARMUP_STEPS`` steps, and when the term is off)."""
    if not weights.l_feat or step < HEALTH_WARMUP_STEPS or not infomax_collapsed(stages):
        return None
    advice = " Try --infomax 1/B." if weights.infomax != "1/B" else " Try a lower learning rate or --l-feat."
    return ("Warning: the InfoMax term has collapsed: the common module's features no longer match their own "
            f"teacher features better than other images' ({health_summary(stages)}, own/other cosine), "
            f"so it teaches the common module nothing.{advice}")


def infomax_health(teacher_proj: torch.Tensor, student_feat: torch.Tensor) -> torch.Tensor:
    """``[diagonal, off_diagonal, self_similarity]`` mean cosines (see ``StageHealth``), detached."""
    t = F.normalize(teacher_proj.detach().float(), dim=1)
    s = F.normalize(student_feat.detach().float(), dim=1)
    batch = t.shape[0]
    pairs = max(1, batch * (batch - 1))
    sim, self_sim = t @ s.t(), s @ s.t()
    diagonal = sim.diagonal().sum()
    return torch.stack([diagonal / batch, (sim.sum() - diagonal) / pairs,
                        (self_sim.sum() - self_sim.diagonal().sum()) / pairs])


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
        self.health: torch.Tensor | None = None

    def forward(self, stages: Sequence[torch.Tensor], bricks: dict[str, BrickOutputs],
                teacher_logits: dict[str, torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                targets: dict[str, torch.Tensor],
                gather: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
                ) -> dict[str, torch.Tensor]:
        """With ``gather`` (``--infomax-stats global`` in a run of many processes: it joins a list
        of per-sample tensors over the processes, with gradients) every term is
        taken over the whole batch of every process: the InfoMax marginal compares each sample
        with all the others, and InfoMin's batch mean and variance cover the whole batch."""
        if gather is not None:
            stages, bricks, teacher_logits, teacher_feats, targets = _gathered(
                gather, stages, bricks, teacher_logits, teacher_feats, targets)
        w = self.weights
        terms = dict.fromkeys(TERMS)
        cls = task = kd = stages[0].new_zeros(())
        for group in self.groups:
            # A group trained against the rest gets a "none of these" logit at 0 (metrics.py).
            logits = group_logits(group, {t.name: bricks[t.name].logits for t in group.tasks})
            task_logits = group_logits(group, {t.name: bricks[t.name].task_logits for t in group.tasks})
            target = targets[group.name]
            cls = cls + smoothed_cross_entropy(logits, target, w.label_smoothing)
            task = task + smoothed_cross_entropy(task_logits, target, w.label_smoothing)
            kd = kd + distillation(logits, teacher_group_logits(group, teacher_logits), w.temperature)
        terms["loss_cls"], terms["loss_task"], terms["loss_kd"] = cls, task, kd
        projected = [proj(teacher_feats[t].float()) for proj, t in zip(self.projectors, self.teacher_index)]
        terms["loss_infomax"] = torch.stack([
            infomax_bound(p, stage, w.infomax) for p, stage in zip(projected, stages)]).mean()
        # Read by the training loop: rows of [diagonal, off_diagonal, self_similarity] per stage.
        self.health = torch.stack([infomax_health(p, stage) for p, stage in zip(projected, stages)])
        terms["loss_infomin"] = torch.stack([infomin(b) for b in bricks.values()]).sum()
        terms["loss"] = (cls + w.w_task * task + w.l_kd * kd + w.l_feat * terms["loss_infomax"]
                         + w.beta * terms["loss_infomin"])
        return terms


def _gathered(gather, stages, bricks, teacher_logits, teacher_feats, targets):
    """Every per-sample input of the objective, joined over the processes of a run (one call)."""
    fields = ("logits", "task_logits", "z", "mu", "logvar")
    flat = [*stages, *(getattr(b, f) for b in bricks.values() for f in fields if getattr(b, f) is not None),
            *teacher_logits.values(), *teacher_feats, *targets.values()]
    joined = iter(gather(flat))
    stages = [next(joined) for _ in stages]
    bricks = {k: BrickOutputs(**{f: next(joined) if getattr(b, f) is not None else None for f in fields})
              for k, b in bricks.items()}
    teacher_logits = {k: next(joined) for k in teacher_logits}
    teacher_feats = [next(joined) for _ in teacher_feats]
    return stages, bricks, teacher_logits, teacher_feats, {k: next(joined) for k in targets}


def group_targets(group: TaskGroup, source_labels: torch.Tensor) -> torch.Tensor:
    """Map a source's class labels to positions in the group's logits. Outside the group's
    classes: its "none of these" position when it has one, else -1 (left out of the loss)."""
    outside = len(group.classes) if group.rest else -1
    lookup = torch.full((max(max(group.classes), int(source_labels.max().item()) if source_labels.numel() else 0) + 1,),
                        outside, dtype=torch.long, device=source_labels.device)
    for position, cls in enumerate(group.classes):
        lookup[cls] = position
    return lookup[source_labels]
