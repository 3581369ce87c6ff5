"""The window under load: GUI-thread stalls, plot redraw rate and memory during a live run.

Drives the real studio pieces offscreen: a ``MainWindow``'s Factorize page
(kfstudio.gui.train.page + plots + worker) runs the digits demo with ``report_every=1``
until 10 000 steps have been reported. Meanwhile, in the GUI thread:

- a 10 ms precise QTimer measures its own lateness (a stall = a tick that came late);
- each tick also reads the GUI thread's CPU time and, on Linux, the time the hypervisor stole
  from the CPU the thread ran on (/proc/stat "steal"): on a shared virtual machine the host
  sometimes does not run this machine's CPU for 30-100 ms, a stall no program can prevent, so
  the table gives the lateness with and without the stolen time;
- the loss plot's ``redraw`` is wrapped to count redraws and time each one;
- the process RSS is sampled once a second.

Stalls are counted while training reports arrive (first to last step report); the start of the
run and its end (the switch to the Build page) are reported on their own lines.

Targets: no stall over 50 ms, p99 <= 20 ms, redraws >= 20 Hz while reports arrive, memory flat.

    python -m benchmarks.gui_responsiveness [--quick] [--steps N]
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks._gui_probe import TICK_MS, current_cpu, stolen_ms, wait_until  # noqa: E402
from benchmarks import _common as C  # noqa: E402

STALL_TARGET_MS = 50
P99_TARGET_MS = 20
REDRAW_TARGET_HZ = 20


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Probe:
    """GUI-thread measurements: timer lateness, redraws, memory."""

    def __init__(self, page) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.page = page
        self.ticks: list[tuple[float, float, float, float]] = []  # (time since start, lateness, CPU, stolen ms)
        self.redraws: list[tuple[float, float, int]] = []  # (time, duration ms, points drawn)
        self.memory: list[tuple[float, int, float]] = []  # (time, steps seen, RSS MB)
        self.start = time.perf_counter()
        self._last = self.start
        self._cpu_last = time.thread_time()
        self._stolen_last = stolen_ms()
        self._where_last = current_cpu()
        self.tick = QTimer(page)
        self.tick.setTimerType(Qt.TimerType.PreciseTimer)
        self.tick.setInterval(TICK_MS)
        self.tick.timeout.connect(self._on_tick)
        self.mem = QTimer(page)
        self.mem.setInterval(1000)
        self.mem.timeout.connect(self._on_mem)
        plot = page.loss_plot
        original = plot.redraw

        def timed_redraw():
            t = time.perf_counter()
            original()
            self.redraws.append((t - self.start, (time.perf_counter() - t) * 1000, plot.point_count))

        plot.redraw = timed_redraw
        self.reports: list[float] = []
        page.report_received.connect(self._on_report)

    def _on_report(self, report) -> None:
        if report.kind == "step":
            self.reports.append(time.perf_counter() - self.start)

    def begin(self) -> None:
        self.start = self._last = time.perf_counter()
        self._cpu_last, self._stolen_last, self._where_last = time.thread_time(), stolen_ms(), current_cpu()
        self.tick.start()
        self.mem.start()
        self._on_mem()

    def stop(self) -> None:
        self.tick.stop()
        self.mem.stop()
        self._on_mem()

    def _on_tick(self) -> None:
        now, cpu, stolen, where = time.perf_counter(), time.thread_time(), stolen_ms(), current_cpu()
        # the thread ran on the CPU it was on at the last tick or the one it is on now
        cpus = {c for c in (self._where_last, where) if c is not None and c < min(len(stolen), len(self._stolen_last))}
        lost = max((stolen[c] - self._stolen_last[c] for c in cpus), default=0.0)
        self.ticks.append((now - self.start, max(0.0, (now - self._last) * 1000 - TICK_MS),
                           (cpu - self._cpu_last) * 1000, lost))
        self._last, self._cpu_last, self._stolen_last, self._where_last = now, cpu, stolen, where

    def _on_mem(self) -> None:
        self.memory.append((time.perf_counter() - self.start, self.page.step_count, rss_mb()))


def steps_per_epoch(n_train: int, batch: int) -> int:
    from kfstudio.core.runs import batches
    return len(batches(n_train, batch, 0, 0))


def run(args, home: Path) -> dict:
    from PySide6.QtCore import QEventLoop, QTimer

    from kfstudio.gui.app import make_application
    from kfstudio.gui.main_window import MainWindow

    app = make_application()
    from kfstudio.gui.theme import configure_pyqtgraph

    configure_pyqtgraph()  # the studio's own plot settings (run_studio does the same)
    window = MainWindow(home=home, autosave_s=3600)
    window.resize(1280, 800)
    window.show()

    window.open_demo("digits")   # in the background
    wait_until(lambda: not window.is_loading())
    if window.choice is None:
        raise SystemExit("The digits demo did not load.")
    page = window.factorize_page
    window.tabs.setCurrentWidget(page)
    page.size_combo.setCurrentText("Small & fast")
    per_epoch = steps_per_epoch(len(page.choice.split.train), args.batch)
    epochs = max(1, math.ceil(args.steps / per_epoch))
    page.config_overrides = {"report_every": 1, "batch_size": args.batch, "epochs": epochs, "device": args.device,
                             "tasks": args.tasks}
    app.processEvents()
    probe = Probe(page)
    loop = QEventLoop()
    outcome = {}
    page.run_saved.connect(lambda folder, cancelled: (outcome.update(saved=folder), loop.quit()))
    page.run_failed.connect(lambda message: (outcome.update(failed=message), loop.quit()))
    QTimer.singleShot(args.limit_s * 1000, loop.quit)
    probe.begin()
    t0 = time.perf_counter()
    if not page.start():
        raise SystemExit("The Factorize page did not start: " + outcome.get("failed", "?"))
    loop.exec()
    wall = time.perf_counter() - t0
    probe.stop()
    if "saved" not in outcome:
        page.stop_and_wait()
    for _ in range(5):
        app.processEvents()
    window.recovery.end_session() if hasattr(window.recovery, "end_session") else None
    window.hide()
    return {"probe": probe, "wall": wall, "epochs": epochs, "per_epoch": per_epoch, "outcome": outcome,
            "steps": page.step_count, "config": page.config()}


def _lateness_figures(lateness: list[float]) -> tuple[float, float, int]:
    """Longest, 99th percentile, and how many over the stall target."""
    if len(lateness) < 100:
        return (max(lateness, default=math.nan), math.nan, sum(late > STALL_TARGET_MS for late in lateness))
    return max(lateness), statistics.quantiles(lateness, n=100)[98], sum(late > STALL_TARGET_MS for late in lateness)


def summarize(result: dict) -> dict:
    p = result["probe"]
    first, last = (p.reports[0], p.reports[-1]) if p.reports else (0.0, 0.0)
    during = [tick for tick in p.ticks if first <= tick[0] <= last]
    wall = [late for _, late, _, _ in during]
    own = [max(0.0, late - lost) for _, late, _, lost in during]  # what is left once the host's theft is taken off
    active = [r for r in p.redraws if first <= r[0] <= last]
    span = (active[-1][0] - active[0][0]) if len(active) > 1 else float("nan")
    mem = p.memory
    warm = next((m for m in mem if m[1] >= min(1000, result["steps"] // 10)), mem[0])
    end = mem[-1]
    windows = {int(t * 1000 // 50) for t in p.reports}  # 50 ms windows in which a report arrived
    report_span = last - first
    s = {
        "possible_hz": len(windows) / report_span if report_span > 0 else math.nan,
        "report_hz": len(p.reports) / report_span if report_span > 0 else math.nan,
        "ticks": len(during),
        "start_ms": max((late for t, late, _, _ in p.ticks if t < first), default=math.nan),
        "end_ms": max((late for t, late, _, _ in p.ticks if t > last), default=math.nan),
        "stolen_s": sum(lost for *_, lost in during) / 1000,
        "ticks_robbed": sum(lost > 0 for *_, lost in during),
        "gui_cpu": sum(cpu for _, _, cpu, _ in during) / 1000 / max(1e-9, report_span),
        "redraw_hz": (len(active) - 1) / span if span and span > 0 else math.nan,
        "redraws": len(p.redraws),
        "redraw_ms_mean": statistics.mean(d for _, d, _ in p.redraws) if p.redraws else math.nan,
        "redraw_ms_max": max((d for _, d, _ in p.redraws), default=math.nan),
        "redraw_ms_last": statistics.mean(d for _, d, _ in p.redraws[-20:]) if p.redraws else math.nan,
        "rss_start": mem[0][2], "rss_warm": warm[2], "rss_warm_steps": warm[1], "rss_end": end[2],
        "rss_max": max(m[2] for m in mem), "steps_per_s": result["steps"] / max(1e-9, report_span),
        "span_s": report_span,
    }
    s["max_stall_ms"], s["p99_ms"], s["stalls_over_target"] = _lateness_figures(wall)
    s["own_max_ms"], s["own_p99_ms"], s["own_over_target"] = _lateness_figures(own)
    return s


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--steps", type=int, default=10_000),
        p.add_argument("--batch", type=int, default=16),
        p.add_argument("--tasks", default="one-vs-rest:0,1,7", help="a subset of the digit bricks, to finish sooner"),
        p.add_argument("--limit-s", type=int, default=900)))
    if args.quick:
        args.steps = 300
    import torch
    torch.set_num_threads(1)  # the page trains with one thread; the GUI thread keeps the other core
    with tempfile.TemporaryDirectory(prefix="kf-gui-bench-") as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")  # no saved settings, no recovery prompt
        result = run(args, Path(tmp))
    s = summarize(result)
    ok = lambda good: "meets" if good else "**misses**"  # noqa: E731
    cfg = result["config"]
    p = result["probe"]
    rows = [
        ["longest GUI-thread stall (10 ms timer lateness)", f"{s['max_stall_ms']:.1f} ms",
         f"<= {STALL_TARGET_MS} ms", ok(s["max_stall_ms"] <= STALL_TARGET_MS)],
        ["99th percentile lateness", f"{s['p99_ms']:.1f} ms", f"<= {P99_TARGET_MS} ms", ok(s["p99_ms"] <= P99_TARGET_MS)],
        [f"ticks later than {STALL_TARGET_MS} ms", f"{s['stalls_over_target']} of {s['ticks']}", "0",
         ok(s["stalls_over_target"] == 0)],
        ["time the host stole from the window's CPU (hypervisor steal)",
         f"{s['stolen_s']:.1f} s of {s['span_s']:.0f} s, in {s['ticks_robbed']} ticks", "", "no program can prevent it"],
        ["the same three, less the stolen time: longest / p99 / over 50 ms",
         f"{s['own_max_ms']:.1f} / {s['own_p99_ms']:.1f} ms / {s['own_over_target']}",
         f"<= {STALL_TARGET_MS} / {P99_TARGET_MS} ms / 0",
         ok(s["own_max_ms"] <= STALL_TARGET_MS and s["own_p99_ms"] <= P99_TARGET_MS)],
        ["GUI thread's CPU use while training", f"{s['gui_cpu']:.0%} of one core", "", ""],
        ["longest stall at the start (Start pressed, before the first step) / at the end (the switch to Build)",
         f"{s['start_ms']:.0f} / {s['end_ms']:.0f} ms", "", "not counted above"],
        ["loss-plot redraw rate while training", f"{s['redraw_hz']:.1f} Hz", f">= {REDRAW_TARGET_HZ} Hz",
         ok(s["redraw_hz"] >= REDRAW_TARGET_HZ)],   # strict: 19.5 Hz is not 20 (the next row says why)
        ["reports arriving / 50 ms windows with new data", f"{s['report_hz']:.1f} per s / {s['possible_hz']:.1f} Hz",
         "", "the plot redraws only when new data came, so its rate is capped by the second number"],
        ["redraw time, mean / max / last 20", f"{s['redraw_ms_mean']:.1f} / {s['redraw_ms_max']:.1f} / "
                                              f"{s['redraw_ms_last']:.1f} ms", "", ""],
        ["RSS: at start / after warm-up / at the end / peak",
         f"{s['rss_start']:.0f} / {s['rss_warm']:.0f} (step {s['rss_warm_steps']}) / {s['rss_end']:.0f} / "
         f"{s['rss_max']:.0f} MB", "flat after warm-up", ok(s["rss_end"] - s["rss_warm"] < 20)],
        ["RSS growth after warm-up", f"{s['rss_end'] - s['rss_warm']:+.1f} MB", "< 20 MB", ""],
        ["reports shown (StepReports)", f"{result['steps']:,}", f"{args.steps:,}", ""],
        ["training speed inside the studio", f"{s['steps_per_s']:.0f} steps/s", "", ""],
    ]
    figs = _plots(p)
    outcome = result["outcome"]
    status = "finished and saved its bricks" if "saved" in outcome else f"did not finish: {outcome}"
    body = [C.machine_header(args, [cfg.seed], notes=[
        f"Run: digits demo (tasks {cfg.tasks}) on the real Factorize page (MainWindow, offscreen), preset 'Small & fast' (common width "
        f"{cfg.common_width}, bricks {cfg.task_width}), batch {cfg.batch_size}, report_every 1, {result['epochs']} "
        f"epochs x {result['per_epoch']} steps; the worker trains with {cfg.num_threads} thread; it {status} in "
        f"{result['wall']:.0f} s.",
        f"GUI thread: a {TICK_MS} ms PreciseTimer records how late each tick comes, the thread's CPU time and the "
        "hypervisor's steal on its CPU (/proc/stat, 10 ms resolution); stalls count from the first to the last step "
        "report; the loss plot's redraw is timed; RSS sampled every second."]),
        "", f"Timed on: {C.timing_caption(cfg.num_threads)} (the worker's training threads).", "",
        C.table(["measure", "value", "target", ""], rows), "", *figs]
    C.write_section(args, "gui", "## The window under load\n\n" + "\n".join(body))


def _plots(p: Probe) -> list[str]:
    path1 = C.FIG_DIR / "gui_rss.png"
    C.line_plot(path1, "process memory during a live run (report_every = 1)", "reported steps", "RSS (MB)",
                {"RSS": ([m[1] for m in p.memory], [m[2] for m in p.memory])})
    buckets: dict[int, float] = {}
    own: dict[int, float] = {}
    for t, late, _cpu, lost in p.ticks:
        buckets[int(t)] = max(buckets.get(int(t), 0.0), late)
        own[int(t)] = max(own.get(int(t), 0.0), late - lost)
    path2 = C.FIG_DIR / "gui_stalls.png"
    C.line_plot(path2, "GUI thread: worst timer lateness in each second", "seconds", "ms late",
                {"worst lateness": (list(buckets), list(buckets.values())),
                 "worst lateness less the host's steal": (list(own), list(own.values())),
                 "redraw time": ([r[0] for r in p.redraws[::10]], [r[1] for r in p.redraws[::10]])},
                hline=STALL_TARGET_MS)
    return [f"![memory](benchmarks/{path1.name})", f"![stalls](benchmarks/{path2.name})"]


if __name__ == "__main__":
    main()
