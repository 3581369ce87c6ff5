"""Scaling out: training samples/s of one run on 1 vs N processes (gloo on the CPU, NCCL on GPUs);
with --memory, the peak memory of a run against the size of its data (see benchmarks/_memory.py).

    python -m benchmarks.scaling [--quick] [--device cpu|cuda] [--procs 1,2] [--common tiny]
    python -m benchmarks.scaling --memory [--sizes 2000,50000] [--quick]

Every run is the real command, ``kfstudio factorize`` (``--nproc-per-node N`` for N > 1, which
starts torchrun's agent), on the same data, seed and global batch. The figure is the median of
the samples/s that process 0 reports (the whole batch of every process per second of
training), read from the run's reports.jsonl after the first epoch (start-up, the teacher pass
and the first-epoch warm-up are left out; the wall time column keeps them). Runs alternate
their order from round to round. On the CPU every process trains with one thread.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common as C


def _procs(args) -> list[int]:
    if args.procs:
        return [int(n) for n in args.procs.split(",")]
    if args.device.startswith("cuda"):
        import torch
        return sorted({1, max(1, torch.cuda.device_count())})
    return [1, 2]


def one_run(args, n: int, epochs: int, out: Path) -> dict:
    command = [sys.executable, "-m", "kfstudio", "factorize", "--teacher", args.data, "--out", str(out),
               "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--device", args.device,
               "--common", args.common, "--task-net", args.common, "--seed", "0", "--quiet",
               "--no-augment"]   # the teacher's cached outputs, as these tables were measured before shifted copies
    if args.device == "cpu":
        command += ["--threads", "1"]
    if n > 1:
        command += ["--nproc-per-node", str(n)] + (["--sync-bn", "--infomax-stats", "global"] if args.global_stats else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kfstudio factorize with {n} process(es) failed:\n{done.stderr[-2000:]}")
    reports = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines() if line.strip()]
    setup = next(r for r in reports if r["kind"] == "setup")
    steps = [r for r in reports if r["kind"] == "step"]
    after_warmup = [r for r in steps if r["step"] > setup["steps_per_epoch"]] or steps
    accuracy = json.loads((out / "common.json").read_text())["metrics"]
    return {"rate": statistics.median(r["samples_per_s"] for r in after_warmup), "wall": wall,
            "steps": setup["total_steps"], "metrics": accuracy}


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--procs", default=None, help="process counts, e.g. 1,2 (default: 1,2 on the CPU, 1 and every GPU)"),
        p.add_argument("--data", default="builtin:digits"),
        p.add_argument("--common", default="tiny", help="the students' architecture (tiny, resnet, mobilenetv2)"),
        p.add_argument("--batch-size", type=int, default=256),
        p.add_argument("--epochs", type=int, default=6),
        p.add_argument("--rounds", type=int, default=3),
        p.add_argument("--global-stats", action="store_true", help="N > 1 with --sync-bn --infomax-stats global"),
        p.add_argument("--memory", action="store_true", help="peak memory of a run on a generated image folder of "
                       "each of --sizes images (streamed from disk above the threshold)"),
        p.add_argument("--sizes", default="2000,50000", help="image counts for --memory")))
    if args.memory:
        from benchmarks import _memory
        return _memory.main(args)
    procs = _procs(args)
    if args.device == "cpu":
        import torch
        torch.set_num_threads(1)  # as every run's processes (--threads 1), so the header says what ran
    rounds, epochs = (1, 2) if args.quick else (args.rounds, args.epochs)
    found: dict[int, list[dict]] = {n: [] for n in procs}
    with tempfile.TemporaryDirectory(prefix="kf-scaling-") as scratch:
        for r in range(rounds):
            for n in procs if r % 2 == 0 else list(reversed(procs)):
                found[n].append(one_run(args, n, epochs, Path(scratch) / f"r{r}-n{n}"))
                print(f"round {r + 1}, {n} process(es): {found[n][-1]['rate']:,.0f} samples/s", flush=True)
    name, title = f"scaling-{args.device}", args.device
    if args.global_stats:
        name, title = name + "-global", title + ", --sync-bn --infomax-stats global"
    C.write_section(args, name, f"## Scaling out ({title})\n\n" + report_text(args, procs, found, epochs))


def report_text(args, procs: list[int], found: dict[int, list[dict]], epochs: int) -> str:
    base = statistics.median(run["rate"] for run in found[procs[0]])
    rows = []
    for n in procs:
        rates = [run["rate"] for run in found[n]]
        rate = statistics.median(rates)
        rows.append([n, f"{rate:,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}", f"{rate / base:.2f}",
                     f"{statistics.median(run['wall'] for run in found[n]):.1f}", found[n][0]["steps"]])
    stats = "--sync-bn --infomax-stats global" if args.global_stats else "per-process statistics (the default)"
    notes = [f"Data {args.data}, students {args.common}, global batch {args.batch_size}, {epochs} epochs, "
             f"{len(found[procs[0]])} round(s) per process count; N > 1: {stats}",
             "samples/s: median of process 0's reports after the first epoch (all processes' samples); "
             "wall: the whole command, start-up, torchrun's agent and writing the files included"]
    if args.device == "cpu":
        notes.append(f"CPU: one thread per process, gloo; this machine has {os.cpu_count()} cores shared with "
                     "other work, so N processes contend for the same cores: the figure shows the cost of the "
                     "extra processes and their all-reduce, not a speed-up")
    return C.machine_header(args, notes=notes) + f"\n\nTimed on: {C.timing_caption()}.\n\n" + C.table(
        ["processes", "samples/s", "range over rounds", "vs 1", "wall s", "steps"], rows) + "\n"


if __name__ == "__main__":
    main()
