"""Export an assembled network in a format anyone can run, and prove the file works.

Formats form a small registry (``register_export_format`` / ``list_export_formats`` /
``export_format_for``): TorchScript (``.ts.pt``), ONNX (``.onnx``, one file, dynamic
batch), torch.export (``.pt2``, dynamic batch) and a safetensors bundle (``.safetensors``)
that KF Studio rebuilds into an editable canvas. Every export is written into a hidden
folder beside the target, reloaded and compared with the in-memory network on sample
inputs (two batch sizes), and only then moved into place with its manifest
``<file>.json`` (tasks, class names, input spec, output names, source bricks, teacher,
metrics). A failed self-test leaves nothing behind.

Outputs are named after the tasks (``digit_7``, ``shape``) plus ``<source>_prediction``
for the combined one-vs-rest choice, in a fixed order (``output_names``). A calibrated
brick's logits entry records its ``threshold``; a prediction that can answer "none of these"
(a subset of calibrated bricks, or bricks trained against the rest) lists -1 among its
classes and says what it means.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.core.errors import FileFormatError, KFError, WriteError, first_line
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task
from kfstudio.core.teachers.loaders import file_sha256
from kfstudio.core.teachers.safe_pt2 import load_exported_program
from kfstudio.core.tempfiles import claimed_folder, remove_stale_temps
from kfstudio.io import bundle
from kfstudio.io.atomic import atomic_path, check_writable_file, json_bytes
from kfstudio.io.locks import writing
from kfstudio.io.export_manifest import (INPUT_NAME, build_manifest, output_names, read_export_manifest)

Runner = Callable[[torch.Tensor], Sequence[torch.Tensor]]


class ExportError(KFError):
    """The export could not be written, or the written file did not reproduce the network."""


@dataclass(frozen=True)
class ExportFormat:
    """One file format: how to write a network and how to run the written file back."""

    name: str
    suffix: str
    description: str
    runtime: str
    write: Callable[[AssembledNetwork, torch.Tensor, Path], None]
    load: Callable[[Path, dict], Runner]


_FORMATS: dict[str, ExportFormat] = {}


def register_export_format(name: str, suffix: str, description: str, runtime: str, load: Callable[[Path, dict], Runner]):
    """Register a writer (the decorated function) with its loader under ``name``."""
    def decorator(write: Callable[[AssembledNetwork, torch.Tensor, Path], None]):
        _FORMATS[name] = ExportFormat(name, suffix, description, runtime, write, load)
        return write
    return decorator


def list_export_formats() -> list[ExportFormat]:
    return list(_FORMATS.values())


def export_format_for(path: str | Path, name: str | None = None) -> ExportFormat:
    """The format named ``name``, else the one whose suffix ``path`` ends with (longest first)."""
    if name:
        if name not in _FORMATS:
            raise ExportError(f"There is no export format '{name}'; choose one of: {', '.join(_FORMATS)}.")
        return _FORMATS[name]
    lowered = str(path).lower()
    for fmt in sorted(_FORMATS.values(), key=lambda f: -len(f.suffix)):
        if lowered.endswith(fmt.suffix):
            return fmt
    known = ", ".join(f.suffix for f in _FORMATS.values())
    raise ExportError(f"Cannot tell the export format from '{Path(path).name}'; end the name with {known} or give --format.")


# ---------------------------------------------------------------- names and the tuple wrapper

class TupleOutputs(nn.Module):
    """The network with outputs as a tuple in ``output_names`` order; ``fused=False`` runs it
    brick by brick (the reference a self-test compares with)."""

    def __init__(self, network: AssembledNetwork, fused: bool = True) -> None:
        super().__init__()
        self.network = network
        self.fused = fused
        self.keys = list(network.output_names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(x) if self.fused else self.network.forward_unfused(x)
        return tuple(out[k] for k in self.keys)


@contextlib.contextmanager
def _quiet():
    """Exporters print progress and warn about things that do not concern the user."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=1 << 16)


# ---------------------------------------------------------------- formats

def _load_torchscript(path: Path, _manifest: dict) -> Runner:
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: list(module(x))


@register_export_format("torchscript", ".ts.pt", "TorchScript: runs with torch alone (torch.jit.load)", "torch",
                        _load_torchscript)
def _write_torchscript(network: AssembledNetwork, example: torch.Tensor, path: Path) -> None:
    write_torchscript_module(network.inference_module(), example, path)


def write_torchscript_module(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``module`` traced and frozen, as every TorchScript export (and its teacher, when timed) is written."""
    with _quiet():
        traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
        # Frozen: weights become constants and the graph is optimised for inference (1.27x at batch 1).
        frozen = torch.jit.freeze(traced.eval())
        _write_through_memory(path, lambda buffer: torch.jit.save(frozen, buffer))


def _write_through_memory(path: Path, serialize) -> None:
    """Serialize in memory, then write the bytes: torch's own file writer aborts the whole process
    (SIGABRT from c10) when the disk fills; a Python write raises an OSError we can put in words."""
    buffer = io.BytesIO()
    serialize(buffer)
    path.write_bytes(buffer.getbuffer())


def _load_pt2(path: Path, _manifest: dict) -> Runner:
    module = load_exported_program(path).module()
    return lambda x: list(module(x))


@register_export_format("pt2", ".pt2", "torch.export program: runs with torch alone (torch.export.load)", "torch",
                        _load_pt2)
def _write_pt2(network: AssembledNetwork, example: torch.Tensor, path: Path) -> None:
    write_pt2_module(network.inference_module(), example, path)


def write_pt2_module(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``module`` as a torch.export program with a dynamic batch size."""
    with _quiet():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
        _write_through_memory(path, lambda buffer: torch.export.save(program, buffer))


def _load_onnx(path: Path, manifest: dict) -> Runner:
    return onnx_runner(path)


def onnx_runner(path: Path, threads: int | None = None) -> Runner:
    """An onnxruntime CPU session on ``path`` (``threads``: its intra- and inter-op threads; None:
    onnxruntime's default, every core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda x: [torch.from_numpy(r) for r in session.run(None, {input_name: x.detach().float().cpu().numpy()})]


@register_export_format("onnx", ".onnx", "ONNX (one file, dynamic batch): runs with onnxruntime alone", "onnxruntime",
                        _load_onnx)
def _write_onnx(network: AssembledNetwork, example: torch.Tensor, path: Path) -> None:
    write_onnx_module(network.inference_module(), example, path, output_names(network))


def write_onnx_module(module: nn.Module, example: torch.Tensor, path: Path, names: Sequence[str] | None = None) -> None:
    """``module`` as one ONNX file with a dynamic batch size, its outputs named ``names``."""
    with _quiet():
        torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=list(names or []) or None,
                          dynamic_shapes=({0: _batch_dim()},), external_data=False, dynamo=True, verbose=False)


def _load_bundle(path: Path, _manifest: dict) -> Runner:
    network = bundle.load_bundle_network(path)
    wrapped = TupleOutputs(network)
    return lambda x: list(wrapped(x))


@register_export_format("safetensors", ".safetensors",
                        "safetensors bundle + manifest: KF Studio rebuilds it and can edit it again", "kfstudio",
                        _load_bundle)
def _write_bundle(network: AssembledNetwork, _example: torch.Tensor, path: Path) -> None:
    bundle.write_bundle(network, path)


# ---------------------------------------------------------------- writing, checking, loading

@dataclass(frozen=True)
class ExportReport:
    path: Path
    manifest_path: Path
    format: str
    max_abs_diff: float
    batches: tuple[int, ...]

    def describe(self) -> str:
        sizes = " and ".join(str(b) for b in self.batches)
        return (f"Self-test passed: {self.path.name} reloaded and matched the network on batches of {sizes} "
                f"(largest difference {self.max_abs_diff:.1e}).")


def compare_outputs(expected: Sequence[torch.Tensor], got: Sequence[torch.Tensor], names: Sequence[str],
                    tolerance: float) -> float:
    """Largest difference of the float outputs; integer predictions must agree exactly. Raises ExportError."""
    if len(got) != len(expected):
        raise ExportError(f"The exported file gives {len(got)} outputs instead of {len(expected)}.")
    worst = 0.0
    for name, want, have in zip(names, expected, got):
        have = torch.as_tensor(have)
        if tuple(have.shape) != tuple(want.shape):
            raise ExportError(f"The output '{name}' has shape {tuple(have.shape)} instead of {tuple(want.shape)}.")
        if want.is_floating_point():
            worst = max(worst, float((want.float() - have.float()).abs().max()))
        elif not torch.equal(want, have.to(want.dtype)):
            raise ExportError(f"The exported file chooses different classes than the network in '{name}'.")
    if worst > tolerance:
        raise ExportError(f"The exported file differs from the network by {worst:.2e} (more than {tolerance:.0e}).")
    return worst


@torch.no_grad()
def self_test(fmt: ExportFormat, path: Path, network: AssembledNetwork, manifest: dict,
              batches: Sequence[int] = (1, 3), tolerance: float = 1e-4) -> float:
    """Reload ``path`` and compare its outputs with ``network`` on seeded random inputs."""
    try:
        runner = fmt.load(path, manifest)
    except KFError:
        raise
    except Exception as exc:
        raise ExportError(f"The exported {fmt.name} file could not be loaded back: {first_line(exc)}") from exc
    wrapped = TupleOutputs(network, fused=False).eval()   # the file is checked against the bricks one by one
    worst = 0.0
    for batch in batches:
        x = network.example_input(batch)
        worst = max(worst, compare_outputs(wrapped(x), runner(x), wrapped.keys, tolerance))
    return worst


def export_network(network: AssembledNetwork, path: str | Path, fmt: str | None = None, *,
                   metrics: dict | None = None, batches: Sequence[int] = (1, 3)) -> ExportReport:
    """Write ``network`` to ``path`` in ``fmt`` (or the format its suffix names), self-test it,
    then move the file and its manifest into place. On any failure nothing is left behind."""
    path = check_writable_file(path, "the export")
    chosen = export_format_for(path, fmt)
    # Into a run folder, one writer at a time (as every command writing there); elsewhere no lock
    # file is left in the user's folder, and the manifest's sha256 catches two exports crossing.
    held = writing(path.parent, f"an export to {path.name}") if (path.parent / "common.json").is_file() else None
    with held or contextlib.nullcontext():
        return _export(network.cpu().eval(), path, chosen, metrics, batches)


def _export(network: AssembledNetwork, path: Path, chosen: "ExportFormat", metrics: dict | None,
            batches: Sequence[int]) -> ExportReport:
    remove_stale_temps(path.parent)  # work folders of exports killed mid-way
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with claimed_folder(work):  # held: no other process takes it for a leftover
            worst = _write_and_move(network, path, chosen, metrics, batches, work / path.name)
    except OSError as exc:  # a full disk: the old file and manifest stay as they were
        raise WriteError.of(path, exc) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(path, Path(str(path) + ".json"), chosen.name, worst, tuple(batches))


def _write_and_move(network: AssembledNetwork, path: Path, chosen: "ExportFormat", metrics: dict | None,
                    batches: Sequence[int], staged: Path) -> float:
    _write(chosen, network, staged)
    worst = self_test(chosen, staged, network, {}, batches)
    manifest = build_manifest(network, chosen, path, metrics,
                              {"passed": True, "max_abs_diff": worst, "batches": list(batches)})
    manifest["sha256"] = file_sha256(staged)
    _move_pair(staged, path, manifest)
    return worst


def _move_pair(staged: Path, path: Path, manifest: dict) -> None:
    """Move a staged file and its manifest into place. Two renames cannot be one atomic step,
    so the old manifest goes first and the new one last: a kill in between leaves a file with
    no manifest (refused in words), never a new file described by an old manifest. The
    manifest's sha256 catches any other mismatch."""
    manifest_path = Path(str(path) + ".json")
    with atomic_path(manifest_path) as staged_manifest:  # written in full before anything moves
        staged_manifest.write_bytes(json_bytes(manifest))
        manifest_path.unlink(missing_ok=True)
        os.replace(staged, path)


def _write(fmt: ExportFormat, network: AssembledNetwork, staged: Path) -> None:
    try:
        fmt.write(network, network.example_input(2), staged)
    except (KFError, OSError):
        raise
    except Exception as exc:
        raise ExportError(f"Writing the {fmt.name} file failed: {first_line(exc)}") from exc


# ---------------------------------------------------------------- running an export

@dataclass
class ExportedNetwork:
    """An exported file run in this process: ``task_logits(x)`` -> ``{task name: logits}``."""

    path: Path
    manifest: dict
    runner: Runner

    @property
    def tasks(self) -> list[Task]:
        return [Task.from_dict(t) for t in self.manifest["tasks"]]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.manifest["input"])

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        got, names = self.runner(x), self.manifest["output_names"]
        if len(got) != len(names):
            raise FileFormatError(f"'{self.path.name}' gives {len(got)} outputs but its manifest names {len(names)}; "
                                  "export the network again.")
        return dict(zip(names, got))

    def task_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.outputs(x)
        return {e["task"]: out[e["name"]] for e in self.manifest["outputs"] if e["kind"] == "logits"}

    @property
    def thresholds(self) -> dict[str, float]:
        """The calibrated bricks' thresholds, by task (what the prediction outputs used)."""
        return {e["task"]: float(e["threshold"]) for e in self.manifest["outputs"]
                if e["kind"] == "logits" and isinstance(e.get("threshold"), (int, float))}


def load_exported(path: str | Path) -> ExportedNetwork:
    """Open an exported file with its manifest; a truncated or corrupt file gives a FileFormatError."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The exported file '{path}' does not exist.")
    manifest = read_export_manifest(path)
    if manifest.get("sha256") not in (None, file_sha256(path)):
        raise FileFormatError(f"'{path.name}' is not the file its manifest describes: it may be truncated or "
                              "changed, or an export was interrupted; export it again.")
    fmt = export_format_for(path, manifest.get("format"))
    try:
        runner = fmt.load(path, manifest)
    except KFError:
        raise
    except Exception as exc:
        raise FileFormatError(f"'{path.name}' is not a readable {fmt.name} file (it may be truncated or corrupt): "
                              f"{first_line(exc)}") from None
    return ExportedNetwork(path, manifest, runner)
