"""A plain distillation baseline: one student of the same size as a common module + its bricks.

The student is a ``tiny`` backbone from the student registry, widened until its parameter
count matches the factorized students, with one linear head per teacher output. It learns
from the teacher's logits only (Hinton distillation, ``T^2 KL``), with the same optimizer,
learning-rate schedule, batches and epochs as the factorization.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from kfstudio.core.runs import batches, learning_rate
from kfstudio.core.imb import distillation
from kfstudio.core.students.backbones import create_backbone, global_pool
from kfstudio.core.students.networks import count_parameters


class KDStudent(nn.Module):
    """With ``z_dim`` the pooled last stage is projected to ``z_dim`` (no bias) and the heads read
    that: a student whose latent is as small as a factorization's (``features`` returns it)."""

    def __init__(self, in_channels: int, width: float, heads: dict[str, int], z_dim: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.backbone = create_backbone("tiny", in_channels, width)
        dim = self.backbone.stage_channels[-1]
        self.project = nn.Linear(dim, z_dim, bias=False) if z_dim else None
        self.names = list(heads)
        self.heads = nn.ModuleList(nn.Linear(z_dim or dim, n) for n in heads.values())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        pooled = global_pool(self.backbone(x)[-1])
        return pooled if self.project is None else self.project(pooled)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {name: head(f) for name, head in zip(self.names, self.heads)}


def matching_student(in_channels: int, heads: dict[str, int], target_params: int,
                     z_dim: int | None = None) -> KDStudent:
    """The ``tiny`` width (steps of 0.05) whose student is closest to ``target_params``."""
    best = None
    for step in range(4, 161):
        width = step * 0.05
        student = KDStudent(in_channels, width, heads, z_dim)
        gap = abs(count_parameters(student) - target_params)
        if best is None or gap < best[0]:
            best = (gap, width)
        elif count_parameters(student) > target_params * 1.5:
            break
    return KDStudent(in_channels, best[1], heads, z_dim)


def train_kd(student: KDStudent, train_x: torch.Tensor, teacher_logits: dict[str, torch.Tensor], *, epochs: int,
             config, device: torch.device) -> float:
    """Distil with the factorization's optimizer, schedule and batches; returns seconds taken."""
    def loss(out, target):
        return distillation(out, target, config.imb.temperature)

    return train_student(student, train_x, teacher_logits, loss, epochs=epochs, config=config, device=device)


def train_student(student: KDStudent, train_x: torch.Tensor, targets: dict[str, torch.Tensor], loss, *,
                  epochs: int, config, device: torch.device) -> float:
    """Train every head on ``loss(logits, target)`` with the factorization's optimizer, schedule and
    batches, so a control differs from KF only in what it learns from; returns seconds taken."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    student.to(device).train()
    x_all = train_x.to(device)
    targets = {k: v.to(device) for k, v in targets.items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9,
                                weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = len(batches(len(x_all), config.batch_size, config.seed, 0))
    total, step = steps_per_epoch * epochs, 0
    for epoch in range(epochs):
        for index in batches(len(x_all), config.batch_size, config.seed, epoch):
            index = index.to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step, total)
            out = student(x_all[index])
            total_loss = sum(loss(out[k], targets[k][index]) for k in student.names)
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
    student.eval()
    return time.perf_counter() - started
