"""Replay a recorded run for a talk: its saved reports play into the same plots at 1x-20x.

The reports of a run (reports.jsonl) carry the training clock (``StepReport.elapsed_s``);
a report is shown once the replay clock, running ``speed`` times faster, has passed its
time. Setup, eval and checkpoint reports keep their place between the steps around them.
"""

from __future__ import annotations

from PySide6.QtCore import QElapsedTimer, QObject, QTimer, Signal

SPEEDS = (1, 2, 5, 10, 20)
TICK_MS = 30


def report_times(reports: list) -> list[float]:
    """Seconds after the first step at which each report arrived (non-step reports inherit)."""
    times, last = [], None
    for report in reports:
        if report.kind == "step":
            last = report.elapsed_s
        times.append(last)
    first = next((t for t in times if t is not None), 0.0)
    return [0.0 if t is None else max(0.0, t - first) for t in times]


class RunReplay(QObject):
    """Emits a recorded run's reports on the training clock, ``speed`` times faster."""

    report = Signal(object)
    finished = Signal()

    def __init__(self, reports: list, speed: float, parent=None) -> None:
        super().__init__(parent)
        self.reports = list(reports)
        self.times = report_times(self.reports)
        self.speed = max(0.1, float(speed))
        self.index = 0
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._on_timer_timeout)

    @property
    def duration_s(self) -> float:
        """How long the whole replay takes at this speed."""
        return (self.times[-1] if self.times else 0.0) / self.speed

    def time_left_s(self) -> float:
        """How long the replay still plays."""
        return max(0.0, self.duration_s - self._clock.elapsed() / 1000) if self._clock.isValid() else self.duration_s

    def start(self) -> None:
        self._clock.start()
        self._timer.start()
        self._on_timer_timeout()  # the setup report and the first steps at once

    def stop(self) -> None:
        self._timer.stop()

    def is_playing(self) -> bool:
        return self._timer.isActive()

    def _on_timer_timeout(self) -> None:
        now = self._clock.elapsed() / 1000 * self.speed
        while self.index < len(self.reports) and self.times[self.index] <= now:
            self.report.emit(self.reports[self.index])
            self.index += 1
        if self.index >= len(self.reports):
            self._timer.stop()
            self.finished.emit()
