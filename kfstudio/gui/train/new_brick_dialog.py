""""Train a new brick…": one new task brick on the plate's frozen common module, in the background.

The dialog asks for labeled data, a task name, optional classes (one class: one-vs-rest
against the rest of the data; several: a group; none: the whole label) and epochs. Training
runs in a child process (``GrowProcess``: the studio's ``FactorizeProcess`` with the
"add a brick" child of ``kfstudio.runner.grow_child``), with the same live loss plot as a
factorization. When the brick is saved, ``brick_saved`` carries its file path.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from kfstudio.core.errors import KFError
from kfstudio.gui.path_picker import OPEN, PathPicker
from kfstudio.gui.train.plots.loss import LossPlotWidget
from kfstudio.gui.theme import theme_manager
from kfstudio.gui.train.worker import FactorizeProcess, _start_without_main


class GrowProcess(FactorizeProcess):
    """A ``FactorizeProcess`` whose child adds one brick to ``folder`` instead of factorizing."""

    def start(self) -> None:
        from kfstudio.runner.grow_child import child_main

        ctx = multiprocessing.get_context("spawn")
        self._reports, child_reports = ctx.Pipe(duplex=False)
        child_commands, commands = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=child_main, name="kfstudio-add-brick", daemon=True,
                                   args=(str(self.folder), self.config, child_reports, child_commands))
        _start_without_main(self.process)
        child_reports.close()
        child_commands.close()
        self.control.attach(commands)
        self._timer.start()

    def crash_message(self, exitcode: int | None) -> str:
        from kfstudio.gui.train.worker import describe_exit

        return (f"Training the new brick ended unexpectedly: {describe_exit(exitcode)}. The run's files are "
                "unchanged; start it again.")


def run_data(folder: Path) -> str:
    """The data the run was factorized on, as a starting suggestion."""
    import json

    try:
        return str(json.loads((folder / "run.json").read_text())["config"]["data"] or "")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


class NewBrickDialog(QDialog):
    """Data, task name, classes, epochs -> one new brick in the run folder (see module docstring)."""

    brick_saved = Signal(str)   # the new brick's .safetensors path
    failed = Signal(str)        # a plain sentence

    def __init__(self, run_folder: str | Path | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_folder = Path(run_folder) if run_folder is not None else None
        self.process: GrowProcess | None = None
        self.setWindowTitle("Train a new brick")
        self.setObjectName("newBrickDialog")
        self.data_picker = PathPicker(OPEN, "Labeled data", file_filter="NumPy data (*.npz)", parent=self,
                                      start=lambda: str(self.run_folder or Path.home()),
                                      text=run_data(self.run_folder) if self.run_folder else "",
                                      placeholder="builtin:digits, builtin:shapes, an image folder or an .npz")
        self.data_edit = self.data_picker.edit
        self.task_edit = QLineEdit(self)
        self.task_edit.setPlaceholderText("a name for the new task, e.g. y or seven")
        self.classes_edit = QLineEdit(self)
        self.classes_edit.setPlaceholderText("optional: 7 (one-vs-rest) or 0,1,2 (a group); empty: the whole label")
        self.label_edit = QLineEdit(self)
        self.label_edit.setPlaceholderText("optional: which label of the data (e.g. y of builtin:shapes)")
        self.epochs_box = QSpinBox(self)
        self.epochs_box.setRange(0, 500)
        self.epochs_box.setSpecialValueText("auto")
        self.epochs_box.setValue(0)
        form = QFormLayout()
        form.addRow("Labeled data", self.data_picker)
        form.addRow("Task name", self.task_edit)
        form.addRow("Classes", self.classes_edit)
        form.addRow("Label", self.label_edit)
        form.addRow("Epochs", self.epochs_box)
        self.progress = QProgressBar(self)
        self.status = QLabel("The run's common module stays frozen; only the new brick learns.", self)
        self.status.setWordWrap(True)
        self.loss_plot = LossPlotWidget(self)
        self.train_button = QPushButton("Train", self)
        self.train_button.setDefault(True)
        self.train_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        close = QPushButton("Close", self)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.train_button, self.stop_button, close):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot, 1)
        layout.addLayout(buttons)
        self.resize(760, 560)
        if self.run_folder is None:
            self.train_button.setEnabled(False)
            self._show("Load a factorization run first: a new brick trains on the plate's common module.", "bad")

    # ------------------------------------------------------------------ the job

    def task_spec(self) -> str:
        name, classes = self.task_edit.text().strip(), self.classes_edit.text().strip()
        return f"{name}={classes}" if classes else name

    def config(self):
        from kfstudio.core.grow import GrowConfig

        if not self.task_edit.text().strip():
            raise KFError("Give the new task a name.")
        if not self.data_edit.text().strip():
            raise KFError("Say which labeled data the new brick learns from.")
        return GrowConfig(data=self.data_edit.text().strip(), task=self.task_spec(),
                          label=self.label_edit.text().strip() or None, epochs=self.epochs_box.value() or None,
                          num_threads=1)

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def start(self) -> None:
        if self.is_running() or self.run_folder is None:
            return
        try:
            config = self.config()
            from kfstudio.io.grow_run import check_free
            check_free(self.run_folder, self.run_folder, config.task, replace=False)
        except KFError as exc:
            self._fail(str(exc))
            return
        self.loss_plot.reset()
        self.progress.setValue(0)
        self.process = GrowProcess(config, self.run_folder, parent=self)
        self.process.report.connect(self._on_process_report)
        self.process.saved.connect(self._on_process_saved)
        self.process.failed.connect(self._on_process_failed)
        self.process.finished.connect(self._on_process_finished)
        self._set_busy(True)
        self._show("Starting…", "muted")
        self.process.start()

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel a running job and wait for it (used when the dialog or the studio closes)."""
        return self.process.stop(timeout_ms) if self.is_running() else True

    # ------------------------------------------------------------------ slots

    def _on_stop_clicked(self) -> None:
        if self.process is not None:
            self.process.control.cancel()

    def _on_process_report(self, report) -> None:
        if report.kind == "setup":
            self.progress.setMaximum(max(1, report.total_steps))
            self._show(report.messages[-1] if report.messages else "Training…", "muted")
        elif report.kind == "step":
            self.progress.setValue(report.step)
            self.loss_plot.add_report(report)
        elif report.kind == "eval":
            m = next(iter(report.tasks.values()))
            self._show(f"Epoch {report.epoch}: test accuracy {m.accuracy:.1%}", "muted")

    def _on_process_saved(self, path: str, cancelled: bool, epochs: int) -> None:
        self.loss_plot.flush()
        self.progress.setValue(self.progress.maximum() if not cancelled else self.progress.value())
        verb = "Stopped" if cancelled else "Done"
        self._show(f"{verb} after {epochs} epoch(s): the new brick is in the palette ({Path(path).name}).", "ok")
        self.brick_saved.emit(path)

    def _on_process_failed(self, message: str) -> None:
        self._fail(message)

    def _on_process_finished(self) -> None:
        self._set_busy(False)

    def _fail(self, message: str) -> None:
        self._show(message, "bad")
        self.failed.emit(message)

    def _set_busy(self, busy: bool) -> None:
        self.train_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def _show(self, text: str, colour: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {theme_manager().theme.color(colour).name()};")

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)


def open_new_brick_dialog(page) -> NewBrickDialog:
    """Open the dialog for the Build page's plate; a saved brick joins the palette at once."""
    dialog = NewBrickDialog(page.plate_folder(), page)

    def on_saved(path: str) -> None:  # emitted in the GUI thread (the process is drained by a timer)
        page.load_run(Path(path).parent.parent, as_plate=False)
        page.relations.invalidate()

    dialog.brick_saved.connect(on_saved)
    dialog.show()
    return dialog
