"""int8 ONNX export: static quantization with onnxruntime, calibrated on training images and
checked against the float network on held-out test images before the file is kept.

``export_int8(network, path, data)`` writes the float ONNX file into a hidden folder beside the
target and self-tests it against the network (as every export), pre-processes it
(``quant_pre_process``: shape inference, graph optimisation) and quantizes it statically
(``quantize_static``, QOperator format, int8 weights per channel, uint8 activations, MinMax ranges
from a few hundred training images). The int8 file is then run beside the float file on the test
images: accuracy of each, how often their predictions agree, and the largest logit difference go
into the manifest (``int8``) and the report. Only then is the int8 file moved into place; on any
failure nothing is left behind. Why QOperator, and what int8 buys on which CPU: docs/benchmarks.md ("int8").
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.assembly.measure import self_reference, source_labels
from kfstudio.core.data.sources import Dataset, DataSplit, prepare
from kfstudio.core.errors import DataError, first_line
from kfstudio.core.measures.metrics import TaskMetrics, evaluate_logits, group_prediction
from kfstudio.core.tasks import ONE_VS_REST, group_tasks
from kfstudio.core.teachers.loaders import file_sha256
from kfstudio.io import export as X

CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 32
# QOperator (QLinearConv, ...) ran as fast as or faster than QDQ at batch 64 in our paired runs, at the
# same accuracy (docs/benchmarks.md, "int8"; python -m benchmarks.int8 measures both).
QUANT_FORMAT = "QOperator"


class Int8Error(X.ExportError):
    """onnxruntime could not quantize the network, or the int8 file did not run."""


@dataclass(frozen=True)
class Int8Data:
    """Prepared training images to calibrate on and the raw test set to check the int8 file on."""

    calibration: torch.Tensor
    test: Dataset
    name: str


def int8_data(split: DataSplit, network: AssembledNetwork, images: int = CALIBRATION_IMAGES, seed: int = 0) -> Int8Data:
    """Up to ``images`` seeded-random training images in the network's input space, and the test set."""
    if len(split.train) == 0 or len(split.test) == 0:
        raise DataError(f"The data '{split.train.name}' needs training images to calibrate int8 on and test images "
                        "to check it with; give data with both.")
    x = prepare(split.train, network.input_spec).x
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:images]
    prepare(split.test, network.input_spec)  # refuse data of another size now, before any work
    return Int8Data(x[pick].contiguous(), split.test, split.train.name)


# ---------------------------------------------------------------- quantizing

def _calibration_reader(x: torch.Tensor):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([b.numpy() for b in x.split(CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {X.INPUT_NAME: batch}

    return Reader()


def quantize_file(float_path: Path, out_path: Path, calibration: torch.Tensor, quant_format: str = QUANT_FORMAT) -> None:
    """Statically quantize the ONNX file ``float_path`` into ``out_path`` (``quant_format``: "QDQ" or
    "QOperator"); Int8Error in words on failure."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name(f".{out_path.stem}.prepared.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # the quantizer logs a WARNING for every output it leaves in float (argmax)
    try:
        with X._quiet():
            quant_pre_process(str(float_path), str(prepared))
            quantize_static(str(prepared), str(out_path), _calibration_reader(calibration),
                            quant_format=getattr(QuantFormat, quant_format), per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # onnxruntime's quantizer raises anything; the user gets a sentence
        raise Int8Error(f"onnxruntime's quantizer could not make an int8 version of this network "
                        f"({first_line(exc)}); export it without int8.") from exc
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


# ---------------------------------------------------------------- checking against the float network

def _scored(tasks, per_task: dict[str, TaskMetrics], per_group: dict[str, TaskMetrics]) -> dict[str, TaskMetrics]:
    """What a user reads as "accuracy": each ordinary task, and each one-vs-rest group's combined choice."""
    scored = {}
    for group in group_tasks(tasks):
        key = group.name if group.tasks[0].kind == ONE_VS_REST else group.tasks[0].name
        metrics = (per_group if group.tasks[0].kind == ONE_VS_REST else per_task).get(key)
        scored[key] = metrics.accuracy if metrics is not None and metrics.accuracy is not None else None
    return {k: v for k, v in scored.items() if v is None or not math.isnan(v)}


def _agreement(tasks, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """How often two sets of logits choose the same answer, per scored task (on every image)."""
    out = {}
    for group in group_tasks(tasks):
        key = group.name if group.tasks[0].kind == ONE_VS_REST else group.tasks[0].name
        out[key] = float((group_prediction(group, a) == group_prediction(group, b)).float().mean())
    return out


@torch.no_grad()
def check_int8(float_run: X.Runner, int8_run: X.Runner, manifest: dict, test: Dataset) -> dict:
    """The int8 file against the float file on ``test``: per scored task the accuracy of both (None
    without labels), how often their predictions agree, and the largest logit difference."""
    float_net = X.ExportedNetwork(Path("float"), manifest, float_run)
    int8_net = X.ExportedNetwork(Path("int8"), manifest, int8_run)
    tasks = float_net.tasks
    x = prepare(test, float_net.input_spec).x
    f_logits = {k: torch.cat(v) for k, v in _logits(float_net, x).items()}
    q_logits = {k: torch.cat(v) for k, v in _logits(int8_net, x).items()}
    if not all(bool(torch.isfinite(v).all()) for v in q_logits.values()):
        raise Int8Error("The int8 file gives outputs that are not numbers (NaN or infinite); export it without int8.")
    sources = list(dict.fromkeys(t.source for t in tasks))
    labels = source_labels(test, sources)
    reference = self_reference(tasks, f_logits, {s: len(test.class_names.get(s, [])) for s in sources})
    float_acc = _scored(tasks, *evaluate_logits(tasks, f_logits, reference, labels))
    int8_acc = _scored(tasks, *evaluate_logits(tasks, q_logits, reference, labels))
    agreement = _agreement(tasks, f_logits, q_logits)
    diff = max(float((f_logits[k] - q_logits[k]).abs().max()) for k in f_logits)
    drops = [int8_acc[k] - float_acc[k] for k in float_acc if float_acc[k] is not None and int8_acc.get(k) is not None]
    return {"images": len(x), "max_logit_difference": diff,
            "tasks": {k: {"float_accuracy": float_acc.get(k), "int8_accuracy": int8_acc.get(k),
                          "agreement": agreement[k]} for k in agreement},
            "worst_accuracy_difference": min(drops) if drops else None,
            "mean_accuracy_difference": sum(drops) / len(drops) if drops else None,
            "lowest_agreement": min(agreement.values(), default=None)}


def _logits(net: X.ExportedNetwork, x: torch.Tensor, batch: int = 256) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[torch.Tensor]] = {}
    for chunk in x.split(batch):
        for k, v in net.task_logits(chunk).items():
            out.setdefault(k, []).append(v.float())
    return out


def describe_int8(check: dict) -> str:
    """One sentence: what int8 cost in accuracy against the float network, on how many test images."""
    parts = []
    scored = [(k, t) for k, t in check["tasks"].items() if t["float_accuracy"] is not None]
    if len(scored) == 1:
        name, t = scored[0]
        parts.append(f"accuracy {(t['int8_accuracy'] - t['float_accuracy']) * 100:+.2f} points against the float "
                     f"network ({t['float_accuracy']:.2%} -> {t['int8_accuracy']:.2%}, {name})")
    elif scored:
        parts.append(f"accuracy {check['mean_accuracy_difference'] * 100:+.2f} points against the float network on "
                     f"average over {len(scored)} tasks (worst {check['worst_accuracy_difference'] * 100:+.2f})")
    if check.get("lowest_agreement") is not None:
        parts.append(f"the same prediction as the float network on {check['lowest_agreement']:.1%} of images"
                     + (" or more" if len(check["tasks"]) > 1 else ""))
    parts.append(f"largest logit difference {check['max_logit_difference']:.3f}")
    return f"The int8 file, checked on {check['images']} test images: " + "; ".join(parts) + "."


def describe_int8_speed(runtime) -> str:
    """How much faster the int8 file ran than the float file (a ``LatencyComparison`` with both)."""
    return ("int8 against the float ONNX file, both in onnxruntime, 1 thread, timed in turns: " + "; ".join(
        f"batch {b}: {runtime.ratio(b, 'float network', 'network'):.2f}x as fast" for b in runtime.ms.get("network", {})
        if runtime.ratio(b, "float network", "network") is not None) + ".")


def run_data_ref(common_path: str | Path | None) -> str | None:
    """The data a factorization folder's run was trained on (its run.json), or None when it does not say."""
    from kfstudio.core.errors import KFError
    from kfstudio.io.bricks import read_run_json

    run_json = Path(common_path).parent / "run.json" if common_path else None
    if run_json is None or not run_json.is_file():
        return None
    try:
        return read_run_json(run_json).get("config", {}).get("data") or None
    except KFError:
        return None


# ---------------------------------------------------------------- the export

@dataclass(frozen=True)
class Int8Report(X.ExportReport):
    int8: dict | None = None

    def describe(self) -> str:
        sizes = " and ".join(str(b) for b in self.batches)
        return (f"Self-test passed: the float ONNX file matched the network on batches of {sizes} (largest "
                f"difference {self.max_abs_diff:.1e}) before it was quantized. " + describe_int8(self.int8))


def export_int8(network: AssembledNetwork, path: str | Path, data: Int8Data, *, metrics: dict | None = None,
                batches: Sequence[int] = (1, 3), keep_float: Path | None = None) -> Int8Report:
    """Write ``network`` as an int8 ONNX file at ``path`` with its manifest (see the module doc).
    ``keep_float``: also copy the float ONNX file there (for timing the two side by side)."""
    path = X.check_writable_file(path, "the export")
    fmt = X.export_format_for(path, "onnx")
    if not str(path).lower().endswith(fmt.suffix):
        raise Int8Error(f"An int8 export is an ONNX file; end the name with {fmt.suffix}.")
    network = network.cpu().eval()
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        float_path, staged = work / "float.onnx", work / path.name
        X._write(fmt, network, float_path)
        worst = X.self_test(fmt, float_path, network, {}, batches)
        quantize_file(float_path, staged, data.calibration)
        manifest = X.build_manifest(network, fmt, path, metrics,
                                    {"passed": True, "max_abs_diff": worst, "batches": list(batches),
                                     "of": "the float ONNX file before quantization"})
        try:
            int8_run = X.onnx_runner(staged)
        except Exception as exc:  # any failure to open it: the user gets a sentence
            raise Int8Error(f"onnxruntime cannot run the int8 file it wrote ({first_line(exc)}); "
                            "export it without int8.") from exc
        check = check_int8(X.onnx_runner(float_path), int8_run, manifest, data.test)
        manifest["int8"] = {"quantization": "static", "format": QUANT_FORMAT, "weights": "int8, per channel",
                            "activations": "uint8", "calibration_images": len(data.calibration),
                            "data": data.name, **check}
        manifest["sha256"] = file_sha256(staged)
        if keep_float is not None:
            shutil.copyfile(float_path, keep_float)
        X._move_pair(staged, path, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Int8Report(path, Path(str(path) + ".json"), "int8 onnx", worst, tuple(batches), manifest["int8"])
