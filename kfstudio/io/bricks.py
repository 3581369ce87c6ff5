"""Common-module and brick files: safetensors weights plus a JSON manifest.

A factorization folder looks like::

    common.safetensors   common.json
    bricks/<task>.safetensors   bricks/<task>.json
    checkpoint.pt        (resumable training state)
    run.json             (the config and final metrics)

Every manifest carries ``schema_version``; a brick's manifest records the fingerprint of
the common module it fits. Loading never unpickles: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_weights

from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.core.factorize import FactorizeResult
from kfstudio.core.measures.detection import Detector
from kfstudio.core.measures.metrics import TaskMetrics
from kfstudio.core.names import check_task_names, task_file_stem
from kfstudio.core.spec import InputSpec
from kfstudio.core.students.networks import ArchSpec, BrickSpec, CommonModule, TaskBrick
from kfstudio.core.tasks import Task
from kfstudio.core.teachers.record import teacher_entry
from kfstudio.io import manifests
from kfstudio.io.atomic import json_bytes, read_json, write_all, write_bytes, write_json
from kfstudio.io.locks import writing
from kfstudio.io.run_folder import finish_interrupted_save, staged_folder
from kfstudio.io.schema import validate

SCHEMA_VERSION = 1
COMMON_KIND, BRICK_KIND = "common-module", "task-brick"


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of a module's weights: names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def _weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialized in memory: on a full disk the write fails as an OSError (in words), not inside safetensors."""
    return save_weights({k: v.detach().cpu().contiguous() for k, v in state.items()})


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    write_bytes(path, _weights_bytes(state))


@dataclass
class CommonFile:
    module: CommonModule
    manifest: dict
    path: Path

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])


@dataclass
class BrickFile:
    module: TaskBrick
    manifest: dict
    path: Path

    @property
    def task(self) -> Task:
        return Task.from_dict(self.manifest["task"])

    @property
    def common_fingerprint(self) -> str:
        return self.manifest["common_fingerprint"]

    @property
    def detector(self) -> dict | None:
        """The brick's calibration as a detector of its class (``Detector.to_dict``), None if uncalibrated."""
        return self.manifest.get("detector")

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])


def _metrics_dict(m: TaskMetrics | None) -> dict | None:
    return None if m is None else m.to_dict()


def _detector_entry(detector: Detector | None) -> dict:
    """The brick's ``detector`` key (absent for a brick that was not calibrated)."""
    return {} if detector is None else {"detector": detector.to_dict()}


def save_factorization(result: FactorizeResult, out: str | Path) -> list[Path]:
    """Write the common module and one brick per task into ``out``, replacing any earlier run
    there as a whole (see ``run_folder``); return the files written."""
    check_task_names(t.name for t in result.tasks)
    with writing(out, "a KF Studio factorization"), staged_folder(out) as stage:
        written = _write_run(result, stage)
    return [Path(out) / p.relative_to(stage) for p in written]


def _write_run(result: FactorizeResult, out: Path) -> list[Path]:
    network, teacher = result.network, result.teacher
    common_state = network.common.state_dict()
    common_fp = fingerprint(common_state)
    base = {
        "schema_version": SCHEMA_VERSION,
        "input": teacher.input_spec.to_dict(),
        "teacher": teacher_entry(teacher),
        "complete": not result.cancelled,
        "epochs": result.epochs_done,
    }
    written = [out / "common.safetensors", out / "common.json"]
    _save_weights(written[0], common_state)
    write_json(written[1], {**base, "kind": COMMON_KIND, "fingerprint": common_fp,
                            "architecture": network.common.spec.to_dict(), "z_dim": network.common.z_dim,
                            "z_projection": network.common.projected,
                            "tasks": [t.name for t in result.tasks],
                            "metrics": {k: _metrics_dict(v) for k, v in result.final.groups.items()}})
    for task in result.tasks:
        brick = network.brick(task.name)
        stem = out / "bricks" / task_file_stem(task.name)
        state = brick.state_dict()
        _save_weights(stem.with_suffix(".safetensors"), state)
        write_json(stem.with_suffix(".json"), {
            **base, "kind": BRICK_KIND, "task": task.to_dict(), "title": task.title,
            "fingerprint": fingerprint(state), "common_fingerprint": common_fp,
            "architecture": brick.spec.to_dict(),
            "metrics": _metrics_dict(result.final.tasks.get(task.name)),
            "teacher_metrics": _metrics_dict(result.teacher_metrics.get(task.name)),
            **_detector_entry(result.detectors.get(task.name)),
        })
        written += [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
    write_json(out / "run.json", {
        "schema_version": SCHEMA_VERSION, "kind": "factorization-run", "config": result.config.to_dict(),
        "teacher": base["teacher"], "data_note": result.data_note, "cancelled": result.cancelled,
        "epochs_done": result.epochs_done, "elapsed_s": round(result.elapsed_s, 2),
        "checkpoint": result.checkpoint, "tasks": [t.to_dict() for t in result.tasks], "sizing": result.sizing,
        "metrics": {"tasks": {k: v.to_dict() for k, v in result.final.tasks.items()},
                    "groups": {k: v.to_dict() for k, v in result.final.groups.items()},
                    "teacher": {k: v.to_dict() for k, v in result.teacher_metrics.items()}},
    })
    return written + [out / "run.json"]


# ---------------------------------------------------------------- loading

_SCHEMAS = {COMMON_KIND: (manifests.COMMON, "common-module manifest"), BRICK_KIND: (manifests.BRICK, "brick manifest")}


def read_manifest(path: Path, kind: str) -> dict:
    """Read and check a manifest: parse -> version check -> kind check -> schema."""
    manifest = read_json(
        path, missing=FileFormatError(f"The manifest '{path}' is missing; it must sit beside its weights file."),
        corrupt=FileFormatError(f"'{path}' is not a valid manifest (it may be truncated or corrupt)."))
    if not isinstance(manifest, dict):
        raise FileFormatError(f"'{path}' is not a KF Studio manifest.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FileFormatError(f"'{path}' has no schema_version; it is not a KF Studio manifest.")
    if version > SCHEMA_VERSION:
        raise FileFormatError(f"'{path}' was written by a newer KF Studio (schema {version}); update KF Studio to open it.")
    if manifest.get("kind") != kind:
        raise FileFormatError(f"'{path}' describes a {_kind_words(manifest.get('kind'))}, not a {kind}.")
    declared, what = _SCHEMAS[kind]
    return validate(manifest, declared, path, what)


def manifest_kind(path: Path) -> str | None:
    """What a KF Studio manifest says it describes (its ``kind``), before it is fully checked."""
    doc = read_json(path, missing=FileFormatError(f"The manifest '{path}' is missing."),
                    corrupt=FileFormatError(f"'{path}' is not a valid manifest (it may be truncated or corrupt)."))
    if not isinstance(doc, dict):
        raise FileFormatError(f"'{path}' is not a KF Studio manifest.")
    return doc.get("kind") if isinstance(doc.get("kind"), str) else None


def _kind_words(kind) -> str:
    return kind if isinstance(kind, str) and len(kind) < 60 else "unknown thing"


def read_run_json(path: Path) -> dict:
    """A run's ``run.json`` (its config, tasks and metrics), checked against its schema."""
    doc = read_json(path, missing=FileFormatError(f"'{path}' is missing."),
                    corrupt=FileFormatError(f"'{path}' is not valid JSON (it may be truncated or corrupt)."))
    return validate(doc, manifests.RUN, path, "run record")


def _manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix(".safetensors") if path.suffix == ".json" else path


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileFormatError(f"The weights file '{path}' is missing.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"'{path}' is not a readable safetensors file (it may be truncated): {exc}.") from None


def _fill(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, manifest: dict) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError:
        raise FileFormatError(f"The weights in '{path}' do not match the architecture its manifest describes.") from None
    if "fingerprint" in manifest and fingerprint(module.state_dict()) != manifest["fingerprint"]:
        raise FileFormatError(f"The weights in '{path}' are not the ones its manifest describes (fingerprint differs).")
    module.eval()


MAX_PARAMETERS = 100_000_000  # far above any student we make; a manifest asking for more is damaged


def build_checked(build, stored: dict[str, tuple[int, ...]], path: Path, what: str) -> torch.nn.Module:
    """Build the module a manifest describes only after checking, on the meta device (no memory),
    that it is of a sane size and that the stored weights are exactly its tensors."""
    try:
        with torch.device("meta"):
            probe = build()
    except (KFError, ValueError, RuntimeError) as exc:
        raise FileFormatError(f"The manifest of '{path.name}' does not describe a buildable {what}: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    size = sum(math.prod(s) for s in expected.values())
    if size > MAX_PARAMETERS:
        raise FileFormatError(f"The manifest of '{path.name}' describes a {what} of {size:,} numbers, more than "
                              f"KF Studio builds ({MAX_PARAMETERS:,}); the file is damaged.")
    if stored != expected:
        raise FileFormatError(f"The weights of the {what} in '{path}' do not match the architecture its manifest "
                              "describes.")
    return build()


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, read from its header alone."""
    if not path.is_file():
        raise FileFormatError(f"The weights file '{path}' is missing.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"'{path}' is not a readable safetensors file (it may be truncated): {exc}.") from None


def common_builder(manifest: dict):
    """How to build the common module a (checked) manifest describes: its architecture, and the
    projection to its latent size when it has one (``z_projection``; files without it have none)."""
    spec = ArchSpec.from_dict(manifest["architecture"])
    z_dim = int(manifest["z_dim"]) if manifest.get("z_projection") else None
    return lambda: CommonModule(spec, z_dim)


def load_common(path: str | Path) -> CommonFile:
    weights = _weights_path(path)
    manifest = read_manifest(_manifest_path(weights), COMMON_KIND)
    module = build_checked(common_builder(manifest), _stored_shapes(weights), weights, "common module")
    _fill(module, _load_state(weights), weights, manifest)
    return CommonFile(module, manifest, weights)


def load_brick(path: str | Path) -> BrickFile:
    weights = _weights_path(path)
    manifest = read_manifest(_manifest_path(weights), BRICK_KIND)
    spec = BrickSpec.from_dict(manifest["architecture"])
    Task.from_dict(manifest["task"])
    module = build_checked(lambda: TaskBrick(spec), _stored_shapes(weights), weights, "brick")
    _fill(module, _load_state(weights), weights, manifest)
    return BrickFile(module, manifest, weights)


def list_bricks(folder: str | Path) -> list[Path]:
    """The brick weight files of a factorization folder, in the order the run listed its tasks."""
    folder = Path(folder)
    finish_interrupted_save(folder)  # a run killed while it was being swapped in is completed first
    files = sorted((folder / "bricks").glob("*.safetensors"))
    common = folder / "common.json"
    if common.is_file():
        order = {task_file_stem(n): i for i, n in enumerate(read_manifest(common, COMMON_KIND).get("tasks", []))}
        files.sort(key=lambda p: order.get(p.stem, len(order)))
    return files


def save_teacher(module: torch.nn.Module, manifest: dict, weights: str | Path) -> None:
    """Write a demo teacher's weights and manifest (``name.safetensors`` + ``name.json``)."""
    weights = Path(weights)
    write_all([(weights, _weights_bytes(module.state_dict())), (weights.with_suffix(".json"), json_bytes(manifest))])


def save_brick(out: str | Path, brick: TaskBrick, task: Task, common: CommonFile, *, metrics: TaskMetrics | None = None,
               teacher_metrics: TaskMetrics | None = None, epochs: int = 0, complete: bool = True,
               grown: dict | None = None) -> list[Path]:
    """Write one brick that fits ``common`` into ``out/bricks/`` (a brick grown after the run)."""
    stem = Path(out) / "bricks" / task_file_stem(task.name)
    state = brick.state_dict()
    manifest = {
        "schema_version": SCHEMA_VERSION, "input": common.manifest["input"], "teacher": common.manifest.get("teacher"),
        "complete": complete, "epochs": epochs, "kind": BRICK_KIND, "task": task.to_dict(), "title": task.title,
        "fingerprint": fingerprint(state), "common_fingerprint": common.fingerprint,
        "architecture": brick.spec.to_dict(), "metrics": _metrics_dict(metrics),
        "teacher_metrics": _metrics_dict(teacher_metrics), **({"grown": grown} if grown else {}),
    }
    write_all([(stem.with_suffix(".safetensors"), _weights_bytes(state)), (stem.with_suffix(".json"), json_bytes(manifest))])
    return [stem.with_suffix(".safetensors"), stem.with_suffix(".json")]
