"""Assembly: time from "attach" to a runnable network, and the forward latency of assembled networks.

Uses the real assembly layer: brick files on disk are loaded (kfstudio.io.bricks), placed on
a ``BrickGraph``, attached (the attach rules run), and ``kfstudio.assembly.build.build_network``
turns the graph into a module. Latency compares, for k = 1, 3, 5, 10 digit bricks:
the assembled k-task network (common module once + k bricks); k separate factor networks
(each its own copy of common module + one brick, run one after another); and the teacher.

Fused bricks (section ``fused-<device>``): the assembled network fused (bricks as one network,
as it runs and exports now) against the same network brick by brick (before) and against the
teacher, in every runtime a user runs it in: eager torch, the TorchScript file, the ``.pt2``
module and onnxruntime (CPU), at batch 1 and 256; plus a torch.profiler table of where the time goes.

    python -m benchmarks.assembly [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import _common as C
from benchmarks import _readings as RD
from benchmarks import _runtimes as R
from benchmarks.readings import write_readings
from kfstudio.assembly.build import build_from_files, build_network
from kfstudio.assembly.graph import BrickGraph
from kfstudio.assembly.measure import inference_form
from kfstudio.core.factorize import FactorizeConfig, factorize
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization

KS = (1, 3, 5, 10)
BATCHES = (1, 64)


def make_bricks(folder: Path, epochs: int) -> None:
    """A short real factorization of the digits demo, written as brick files."""
    config = FactorizeConfig(teacher="builtin:digits", data="builtin:digits", epochs=epochs, device="cpu", seed=0)
    save_factorization(factorize(config), folder)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def attach_to_runnable(common, bricks, k: int, repeats: int, device: str) -> dict[str, float]:
    """Median ms to attach the k-th brick, build the network and run its first forward pass."""
    parts = {"attach (rules + graph edge)": [], "build": [], "first forward (batch 1)": [], "total": []}
    for _ in range(repeats):
        graph = BrickGraph()
        graph.set_common(common)
        ids = [graph.add_brick(b) for b in bricks[:k]]
        for node in ids[:-1]:
            graph.attach(node)
        x = torch.randn(1, *common.input_spec.shape, device=device)
        _sync(device)
        t0 = time.perf_counter()
        graph.attach(ids[-1])
        t1 = time.perf_counter()
        net = build_network(graph).to(device)
        _sync(device)
        t2 = time.perf_counter()
        with torch.inference_mode():
            net(x)
        _sync(device)
        t3 = time.perf_counter()
        for key, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            parts[key].append(v * 1000)
    return {k2: statistics.median(v) for k2, v in parts.items()}


def latencies_ms(fns: dict, x: torch.Tensor, iters: int, device: str, rounds: int = 5) -> dict[str, float]:
    """Median milliseconds per call of each function, interleaved in rounds so load hits all alike."""
    samples = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(max(3, iters // 10)):
                fn(x)
        for _ in range(rounds):
            for name, fn in fns.items():
                for _ in range(max(1, iters // rounds)):
                    _sync(device)
                    t = time.perf_counter()
                    fn(x)
                    _sync(device)
                    samples[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) * 1000 for name, v in samples.items()}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    if args.threads is None:
        args.threads = 1  # small-batch latency; one thread also keeps the timings stable on a shared CPU
    C.setup_torch(args)
    dev = args.device
    repeats, iters = (3, 20) if args.quick else (15, 200)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kf-assembly-") as tmp:
        make_bricks(Path(tmp), epochs=1 if args.quick else 3)
        common = load_common(Path(tmp) / "common.safetensors")
        bricks = [load_brick(p) for p in list_bricks(tmp)]
    teacher = load_teacher("builtin:digits").to(torch.device(dev))
    teacher.set_batchnorm_train(False)
    run_teacher = inference_form(teacher.module)[0].to(dev)   # the assembled network's treatment: like with like
    attach_rows, latency_rows, attach, latency = [], [], [], []
    for k in KS:
        parts = attach_to_runnable(common, bricks, k, repeats, dev)
        attach_rows.append([k] + [f"{v:.2f}" for v in parts.values()])
        attach.append({"k": k, **parts})
        graph = BrickGraph()
        graph.set_common(common)
        for b in bricks[:k]:
            graph.attach(graph.add_brick(b))
        assembled = build_network(graph).to(dev).eval()
        separate = [build_from_files(common, [b]).to(dev).eval() for b in bricks[:k]]

        def run_separate(x, nets=separate):
            return [n(x) for n in nets]

        for batch in BATCHES:
            x = torch.randn(batch, *common.input_spec.shape, device=dev)
            n_iters = iters if batch == 1 else max(10, iters // 4)
            m = latencies_ms({"a": assembled, "s": run_separate, "t": run_teacher}, x, n_iters, dev)
            a, s, t = m["a"], m["s"], m["t"]
            latency.append({"k": k, "batch": batch, "assembled_ms": a, "separate_ms": s, "teacher_ms": t,
                            "parameters": count_parameters(assembled)})
            latency_rows.append([k, batch, f"{a:.3f}", f"{s:.3f}", f"{t:.3f}", f"{s / a:.2f}x", f"{t / a:.2f}x",
                                 f"{count_parameters(assembled):,}"])
        print(f"  k={k}: {latency_rows[-1]}", flush=True)
    body = [C.machine_header(args, [0], notes=[
        "Bricks: a 3-epoch factorization of the digits demo (ten one-vs-rest bricks, tiny common module width 1, "
        "bricks width 0.5), written to disk and loaded back with kfstudio.io.bricks; the assembly layer "
        "(kfstudio.assembly.graph + build) is the real one.",
        f"Attach timings: median of {repeats} repeats; the k-th brick is attached with k-1 already attached. "
        f"Latency: median per call over {iters} calls at batch 1 and {max(10, iters // 4)} at batch 64, after "
        "warm-up, torch.inference_mode, eval mode; the three variants are timed in 5 interleaved rounds.",
        f"Teacher: the digits demo teacher ({teacher.num_parameters:,} parameters), one forward pass answers all ten "
        f"digits; BatchNorm folded and channels_last, as the assembled network runs. Total wall time {time.perf_counter() - started:.0f} s."]),
        "", f"### From attach to a runnable network (ms; {C.timing_caption()})", "",
        C.table(["k (bricks attached)", *parts.keys()], attach_rows),
        "", f"### Forward latency, eager torch, teacher BatchNorm-folded like the assembly (ms per call; "
            f"{C.timing_caption()})", "",
        C.table(["k", "batch", "assembled (common once + k bricks)", "k separate factor networks", "teacher",
                 "separate / assembled", "teacher / assembled", "assembled parameters"], latency_rows)]
    C.write_section(args, f"assembly-{dev.split(':')[0]}", f"## Assembly ({dev})\n\n" + "\n".join(body))
    fused = R.fused_section(args, common, bricks, teacher, (1, 10) if args.quick else KS)
    RD.save(f"assembly_{dev.split(':')[0]}.json", {**RD.run_meta(args), "quick": args.quick,
            "teacher_parameters": teacher.num_parameters, "attach_ms": attach, "latency": latency, "fused": fused},
            C.FIG_DIR)
    if not args.no_write and not dev.startswith("cuda"):
        write_readings("assembly-summary", "fused")


if __name__ == "__main__":
    main()
