"""Export the assembled network: pick a format and a file, run the export and its self-test.

The formats come from the export registry (``kfstudio.io.export``). The network is built
from the graph in the GUI thread (a private copy), then written, reloaded and compared in a
worker thread, so the dialog stays responsive; the result says whether the self-test
passed, where the model and its manifest went, or, in words, why it failed. The written file
is then timed in its own runtime next to the teacher exported the same way, and the dialog
says which runtime and form. For ONNX, *int8* quantizes the file (``kfstudio.io.int8``),
calibrated on the run's training images; its accuracy against the float network on the test
images is shown before the dialog says it worked.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from kfstudio.assembly.build import build_network
from kfstudio.core.errors import KFError
from kfstudio.gui.path_picker import SAVE, PathPicker
from kfstudio.gui.theme import theme_manager
from kfstudio.io.export import ExportReport, list_export_formats
from kfstudio.io.int8 import describe_int8_speed, run_data_ref


def _export_job(network, path: str, fmt: str, teacher, int8_data_ref: str | None):
    """Runs in a worker thread: (the ExportReport, the file's latency against the teacher)."""
    import torch

    from kfstudio.core.data.sources import load_data
    from kfstudio.io.int8 import int8_data
    from kfstudio.io.runtime_costs import export_and_time

    torch.set_num_threads(1)
    int8 = int8_data(load_data(int8_data_ref), network) if int8_data_ref else None
    return export_and_time(network, path, fmt, teacher, int8)


def default_export_path(graph, suffix: str) -> Path:
    """``<run folder>/exports/<tasks>`` with the format's suffix."""
    folder = Path(graph.common.path).parent / "exports" if graph.common is not None else Path.home()
    titles = [graph.title(n) for n in graph.attached_ids()]
    stem = "-".join(t.replace(" ", "") for t in titles[:3]) + (f"-and-{len(titles) - 3}-more" if len(titles) > 3 else "")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "network"
    return folder / f"{safe}{suffix}"


# What a user should know about a format's speed before choosing it (see docs/benchmarks.md, "Fused bricks").
FORMAT_NOTES = {
    "pt2": "Slower to run than the other formats: the module torch.export.load(...).module() gives runs every "
           "operation from Python and checks its inputs on every call. For speed, choose TorchScript or ONNX.",
}


class ExportDialog(QDialog):
    """Choose a format and a file; export with self-test; show the result or the reason it failed."""

    export_finished = Signal(object)   # the ExportReport
    export_failed = Signal(str)        # a plain sentence

    def __init__(self, graph, parent: QWidget | None = None, teacher=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export network")
        self.setMinimumWidth(560)
        self._graph = graph
        self._teacher = teacher
        self._data_ref = run_data_ref(graph.common.path if graph.common is not None else None)
        self.runtime = None   # the LatencyComparison of the last export
        self._worker = None
        self.report: ExportReport | None = None
        self._formats = list_export_formats()
        titles = [graph.title(n) for n in graph.attached_ids()]
        self.summary = QLabel(f"The common module with {len(titles)} brick{'s' if len(titles) != 1 else ''}: "
                              f"{', '.join(titles)}.", self)
        self.summary.setWordWrap(True)
        self.format_combo = QComboBox(self)
        for fmt in self._formats:
            self.format_combo.addItem(f"{fmt.description}  ({fmt.suffix})", fmt.name)
        self.path_picker = PathPicker(SAVE, "Export network to", parent=self,
                                      file_filter=lambda: f"{self.format_combo.currentText()} (*{self._suffix()})")
        self.path_picker.chosen.connect(self._on_path_chosen)
        self.path_edit = self.path_picker.edit
        form = QFormLayout()
        form.addRow("Format:", self.format_combo)
        form.addRow("File:", self.path_picker)
        self.format_note = QLabel(self)
        self.format_note.setWordWrap(True)
        form.addRow("", self.format_note)
        self.int8_check = QCheckBox("int8: quantize (smaller; faster where the CPU has int8 instructions)", self)
        self.int8_check.setToolTip(
            "Static int8 quantization with onnxruntime, calibrated on training images of the run's data "
            f"({self._data_ref}); checked against the float network on its test images." if self._data_ref else
            "int8 needs the training images of the run, and this common module's folder does not record its data.")
        form.addRow("", self.int8_check)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Show folder", self)
        self.open_folder_button.hide()
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.result_label)
        layout.addWidget(self.open_folder_button)
        layout.addStretch(1)
        layout.addWidget(self.buttons)
        self.format_combo.currentIndexChanged.connect(self._on_format_changed)
        names = [f.name for f in self._formats]
        self.format_combo.setCurrentIndex(names.index("onnx") if "onnx" in names else 0)
        self._on_format_changed()

    # ------------------------------------------------------------------ choices

    def format_name(self) -> str:
        return self.format_combo.currentData()

    def set_format(self, name: str) -> None:
        self.format_combo.setCurrentIndex(self.format_combo.findData(name))

    def set_path(self, path: str | Path) -> None:
        self.path_edit.setText(str(path))

    def _suffix(self) -> str:
        return next(f.suffix for f in self._formats if f.name == self.format_name())

    def _int8_possible(self) -> bool:
        return self.format_name() == "onnx" and self._data_ref is not None

    def _on_format_changed(self, *_args) -> None:
        self.int8_check.setEnabled(self._int8_possible())
        if not self.int8_check.isEnabled():
            self.int8_check.setChecked(False)
        self.format_note.setText(FORMAT_NOTES.get(self.format_name(), ""))
        self.format_note.setVisible(self.format_name() in FORMAT_NOTES)
        suffix = self._suffix()
        text = self.path_edit.text().strip()
        if not text:
            self.set_path(default_export_path(self._graph, suffix))
            return
        for fmt in sorted(self._formats, key=lambda f: -len(f.suffix)):
            if text.lower().endswith(fmt.suffix):
                text = text[: -len(fmt.suffix)]
                break
        self.set_path(text + suffix)

    def _on_path_chosen(self, path: str) -> None:
        suffix = self._suffix()
        self.set_path(path if path.lower().endswith(suffix) else path + suffix)

    # ------------------------------------------------------------------ running

    def start_export(self) -> None:
        path = self.path_edit.text().strip()
        if not path:
            self._fail("Choose a file to export to.")
            return
        try:
            network = build_network(self._graph)
        except KFError as exc:
            self._fail(str(exc))
            return
        self._set_busy(True)
        int8 = self._data_ref if self.int8_check.isChecked() else None
        self._show(f"Writing {Path(path).name}{', quantizing it to int8' if int8 else ''}, testing it and timing it "
                   "against the teacher…", "muted")
        self._worker = create_worker(_export_job, network, path, self.format_name(), self._teacher, int8,
                                     _start_thread=True,
                                     _connect={"returned": self._on_worker_returned,
                                               "errored": self._on_worker_errored})

    def is_running(self) -> bool:
        return self._worker is not None

    def _on_worker_returned(self, result: tuple) -> None:
        report, runtime = result
        self._worker = None
        self._set_busy(False)
        self.report, self.runtime = report, runtime
        speed = f"<br>{html.escape(describe_int8_speed(runtime))}" if "float network" in runtime.ms else ""
        self._show(f"✔ {html.escape(report.describe())}<br><br>{html.escape(_capital(runtime.describe()))}.{speed}"
                   f"<br><br>Model: <b>{report.path}</b><br>Manifest (how to feed it): <b>{report.manifest_path}</b>",
                   "ok")
        self.open_folder_button.show()
        self.export_finished.emit(report)

    def _on_worker_errored(self, exc: Exception) -> None:
        self._worker = None
        self._set_busy(False)
        if isinstance(exc, KFError):
            self._fail(f"The export did not work: {exc}")
        elif isinstance(exc, OSError):
            self._fail(f"Could not write the file: {exc.strerror or exc} ({exc.filename or self.path_edit.text()}).")
        else:
            self._fail(f"The export stopped unexpectedly: {type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self.report = None
        self.open_folder_button.hide()
        self._show(message, "bad")
        self.export_failed.emit(message)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        for w in (self.export_button, self.format_combo, self.path_edit):
            w.setEnabled(not busy)
        self.int8_check.setEnabled(not busy and self._int8_possible())

    def _show(self, html: str, colour: str) -> None:
        theme = theme_manager().theme
        self.result_label.setStyleSheet(f"color: {getattr(theme, colour)};")
        self.result_label.setText(html)

    def _on_open_folder_clicked(self) -> None:
        if self.report is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.report.path.parent)))

    def reject(self) -> None:
        if self._worker is not None:
            self._show("Please wait: the export is still being written and tested.", "muted")
            return
        super().reject()


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
