"""Export the assembled network: pick a format and a file, run the export and its self-test.

The formats come from the export registry (``kfstudio.io.export``). The network is built
from the graph in the GUI thread (a private copy), then written, reloaded and compared in a
worker thread, so the dialog stays responsive; the result says whether the self-test
passed, where the model and its manifest went, or, in words, why it failed.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from kfstudio.assembly.build import build_network
from kfstudio.core.errors import KFError
from kfstudio.gui.theme import theme_manager
from kfstudio.io.export import ExportReport, export_network, list_export_formats


def _export_job(network, path: str, fmt: str) -> ExportReport:
    """Runs in a worker thread."""
    import torch

    torch.set_num_threads(1)
    return export_network(network, path, fmt)


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

    def __init__(self, graph, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export network")
        self.setMinimumWidth(560)
        self._graph = graph
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
        self.path_edit = QLineEdit(self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._on_browse_clicked)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Format:", self.format_combo)
        form.addRow("File:", path_row)
        self.format_note = QLabel(self)
        self.format_note.setWordWrap(True)
        form.addRow("", self.format_note)
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

    def _on_format_changed(self, *_args) -> None:
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

    def _on_browse_clicked(self) -> None:
        suffix = self._suffix()
        path, _ = QFileDialog.getSaveFileName(self, "Export network to", self.path_edit.text(),
                                              f"{self.format_combo.currentText()} (*{suffix})")
        if path:
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
        self._show(f"Writing {Path(path).name} and testing it…", "muted")
        self._worker = create_worker(_export_job, network, path, self.format_name(), _start_thread=True,
                                     _connect={"returned": self._on_worker_returned,
                                               "errored": self._on_worker_errored})

    def is_running(self) -> bool:
        return self._worker is not None

    def _on_worker_returned(self, report: ExportReport) -> None:
        self._worker = None
        self._set_busy(False)
        self.report = report
        self._show(f"✔ {report.describe()}<br><br>Model: <b>{report.path}</b><br>Manifest (how to feed it): "
                   f"<b>{report.manifest_path}</b>", "ok")
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
