"""Build: turn the brick graph into one torch module, with no training.

The assembled network runs the common module once and every attached brick on its
output (the bricks share the common feature ``z_c``; a light brick also reads the stage map it
was trained on), and returns every task's logits by
task name. For one-vs-rest bricks of a source it also returns ``<source>_prediction``:
the argmax over the attached classes' logits, mapped to the source's class index, so any
subset of one-vs-rest bricks is a classifier over its classes (the paper's one-hot split).
A subset whose bricks were all calibrated as detectors (their manifests' ``detector``) also
answers "none of these" (-1) when no brick's logit clears its threshold: its tasks are marked
``rest`` (``none_of_these_tasks``), as those of a run trained against the rest are.

In eval mode the network runs fused (``kfstudio.core.students.fused``): the bricks of one architecture
as one network, BatchNorm folded; ``forward_unfused`` is the one-by-one reference.

Public API: ``AssembledNetwork`` (with ``.provenance``: ``Provenance``/``SourceBrick``), ``InferenceOutputs``,
``build_network(graph)``, ``build_from_files(common, bricks)``, ``prediction_output(source)``,
``none_of_these_tasks(tasks, detectors)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import nn

from kfstudio.assembly.graph import BrickGraph
from kfstudio.assembly.rules import AttachError, BrickFile, CommonFile, NoCommonModule, brick_title, check_attach
from kfstudio.core.errors import ConfigError
from kfstudio.core.measures.detection import with_none_column
from kfstudio.core.measures.metrics import group_thresholds
from kfstudio.core.spec import InputSpec
from kfstudio.core.students.fused import FrozenNetwork
from kfstudio.core.students.networks import CommonModule, TaskBrick, module_key
from kfstudio.core.tasks import ONE_VS_REST, Task, TaskGroup, group_tasks


def prediction_output(source: str) -> str:
    """The name of the combined one-vs-rest prediction of ``source``."""
    return f"{source}_prediction"


@dataclass
class SourceBrick:
    """Where one brick of a network came from, and how it sat on the canvas."""

    manifest: dict
    path: str
    title: str
    position: tuple[float, float] | None = None


@dataclass
class Provenance:
    """The files a network was built from: written into every export manifest, and all a
    safetensors bundle needs to rebuild the canvas."""

    common_manifest: dict
    common_path: str
    bricks: list[SourceBrick] = field(default_factory=list)
    common_position: tuple[float, float] | None = None


def none_of_these_tasks(tasks: Sequence[Task], detectors: dict[str, dict]) -> list[Task]:
    """``tasks``, with ``rest`` set on every one-vs-rest group that holds fewer than all its source's
    classes and whose bricks are all calibrated (``detectors``: task name -> ``Detector.to_dict``)."""
    marked: set[str] = set()
    for group in group_tasks(tasks):
        if group.tasks[0].kind != ONE_VS_REST or group.rest:
            continue
        found = [detectors.get(t.name) for t in group.tasks]
        if all(d and int(d.get("source_classes") or 0) > len(group.classes) for d in found):
            marked.update(t.name for t in group.tasks)
    return [replace(t, rest=True) if t.name in marked else t for t in tasks]


class _Combined(nn.Module):
    """Argmax over some tasks' single logits, as the source class index (int64); a group that
    answers "none of these" gives -1 when no logit clears its brick's threshold (core.metrics)."""

    def __init__(self, group: TaskGroup, thresholds: dict[str, float]) -> None:
        super().__init__()
        self.keys = [t.name for t in group.tasks]
        self.rest = group.rest
        outcomes = list(group.classes) + ([-1] if group.rest else [])
        self.register_buffer("classes", torch.tensor(outcomes, dtype=torch.long), persistent=False)
        self.register_buffer("thresholds", torch.tensor(group_thresholds(group, thresholds)), persistent=False)

    def forward(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.cat([logits[k] for k in self.keys], dim=1)
        if self.rest:
            stacked = with_none_column(stacked, self.thresholds)
        return self.classes[stacked.argmax(dim=1)]


class AssembledNetwork(nn.Module):
    """A common module with attached bricks; ``forward(x)`` -> ``{output name: tensor}``.

    ``output_names`` lists the outputs in a fixed order: task logits in brick order, then
    each one-vs-rest source's combined prediction. In eval mode ``forward`` runs the frozen
    fused form (``fused_runner``: bricks of one architecture as one network, BatchNorm folded,
    made from the bricks' weights when the network is built; ``refresh_fused()`` after changing
    them). ``forward_unfused`` runs the common module and each brick one by one, as built;
    ``fused = False`` makes ``forward`` do that too. The bricks stay separate modules, so every
    brick is still saved, shared and detached alone.

    ``detectors`` (task name -> ``Detector.to_dict``): the calibrated bricks. ``thresholds``
    holds their thresholds; a subset of calibrated one-vs-rest bricks answers "none of these".
    """

    def __init__(self, common: CommonModule, bricks: dict[str, TaskBrick], tasks: Sequence[Task],
                 input_spec: InputSpec, provenance: Provenance | None = None,
                 detectors: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.common = common
        self.provenance = provenance
        self.bricks = nn.ModuleDict({module_key(t.name): bricks[t.name] for t in tasks})
        self.tasks = none_of_these_tasks(tasks, detectors or {})
        self.thresholds = {name: float(d["threshold"]) for name, d in (detectors or {}).items()}
        self.input_spec = input_spec
        self._keys = [(t.name, module_key(t.name)) for t in tasks]
        self.combined = nn.ModuleDict()
        self._combined_names: list[tuple[str, str]] = []
        for group in group_tasks(self.tasks):
            if group.tasks[0].kind == ONE_VS_REST:
                key = module_key(prediction_output(group.source))
                self.combined[key] = _Combined(group, self.thresholds)
                self._combined_names.append((prediction_output(group.source), key))
        self.output_names = [t.name for t in tasks] + [n for n, _ in self._combined_names]
        if len(set(self.output_names)) != len(self.output_names):
            raise ConfigError(f"Two outputs of the network would share a name: {', '.join(self.output_names)}.")
        self.fused = True
        self.eval()
        self.refresh_fused()

    def refresh_fused(self) -> None:
        """(Re)make the frozen fused runner from the bricks' current weights."""
        self.fused_runner = FrozenNetwork(self.common.backbone, self.common.spec.in_channels,
                                          [self.bricks[key] for _, key in self._keys], self.common.project)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.fused or self.training:
            return self.forward_unfused(x)
        return self._with_combined(dict(zip([n for n, _ in self._keys], self.fused_runner(x))))

    def forward_unfused(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The common module once, then every brick on its own (the reference the fused form matches)."""
        enc = self.common.encode(x)
        return self._with_combined({name: enc.run(self.bricks[key]) for name, key in self._keys})

    def _with_combined(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, key in self._combined_names:
            out[name] = self.combined[key](out)
        return out

    def inference_module(self) -> "InferenceOutputs":
        """What an export writes: only the frozen fused weights and the combined predictions."""
        return InferenceOutputs(self).eval()

    def task_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Only the tasks' logits (what ``evaluate_logits`` scores)."""
        out = self(x)
        return {t.name: out[t.name] for t in self.tasks}

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, *self.input_spec.shape, generator=torch.Generator().manual_seed(0))


class InferenceOutputs(nn.Module):
    """The fused runner and the combined predictions of a network, outputs as a tuple in
    ``output_names`` order; it holds none of the bricks' own modules, so an exported file
    carries each weight once."""

    def __init__(self, network: AssembledNetwork) -> None:
        super().__init__()
        self.runner = network.fused_runner
        self.combined = network.combined
        self.task_names = [name for name, _ in network._keys]
        self.combined_names = list(network._combined_names)
        self.output_names = list(network.output_names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = dict(zip(self.task_names, self.runner(x)))
        for name, key in self.combined_names:
            out[name] = self.combined[key](out)
        return tuple(out[k] for k in self.output_names)


def build_from_files(common: CommonFile, bricks: Sequence[BrickFile], titles: Sequence[str] | None = None,
                     positions: Sequence[tuple[float, float]] | None = None,
                     common_position: tuple[float, float] | None = None) -> AssembledNetwork:
    """Check every brick against the rules, then build (modules are copied, never shared)."""
    titles = list(titles) if titles is not None else [brick_title(b) for b in bricks]
    attached: list[BrickFile] = []
    for brick, title in zip(bricks, titles):
        check_attach(common, attached, brick, title)
        attached.append(brick)
    if not attached:
        raise AttachError("No brick is attached to the common module; attach at least one to build a network.")
    tasks = [b.task for b in attached]
    modules = {b.task.name: copy.deepcopy(b.module).eval() for b in attached}
    places = list(positions) if positions is not None else [None] * len(attached)
    provenance = Provenance(dict(common.manifest), str(common.path),
                            [SourceBrick(dict(b.manifest), str(b.path), t, p) for b, t, p in zip(attached, titles, places)],
                            common_position)
    detectors = {b.task.name: b.manifest["detector"] for b in attached if b.manifest.get("detector")}
    return AssembledNetwork(copy.deepcopy(common.module).eval(), modules, tasks, common.input_spec, provenance,
                            detectors)


def build_network(graph: BrickGraph) -> AssembledNetwork:
    """The network the canvas shows: the common module and its attached bricks, in canvas order."""
    if graph.common is None:
        raise NoCommonModule("There is no common module on the canvas; add one and attach bricks to it.")
    ids = graph.attached_ids()
    return build_from_files(graph.common, graph.attached_bricks(), [graph.title(n) for n in ids],
                            [graph.position(n) for n in ids], graph.common_position)
