"""The Factorize page's run controls: Start / Pause / Stop & keep, the progress bar and the rate line."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from kfstudio.gui.train.run_settings import duration
from kfstudio.gui.theme import theme_manager

# The progress text changes with every report (30+ a second); each change of a label's width asks
# the whole page to lay itself out again, so the text follows at most this often.
TEXT_REFRESH_MS = 200


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
        self._pending = None  # (report, total epochs) not shown yet
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

    def show_step(self, report, total_epochs: int) -> None:
        """Show a step report now, or within TEXT_REFRESH_MS when one was shown just before."""
        self._pending = (report, total_epochs)
        if not self._refresh.isActive():
            self.flush()
            self._refresh.start()

    def drop_pending(self) -> None:
        self._pending = None

    def flush(self) -> None:
        """Show the newest step report that is still waiting, if any."""
        if self._pending is None:
            return
        report, total_epochs = self._pending
        self._pending = None
        fraction = report.step / max(1, report.total_steps)
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(f"Epoch {report.epoch:.1f} of {total_epochs} · {fraction:.0%} · "
                                f"{duration(report.eta_s)} left")
        self.rate_label.setText(f"{report.samples_per_s:,.0f} samples/s · loss {report.losses.get('loss', 0):.3f} · "
                                f"step {report.step} of {report.total_steps}")

    def _on_theme_changed(self) -> None:
        self.progress.setMinimumHeight(int(24 * theme_manager().scale))
