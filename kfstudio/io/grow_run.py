"""Add one new brick to a factorization folder: the file side of ``kfstudio.core.grow``.

``iter_add_brick`` reads the run's common module and the architecture of its bricks,
drives ``iter_grow`` (yielding its reports), checks that the common module is bit-for-bit
what its manifest says, and writes ``bricks/<task>.safetensors`` + ``.json`` beside the old
bricks. The CLI (``kfstudio add-brick``) and the studio's child process both use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

from kfstudio.core.errors import ConfigError, FileFormatError, TrainingError
from kfstudio.core.runs import Report, RunControl
from kfstudio.core.grow import GrowConfig, GrowResult, iter_grow
from kfstudio.core.names import check_task_names
from kfstudio.core.teachers.record import recorded_weights
from kfstudio.core.students.networks import ArchSpec, BrickSpec
from kfstudio.io.atomic import read_json
from kfstudio.io.bricks import fingerprint, list_bricks, load_common, read_manifest, save_brick, task_file_stem
from kfstudio.io.locks import writing


@dataclass
class AddedBrick:
    result: GrowResult
    written: list[Path]
    common_fingerprint: str


def brick_architecture(run: Path) -> tuple[ArchSpec, bool, str]:
    """The backbone, Gaussian-ness and input (image or a common stage) of the run's bricks, so the new
    one is of the same family."""
    files = list_bricks(run)
    if files:
        spec = BrickSpec.from_dict(read_manifest(files[0].with_suffix(".json"), "task-brick")["architecture"])
        return spec.net, spec.gaussian, spec.reads
    config = read_json(run / "run.json", missing=FileFormatError(f"'{run}' has no bricks and no run.json to say "
                       "what a brick looks like."), corrupt=FileFormatError(f"'{run}/run.json' is corrupt."))["config"]
    common = read_manifest(run / "common.json", "common-module")
    stride = int(common["architecture"].get("stem_stride", 1))  # the run's bricks start as its common module
    net = ArchSpec(config["task_net"], float(config["task_width"]), int(common["input"]["channels"]), stride)
    return (net, bool(config["gaussian_bricks"]),
            str(config.get("brick_input", "image")))


def existing_task_names(run: Path) -> set[str]:
    return {read_manifest(p.with_suffix(".json"), "task-brick")["task"]["name"] for p in list_bricks(run)}


def check_free(run: Path, out: Path, task_spec: str, replace: bool) -> None:
    """Refuse a task name the run already has (or whose brick file exists), unless replacing."""
    name = task_spec.partition("=")[0].strip()
    existing = existing_task_names(run)
    taken = name in existing or (out / "bricks" / f"{task_file_stem(name)}.safetensors").exists()
    if taken and not replace:
        raise ConfigError(f"The run already has a brick '{name}'; give the new task another name, or replace it.")
    check_task_names(sorted(existing - {name}) + [name])  # no two names that would share a file or a key


def iter_add_brick(run: str | Path, config: GrowConfig, *, out: str | Path | None = None, replace: bool = False,
                   control: RunControl | None = None) -> Generator[Report, None, AddedBrick]:
    """Train a brick for ``config.task`` on the run's frozen common module and save it."""
    run = Path(run)
    out = Path(out) if out else run
    with writing(out, f"kfstudio add-brick --task {config.task}"):  # the name check and the save: one writer
        return (yield from _add_brick(run, out, config, replace, control))


def _add_brick(run: Path, out: Path, config: GrowConfig, replace: bool,
               control: RunControl | None) -> Generator[Report, None, AddedBrick]:
    common = load_common(run / "common.safetensors")
    check_free(run, out, config.task, replace)
    if config.teacher:  # the run's own teacher again: with the weights it was factorized with
        weights = recorded_weights(common.manifest.get("teacher"), config.teacher, config.teacher_weights)[0]
        config = dataclasses.replace(config, teacher_weights=weights)
    net, gaussian, reads = brick_architecture(run)
    result = yield from iter_grow(config, common.module, common.input_spec, net, gaussian=gaussian, reads=reads,
                                  control=control)
    if fingerprint(common.module.state_dict()) != common.fingerprint:  # the promise every old assembly rests on
        raise TrainingError("The common module changed while the brick trained; nothing was written.")
    grown = {"data": config.data, "label": result.task.source, "distilled_from": result.teacher,
             "elapsed_s": round(result.elapsed_s, 2)}
    written = save_brick(out, result.brick, result.task, common, metrics=result.final.tasks[result.task.name],
                         teacher_metrics=result.teacher_metrics, epochs=result.epochs_done,
                         complete=not result.cancelled, grown=grown)
    return AddedBrick(result, written, common.fingerprint)
