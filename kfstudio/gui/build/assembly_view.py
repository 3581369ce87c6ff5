"""What the try-it panel needs from an assembly: its tasks and their outputs on one input.

The assembled network's outputs are the common module's feature ``z_c`` and each attached
brick's logits on it (``AssembledNetwork.forward_unfused``, the reference its fused form
matches). ``LiveOutputs`` keeps them per input: attaching a brick runs that brick alone, and
undo, redo or a detach run nothing, so no edit rebuilds the network on the GUI thread.
The bricks' own (eval-mode, shared) modules run here, never with hooks on them.
"""

from __future__ import annotations

import torch

from kfstudio.assembly.build import none_of_these_tasks
from kfstudio.core.tasks import Task


def attached_tasks(graph) -> list[Task]:
    """The tasks of the attached bricks, in the network's output order."""
    if graph is None or graph.common is None:
        return []
    return [graph.brick(n).task for n in graph.attached_ids()]


def answering_tasks(graph) -> tuple[list[Task], dict[str, float]]:
    """The attached tasks as the assembled network answers them (a subset of calibrated one-vs-rest
    bricks can answer "none of these": ``none_of_these_tasks``) and their calibrated thresholds,
    read from the brick files: no network is built."""
    bricks = graph.attached_bricks() if graph is not None and graph.common is not None else []
    detectors = {b.task.name: b.detector for b in bricks if b.detector}
    tasks = none_of_these_tasks([b.task for b in bricks], detectors)
    return tasks, {name: float(d["threshold"]) for name, d in detectors.items()}


class LiveOutputs:
    """Each brick's logits on the current input, computed once per brick and input."""

    def __init__(self) -> None:
        self._x: torch.Tensor | None = None
        self._common = None
        self._encoded = None
        self._logits: dict[int, tuple[object, torch.Tensor]] = {}   # id(brick file) -> (brick, logits)

    @torch.no_grad()
    def task_logits(self, graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task name: logits}`` of the graph's attached bricks on ``x`` (on the CPU)."""
        common = graph.common
        if common is not self._common or self._x is None or not _same(x, self._x):
            self._common, self._x = common, x.detach().clone()
            self._encoded = common.module.encode(x)  # z_c and every stage: a light brick reads one
            self._logits = {}
        out = {}
        for brick in graph.attached_bricks():
            known = self._logits.get(id(brick))
            if known is None:
                known = self._logits[id(brick)] = (brick, self._encoded.run(brick.module).detach().cpu())
            out[brick.task.name] = known[1]
        return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
