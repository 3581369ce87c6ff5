"""How one palette row is drawn: the brick, its name, its details, "on the plate" when attached.

Qt's list elides a row's text to one line per paragraph ("✓ digit 7 · on the pl…"), so a
narrow palette or the bigger fonts of presentation mode hid the attached mark and the end of
the name. This delegate wraps every line to the list's width instead (a word longer than the
width, such as a file name, is elided in the middle), puts the mark on a line of its own in
the accent colour (kept, empty, while the brick is not attached: attaching never changes a row's
height), and tells the list each row's height for that width. Group headings wrap
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from kfstudio.gui.theme import theme_manager

ATTACHED_ROLE = Qt.ItemDataRole.UserRole + 2  # on the plate now: drawn bold, with a tick
TITLE_ROLE = Qt.ItemDataRole.UserRole + 3     # the brick's name
SUBTITLE_ROLE = Qt.ItemDataRole.UserRole + 4  # "one-vs-rest · 4,321 parameters · 97% accurate"
ON_PLATE = "✓ on the plate"
PAD = 4


@dataclass(frozen=True)
class RowText:
    """The lines of one row as drawn: (text, font, is_mark), each already fitting ``width``."""

    lines: tuple[tuple[str, QFont, bool], ...]
    width: int

    @property
    def height(self) -> int:
        return sum(QFontMetrics(font).height() for _text, font, _mark in self.lines)


def fit_words(text: str, metrics: QFontMetrics, width: int) -> list[str]:
    """``text`` wrapped at spaces to lines of at most ``width`` pixels; a word wider than a
    whole line is elided in the middle (its start and end stay readable)."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if metrics.horizontalAdvance(word) > width:
            word = metrics.elidedText(word, Qt.TextElideMode.ElideMiddle, width)
        candidate = f"{current} {word}" if current else word
        if current and metrics.horizontalAdvance(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current or not lines:
        lines.append(current)
    return lines


class BrickRowDelegate(QStyledItemDelegate):
    """Draws brick rows (icon, wrapped name, mark, details); group headers as Qt does."""

    def row_text(self, option: QStyleOptionViewItem, index: QModelIndex) -> RowText:

        width = max(40, self._text_rect(option).width())
        attached = bool(index.data(ATTACHED_ROLE))
        title_font = theme_manager().font(0.95, bold=attached)
        detail_font = theme_manager().font(0.85)
        mark_font = theme_manager().font(0.85, bold=True)
        lines: list[tuple[str, QFont, bool]] = []
        # wrapped as if bold either way, the mark's line kept when it is empty: attaching a brick
        # never changes its row's height, so the rows below never move under the presenter's hand
        bold = QFontMetrics(theme_manager().font(0.95, bold=True))
        for part in fit_words(str(index.data(TITLE_ROLE) or ""), bold, width):
            lines.append((part, title_font, False))
        for chunk in str(index.data(SUBTITLE_ROLE) or "").split("\n"):
            for part in fit_words(chunk, QFontMetrics(detail_font), width):
                lines.append((part, detail_font, False))
        mark = QFontMetrics(mark_font).elidedText(ON_PLATE, Qt.TextElideMode.ElideRight, width) if attached else ""
        lines.append((mark, mark_font, attached))
        return RowText(tuple(lines), width)

    def _icon_size(self, option: QStyleOptionViewItem) -> QSize:
        return option.decorationSize if option.decorationSize.isValid() else QSize(28, 28)

    def _text_rect(self, option: QStyleOptionViewItem) -> QRect:
        icon = self._icon_size(option)
        rect = QRect(option.rect)
        widget = option.widget
        if widget is not None and hasattr(widget, "viewport"):
            rect.setWidth(widget.viewport().width() - 2 * _spacing(widget))
        return rect.adjusted(icon.width() + 3 * PAD, PAD, -PAD, -PAD)

    def header_lines(self, option: QStyleOptionViewItem, index: QModelIndex) -> tuple[list[str], QFont]:
        """A group heading ("digits demo teacher · 20261202-004224") wrapped at its words to the
        list's width, as the rows are."""
        font = index.data(Qt.ItemDataRole.FontRole) or option.font
        width = self._text_rect(option).width() + self._icon_size(option).width() + 2 * PAD
        return fit_words(str(index.data(Qt.ItemDataRole.DisplayRole) or ""), QFontMetrics(font), width), font

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        if index.data(TITLE_ROLE) is None:
            lines, font = self.header_lines(option, index)
            return QSize(option.rect.width(), len(lines) * QFontMetrics(font).height() + 2 * PAD)
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text = self.row_text(opt, index)
        icon = self._icon_size(opt)
        height = max(icon.height(), text.height) + 2 * PAD
        return QSize(icon.width() + 4 * PAD + text.width, height)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        if index.data(TITLE_ROLE) is None:
            self._paint_header(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        opt.icon = type(opt.icon)()  # the background and selection only; icon and text drawn below
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        icon = index.data(Qt.ItemDataRole.DecorationRole)
        size = self._icon_size(option)
        if icon is not None:
            icon.paint(painter, QRect(option.rect.left() + 2 * PAD, option.rect.top() + PAD, size.width(), size.height()))
        theme = theme_manager().theme
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        text_colour = opt.palette.highlightedText().color() if selected else theme.color("text")
        rect = self._text_rect(option)
        rect.setRight(option.rect.right() - PAD)
        y = rect.top()
        painter.save()
        for line, font, mark in self.row_text(option, index).lines:
            metrics = QFontMetrics(font)
            painter.setFont(font)
            painter.setPen(text_colour if selected or not mark else theme.color("accent"))
            painter.drawText(QRect(rect.left(), y, rect.width(), metrics.height()),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), line)
            y += metrics.height()
        painter.restore()


    def _paint_header(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        lines, font = self.header_lines(option, index)
        metrics = QFontMetrics(font)
        painter.save()
        painter.setFont(font)
        painter.setPen(theme_manager().theme.color("muted"))
        y = option.rect.top() + PAD
        for line in lines:
            painter.drawText(QRect(option.rect.left() + PAD, y, option.rect.width() - 2 * PAD, metrics.height()),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), line)
            y += metrics.height()
        painter.restore()


def _spacing(widget) -> int:
    return widget.spacing() if hasattr(widget, "spacing") else 0
