"""The Welcome page: demos one click away, open a project, start from a teacher, recent files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QEvent, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kfstudio.gui.theme import theme_manager

RECENT_KEY = "recent_projects"
MAX_RECENT = 10


def recent_projects() -> list[str]:
    value = QSettings().value(RECENT_KEY, [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or [])]


def add_recent_project(path: str | Path) -> None:
    path = str(Path(path).resolve())
    items = [p for p in recent_projects() if p != path]
    QSettings().setValue(RECENT_KEY, [path] + items[:MAX_RECENT - 1])


def clear_recent_projects() -> None:
    QSettings().setValue(RECENT_KEY, [])


class _Card(QPushButton):
    """A big button with a title and one line of explanation."""

    def __init__(self, title: str, text: str, tooltip: str, parent=None) -> None:
        super().__init__(parent)
        self.setToolTip(tooltip)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.title = QLabel(title)
        self.text = QLabel(text)
        self.text.setWordWrap(True)
        for label in (self.title, self.text):
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(self.title)
        layout.addWidget(self.text)
        layout.addStretch(1)

    def restyle(self) -> None:
        theme, scale = theme_manager().theme, theme_manager().scale
        self.title.setFont(theme_manager().font(1.25, bold=True))
        self.text.setFont(theme_manager().font(1.0))
        self.text.setStyleSheet(f"color: {theme.muted}")
        self.setMinimumSize(int(260 * scale), int(110 * scale))
        self.setStyleSheet(
            f"_Card {{ background: {theme.base}; border: 1px solid {theme.grid}; border-radius: 10px; }}"
            f"_Card:hover {{ border: 2px solid {theme.accent}; }}"
            f"_Card:focus {{ border: 2px solid {theme.accent}; }}")


class WelcomePage(QWidget):
    """Start here: each card emits a request the main window carries out."""

    demo_requested = Signal(str)          # "digits" / "shapes"
    open_requested = Signal()             # ask for a project file
    open_path_requested = Signal(str)     # a recent project
    new_from_teacher_requested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.heading = QLabel("KF Studio")
        self.tagline = QLabel("Factorize a pretrained network into a common module and one brick per task, "
                              "then snap bricks together into the network you need — no retraining.")
        self.tagline.setWordWrap(True)
        self.digits_button = _Card("Digits demo", "Handwritten digits: one brick per digit, from a small CNN teacher.",
                                   "Load the built-in digits teacher and data and go to Factorize")
        self.shapes_button = _Card("Shapes demo", "Coloured shapes: one brick per factor (shape, colour, size, x).",
                                   "Load the built-in shapes teacher and data and go to Factorize")
        self.open_button = _Card("Open project…", "Continue an assembly you saved.", "Open a .kfproj file (Ctrl+O)")
        self.new_button = _Card("New from teacher…", "Your own network: TorchScript, torch.export, ONNX or Python.",
                                "Load a teacher, pick data and tasks (Ctrl+N)")
        self.digits_button.clicked.connect(lambda: self.demo_requested.emit("digits"))
        self.shapes_button.clicked.connect(lambda: self.demo_requested.emit("shapes"))
        self.open_button.clicked.connect(self.open_requested)
        self.new_button.clicked.connect(self.new_from_teacher_requested)
        self.cards = [self.digits_button, self.shapes_button, self.new_button, self.open_button]

        grid = QGridLayout()
        grid.setSpacing(16)
        for i, card in enumerate(self.cards):
            grid.addWidget(card, i // 2, i % 2)

        self.loading = QLabel()   # "Loading the digits demo…" while a load runs in the background
        self.loading.setObjectName("welcomeLoading")
        self.loading.setVisible(False)

        self.recent_title = QLabel("Recent projects")
        self.recent_list = QListWidget()
        self.recent_list.setToolTip("Click a project (or press Enter) to open it")
        self.recent_list.itemClicked.connect(self._on_recent_list_item_clicked)
        self.recent_list.installEventFilter(self)  # Enter opens the current project
        self.recent_list.setCursor(Qt.CursorShape.PointingHandCursor)
        self.recent_list.setMaximumHeight(220)
        self.recent_hint = QLabel("Click a project to open it.")
        self._last_click = QElapsedTimer()
        self.recent_empty = QLabel("No recent projects yet. Projects you save or open appear here.")
        self.recent_empty.setWordWrap(True)

        column = QVBoxLayout()
        column.addSpacing(24)
        column.addWidget(self.heading)
        column.addWidget(self.tagline)
        column.addSpacing(16)
        column.addLayout(grid)
        column.addWidget(self.loading)
        column.addSpacing(16)
        column.addWidget(self.recent_title)
        column.addWidget(self.recent_empty)
        column.addWidget(self.recent_list)
        column.addWidget(self.recent_hint)
        column.addStretch(1)
        frame = QFrame()
        frame.setLayout(column)
        frame.setMaximumWidth(900)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addWidget(frame, 4)
        outer.addStretch(1)
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()
        self.refresh_recent()

    def set_loading(self, what: str | None) -> None:
        """Say what is loading (None: nothing); the cards that would start another load wait for it."""
        self.loading.setText(what or "")
        self.loading.setVisible(bool(what))
        for card in self.cards:
            card.setEnabled(not what)
        self.recent_list.setEnabled(not what)

    def refresh_recent(self) -> None:
        self.recent_list.clear()
        for path in recent_projects():
            item = QListWidgetItem(f"{Path(path).stem}    —    {path}")
            item.setData(Qt.ItemDataRole.UserRole, path)
            item.setToolTip(path if Path(path).exists() else f"{path} (missing)")
            self.recent_list.addItem(item)
        empty = self.recent_list.count() == 0
        self.recent_empty.setVisible(empty)
        self.recent_list.setVisible(not empty)
        self.recent_hint.setVisible(not empty)

    def _on_recent_list_item_clicked(self, item: QListWidgetItem) -> None:
        """One click opens (a recent project only opened on a double-click, which nothing said);
        the second click of a double-click does not open it again."""
        if self._last_click.isValid() and self._last_click.elapsed() < QApplication.doubleClickInterval():
            return
        self._last_click.start()
        self.open_path_requested.emit(item.data(Qt.ItemDataRole.UserRole))

    def eventFilter(self, watched, event) -> bool:
        if (watched is self.recent_list and event.type() == QEvent.Type.KeyPress
                and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.recent_list.currentItem()):
            self.open_path_requested.emit(self.recent_list.currentItem().data(Qt.ItemDataRole.UserRole))
            return True
        return super().eventFilter(watched, event)

    def _on_theme_changed(self) -> None:
        theme = theme_manager().theme
        self.heading.setFont(theme_manager().font(2.2, bold=True))
        self.tagline.setFont(theme_manager().font(1.1))
        self.tagline.setStyleSheet(f"color: {theme.muted}")
        self.recent_title.setFont(theme_manager().font(1.2, bold=True))
        self.loading.setFont(theme_manager().font(1.2, bold=True))
        self.loading.setStyleSheet(f"color: {theme.accent}")
        self.recent_empty.setStyleSheet(f"color: {theme.muted}")
        self.recent_hint.setStyleSheet(f"color: {theme.muted}")
        for card in self.cards:
            card.restyle()
