"""A path field with a Browse button: the one row every dialog and page uses to pick a file or folder."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QToolButton, QWidget

OPEN, SAVE, FOLDER = "open", "save", "folder"


class PathPicker(QWidget):
    """``edit`` holds the path; the button opens the file dialog for ``mode`` (open a file, save a
    file, or choose a folder), puts the choice in the field and emits ``chosen``.

    ``file_filter`` and ``start`` may be functions, read when the button is pressed (the export
    dialog's filter follows its format; a start folder may follow another field)."""

    chosen = Signal(str)

    def __init__(self, mode: str, caption: str, *, file_filter: str | Callable[[], str] = "",
                 start: str | Callable[[], str] = "", text: str = "", placeholder: str = "",
                 tooltip: str = "", button_text: str = "Browse…", button_tooltip: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode, self.caption = mode, caption
        self._filter, self._start = file_filter, start
        self.edit = QLineEdit(text, self)
        self.edit.setPlaceholderText(placeholder)
        self.edit.setToolTip(tooltip)
        self.button = QToolButton(self, text=button_text)
        self.button.setToolTip(button_tooltip or caption)
        self.button.clicked.connect(self._on_button_clicked)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's spelling, as QLineEdit has it
        self.edit.setText(text)

    def _on_button_clicked(self) -> None:
        start = self._start() if callable(self._start) else (self._start or self.edit.text())
        file_filter = self._filter() if callable(self._filter) else self._filter
        if self.mode == FOLDER:
            path = QFileDialog.getExistingDirectory(self, self.caption, start)
        elif self.mode == SAVE:
            path = QFileDialog.getSaveFileName(self, self.caption, start, file_filter)[0]
        else:
            path = QFileDialog.getOpenFileName(self, self.caption, start, file_filter)[0]
        if path:
            self.edit.setText(path)
            self.chosen.emit(path)
