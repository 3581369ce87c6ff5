"""int8 ONNX against the float ONNX file: latency in onnxruntime and accuracy, on the digits and
shapes-hard assemblies (all bricks of a demo factorization), for the two formats onnxruntime's
static quantizer writes (QDQ, QOperator).

The float file is what ``kfstudio assemble --out x.onnx`` writes; the int8 files are what
``--int8`` writes (``kfstudio.io.int8``: calibrated on 300 training images, int8 weights per
channel, uint8 activations), once per format. Latency: onnxruntime CPU sessions with 1 thread,
batch 1 and 64, the files taking turns in blocks (interleaved), median of block medians; the
teacher exported to ONNX the same way is timed beside them. Accuracy: each file on the demo's test
images (per task; the combined choice for one-vs-rest digits), and how often int8 and float agree.

    python -m benchmarks.int8 [--quick] [--digits-run FOLDER] [--shapes-hard-run FOLDER]

Without a run folder the demo is factorized first with its default settings (the demo budget;
``--quick``: 1 epoch, not a result).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks import _common as C
from benchmarks import _runtimes as R
from kfstudio.assembly.build import build_from_files
from kfstudio.core.data.sources import load_data
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io import export as X
from kfstudio.io import int8 as Q
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization
from kfstudio.io.runtime_costs import TeacherOutputs

DEMOS = ("digits", "shapes-hard")
FORMATS = ("QDQ", "QOperator")
BATCHES = (1, 64)


def _extra(parser) -> None:
    parser.add_argument("--digits-run", default=None, help="a digits factorization folder to use instead of training one")
    parser.add_argument("--shapes-hard-run", default=None, help="a shapes-hard factorization folder to use")


def _run_folder(args, demo: str, scratch: Path) -> tuple[Path, str]:
    given = getattr(args, demo.replace("-", "_") + "_run")
    if given:
        from kfstudio.io.bricks import read_run_json

        config = read_run_json(Path(given) / "run.json")["config"]
        return Path(given), (f"a given run (`kfstudio factorize --teacher builtin:{demo}`, {config.get('epochs')} epochs, "
                             f"seed {config.get('seed')}, common width {config.get('common_width')}, "
                             f"brick width {config.get('task_width')}, bricks read {config.get('brick_input')}, stem stride "
                             f"{config.get('stem_stride')}, shifted copies {'on' if config.get('augment') else 'off'})")
    from kfstudio.core.factorize import FactorizeConfig, factorize

    folder = scratch / demo
    config = FactorizeConfig(teacher=f"builtin:{demo}", data=f"builtin:{demo}", device="cpu", seed=0,
                             epochs=1 if args.quick else None)
    result = factorize(config)
    save_factorization(result, folder)
    return folder, f"a fresh factorization, seed 0, {result.epochs_done} epochs (default settings)"


def _accuracy_cells(check: dict) -> tuple[str, str, str]:
    tasks = check["tasks"].values()
    f = [t["float_accuracy"] for t in tasks if t["float_accuracy"] is not None]
    q = [t["int8_accuracy"] for t in tasks if t["int8_accuracy"] is not None]

    def mean(v):
        return sum(v) / len(v) * 100 if v else float("nan")

    return f"{mean(f):.2f}", f"{mean(q):.2f}", f"{(mean(q) - mean(f)):+.2f} (worst {check['worst_accuracy_difference'] * 100:+.2f})"


def measure_demo(args, demo: str, scratch: Path, iters: int) -> tuple[list, list, str]:
    folder, source = _run_folder(args, demo, scratch)
    common = load_common(folder / "common.safetensors")
    network = build_from_files(common, [load_brick(p) for p in list_bricks(folder)]).eval()
    data = Q.int8_data(load_data(f"builtin:{demo}"), network)
    work = scratch / f"{demo}-files"
    work.mkdir()
    float_path = work / "float.onnx"
    X.export_network(network, float_path, "onnx")
    manifest = X.read_export_manifest(float_path)
    teacher = load_teacher(f"builtin:{demo}")
    X.write_onnx_module(TeacherOutputs(teacher.module.eval()), torch.zeros(2, *teacher.input_spec.shape),
                        work / "teacher.onnx")
    sessions = {"teacher": R._ort_session(work / "teacher.onnx"), "float": R._ort_session(float_path)}
    acc_rows, lat_rows = [], []
    for fmt in FORMATS:
        path = work / f"int8-{fmt}.onnx"
        Q.quantize_file(float_path, path, data.calibration, fmt)
        check = Q.check_int8(X.onnx_runner(float_path, 1), X.onnx_runner(path, 1), manifest, data.test)
        acc_rows.append([demo, fmt, *_accuracy_cells(check), f"{check['lowest_agreement']:.2%}",
                         f"{check['max_logit_difference']:.3f}"])
        sessions[fmt] = R._ort_session(path)
    for batch in BATCHES:
        x = torch.randn(batch, *network.input_spec.shape, generator=torch.Generator().manual_seed(batch))
        m = R._interleaved_ms(sessions, x, iters if batch == 1 else max(15, iters // 10), "cpu")
        f = m["float"][0]
        lat_rows.append([demo, batch, f"{m['teacher'][0]:.3f}", f"{f:.3f}"]
                        + [f"{m[fmt][0]:.3f} (**{f / m[fmt][0]:.2f}x**)" for fmt in FORMATS]
                        + [f"{m['float'][1] / m[fmt][1]:.2f}x" for fmt in FORMATS])
        print(f"  {demo} batch {batch}: " + ", ".join(f"{k} {v[0]:.3f} ms" for k, v in m.items()), flush=True)
    return acc_rows, lat_rows, f"{demo}: {source}"


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _extra)
    args.threads = 1
    C.setup_torch(args)
    started = time.perf_counter()
    iters = 20 if args.quick else 200
    acc_rows, lat_rows, sources = [], [], []
    with tempfile.TemporaryDirectory(prefix="kf-int8-") as tmp:
        for demo in DEMOS:
            acc, lat, source = measure_demo(args, demo, Path(tmp), iters)
            acc_rows += acc
            lat_rows += lat
            sources.append(source)
    body = [C.machine_header(args, [0], notes=[
        "Assemblies: all bricks of " + "; ".join(sources) + ".",
        "Float: the ONNX file `kfstudio assemble` writes. int8: onnxruntime's quantize_static on it after "
        "quant_pre_process, MinMax ranges from 300 training images, int8 weights per channel, uint8 activations, "
        "in the two formats it writes; `kfstudio assemble --int8` writes " + Q.QUANT_FORMAT + ". Teacher: the demo "
        "teacher exported to ONNX by the same writer.",
        f"Timing: onnxruntime CPUExecutionProvider, 1 intra-op thread; the variants take turns in blocks of 5 calls; "
        f"about {iters} calls each at batch 1 and {max(15, iters // 10)} at batch 64; median of block medians. "
        f"Wall time {time.perf_counter() - started:.0f} s; 1-minute load average at the end "
        f"{C.load_now():.2f}."]),
        "", f"### Accuracy on the test images (%), int8 against float ({C.timing_caption(1)})", "",
        C.table(["demo", "int8 format", "float", "int8", "int8 - float, points", "same prediction (lowest task)",
                 "largest logit difference"], acc_rows),
        "", f"### Latency in onnxruntime, ms per call ({C.timing_caption(1)})", "",
        C.table(["demo", "batch", "teacher (float ONNX)", "float ONNX"] + [f"int8 {f} (speed-up)" for f in FORMATS]
                + [f"int8 {f} speed-up, best blocks" for f in FORMATS], lat_rows)]
    C.write_section(args, "int8", "## int8 ONNX export\n\n" + "\n".join(body))


if __name__ == "__main__":
    main()
