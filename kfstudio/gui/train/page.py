"""The Factorize page: pick a device and a student size, start, watch, pause, cancel.

The run goes to a child process (``FactorizeProcess``, kfstudio.gui.train.worker); its reports
arrive through a pipe and are buffered into the plots, which redraw on their own 20 Hz
timer. Pause really blocks the training loop; cancel keeps what was learned and still
writes the bricks. When the files are written the page emits ``run_saved(folder)``. If
the child dies (crash, kill, out of memory) the page says so and offers "Resume run"
from the last checkpoint, which every epoch writes into the run folder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QLabel, QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from kfstudio.core.devices import default_threads, list_devices
from kfstudio.core.errors import KFError
from kfstudio.core.factorize import FactorizeConfig, sized_config
from kfstudio.gui.path_picker import FOLDER, PathPicker
from kfstudio.gui.train.budget_box import BudgetBox
from kfstudio.gui.train.estimates import LatestEstimate
from kfstudio.gui.train.objective_panel import InfoMaxBadge, ObjectivePanel
from kfstudio.gui.panel_stack import VerticalScroll
from kfstudio.gui.train.plots.accuracy import AccuracyPlotWidget
from kfstudio.gui.train.plots.loss import LossPlotWidget
from kfstudio.gui.recovery import studio_home
from kfstudio.gui.train.run_bar import RunBar
from kfstudio.gui.train.run_view import RunView
from kfstudio.gui.train.run_settings import (DEFAULT_PRESET, PRESETS, device_options, estimate_cost, estimate_run_bytes,
                                       human_bytes)
from kfstudio.gui.train.teacher_wizard import TeacherChoice
from kfstudio.gui.theme import scale_splitter, theme_manager
from kfstudio.gui.train.worker import ChildRunControl, FactorizeProcess


class FactorizePage(RunView, QWidget):
    """Set up and watch one factorization run at a time."""

    run_started = Signal()
    run_saved = Signal(str, bool)      # folder, cancelled
    run_failed = Signal(str)
    report_received = Signal(object)   # every report, after the page has taken it
    status_message = Signal(str)
    change_teacher_requested = Signal()

    def __init__(self, runs_home: Path | None = None, parent=None) -> None:
        super().__init__(parent)
        self.runs_home = Path(runs_home) if runs_home else studio_home() / "runs"
        self.choice: TeacherChoice | None = None
        self.config_overrides: dict = {}
        self.worker: FactorizeProcess | None = None
        self.control: ChildRunControl | None = None
        self.resumable: tuple[FactorizeConfig, Path, int] | None = None  # a run that died: config, folder, processes
        self.step_count = 0
        self.last_folder: Path | None = None
        self.shown_folder: Path | None = None  # the run whose curves the plots show
        self.replay = None  # a RunReplay playing a recorded run, if any
        self._total_epochs = 1
        self._last_epoch = 0.0
        self._build_ui()
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()
        self._update_buttons()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.summary = QLabel("No teacher yet. Open a demo or load a teacher from the Welcome page.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.change_button = QPushButton("Change teacher…")
        self.change_button.setToolTip("Load another teacher, data or tasks (Ctrl+Shift+N)")
        self.change_button.clicked.connect(self.change_teacher_requested)

        self.device_combo = QComboBox()
        self.device_combo.setToolTip("Where to train. GPUs are listed with their free memory; with several GPUs, "
                                     "\"All N GPUs\" trains on every one of them at once.")
        for option in device_options(list_devices(cpu_threads=default_threads(reserve=1))):  # a core for the window
            self.device_combo.addItem(option.label, option)
            self.device_combo.setItemData(self.device_combo.count() - 1, option.label, Qt.ItemDataRole.ToolTipRole)
        self.device_combo.currentIndexChanged.connect(self._on_settings_changed)
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000, value=20)
        self.epochs_spin.setToolTip("How many passes over the training images")
        self.epochs_spin.valueChanged.connect(self._on_settings_changed)
        self.size_combo = QComboBox()
        for name, (_c, _t, tip) in PRESETS.items():
            self.size_combo.addItem(name)
            self.size_combo.setItemData(self.size_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.size_combo.setCurrentText(DEFAULT_PRESET)
        self.size_combo.setToolTip("How big the common module and the task bricks are")
        self.size_combo.currentIndexChanged.connect(self._on_settings_changed)
        self.budget_box = BudgetBox()
        self.estimates = LatestEstimate(self)   # the cost and memory estimates, worked out in a worker
        self.budget_box.changed.connect(self._on_settings_changed)
        self.memory_label = QLabel("")
        self.memory_label.setWordWrap(True)
        self.folder_picker = PathPicker(FOLDER, "Save the run's files in", start=lambda: str(self.runs_home),
                                        button_text="…", button_tooltip="Choose the folder for this run's files",
                                        placeholder=f"automatic, under {self.runs_home}",
                                        tooltip="Where the common module and bricks are written; empty = a new "
                                                "folder in the studio's data folder")
        self.folder_edit = self.folder_picker.edit

        form = QFormLayout()
        form.addRow("Device", self.device_combo)
        form.addRow("", self.memory_label)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Student size", self.size_combo)
        form.addRow("Cost", self.budget_box)
        form.addRow("Save in", self.folder_picker)
        self.objective_panel = ObjectivePanel()
        self.objective_panel.changed.connect(self._on_settings_changed)

        self.run_bar = RunBar()
        self.start_button, self.pause_button = self.run_bar.start_button, self.run_bar.pause_button
        self.cancel_button, self.progress, self.rate_label = (self.run_bar.cancel_button, self.run_bar.progress,
                                                              self.run_bar.rate_label)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.health_badge = InfoMaxBadge()
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setPlaceholderText("What the run reports appears here.")
        self.log.setMaximumBlockCount(500)

        setup = QGroupBox("Run")
        setup_layout = QVBoxLayout(setup)
        setup_layout.addLayout(form)
        setup_layout.addWidget(self.objective_panel)
        setup_layout.addWidget(self.run_bar)
        setup_layout.addWidget(self.health_badge)

        teacher_box = QGroupBox("What is factorized")
        teacher_layout = QVBoxLayout(teacher_box)
        teacher_layout.addWidget(self.summary)
        teacher_layout.addWidget(self.change_button, 0, Qt.AlignmentFlag.AlignLeft)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(teacher_box)
        left_layout.addWidget(setup)
        left_layout.addWidget(self.log, 1)

        self.loss_plot = LossPlotWidget()
        self.accuracy_plot = AccuracyPlotWidget()
        plots = QSplitter(Qt.Orientation.Vertical)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.accuracy_plot)
        plots.setSizes([500, 350])

        self.splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(VerticalScroll(left))  # on a short screen the settings scroll
        splitter.addWidget(plots)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 900])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    # ------------------------------------------------------------------ state
    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def set_choice(self, choice: TeacherChoice) -> None:
        """What to factorize: a loaded teacher, its data and tasks."""
        self.choice = choice
        self.resumable = None
        self.summary.setText(choice.summary_html())
        self._on_settings_changed()
        self._update_buttons()

    def preset(self) -> tuple[float, float]:
        common, task, _tip = PRESETS[self.size_combo.currentText()]
        return common, task

    def processes(self) -> int:
        """How many processes the chosen device runs (more than one: "All N GPUs")."""
        option = self.device_combo.currentData()
        return option.processes if option is not None else 1

    def config(self) -> FactorizeConfig:
        """The config the Start button would run (raises KFError for bad settings)."""
        if self.choice is None:
            raise KFError("Load a teacher first (Welcome page: a demo, or New from teacher).")
        return self.config_maker()(self.choice)

    def config_maker(self):
        """The page's settings now, as a function of a teacher choice to its config: read here, on
        the GUI thread, it may run in a worker."""
        common, task = self.preset()
        device = self.device_combo.currentData()
        base = {"epochs": self.epochs_spin.value(), "common_width": common, "task_width": task,
                "device": device.name if device else "cpu",
                "num_threads": (device.threads if device and device.threads else 1)}
        extra = {**self.budget_box.settings(), "imb": self.objective_panel.weights(),
                 "gaussian_bricks": self.objective_panel.gaussian_bricks(), "z_dim": self.objective_panel.z_dim(),
                 "augment": self.objective_panel.augment(),
                 **(self.config_overrides or {})}
        return lambda choice: replace(choice.config(**base), **extra)

    def _on_settings_changed(self, *_args) -> None:
        """Work out the cost and memory estimates for the settings now, in a worker (sizing for a
        budget builds several candidate networks); the labels say so meanwhile."""
        if self.choice is None:
            self.estimates.cancel()
            self.memory_label.setText("")
            self.budget_box.show_estimate("")
            return
        try:
            config = self.config()
        except KFError as exc:
            self.estimates.cancel()
            self._estimate_failed(str(exc))
            return
        choice, processes = self.choice, self.processes()
        self.budget_box.show_estimate("Working out what the students cost…")

        def job() -> tuple[str, tuple[int, int]]:
            sized, sizing = sized_config(config, choice.teacher, choice.tasks)
            return estimate_cost(choice, sized, sizing), estimate_run_bytes(choice, sized, processes)
        self.estimates.start(job, self._show_estimates, self._estimate_failed)

    def _show_estimates(self, estimates: tuple[str, tuple[int, int]]) -> None:
        cost, (params, need) = estimates
        self.budget_box.show_estimate(cost)
        device = self.device_combo.currentData()
        each = " on each GPU" if self.processes() > 1 else ""
        text = f"{params:,} student parameters; about {human_bytes(need)} of memory{each} for this run"
        if device is not None and device.free_bytes:
            fits = "fits" if need < device.free_bytes else "does NOT fit"
            text += f" ({fits} in the {human_bytes(device.free_bytes)} free)"
        self.memory_label.setText(text + ".")

    def _estimate_failed(self, message: str) -> None:
        self.memory_label.setText(message)
        self.budget_box.show_estimate(message)

    def _update_buttons(self) -> None:
        running = self.is_running
        cancelling = running and self.control is not None and self.control.cancelled
        self.run_bar.set_state(can_start=self.choice is not None, running=running, cancelling=cancelling,
                               paused=running and self.control.paused, resumable=self.resumable is not None)
        for w in (self.device_combo, self.epochs_spin, self.size_combo, self.budget_box, self.folder_edit,
                  self.change_button, self.objective_panel):
            w.setEnabled(not running)

    def _run_folder(self) -> Path:
        if self.folder_edit.text().strip():
            return Path(self.folder_edit.text().strip()).expanduser()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = self.choice.teacher.name.replace(" ", "-") if self.choice else "run"
        folder = self.runs_home / f"{stamp}-{name}"
        n = 1
        while folder.exists():
            n += 1
            folder = self.runs_home / f"{stamp}-{name}-{n}"
        return folder

    # ------------------------------------------------------------------ run control
    def start(self) -> bool:
        """Start a run in a child process; False (with a message) when the settings are wrong.

        After a run died, this resumes it from its last checkpoint, into the same folder."""
        if self.is_running:
            return False
        resuming = self.resumable is not None
        try:
            if resuming:
                config, folder, processes = self.resumable
            else:
                folder, processes = self._run_folder(), self.processes()
                config = replace(self.config(), checkpoint=str(folder / "checkpoint.pt"))
        except KFError as exc:
            self.run_failed.emit(str(exc))
            return False
        self._run_config = config
        self.stop_replay()
        self.shown_folder = Path(folder)
        if resuming:
            config = replace(config, resume=config.checkpoint)
        self.control = ChildRunControl()
        self.worker = FactorizeProcess(config, folder, self.control, parent=self, processes=processes)
        self.worker.report.connect(self._on_worker_report)
        self.worker.saved.connect(self._on_worker_saved)
        self.worker.failed.connect(self._on_worker_failed)
        self.worker.finished.connect(self._on_worker_finished)
        self.worker.blocked_changed.connect(self._on_worker_blocked_changed)
        self._total_epochs = config.epochs
        self.step_count = 0
        self.loss_plot.reset()
        self.accuracy_plot.reset()
        self.log.clear()
        self.health_badge.reset(enabled=config.imb.l_feat > 0)
        if resuming:
            self.show_saved_reports(folder)
        self.progress.setValue(0)
        self.run_bar.clock.reset()
        self._say("Loading the teacher and the data…")
        self.rate_label.setText("")
        self.resumable = None
        self.worker.start()
        self._update_buttons()
        self.status_message.emit(f"{'Resuming' if resuming else 'Factorizing'} into {folder}")
        self.run_started.emit()
        return True

    def pause(self) -> None:
        if self.control is not None and not self.control.paused and not self.control.cancelled:
            self.control.pause()
            self.run_bar.clock.pause()
            self._say("Pausing…")
            self._update_buttons()

    def resume(self) -> None:
        if self.control is not None and self.control.paused:
            self.control.resume()
            self.run_bar.clock.resume()
            self._say("Resuming…")
            self.status_message.emit("Resumed")
            self._update_buttons()

    def cancel(self) -> None:
        if self.control is not None and not self.control.cancelled:
            self.control.cancel()
            self._say("Stopping; saving what was learned…")
            self.status_message.emit("Stopping; the bricks learned so far are kept")
            self._update_buttons()

    def stop_and_wait(self, timeout_ms: int = 60_000) -> bool:
        """Cancel a running run and block until its child has saved and ended (used when closing)."""
        worker = self.worker
        if worker is None:
            return True
        self.cancel()
        done = worker.stop(timeout_ms)
        if not done:
            worker.kill()
            done = worker.stop(5_000)
        return done

    def _on_pause_clicked(self) -> None:
        if self.control is not None and self.control.paused:
            self.resume()
        else:
            self.pause()

    def _on_start_clicked(self) -> None:
        self.start()

    def _on_cancel_clicked(self) -> None:
        self.cancel()

    def _on_worker_blocked_changed(self, blocked: bool) -> None:
        if blocked and self.control is not None and self.control.paused:
            self._say(f"Paused at epoch {self._last_epoch:.1f} of {self._total_epochs}")
            self.status_message.emit("Paused: training is waiting; press Resume (Ctrl+P) to go on")

    def _on_worker_saved(self, folder: str, cancelled: bool, epochs: int) -> None:
        self.last_folder = Path(folder)
        state = f"Stopped after {epochs} epoch(s)" if cancelled else "Finished"
        self.progress.setValue(self.progress.value() if cancelled else 1000)
        self.run_bar.flush()  # the rate line shows the last step
        self._say(f"{state}; bricks saved")
        self.log.appendPlainText(f"{state}. The common module and bricks are in {folder}.")
        self.status_message.emit(f"{state}: bricks saved in {folder}")
        self.run_saved.emit(folder, cancelled)

    def _on_worker_failed(self, message: str) -> None:
        worker = self.worker
        if worker is not None and worker.last_checkpoint and not (self.control and self.control.cancelled):
            self.resumable = (self._run_config, worker.folder, worker.processes)
        self._say("Failed; Resume run continues from the last checkpoint" if self.resumable else "Failed")
        self.log.appendPlainText(message)
        self.run_failed.emit(message)

    def _on_worker_finished(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.deleteLater()
        self._update_buttons()

    def _on_theme_changed(self) -> None:
        scale_splitter(self.splitter, (380, 900), 1)  # the settings column grows with the fonts
        self.summary.setFont(theme_manager().font(1.0))
