"""Peak memory of a factorization against the size of its data (``python -m benchmarks.scaling --memory``).

A seeded folder of 32x32 RGB PNGs (``make_shapes`` at size 32, one subfolder per shape) is
written to a scratch folder for each size; the real command, ``kfstudio factorize``, trains one
epoch on it with the shapes demo teacher (16x16 input: every image is resized). The memory of
the whole process tree (the run and its DataLoader workers) is sampled from /proc every 0.1 s:

- main peak: the run's own kernel high-water mark (VmHWM), exact;
- tree RSS: the largest sum of every process's resident memory (shared pages, such as torch's
  libraries in each forked worker, are counted once per process: an overcount);
- tree PSS: the largest sum of proportional set sizes (a shared page split between the processes
  that map it), the fairest single figure for what the run takes.

Each size runs with the defaults (small data in memory, large data streamed) and streamed with
the teacher cache off (the one part of a streamed run that grows with the data, up to
--teacher-cache-mb): 2 000 vs 50 000 streamed is the flatness comparison. The smallest is also
streamed with the cache, and the largest forced into memory, to show what streaming saves.
Each folder is removed after its runs, the scratch folder at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import _common as C

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def write_images(root: Path, n: int, seed: int = 0, chunk: int = 5000) -> Path:
    """``n`` generated 32x32 shapes as PNGs, one subfolder per shape; a few MB of memory at a time."""
    import numpy as np
    from PIL import Image

    from kfstudio.core.data.shapes import SHAPES_FACTORS, make_shapes

    for name in SHAPES_FACTORS["shape"]:
        (root / name).mkdir(parents=True, exist_ok=True)
    for start in range(0, n, chunk):
        ds = make_shapes(min(chunk, n - start), seed=seed * 1_000 + start // chunk, size=32)
        pixels = (ds.x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for i, (img, shape) in enumerate(zip(pixels, ds.labels["shape"].tolist())):
            Image.fromarray(img).save(root / SHAPES_FACTORS["shape"][shape] / f"{start + i:06d}.png")
    return root


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from each process's parent in /proc/PID/stat)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    parents[int(entry.name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the memory of a process tree until ``stop``; peaks in MB."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.main_peak = self.rss_peak = self.pss_peak = 0.0
        self.most_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = _tree(self.pid)
            rss = sum(_kb(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024
            pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
            hwm = _kb(f"/proc/{self.pid}/status", "VmHWM:") / 1024
            self.rss_peak, self.pss_peak = max(self.rss_peak, rss), max(self.pss_peak, pss)
            self.main_peak = max(self.main_peak, hwm)
            self.most_processes = max(self.most_processes, len(pids))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def one_run(args, folder: Path, out: Path, stream_above_mb: float | None, cache_mb: float | None) -> dict:
    command = [sys.executable, "-m", "kfstudio", "factorize", "--teacher", "builtin:shapes", "--data", str(folder),
               "--out", str(out), "--epochs", "1", "--batch-size", str(args.batch_size), "--device", args.device,
               "--seed", "0", "--quiet", "--no-augment"]   # the teacher cache is what is measured
    if args.device == "cpu":
        command += ["--threads", "1"]
    if stream_above_mb is not None:
        command += ["--stream-above-mb", str(stream_above_mb)]
    if cache_mb is not None:
        command += ["--teacher-cache-mb", str(cache_mb)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    meter = TreeMemory(process.pid)
    meter.start()
    stdout, stderr = process.communicate(timeout=3600)
    meter.stop()
    if process.returncode != 0:
        raise SystemExit(f"kfstudio factorize on {folder} failed:\n{stderr[-2000:]}")
    lines = stdout.splitlines()
    path = next((line for line in lines if "decoded" in line), "")
    cache = next((line for line in lines if "teacher's outputs" in line), "")
    return {"wall": time.perf_counter() - started, "load": load, "main": meter.main_peak, "rss": meter.rss_peak,
            "pss": meter.pss_peak, "processes": meter.most_processes,
            "path": "streamed" if "stream from disk" in path else "in memory",
            "cache": cache.split("(")[1].split(" of")[0] if "kept in memory (" in cache else "not cached"}


def _plans(n: int, sizes: list[int]) -> list[tuple[float | None, float | None]]:
    """(--stream-above-mb, --teacher-cache-mb) runs for a size: the defaults; streamed without the
    teacher cache (the one part of a streamed run that grows with the data, up to its budget); the
    smallest also streamed with the cache, the largest forced into memory."""
    plans: list[tuple[float | None, float | None]] = [(None, None)]
    if n == min(sizes):
        plans.append((0, None))
    plans.append((0, 0))
    if n == max(sizes) > min(sizes):
        plans.append((10**6, None))
    return plans


def main(args) -> None:
    import torch

    torch.set_num_threads(1)  # as the runs (--threads 1), so the header says what ran
    sizes = [200, 2000] if args.quick else [int(n) for n in args.sizes.split(",")]
    args.batch_size = min(args.batch_size, 128)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kf-memory-") as scratch:
        for n in sizes:
            started = time.perf_counter()
            folder = write_images(Path(scratch) / f"images-{n}", n)
            print(f"wrote {n:,} PNGs in {time.perf_counter() - started:.1f} s", flush=True)
            for threshold, cache in _plans(n, sizes):
                found = one_run(args, folder, Path(scratch) / f"out-{n}-{threshold}-{cache}", threshold, cache)
                rows.append((n, threshold, cache, found))
                print(f"{n:,} images, {found['path']}: tree PSS {found['pss']:,.0f} MB, main {found['main']:,.0f} MB, "
                      f"{found['wall']:.0f} s", flush=True)
            subprocess.run(["rm", "-rf", str(folder)], check=False)  # keep the scratch disk small
    C.write_section(args, f"memory-{args.device}", "## Memory against data size\n\n" + report_text(args, rows))


def report_text(args, rows: list) -> str:
    table = []
    for n, threshold, cache, r in rows:
        flags = [f"--stream-above-mb {threshold}"] if threshold is not None else []
        flags += [f"--teacher-cache-mb {cache}"] if cache is not None else []
        how = r["path"] + (f" ({' '.join(flags)})" if flags else "")
        table.append([f"{n:,}", how, f"{r['pss']:,.0f}", f"{r['rss']:,.0f}", f"{r['main']:,.0f}", r["processes"],
                      r["cache"], f"{r['wall']:.0f}", f"{r['load']:.2f}"])
    notes = [f"Data: generated 32x32 RGB shapes as PNGs (one subfolder per shape), teacher builtin:shapes "
             f"(16x16 input), students tiny, one epoch at batch {args.batch_size}, default --workers (half the free "
             "cores, 1 to 4), one training thread",
             "tree PSS: largest sum over the run and its workers of their proportional set size (shared pages split "
             "between processes); tree RSS: the same with resident sizes (shared pages counted in every process); "
             "main: the run's own peak (VmHWM); processes: most seen at once",
             "teacher cache: the teacher's outputs for the training images, kept when they fit --teacher-cache-mb "
             "(they grow with the data, bounded by that budget)"]
    return C.machine_header(args, notes=notes) + "\n\n" + C.table(
        ["images", "path", "tree PSS MB", "tree RSS MB", "main peak MB", "processes", "teacher cache",
         "wall s", "load at start"], table) + "\n"
