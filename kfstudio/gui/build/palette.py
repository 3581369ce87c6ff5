"""The brick palette: every brick the user has loaded, ready to be dragged onto the canvas.

The palette shows plain facts only (title, kind, parameters, accuracy, colour); it never
holds a torch module. Each row carries a ``key`` (the brick file's path) that the build
page resolves to its loaded brick. A drag carries that key as ``MIME_BRICK`` JSON, so the
canvas (or a test sending synthetic drop events) can read which brick is coming.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from PySide6.QtCore import (
    QByteArray,
    QMimeData,
    QModelIndex,
    QPoint,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QColor,
    QDrag,
    QIcon,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kfstudio.gui.build.canvas.items import task_colour
from kfstudio.gui.build.palette_delegate import ATTACHED_ROLE, SUBTITLE_ROLE, TITLE_ROLE, BrickRowDelegate
from kfstudio.gui.theme import theme_manager

MIME_BRICK = "application/x-kfstudio-brick"

KEY_ROLE = Qt.ItemDataRole.UserRole + 1


class _RememberedRows(BrickRowDelegate):
    """The rows' delegate, with each row's wrapped text remembered: marking one brick attached makes
    Qt lay out and repaint every row again, and wrapping each row's words anew cost ~5 ms per row
    on every attach."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: dict[tuple, object] = {}

    def row_text(self, option, index):
        key = (index.data(TITLE_ROLE), index.data(SUBTITLE_ROLE), bool(index.data(ATTACHED_ROLE)),
               self._text_rect(option).width(), theme_manager().font(0.95).key(), theme_manager().font(0.85).key())
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) > 4096:   # widths and fonts come and go (resizes, UI scale)
                self._rows.clear()
            row = self._rows[key] = super().row_text(option, index)
        return row


@dataclass(frozen=True)
class PaletteEntry:
    """One brick as the palette shows it."""

    key: str               # the brick file's path: how the page finds the loaded brick
    title: str             # "digit 7"
    subtitle: str          # "one-vs-rest · 4,321 parameters · 97% accurate"
    colour_index: int      # index into the theme's curve colours
    group: str             # the run it came from ("digits demo teacher")
    tooltip: str = ""


def encode_brick_mime(key: str) -> QMimeData:
    """The mime data a palette drag carries (used by tests for synthetic drops, too)."""
    mime = QMimeData()
    mime.setData(MIME_BRICK, QByteArray(json.dumps({"key": key}).encode()))
    mime.setText(key)
    return mime


def decode_brick_mime(mime: QMimeData | None) -> str | None:
    """The brick key a drag carries, or None when it carries no brick."""
    if mime is None or not mime.hasFormat(MIME_BRICK):
        return None
    try:
        return str(json.loads(bytes(mime.data(MIME_BRICK).data()).decode())["key"])
    except (ValueError, KeyError, TypeError):
        return None


def brick_icon(colour: QColor, size: int = 28) -> QIcon:
    """A small Lego-like brick in ``colour``, drawn (no image files needed)."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    body = QRectF(2, size * 0.32, size - 4, size * 0.6)
    p.setPen(QPen(colour.darker(140), 1.2))
    p.setBrush(colour)
    for i in range(2):
        stud = QRectF(body.left() + body.width() * (0.18 + 0.44 * i), size * 0.14, body.width() * 0.22, size * 0.24)
        p.drawRoundedRect(stud, 2, 2)
    path = QPainterPath()
    path.addRoundedRect(body, 3, 3)
    p.drawPath(path)
    p.end()
    return QIcon(pix)


class _BrickModel(QStandardItemModel):
    """Rows of bricks; a drag of a row carries its key."""

    def mimeTypes(self) -> list[str]:
        return [MIME_BRICK]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        keys = [i.data(KEY_ROLE) for i in indexes if i.data(KEY_ROLE)]
        return encode_brick_mime(keys[0]) if keys else QMimeData()


class BrickListView(QListView):
    """The list itself; drags start here with a brick-shaped drag pixmap."""

    def startDrag(self, supported: Qt.DropAction) -> None:
        index = self.currentIndex()
        if not index.isValid() or not index.data(KEY_ROLE):
            return
        drag = QDrag(self)
        drag.setMimeData(self.model().mimeData([index]))
        icon = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(icon, QIcon):
            size = int(40 * theme_manager().scale)
            drag.setPixmap(icon.pixmap(QSize(size, size)))
            drag.setHotSpot(QPoint(size // 2, size // 2))
        drag.exec(Qt.DropAction.CopyAction)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        # Qt's Adjust mode lays a top-to-bottom list out again only when its height changes: a
        # narrower palette (presentation mode's side panes) kept rows too short for their new
        # wrapping, and their lines ran into the next row.
        if event.size().width() != event.oldSize().width():
            self.scheduleDelayedItemsLayout()


class BrickPalette(QWidget):
    """A filterable list of bricks, grouped by the run they came from.

    Signals: ``add_requested(key)`` when the user double-clicks a brick or picks "Attach"
    from its menu (the page attaches it to the next free slot).
    """

    add_requested = Signal(str)
    new_brick_requested = Signal()  # "Train a new brick…" (kfstudio.gui.train.new_brick_dialog)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[PaletteEntry] = []
        self._attached: set[str] = set()
        self.model = _BrickModel(self)
        self.list = BrickListView(self)
        self.list.setObjectName("brickPaletteList")
        self.list.setModel(self.model)
        self.list.setDragEnabled(True)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.setUniformItemSizes(False)
        self.list.setWordWrap(True)
        self.list.setItemDelegate(_RememberedRows(self.list))  # rows wrap: nothing of a name or its mark is cut
        self.list.setResizeMode(QListView.ResizeMode.Adjust)  # new widths, new row heights
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._on_list_context_menu)
        self.list.doubleClicked.connect(self._on_list_double_clicked)
        self.filter = QLineEdit(self)
        self.filter.setPlaceholderText("Filter bricks…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._on_filter_text_changed)
        self.hint = QLabel("Drag a brick onto the base plate to add its task.", self)
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.hint)
        self.new_brick_button = QPushButton("Train a new brick…", self)
        self.new_brick_button.setToolTip("Train one more brick for a new task on the plate's frozen common module")
        self.new_brick_button.clicked.connect(self.new_brick_requested)
        layout.addWidget(self.new_brick_button)
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()

    # ------------------------------------------------------------------ content

    def set_entries(self, entries: list[PaletteEntry]) -> None:
        self._entries = list(entries)
        self._rebuild()

    def add_entries(self, entries: list[PaletteEntry]) -> None:
        known = {e.key for e in entries}
        self._entries = [e for e in self._entries if e.key not in known] + list(entries)
        self._rebuild()

    def entries(self) -> list[PaletteEntry]:
        return list(self._entries)

    def brick_count(self) -> int:
        """How many bricks are listed (group headers not counted)."""
        return sum(1 for r in range(self.model.rowCount()) if self.model.item(r).data(KEY_ROLE))

    def keys(self) -> list[str]:
        return [e.key for e in self._entries]

    def set_attached(self, keys) -> None:
        """Mark the bricks that are on the plate now (a tick, bold, "on the plate")."""
        keys = set(keys)
        changed = keys ^ self._attached
        self._attached = keys
        if not changed:
            return
        entries = {e.key: e for e in self._entries}
        for r in range(self.model.rowCount()):   # only the rows that changed: an attach never relays the list out
            item = self.model.item(r)
            key = item.data(KEY_ROLE)
            if key in changed and key in entries:
                self._mark(item, entries[key], key in keys)

    def attached_keys(self) -> set[str]:
        """The keys the list marks as attached."""
        return {self.model.item(r).data(KEY_ROLE) for r in range(self.model.rowCount())
                if self.model.item(r).data(ATTACHED_ROLE)}

    def row_of(self, key: str) -> int:
        for r in range(self.model.rowCount()):
            if self.model.item(r).data(KEY_ROLE) == key:
                return r
        return -1

    def mime_data(self, key: str) -> QMimeData:
        """The mime data a drag of ``key`` carries, exactly as the list makes it."""
        row = self.row_of(key)
        if row < 0:
            return encode_brick_mime(key)
        return self.model.mimeData([self.model.index(row, 0)])

    def _rebuild(self) -> None:
        self.model.clear()
        text = self.filter.text().strip().lower()
        theme = theme_manager().theme
        group = None
        for entry in self._entries:
            if text and text not in entry.title.lower() and text not in entry.group.lower():
                continue
            if entry.group != group:
                group = entry.group
                header = QStandardItem(group)
                header.setFlags(Qt.ItemFlag.ItemIsEnabled)
                header.setToolTip(group)
                header.setFont(theme_manager().font(0.9, bold=True))
                header.setForeground(theme.color("muted"))
                self.model.appendRow(header)
            item = QStandardItem(brick_icon(task_colour(entry.colour_index)), "")
            item.setData(entry.key, KEY_ROLE)
            item.setData(entry.title, TITLE_ROLE)  # the delegate wraps these to the list's width
            item.setData(entry.subtitle, SUBTITLE_ROLE)
            item.setStatusTip(f"Drag '{entry.title}' onto the base plate, or double-click to attach it.")
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled)
            self._mark(item, entry, entry.key in self._attached)
            self.model.appendRow(item)

    def _mark(self, item: QStandardItem, entry: PaletteEntry, on_plate: bool) -> None:
        """A row's text, font and tip for whether its brick is on the plate."""
        title = f"✓ {entry.title} · on the plate" if on_plate else entry.title
        item.setText(f"{title}\n{entry.subtitle}")
        item.setData(on_plate, ATTACHED_ROLE)
        item.setFont(theme_manager().font(0.95, bold=on_plate))  # grows with the UI scale
        item.setToolTip(f"{title}\n{entry.tooltip or entry.subtitle}")

    # ------------------------------------------------------------------ slots

    def _on_filter_text_changed(self, _text: str) -> None:
        self._rebuild()

    def _on_theme_changed(self) -> None:
        scale = theme_manager().scale
        self.list.setIconSize(QSize(int(28 * scale), int(28 * scale)))
        self.list.setSpacing(int(2 * scale))
        self._rebuild()

    def _on_list_double_clicked(self, index: QModelIndex) -> None:
        key = index.data(KEY_ROLE)
        if key:
            self.add_requested.emit(key)

    def _on_list_context_menu(self, pos: QPoint) -> None:
        key = self.list.indexAt(pos).data(KEY_ROLE)
        if not key:
            return
        menu = QMenu(self)
        attach = QAction("Attach to the base plate", menu)
        attach.triggered.connect(lambda: self.add_requested.emit(key))
        menu.addAction(attach)
        menu.exec(self.list.viewport().mapToGlobal(pos))
