"""Speed to a usable result: wall time until the bricks are within 1 point of the teacher.

Runs the demos with their default settings (``FactorizeConfig()``: about 480 steps, i.e.
40 epochs of digits and 10 of shapes, batch 128, the tiny students) and evaluates after every epoch (the engine's EvalReport). Digits is
usable when the ten bricks together classify the ten digits within 1 point of the
teacher's accuracy; shapes when every head is within 1 point of the teacher's head. The
run stops there; the time of the full demo is extrapolated from the epochs run.

    python -m benchmarks.speed [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

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


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    C.setup_torch(args)
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
        C.table(["demo", "teacher acc % (worst task)", "runs usable", "epochs to usable", "seconds to usable",
                 "setup s", "seconds per epoch", "steps per epoch", "full demo s (estimated)"], rows),
        "", "The plots show the worst task's test accuracy after each epoch against wall time; the dashed line is "
            "the teacher's minus 1 point.", "", *plots]
    section = f"speed-{args.device.split(':')[0]}"
    C.write_section(args, section, f"## Speed to a usable result ({args.device})\n\n" + "\n".join(body))


if __name__ == "__main__":
    main()
