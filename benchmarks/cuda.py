"""The CUDA path on a real GPU: device choice, bf16 autocast against float32, and speed.

For each demo (digits, shapes-hard), one factorization with the demo's default settings runs
on the GPU twice, with ``precision="auto"`` (bf16 autocast, the default on CUDA) and with
``precision="fp32"``, the two runs taking turns report window by report window so that whatever
else the machine does hits both alike. Reported: what ``--device auto`` picks, the steps/s of
the training loop (setup excluded), the peak GPU memory, and each run's accuracy against the
teacher at its end. The same runs on the CPU give the speed-up.

    python -m benchmarks.cuda [--quick] [--arch resnet] [--no-cpu]

``--arch`` gives the common module and the bricks that architecture (default: the demos' tiny
students); ``--no-cpu`` leaves out the CPU runs (their speed-up).
"""

from __future__ import annotations

import json
import statistics
import time

from benchmarks import _common as C

DEMOS = ("builtin:digits", "builtin:shapes-hard")
PRECISIONS = ("auto", "fp32")


def _config(ref: str, device: str, precision: str, quick: bool, arch: str):
    from kfstudio.core.factorize import FactorizeConfig

    return FactorizeConfig(teacher=ref, data=ref, seed=0, device=device, precision=precision, common=arch,
                           task_net=arch, epochs=1 if quick else None, report_every=10)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_pair(ref: str, device: str, quick: bool, max_steps: int | None = None, arch: str = "tiny") -> dict:
    """Both precisions of one demo on one device, advanced a report at a time in turn; with
    ``max_steps`` each run is cancelled there (a speed reading; its accuracy is not the demo's)."""
    import torch

    from kfstudio.core.factorize import iter_factorize
    from kfstudio.core.runs import RunControl

    controls = {p: RunControl() for p in PRECISIONS}
    runs = {p: iter_factorize(_config(ref, device, p, quick, arch), control=controls[p]) for p in PRECISIONS}
    state = {p: {"steps": 0, "seconds": 0.0, "setup": None, "result": None, "last_eval": None} for p in PRECISIONS}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    live = list(PRECISIONS)
    while live:
        for p in list(live):
            s = state[p]
            _sync(device)
            started = time.perf_counter()
            try:
                report = next(runs[p])
            except StopIteration as stop:
                s["result"] = stop.value
                live.remove(p)
                continue
            _sync(device)
            if report.kind == "setup":
                s["setup"] = report
            elif report.kind == "step":
                s["seconds"] += time.perf_counter() - started
                s["steps"] = report.step
                if max_steps and report.step >= max_steps:
                    controls[p].cancel()
            elif report.kind == "eval":
                s["last_eval"] = report
    out = {}
    for p, s in state.items():
        result = s["result"]
        teacher = result.teacher_metrics
        final = result.final
        metrics = final.groups or final.tasks
        teacher_metrics = {k: teacher[k] for k in metrics if k in teacher}
        out[p] = {
            "device": s["setup"].device,
            "steps": s["steps"],
            "steps_per_s": s["steps"] / s["seconds"] if s["seconds"] else None,
            "accuracy": statistics.mean(m.accuracy for m in metrics.values()),
            "whole_run": not result.cancelled,
            "teacher_accuracy": statistics.mean(m.accuracy for m in teacher_metrics.values()) if teacher_metrics else None,
        }
    if device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], extra=lambda p: (
        p.add_argument("--arch", default="tiny", help="the students' architecture (tiny, resnet, mobilenetv2)"),
        p.add_argument("--no-cpu", action="store_true", help="GPU runs only")))
    torch = C.setup_torch(args)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.cuda needs a CUDA GPU; this machine has none.")
    from kfstudio.core.devices import pick_device

    picked = str(pick_device("auto"))
    results = {"arch": args.arch, "auto_device": picked, "gpu": torch.cuda.get_device_name(0), "cpu": C.cpu_model(),
               "threads": torch.get_num_threads(), "demos": {}}
    for ref in DEMOS:
        # the CPU runs are cut at 200 steps: a speed reading for the speed-up, not an accuracy
        results["demos"][ref] = {"cuda": run_pair(ref, "cuda", args.quick, arch=args.arch)}
        if not args.no_cpu:
            results["demos"][ref]["cpu"] = run_pair(ref, "cpu", args.quick, max_steps=200, arch=args.arch)
    C.FIG_DIR.mkdir(parents=True, exist_ok=True)
    name = "cuda" if args.arch == "tiny" else f"cuda-{args.arch}"
    (C.FIG_DIR / f"{name}.json").write_text(json.dumps(results, indent=2))
    rows = []
    for ref, by_device in results["demos"].items():
        for dev, by_precision in by_device.items():
            for p in PRECISIONS:
                r = by_precision[p]
                rows.append([ref, dev, "bf16 autocast" if p == "auto" and dev == "cuda" else "float32",
                             f"{r['steps_per_s']:.1f}",
                             f"{100 * r['accuracy']:.2f}" if r["whole_run"] else "(cut at 200 steps)",
                             f"{100 * r['teacher_accuracy']:.2f}" if r["teacher_accuracy"] is not None else "-",
                             f"{by_precision['peak_memory_mb']:.0f}" if dev == "cuda" else "-"])
    args.device = "cuda"  # the header names the GPU; the CPU rows ran on the CPU it names
    body = [C.machine_header(args, seeds=[0], notes=[
        f"`--device auto` picked `{picked}` ({results['gpu']}). Students: {args.arch} common module and bricks.",
        "Each demo's default settings; the two precisions of one device take turns a report window (10 steps) "
        "at a time; steps/s counts the training steps only (setup and evaluation excluded). On the CPU "
        "`precision=auto` is float32, so its two rows are the same setting twice (a noise check).",
        "Peak GPU memory covers both runs of the pair (they share the device). The CPU runs stop after "
        "200 steps: they give the speed-up, not an accuracy.",
    ]), "", C.table(["demo", "device", "precision", "steps/s", "accuracy %", "teacher %", "peak GPU MB"], rows)]
    title = "## The CUDA path (bf16 autocast, device choice, speed)" + ("" if args.arch == "tiny" else f", {args.arch} students")
    C.write_section(args, name, title + "\n\n" + "\n".join(body))


if __name__ == "__main__":
    main()
