"""The latency of an exported file against its teacher exported the same way, in the file's own runtime.

What a user deploys is the file, so that is what ``kfstudio assemble`` and the export dialog time:
an ONNX export runs in onnxruntime next to the teacher written to ONNX by the same writer; a
TorchScript export next to the teacher traced and frozen; a ``.pt2`` next to the teacher's
torch.export program (BatchNorm folded, like the fused network inside the file); a safetensors
bundle (which KF Studio runs in eager torch) next to the teacher in the fused network's eager form.
An ONNX teacher is timed as its own file. Each pair is timed in turns with one thread.

Public API: ``time_against_teacher(fmt, path, network, teacher, extra=None)``;
``export_and_time(network, path, fmt, teacher, int8=None)`` (what ``assemble`` and the export dialog run).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kfstudio.core.errors import first_line
from kfstudio.assembly.build import AssembledNetwork
from kfstudio.assembly.measure import LATENCY_BATCHES, LatencyComparison, compare_latency, inference_form
from kfstudio.core.teachers.loaders import Teacher
from kfstudio.io import export as X

THREADS = 1
_FORMS = {"onnx": ("onnxruntime", "both exported to ONNX"),
          "torchscript": ("TorchScript", "both traced and frozen"),
          "pt2": ("the torch.export module", "both exported with torch.export, BatchNorm folded"),
          "safetensors": ("eager torch", "both BatchNorm folded, channels_last")}


class TeacherOutputs(nn.Module):
    """A teacher whose forward returns a tuple of tensors, whatever its module returns (what exporters take)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(x)
        if isinstance(out, dict):
            return tuple(out.values())
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def time_against_teacher(fmt: X.ExportFormat, path: Path, network: AssembledNetwork, teacher: Teacher | None,
                         extra: dict[str, Path] | None = None, batches=LATENCY_BATCHES,
                         form: str | None = None) -> LatencyComparison:
    """The exported file at ``path`` (and each of ``extra``: name -> another file of the same format)
    timed in its runtime in turns with the teacher written the same way; no teacher: the file alone.
    ``form`` replaces the words for how both were written (an int8 file beside a float teacher)."""
    runtime, written = _FORMS.get(fmt.name, (fmt.runtime, "as written"))
    form = form or written
    runs = {"network": _file_runner(fmt, path, network)}
    runs |= {name: _file_runner(fmt, p, network) for name, p in (extra or {}).items()}
    note = ""
    with tempfile.TemporaryDirectory(prefix=".kf-teacher-") as tmp:
        if teacher is not None:
            try:
                runs["teacher"] = _teacher_runner(fmt, teacher, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - timing is a report, not the export: say why and go on
                note = f"the teacher could not be written as {fmt.name} to time it: {first_line(exc)}"
        return compare_latency(runs, network.input_spec.shape, runtime, form, batches=batches, threads=THREADS,
                               note=note)


def _file_runner(fmt: X.ExportFormat, path: Path, network: AssembledNetwork) -> Callable:
    if fmt.name == "onnx":
        return X.onnx_runner(path, THREADS)
    if fmt.name == "safetensors":  # the bundle is rebuilt into this network: time it as KF Studio runs it
        net = network.cpu().eval()
        return lambda x: net(x)
    return fmt.load(path, {})


def _teacher_runner(fmt: X.ExportFormat, teacher: Teacher, folder: Path) -> Callable:
    """The teacher written as ``fmt`` writes a network, loaded back the same way."""
    if teacher.module is None:
        if fmt.name != "onnx" or not str(teacher.ref).lower().endswith(".onnx"):
            raise ValueError(f"the teacher '{teacher.name}' is not a PyTorch module")
        return X.onnx_runner(Path(teacher.ref), THREADS)
    example = torch.zeros(2, *teacher.input_spec.shape)
    folded, _ = inference_form(teacher.module)
    if fmt.name == "onnx":  # onnxruntime folds BatchNorm itself, as it does in the network's file
        X.write_onnx_module(TeacherOutputs(folded.module), example, folder / "teacher.onnx")
        return X.onnx_runner(folder / "teacher.onnx", THREADS)
    if fmt.name == "torchscript":
        X.write_torchscript_module(TeacherOutputs(folded), example, folder / "teacher.ts.pt")
        return fmt.load(folder / "teacher.ts.pt", {})
    if fmt.name == "pt2":
        X.write_pt2_module(TeacherOutputs(folded), example, folder / "teacher.pt2")
        return fmt.load(folder / "teacher.pt2", {})
    return folded


def export_and_time(network: AssembledNetwork, path: str | Path, fmt: str | None, teacher: Teacher | None,
                    int8=None, *, metrics: dict | None = None) -> tuple[X.ExportReport, LatencyComparison]:
    """Write the file (``int8``: an ``Int8Data``, as an int8 ONNX file), then time it in its runtime next
    to the teacher exported the same way (an int8 file also next to its float file)."""
    from kfstudio.io.int8 import export_int8

    if int8 is None:
        report = X.export_network(network, path, fmt, metrics=metrics)
        return report, time_against_teacher(X.export_format_for(report.path, fmt), report.path, network, teacher)
    path = X.check_writable_file(path, "the export")
    with tempfile.TemporaryDirectory(prefix=".kf-float-", dir=path.parent) as tmp:
        float_copy = Path(tmp) / "float.onnx"
        report = export_int8(network, path, int8, metrics=metrics, keep_float=float_copy)
        return report, time_against_teacher(X.export_format_for(path, "onnx"), report.path, network, teacher,
                                            {"float network": float_copy},
                                            form="int8 ONNX file; teacher exported to float ONNX")
