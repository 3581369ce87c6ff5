"""What the GUI panels need from an assembly: its tasks and its outputs on an input.

A thin layer over ``kfstudio.assembly.build`` so the cost and try-it panels ask one place;
the network is cached per graph state (the graph's bricks and attachments), so the panels
never rebuild it on every redraw.
"""

from __future__ import annotations

import torch

from kfstudio.assembly.build import AssembledNetwork, build_network
from kfstudio.core.tasks import Task


def attached_tasks(graph) -> list[Task]:
    """The tasks of the attached bricks, in the network's output order."""
    if graph is None or graph.common is None:
        return []
    return [graph.brick(n).task for n in graph.attached_ids()]


def _signature(graph) -> tuple:
    common = graph.common
    return (id(common), tuple((n, id(graph.brick(n))) for n in graph.attached_ids()))


_CACHE: dict[int, tuple[tuple, torch.nn.Module]] = {}


def assembled_network(graph) -> AssembledNetwork:
    """The graph's network (common module + attached bricks), in eval mode; cached."""
    key = _signature(graph)
    cached = _CACHE.get(id(graph))
    if cached is not None and cached[0] == key:
        return cached[1]
    network = _build(graph)
    network.eval()
    _CACHE.clear()      # one graph is shown at a time; keep no stale networks alive
    _CACHE[id(graph)] = (key, network)
    return network


def _build(graph) -> AssembledNetwork:
    return build_network(graph)


@torch.no_grad()
def assembled_outputs(graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{task name: logits}`` of the assembled network on ``x`` (on the CPU)."""
    return {k: v.detach().cpu() for k, v in assembled_network(graph).task_logits(x).items()}
