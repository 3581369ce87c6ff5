"""What the GUI benchmarks share: the timer probe's tick, the time the hypervisor stole from a
CPU, the time a thread waited for a CPU, the CPU the GUI thread ran on, and waiting on the event
loop (never a busy wait)."""

from __future__ import annotations

import os
from pathlib import Path

TICK_MS = 10
TIMEOUT_S = 300
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stolen_ms() -> list[float]:
    """Time the hypervisor has stolen from each CPU so far (ms; empty where /proc/stat has no steal)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return []
    return [int(line.split()[8]) * 1000 / USER_HZ for line in lines[1:] if line.startswith("cpu")]


def queued_ms() -> float | None:
    """Time the calling thread has spent runnable but waiting for a CPU behind other processes
    (Linux schedstat, ms so far), else None. A stall made of this is the machine's load, not the
    window's own work."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


def current_cpu() -> int | None:
    """The CPU the calling thread last ran on (Linux), else None."""
    try:
        return int(Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def wait_until(condition, timeout_s: float = TIMEOUT_S) -> None:
    """Run the event loop (no busy wait) until ``condition()`` holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    if condition():
        return
    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: condition() and loop.quit())
    poll.start(5)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    poll.stop()
    if not condition():
        raise SystemExit(f"Gave up waiting after {timeout_s:.0f} s.")
