"""The Factorize page's run controls: Start / Pause / Stop & keep, the progress bar and the rate line.

The time left is the studio's own reading (``RunClock``): the steps still to go times the
seconds each step has taken since the first report, with the paused spans left out. The
child's figure came from the last window of steps alone, so it jumped with every slow step and
rose after a pause and resume.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kfstudio.gui.train.run_settings import duration
from kfstudio.gui.theme import theme_manager

# The progress text changes with every report (30+ a second); each change of a label's width asks
# the whole page to lay itself out again, so the text follows at most this often.
TEXT_REFRESH_MS = 200


class RunClock:
    """How long a run has trained, paused spans left out, and so how long it has left."""

    MIN_STEPS = 3  # fewer measured steps say too little: the child's own figure is shown meanwhile

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._first: tuple[float, int] | None = None  # (time, step) of the first report
        self._paused_s = 0.0
        self._paused_at: float | None = None

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._clock()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_s += self._clock() - self._paused_at
            self._paused_at = None

    def time_left(self, step: int, total_steps: int) -> float | None:
        """Seconds still to go at this step, or None before enough steps were timed."""
        now = self._clock()
        if self._first is None:
            self._first = (now, step)
            return None
        start, first_step = self._first
        done = step - first_step
        if done < self.MIN_STEPS:
            return None
        paused = self._paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)
        return max(0, total_steps - step) * (now - start - paused) / done


class RunBar(QWidget):
    """Buttons and progress of one run; the page connects the buttons and says what to show."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.start_button = QPushButton("Start factorizing")
        self.start_button.setShortcut(QKeySequence("Ctrl+R"))
        self.start_button.setToolTip("Train the common module and one brick per task (Ctrl+R)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setShortcut(QKeySequence("Ctrl+P"))
        self.pause_button.setToolTip("Pause or resume training; nothing is lost (Ctrl+P)")
        self.cancel_button = QPushButton("Stop && keep")
        self.cancel_button.setShortcut(QKeySequence("Ctrl+."))
        self.cancel_button.setToolTip("Stop now and keep the bricks as they are (Ctrl+.)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 2)
        buttons.addWidget(self.pause_button, 1)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("Not started")
        self.progress.setTextVisible(True)
        self.rate_label = QLabel("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.rate_label)
        self._pending = None  # (report, total epochs, time left) not shown yet
        self.clock = RunClock()
        self._said = ""  # the whole text of the last message shown in the bar
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(TEXT_REFRESH_MS)
        self._refresh.timeout.connect(self.flush)
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()

    def set_state(self, *, can_start: bool, running: bool, cancelling: bool, paused: bool, resumable: bool) -> None:
        self.start_button.setEnabled(can_start and not running)
        self.start_button.setText("Resume run" if resumable and not running else "Start factorizing")
        self.pause_button.setEnabled(running and not cancelling)
        self.cancel_button.setEnabled(running and not cancelling)
        self.pause_button.setText("Resume" if running and paused else "Pause")

    def show_step(self, report, total_epochs: int, time_left: float | None = None) -> None:
        """Show a step report now, or within TEXT_REFRESH_MS when one was shown just before.
        ``time_left``: seconds (a replay's own); by default the run clock's reading."""
        if time_left is None:
            time_left = self.clock.time_left(report.step, report.total_steps)
        self._pending = (report, total_epochs, report.eta_s if time_left is None else time_left)
        if not self._refresh.isActive():
            self.flush()
            self._refresh.start()

    def drop_pending(self) -> None:
        self._pending = None

    def say(self, text: str) -> None:
        """Put ``text`` in the progress bar, cut with "…" to the bar's width (the whole text in
        its tooltip): "Saved run 20261204-101500-digits-demo-teacher: 55 steps shown" ran past
        both ends of the bar. A step report still waiting to be shown is dropped."""
        self.drop_pending()
        self._said = text
        self.progress.setToolTip(text)
        self.progress.setFormat(self._fitted(text))

    def _fitted(self, text: str) -> str:
        room = self.progress.contentsRect().width() - 2 * self.progress.fontMetrics().averageCharWidth()
        return self.progress.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, max(40, room))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._said and self.progress.format() != self._said:
            self.progress.setFormat(self._fitted(self._said))

    def flush(self) -> None:
        """Show the newest step report that is still waiting, if any."""
        if self._pending is None:
            return
        report, total_epochs, time_left = self._pending
        self._pending = None
        fraction = report.step / max(1, report.total_steps)
        self.progress.setValue(int(fraction * 1000))
        self._said = ""
        self.progress.setToolTip("")
        self.progress.setFormat(f"Epoch {report.epoch:.1f} of {total_epochs} · {fraction:.0%} · "
                                f"{duration(time_left)} left")
        self.rate_label.setText(f"{report.samples_per_s:,.0f} samples/s · loss {report.losses.get('loss', 0):.3f} · "
                                f"step {report.step} of {report.total_steps}")

    def _on_theme_changed(self) -> None:
        self.progress.setMinimumHeight(int(24 * theme_manager().scale))
