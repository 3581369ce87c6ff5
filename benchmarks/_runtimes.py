"""Fused bricks against brick by brick and against the teacher, in every runtime a user runs an
export in (eager torch, TorchScript, the .pt2 module, onnxruntime), for ``benchmarks.assembly``.

"Fused" is what KF Studio runs and writes now: ``AssembledNetwork`` in eval mode and the files
``kfstudio.io.export``'s writers produce (frozen TorchScript, ``InferenceOutputs`` graphs).
"Brick by brick" is the same network run brick by brick (``forward_unfused``), the form it ran
in before fusing. Like with like in every runtime: the teacher is given the fused network's
treatment (``kfstudio.assembly.measure.inference_form``: BatchNorm folded, channels_last) before it
is timed eagerly or exported, and every TorchScript file, the teacher's and the brick-by-brick
network's included, is traced and frozen as the exporter writes it; so the fused / teacher ratio
and the brick-by-brick / fused speed-up measure fusing alone.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmarks import _common as C
from kfstudio.assembly.graph import BrickGraph
from kfstudio.assembly.build import build_network
from kfstudio.assembly.measure import inference_form
from kfstudio.core.measures.cost import count_macs
from kfstudio.io import export as X

BATCHES = (1, 256)
Run = Callable[[torch.Tensor], object]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def _write_plain(module: nn.Module, example: torch.Tensor, folder: Path, stem: str, onnx: bool) -> dict[str, Run]:
    """``module`` written as the exporter writes a network: TorchScript traced and frozen, torch.export and
    ONNX with a dynamic batch size."""
    out: dict[str, Run] = {}
    with X._quiet():
        traced = torch.jit.trace(module.eval(), (example,), check_trace=False)
        torch.jit.freeze(traced).save(str(folder / f"{stem}.ts.pt"))
        program = torch.export.export(module, (example,), dynamic_shapes=({0: X._batch_dim()},))
        torch.export.save(program, str(folder / f"{stem}.pt2"))
        if onnx:
            torch.onnx.export(module, (example,), str(folder / f"{stem}.onnx"), dynamic_shapes=({0: X._batch_dim()},),
                              external_data=False, dynamo=True, verbose=False)
    out["TorchScript"] = torch.jit.load(str(folder / f"{stem}.ts.pt"))
    out[".pt2 module"] = torch.export.load(str(folder / f"{stem}.pt2")).module()
    if onnx:
        out["onnxruntime"] = _ort_session(folder / f"{stem}.onnx")
    return out


def _write_fused(network, example: torch.Tensor, folder: Path, onnx: bool) -> dict[str, Run]:
    """The fused network through KF Studio's own export writers."""
    X._write_torchscript(network, example, folder / "fused.ts.pt")
    X._write_pt2(network, example, folder / "fused.pt2")
    out: dict[str, Run] = {"TorchScript": torch.jit.load(str(folder / "fused.ts.pt")),
                           ".pt2 module": torch.export.load(str(folder / "fused.pt2")).module()}
    if onnx:
        X._write_onnx(network, example, folder / "fused.onnx")
        out["onnxruntime"] = _ort_session(folder / "fused.onnx")
    return out


def _interleaved_ms(fns: dict[str, Run], x: torch.Tensor, iters: int, device: str, block: int = 5
                    ) -> dict[str, tuple[float, float]]:
    """(median, best) ms per call. The functions take turns in blocks of ``block`` calls,
    ``iters / block`` turns each, so that on a shared CPU a burst of other work hits every function
    alike; median: the median of a function's block medians; best: the fastest block median, the
    figure closest to an unshared CPU."""
    blocks: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(max(2, iters // 10)):
                fn(x)
        for _ in range(max(3, iters // block)):
            for name, fn in fns.items():
                times = []
                for _ in range(block):
                    _sync(device)
                    t = time.perf_counter()
                    fn(x)
                    _sync(device)
                    times.append(time.perf_counter() - t)
                blocks[name].append(statistics.median(times))
    return {name: (statistics.median(v) * 1000, min(v) * 1000) for name, v in blocks.items()}


def _network(common, bricks, k: int):
    graph = BrickGraph()
    graph.set_common(common)
    for b in bricks[:k]:
        graph.attach(graph.add_brick(b))
    return build_network(graph).eval()


def _ops_profile(fns: dict[str, Run], x: torch.Tensor, iters: int = 50, rows: int = 8) -> tuple[list, dict[str, int]]:
    """Per forward: the ops that take the most self CPU time, and how many aten ops each function runs."""
    from torch.profiler import ProfilerActivity, profile

    tables, counts = [], {}
    with torch.inference_mode():
        for name, fn in fns.items():
            for _ in range(10):
                fn(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(iters):
                    fn(x)
            events = prof.key_averages()
            counts[name] = sum(e.count for e in events if e.key.startswith("aten::")) // iters
            top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
            tables += [[name, e.key, f"{e.count / iters:.0f}", f"{e.self_cpu_time_total / iters:.1f}"] for e in top]
    return tables, counts


def fused_section(args, common, bricks, teacher, ks) -> dict:
    """Write the ``fused-<device>`` section: every runtime, fused vs brick by brick vs teacher; return its
    figures (milliseconds, multiply-adds, aten op counts, the load) for the benchmark's JSON."""
    dev = args.device
    cpu = not dev.startswith("cuda")
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    iters = 20 if args.quick else 200
    teacher_module, folded = inference_form(teacher.module)   # the fused network's treatment
    rows, macs_rows, figures, macs_figures = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="kf-fused-") as tmp:
        folder = Path(tmp)
        example = torch.randn(2, *common.input_spec.shape, device=dev)
        teacher_module.to(dev)
        teacher_rt = {"eager": teacher_module, **_write_plain(teacher_module, example, folder, "teacher", cpu)}
        for k in ks:
            net = _network(common, bricks, k).to(dev)
            net.refresh_fused()
            fused = {"eager": net, **_write_fused(net, example, folder, cpu)}
            before = {"eager": net.forward_unfused,
                      **_write_plain(X.TupleOutputs(net, fused=False).eval(), example, folder, f"before{k}", cpu)}
            x1 = torch.randn(1, *common.input_spec.shape, device=dev)
            macs = count_macs(lambda: net.forward_unfused(x1), net)
            t_macs = count_macs(lambda: teacher.module(x1), teacher.module)   # MACs: the model as given
            macs_rows.append([k, f"{macs:,}", f"{t_macs:,}", f"{macs / t_macs:.2f}x"])
            macs_figures.append({"k": k, "assembled": macs, "teacher": t_macs})
            for batch in BATCHES:
                x = torch.randn(batch, *common.input_spec.shape, device=dev)
                fns = {}
                for runtime in fused:
                    fns |= {("t", runtime): teacher_rt[runtime], ("b", runtime): before[runtime], ("f", runtime): fused[runtime]}
                m = _interleaved_ms(fns, x, iters if batch == 1 else max(15, iters // 10), dev)
                for runtime in fused:
                    (t, t_best), (b, b_best), (f, f_best) = m["t", runtime], m["b", runtime], m["f", runtime]
                    figures.append({"k": k, "batch": batch, "runtime": runtime, "teacher_ms": t, "before_ms": b,
                                    "fused_ms": f, "teacher_best_ms": t_best, "before_best_ms": b_best,
                                    "fused_best_ms": f_best})
                    rows.append([k, batch, runtime, f"{t:.3f}", f"{b:.3f}", f"{f:.3f}", f"{b / t:.2f}x", f"**{f / t:.2f}x**",
                                 f"{b / f:.2f}x", f"{b_best / t_best:.2f}x", f"{f_best / t_best:.2f}x"])
                print(f"  fused k={k} batch={batch}: " + "; ".join(f"{r[2]} {r[7]}" for r in rows[-len(fused):]), flush=True)
        x = torch.randn(1, *common.input_spec.shape)
        net10 = _network(common, bricks, ks[-1])
        profile_rows, op_counts = _ops_profile({"teacher (BatchNorm folded)": teacher_module.cpu(), f"fused k={ks[-1]}": net10,
                                                f"brick by brick k={ks[-1]}": net10.forward_unfused}, x)
    load_end, wall_s = os.getloadavg()[0], time.perf_counter() - started
    body = [C.machine_header(args, [0], notes=[
        "Fused: the assembled network as KF Studio runs it (bricks of one architecture as one network of stacked "
        "weights, BatchNorm folded, channels_last) and as its export writers write it (TorchScript traced and "
        "frozen; torch.export and ONNX of the fused InferenceOutputs). Brick by brick: the same network before "
        "fusing (forward_unfused), its TorchScript also traced and frozen. Teacher: given the fused network's "
        f"treatment in every runtime (BatchNorm folded{'' if folded else ' -- not possible here, torch.fx could not trace it --'}, "
        "channels_last, TorchScript frozen), so each ratio compares like with like and the speed-up is fusing alone.",
        f"onnxruntime: CPUExecutionProvider with {torch.get_num_threads()} intra-op thread(s). "
        f"About {iters} calls per variant at batch 1 and {max(15, iters // 10)} at batch 256, after warm-up, "
        "torch.inference_mode. The twelve variants of one (k, batch) take turns in blocks of 5 calls (interleaved, "
        "so load hits all alike); each figure is the median of its block medians; the two last columns use each "
        "variant's fastest block instead (closest to an unshared CPU).",
        f"Load average: {load_start:.2f} at the start of this section, {load_end:.2f} at the end "
        f"({os.cpu_count()} cores; other engineers' jobs shared them). Section wall time {wall_s:.0f} s."]),
        "", f"### Latency against the teacher, same runtime, same treatment (ms per call; {C.timing_caption()})", "",
        C.table(["k", "batch", "runtime", "teacher", "brick by brick (before)", "fused (now)", "before / teacher",
                 "fused / teacher", "speed-up", "before / teacher, best blocks", "fused / teacher, best blocks"], rows),
        "", "### Multiply-adds per input (the limit fusing can approach at large batch)", "",
        C.table(["k", "assembled", "teacher", "assembled / teacher"], macs_rows),
        "", f"### Where the time goes: eager, batch 1, torch.profiler ({C.timing_caption()}; aten ops per forward: "
            + ", ".join(f"{n} {c}" for n, c in op_counts.items()) + ")", "",
        C.table(["network", "op", "calls per forward", "self CPU µs per forward"], profile_rows)]
    C.write_section(args, f"fused-{dev.split(':')[0]}", f"## Fused bricks ({dev})\n\n" + "\n".join(body))
    return {"load_start": load_start, "load_end": load_end, "wall_s": wall_s, "teacher_folded": folded,
            "latency": figures, "macs": macs_figures, "aten_ops_per_forward": op_counts}
