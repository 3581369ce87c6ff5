"""The training network: a common module with its task bricks, run together.

``FactorNetwork`` runs the common module once and every brick on what it reads; bricks of one
architecture run fused (``kfstudio.core.students.fused``) over their own parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from kfstudio.core.students.fused import FusedBricks, group_by_architecture
from kfstudio.core.students.networks import BrickOutputs, CommonModule, TaskBrick, module_key


class FactorNetwork(nn.Module):
    """A common module with task bricks: runs the common module once, each brick on it.

    ``forward`` returns ``{task name: logits}`` in the order the bricks were given. With
    ``fused`` (the default) bricks of one architecture run as one batched network
    (``kfstudio.core.students.fused.FusedBricks``) over the bricks' own parameters, so the state_dict,
    the optimizer state and checkpoints are the same as with ``fused=False``, which runs the
    bricks one after another.
    """

    def __init__(self, common: CommonModule, bricks: dict[str, TaskBrick], fused: bool = True) -> None:
        super().__init__()
        self.common = common
        self.task_names = list(bricks)
        self.bricks = nn.ModuleDict({module_key(n): b for n, b in bricks.items()})
        self._keys = [module_key(n) for n in self.task_names]
        self.fused = fused
        modules = list(bricks.values())
        self._groups = group_by_architecture(modules)
        self._places = sorted(((g, k) for g, group in enumerate(self._groups) for k in range(len(group))),
                              key=lambda place: self._groups[place[0]][place[1]])   # (group, slot) in brick order
        # Weight-free runners: registering them adds no state_dict keys, and train()/eval() reach them.
        self.fused_groups = nn.ModuleList([FusedBricks([modules[i] for i in g]) for g in self._groups])

    def brick(self, task_name: str) -> TaskBrick:
        return self.bricks[module_key(task_name)]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.common.encode(x)
        if not self.fused:
            return {name: enc.run(self.bricks[key]) for name, key in zip(self.task_names, self._keys)}
        return self._by_task([runner(enc.source(runner.reads), enc.z_c) for runner in self.fused_groups])

    def forward_train(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, BrickOutputs]]:
        enc = self.common.encode(x)
        z_c, stages = enc.z_c, enc.pooled
        if not self.fused:
            outs = {name: self.bricks[key].forward_train(enc.source(self.bricks[key].spec.reads), z_c)
                    for name, key in zip(self.task_names, self._keys)}
            return stages, outs
        runners = list(self.fused_groups)
        hs = [runner.project(enc.source(runner.reads)) for runner in runners]
        # Gaussian bricks draw their noise in brick order, as brick by brick, whatever their group.
        noise = {(g, k): runners[g].noise(hs[g], k) for g, k in self._places if runners[g].draws_noise()}
        outs = []
        for g, (runner, h) in enumerate(zip(runners, hs)):
            drawn = [noise[g, k] for k in range(runner.n)] if runner.draws_noise() else None
            outs.append(runner.outputs_train(h, z_c, drawn))
        return stages, self._by_task(outs)

    def _by_task(self, per_group: list[list]) -> dict:
        found = {i: out for group, outs in zip(self._groups, per_group) for i, out in zip(group, outs)}
        return {name: found[i] for i, name in enumerate(self.task_names)}
