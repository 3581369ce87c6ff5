"""The teacher's outputs over a whole set of images, and whether to keep them (the cache).

A run keeps the teacher's logits and features for every training image when they fit the
budget (``--teacher-cache-mb``) and do not change from batch to batch; otherwise the teacher
runs on every batch. Both work on images in memory and on images streamed from disk.
"""

from __future__ import annotations

from typing import Generator

import torch

from kfstudio.core.data import feeds, streaming
from kfstudio.core.teachers.loaders import Teacher


def teacher_pass(teacher: Teacher, images, device: torch.device, batch: int = streaming.CHUNK,
                 keep_features: bool = True, workers: int | None = 0):
    """The teacher's logits (and features, unless ``keep_features`` is off) for all of ``images``
    (a tensor, a ``Dataset`` or ``FileImages``)."""
    passing = iter_teacher_pass(teacher, images, device, batch, keep_features, workers)
    while True:
        try:
            next(passing)
        except StopIteration as done:
            return done.value


@torch.no_grad()
def iter_teacher_pass(teacher: Teacher, images, device: torch.device, batch: int = streaming.CHUNK,
                      keep_features: bool = True, workers: int | None = 0) -> Generator[tuple[int, int], None, tuple]:
    """``teacher_pass`` that yields (images done, images in all) after every chunk, for progress."""
    # Written into tensors of the full size as the chunks come: no list of chunks joined at the end,
    # which would need twice the cache's memory at its peak.
    outs: dict[str, torch.Tensor] = {}
    feats: list[torch.Tensor] = []
    parts = images.split(batch) if isinstance(images, torch.Tensor) else feeds.chunks(images, batch, workers)
    start, n = 0, len(images)
    for chunk in parts:
        o, f = teacher.outputs_and_features(chunk.to(device))
        if not start:
            outs = {k: v.new_empty((n, *v.shape[1:]), dtype=torch.float32) for k, v in o.items()}
            feats = [t.new_empty((n, *t.shape[1:]), dtype=torch.float32) for t in f] if keep_features else []
        for k, v in o.items():
            outs[k][start:start + len(chunk)] = v.float()
        for full, t in zip(feats, f):
            full[start:start + len(chunk)] = t.float()
        start += len(chunk)
        yield start, n
    return outs, feats


@torch.no_grad()
def cache_fits(config, teacher: Teacher, images, device: torch.device, messages: list[str]) -> bool:
    """Whether the teacher's outputs and features for every training image fit the cache budget
    (measured on two images); say which way it went and why: without a cache the teacher runs on
    every batch."""
    if config.teacher_bn != "eval" or config.augment:
        why = "it labels each batch's shifted copies" if config.augment else "its BatchNorm layers train"
        messages.append(f"The teacher runs on every batch ({why}, so its outputs are not cached).")
        return False
    outs, feats = teacher.outputs_and_features(streaming.head(images, 2).to(device))
    per_image = 4 * sum(t[0].numel() for t in (*outs.values(), *feats))  # kept as float32
    need_mb = per_image * len(images) / 2**20
    if need_mb <= config.teacher_cache_mb:
        messages.append(f"The teacher's outputs for the {len(images):,} training images are kept in memory "
                        f"({need_mb:,.1f} MB of the {config.teacher_cache_mb:,.0f} MB allowed by --teacher-cache-mb).")
        return True
    messages.append(f"The teacher's outputs for the {len(images):,} training images would take {need_mb:,.0f} MB, more "
                    f"than the cache budget of {config.teacher_cache_mb:,.0f} MB: the teacher runs on every batch "
                    "instead (slower, same result).")
    return False
