"""A network exported for exactly one batch size, made callable with any.

A ``.pt2`` exported without a dynamic batch dimension fails a guard (an AssertionError from deep
inside torch) on any other batch size, and the studio runs a teacher's module directly on one
image to count its cost. Wrapping it where it is loaded means no caller meets that error.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree as pytree


class FixedBatchModule(nn.Module):
    """Runs ``inner`` on chunks of ``batch`` inputs, the last one padded with copies of its last
    row, and joins the outputs (tensors, tuples or dicts of them) with the padding dropped."""

    def __init__(self, inner: nn.Module, batch: int) -> None:
        super().__init__()
        self.inner = inner
        self.batch = batch

    def forward(self, x: torch.Tensor):
        if x.shape[0] == self.batch:
            return self.inner(x)
        parts, spec = [], None
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            leaves, spec = pytree.tree_flatten(self.inner(chunk))
            parts.append([leaf[:n] for leaf in leaves])
        return pytree.tree_unflatten([torch.cat(column) for column in zip(*parts)], spec)
