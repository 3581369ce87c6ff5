"""Speed to a usable result: wall time until the bricks are within 1 point of the teacher.

Runs the demos with their default settings (``FactorizeConfig()``: about 480 steps, i.e.
40 epochs of digits and 10 of shapes, batch 128, the tiny students) and evaluates after every epoch (the engine's EvalReport). Digits is
usable when the ten bricks together classify the ten digits within 1 point of the
teacher's accuracy; shapes when every head is within 1 point of the teacher's head. The
run stops there; the time of the full demo is extrapolated from the epochs run.

Training steps/s, fused bricks against the old loop (section ``train-fused-<device>``): the
digits demo's real training loop (``iter_factorize``: ten one-vs-rest bricks, batch 128) run twice
side by side, once with the bricks fused (``FactorNetwork``'s default) and once brick by brick,
advanced one report window at a time in turn so that load hits both alike.

    python -m benchmarks.speed [--device cpu|cuda] [--quick] [--only steps|usable]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time

from benchmarks import _common as C

SEEDS = (0, 1, 2)
DEMOS = ("builtin:digits", "builtin:shapes")
MARGIN = 0.01


def usable(report, teacher_metrics) -> bool:
    metrics = report.groups if report.groups else report.tasks
    return all(m.accuracy >= teacher_metrics[name].accuracy - MARGIN for name, m in metrics.items())


def score(report) -> float:
    metrics = report.groups if report.groups else report.tasks
    return min(m.accuracy for m in metrics.values())


def run_demo(ref: str, seed: int, device: str, max_epochs: int | None) -> dict:
    from kfstudio.core.factorize import FactorizeConfig, iter_factorize

    config = FactorizeConfig(teacher=ref, data=ref, seed=seed, device=device)
    t0 = time.perf_counter()
    gen = iter_factorize(config)
    setup = next(gen)
    setup_s = time.perf_counter() - t0
    curve, reached, epoch_times = [], None, []
    last = setup_s
    for report in gen:
        if report.kind != "eval":
            continue
        now = time.perf_counter() - t0
        epoch_times.append(now - last)
        last = now
        curve.append((now, score(report) * 100))
        if usable(report, setup.teacher_metrics):
            reached = (report.epoch, now)
            break
        if max_epochs and report.epoch >= max_epochs:
            break
    gen.close()
    keys = (report.groups or report.tasks).keys()
    teacher = min(setup.teacher_metrics[k].accuracy for k in keys)
    return {"setup_s": setup_s, "reached": reached, "curve": curve, "epoch_s": statistics.median(epoch_times),
            "full_estimate_s": setup_s + statistics.median(epoch_times) * setup.total_steps / setup.steps_per_epoch, "teacher": teacher * 100,
            "epochs": len(curve), "demo_epochs": setup.total_steps // setup.steps_per_epoch, "steps_per_epoch": setup.steps_per_epoch, "device": setup.device}


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import kfstudio.core.factorize; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(3)]
    return statistics.median(times)


@contextlib.contextmanager
def _built_unfused():
    """While a run sets up, its FactorNetwork comes out brick by brick (the loop before fusing)."""
    from kfstudio.core import factorize as F

    build = F.build_network

    def unfused(*a, **kw):
        network = build(*a, **kw)
        network.fused = False
        return network

    F.build_network = unfused
    try:
        yield
    finally:
        F.build_network = build


def _start(fused: bool, device: str):
    from kfstudio.core.factorize import FactorizeConfig, iter_factorize

    config = FactorizeConfig(teacher="builtin:digits", data="builtin:digits", seed=0, device=device, epochs=100,
                             report_every=10)   # more epochs than are run: the runs are closed when measured
    gen = iter_factorize(config)
    with contextlib.nullcontext() if fused else _built_unfused():
        setup = next(gen)
    return gen, setup


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def training_steps(device: str, windows: int) -> dict:
    """Seconds per step of the real loop, fused and brick by brick, in alternating report windows."""
    runs = {"fused": _start(True, device), "brick by brick": _start(False, device)}
    per_step = {name: [] for name in runs}
    last = {name: 0 for name in runs}
    for _ in range(windows + 1):
        for name, (gen, _setup) in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            report = next(gen, None)
            while report is not None and report.kind != "step":   # an epoch ended: eval, then on
                last[name] = getattr(report, "step", last[name])
                t0 = time.perf_counter()
                report = next(gen, None)
            _sync(device)
            if report is None:
                continue
            if last[name]:     # the first window holds the optimizer's first-use warm-up: not counted
                per_step[name].append((time.perf_counter() - t0) / (report.step - last[name]))
            last[name] = report.step
    for gen, _ in runs.values():
        gen.close()
    return {name: statistics.median(v) for name, v in per_step.items()} | {"windows": len(per_step["fused"])}


def training_section(args) -> None:
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    windows = 6 if args.quick else 40
    m = training_steps(args.device, windows)
    f, b = m["fused"], m["brick by brick"]
    rows = [["brick by brick (before)", f"{1 / b:.1f}", f"{128 / b:.0f}", f"{b * 1000:.1f}", "1.00x"],
            ["fused (now)", f"{1 / f:.1f}", f"{128 / f:.0f}", f"{f * 1000:.1f}", f"**{b / f:.2f}x**"]]
    body = [C.machine_header(args, [0], notes=[
        "The digits demo's real training loop (iter_factorize, FactorizeConfig defaults: tiny common module width 1, "
        "ten tiny one-vs-rest bricks width 0.5, batch 128, SGD, IMB objective), two runs side by side from the same "
        "seed: one with FactorNetwork fused (the default now), one brick by brick. They are advanced one report "
        f"window (10 steps) at a time in turn, {m['windows']} windows each counted (the first, with the optimizer's "
        "warm-up, is not); median seconds per step.",
        f"Load average: {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. "
        f"Wall time {time.perf_counter() - started:.0f} s."]), "",
        f"Timed on: {C.timing_caption()}.", "",
        C.table(["loop", "steps / s", "samples / s", "ms / step", "speed-up"], rows)]
    C.write_section(args, f"train-fused-{args.device.split(':')[0]}",
                    f"## Training steps, fused bricks ({args.device})\n\n" + "\n".join(body))


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], extra=lambda p: p.add_argument(
        "--only", choices=("steps", "usable"), default=None, help="run one part: training steps/s or time to usable"))
    C.setup_torch(args)
    if args.only != "usable":
        training_section(args)
    if args.only == "steps":
        return
    seeds, max_epochs = (SEEDS[:1], 1) if args.quick else (SEEDS, None)
    started = time.perf_counter()
    imports = import_seconds()
    rows, plots = [], []
    for ref in DEMOS:
        runs = []
        for seed in seeds:
            r = run_demo(ref, seed, args.device, max_epochs)
            runs.append(r)
            print(f"  {ref} seed {seed}: setup {r['setup_s']:.1f} s, usable {r['reached']}, "
                  f"epoch {r['epoch_s']:.2f} s", flush=True)
        reached = [r["reached"] for r in runs if r["reached"]]
        name = ref.split(":")[1]
        rows.append([name, f"{runs[0]['teacher']:.2f}", f"{len(reached)}/{len(runs)}",
                     C.mean_sd([e for e, _ in reached], digits=1) if reached else "not reached",
                     C.mean_sd([t for _, t in reached], digits=1) if reached else "-",
                     C.mean_sd([r["setup_s"] for r in runs], digits=2), C.mean_sd([r["epoch_s"] for r in runs], digits=2),
                     runs[0]["steps_per_epoch"], C.mean_sd([r["full_estimate_s"] for r in runs], digits=0)])
        path = C.FIG_DIR / f"speed_{name}.png"
        C.line_plot(path, f"{name}: worst task accuracy while factorizing ({args.device})", "wall time since start (s)",
                    "accuracy %", {f"seed {s}": tuple(zip(*r["curve"])) for s, r in zip(seeds, runs)},
                    hline=runs[0]["teacher"] - MARGIN * 100)
        plots.append(f"![{name} time to usable](benchmarks/{path.name})")
    body = [C.machine_header(args, seeds, notes=[
        "Demo defaults: about 480 steps (digits 40 epochs, shapes 10), batch 128, SGD 0.1 cosine, tiny common module (width 1) and tiny bricks "
        "(width 0.5); digits = ten one-vs-rest bricks, shapes = one brick per teacher head (shape, colour, size, x).",
        "Usable: digits, the 10-way accuracy of all bricks together within 1 point of the teacher's; shapes, "
        "every head within 1 point of the teacher's head. Time counts from calling iter_factorize (teacher and "
        "data loading, the teacher pass over the training set, building the students) to the first EvalReport "
        "that meets the bar; the run stops there.",
        f"Importing torch + kfstudio.core.factorize takes a further {imports:.2f} s (median of 3 fresh interpreters).",
        f"Total wall time {time.perf_counter() - started:.0f} s."]), "",
        f"Timed on: {C.timing_caption()}.", "",
        C.table(["demo", "teacher acc % (worst task)", "runs usable", "epochs to usable", "seconds to usable",
                 "setup s", "seconds per epoch", "steps per epoch", "full demo s (estimated)"], rows),
        "", "The plots show the worst task's test accuracy after each epoch against wall time; the dashed line is "
            "the teacher's minus 1 point.", "", *plots]
    section = f"speed-{args.device.split(':')[0]}"
    C.write_section(args, section, f"## Speed to a usable result ({args.device})\n\n" + "\n".join(body))


if __name__ == "__main__":
    main()
