"""What the canvas draws: the common module as a base plate, task bricks, and a reason bubble.

Items know only what they show (a node id, a title, a colour index, a state); they never
hold torch modules and never change the graph. The scene places them from graph events.
Every size is multiplied by the UI scale and every colour comes from the current theme,
so a theme switch or presentation mode only needs ``update()``/``relayout``.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsObject,
    QStyleOptionGraphicsItem,
    QWidget,
)

from kfstudio.gui.theme import theme_manager

IDLE, FITS, DOES_NOT_FIT = "idle", "ok", "bad"


def ui(value: float) -> float:
    """A canvas length at the current UI scale."""
    return value * theme_manager().scale


def brick_size() -> tuple[float, float]:
    return ui(128.0), ui(58.0)


def task_colour(index: int) -> QColor:
    """The colour of the ``index``-th task of a run: the theme's curve colours after the first
    (which is the text colour), darker on the second time round."""
    curves = theme_manager().theme.curves
    usable = max(1, len(curves) - 1)
    colour = QColor(curves[1 + index % usable])
    return colour.darker(100 + 35 * (index // usable)) if index >= usable else colour


def readable_on(colour: QColor) -> QColor:
    """Black or white, whichever reads better on ``colour``."""
    luminance = 0.299 * colour.redF() + 0.587 * colour.greenF() + 0.114 * colour.blueF()
    return QColor("#101418") if luminance > 0.62 else QColor("#ffffff")


class _Refreshable:
    def refresh_geometry(self) -> None:
        """Sizes follow the UI scale: tell the scene the bounding box may have changed."""
        self.prepareGeometryChange()  # type: ignore[attr-defined]
        self.update()  # type: ignore[attr-defined]


def _draw_stud(p: QPainter, centre: QPointF, radius: float, colour: QColor) -> None:
    p.setBrush(colour.lighter(112))
    p.setPen(QPen(colour.darker(130), max(1.0, ui(1.0))))
    p.drawEllipse(centre, radius, radius)
    p.setPen(QPen(colour.lighter(135), max(1.0, ui(1.0))))
    p.drawArc(QRectF(centre.x() - radius * 0.6, centre.y() - radius * 0.6, radius * 1.2, radius * 1.2), 60 * 16, 70 * 16)


class BrickItem(_Refreshable, QGraphicsObject):
    """A task brick: a coloured Lego-like block with two studs, labelled with its title."""

    Type = QGraphicsItem.UserType + 101

    def __init__(self, node_id: str, title: str, colour_index: int, detail: str = "") -> None:
        super().__init__()
        self.node_id = node_id
        self.title = title
        self.colour_index = colour_index
        self.detail = detail
        self.attached = False
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemIsFocusable)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setAcceptHoverEvents(True)
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)   # repainted only when it changes
        self._hovered = False
        self._refresh_tooltip()

    def type(self) -> int:
        return self.Type

    # -------------------------------------------------------------- state from the graph

    def set_title(self, title: str) -> None:
        self.title = title
        self._refresh_tooltip()
        self.update()

    def set_attached(self, attached: bool) -> None:
        self.attached = attached
        self.setZValue(2 if attached else 3)
        self._refresh_tooltip()
        self.update()

    def _refresh_tooltip(self) -> None:
        where = "attached to the common module" if self.attached else "not attached (drag it onto the base plate)"
        self.setToolTip(f"{self.title}: {where}" + (f"\n{self.detail}" if self.detail else ""))

    @property
    def colour(self) -> QColor:
        return task_colour(self.colour_index)

    # -------------------------------------------------------------- painting

    def body_rect(self) -> QRectF:
        w, h = brick_size()
        return QRectF(-w / 2, -h / 2, w, h)

    def boundingRect(self) -> QRectF:
        pad = ui(4.0)
        return self.body_rect().adjusted(-pad, -ui(12.0) - pad, pad, pad)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRect(self.body_rect().adjusted(0, -ui(10.0), 0, 0))
        return path

    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = theme_manager().theme
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        body = self.body_rect()
        colour = self.colour
        if not self.attached:
            colour = QColor(colour)
            colour.setAlphaF(0.88)
        stud_r = ui(7.0)
        for fx in (0.27, 0.73):
            _draw_stud(p, QPointF(body.left() + body.width() * fx, body.top() - ui(1.0)), stud_r, colour)
        radius = ui(6.0)
        if self.attached:  # a soft shadow: the brick sits on the plate
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(0, 0, 0, 45))
            p.drawRoundedRect(body.translated(ui(2), ui(3)), radius, radius)
        border = QPen(colour.darker(145), ui(1.4))
        if not self.attached:
            border.setStyle(Qt.PenStyle.DashLine)
        if self.isSelected():
            border = QPen(theme.color("accent"), ui(3.0))
        elif self._hovered:
            border.setColor(colour.darker(175))
        p.setPen(border)
        p.setBrush(QBrush(colour))
        p.drawRoundedRect(body, radius, radius)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(255, 255, 255, 40))
        p.drawRoundedRect(QRectF(body.left() + ui(3), body.top() + ui(3), body.width() - ui(6), body.height() * 0.28),
                          radius * 0.6, radius * 0.6)
        self._paint_text(p, body, readable_on(colour))

    def _paint_text(self, p: QPainter, body: QRectF, ink: QColor) -> None:
        font = theme_manager().font(1.05, bold=True)
        p.setFont(font)
        p.setPen(ink)
        text_rect = body.adjusted(ui(6), ui(4), -ui(6), -body.height() * 0.38)
        title = QFontMetricsF(font).elidedText(self.title, Qt.TextElideMode.ElideRight, text_rect.width())
        p.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, title)
        small = theme_manager().font(0.78)
        p.setFont(small)
        muted = QColor(ink)
        muted.setAlphaF(0.8)
        p.setPen(muted)
        note_rect = body.adjusted(ui(6), body.height() * 0.58, -ui(6), -ui(3))
        note = "attached" if self.attached else "loose"
        p.drawText(note_rect, Qt.AlignmentFlag.AlignCenter, note)

    # -------------------------------------------------------------- interaction

    def hoverEnterEvent(self, event) -> None:
        self._hovered = True
        self.update()
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event) -> None:
        self._hovered = False
        self.update()
        super().hoverLeaveEvent(event)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and self.scene() is not None:
            self.scene().brick_item_moved(self)  # type: ignore[attr-defined]
        return super().itemChange(change, value)


class PlateItem(_Refreshable, QGraphicsObject):
    """The common module: a wide rounded base plate with a row of slots, each with studs.

    ``hover_state`` is ``IDLE``, ``FITS`` (green: a brick dragged here would attach) or
    ``DOES_NOT_FIT`` (red: it would not; ``hover_reason`` says why).
    """

    Type = QGraphicsItem.UserType + 100
    MIN_SLOTS = 4

    def __init__(self, title: str, detail: str) -> None:
        super().__init__()
        self.title = title
        self.detail = detail
        self.slot_count = self.MIN_SLOTS
        self.hover_state = IDLE
        self.hover_reason = ""
        self.hover_slot = -1
        self.setFlags(QGraphicsItem.GraphicsItemFlag.ItemIsMovable | QGraphicsItem.GraphicsItemFlag.ItemIsSelectable
                      | QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(0)
        # Painted once into a pixmap: every brick moving or changing over the plate repaints the
        # plate's region, and redrawing its slots and studs each time cost ~10 ms per edit.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setToolTip(f"{title}\n{detail}\nDrop bricks here to add their tasks.")

    def type(self) -> int:
        return self.Type

    # -------------------------------------------------------------- geometry

    def _margin(self) -> float:
        return ui(16.0)

    def _gap(self) -> float:
        return ui(10.0)

    def _label_height(self) -> float:
        return ui(40.0)

    def set_slot_count(self, count: int) -> None:
        count = max(self.MIN_SLOTS, count)
        if count != self.slot_count:
            self.prepareGeometryChange()
            self.slot_count = count
            self.update()

    def grid(self) -> tuple[int, int]:
        """(rows, columns) of slots: at most six to a row, rows as even as they can be."""
        rows = -(-self.slot_count // 6)
        return rows, -(-self.slot_count // rows)

    def plate_rect(self) -> QRectF:
        w, h = brick_size()
        m = self._margin()
        rows, cols = self.grid()
        width = 2 * m + cols * w + (cols - 1) * self._gap()
        height = 2 * m + rows * (h + ui(12.0)) + (rows - 1) * self._gap() + self._label_height()
        return QRectF(0, 0, width, height)

    def boundingRect(self) -> QRectF:
        return self.plate_rect().adjusted(-ui(6), -ui(6), ui(6), ui(6))

    def slot_rect(self, index: int) -> QRectF:
        """A slot's brick body rectangle, in item coordinates."""
        w, h = brick_size()
        m = self._margin()
        row, col = divmod(index, self.grid()[1])
        return QRectF(m + col * (w + self._gap()), m + ui(12.0) + row * (h + ui(12.0) + self._gap()), w, h)

    def slot_centre(self, index: int) -> QPointF:
        """Where an attached brick's centre sits, in scene coordinates."""
        return self.mapToScene(self.slot_rect(index).center())

    def contains_scene_point(self, scene_pos: QPointF) -> bool:
        return self.plate_rect().contains(self.mapFromScene(scene_pos))

    # -------------------------------------------------------------- hover feedback

    def set_hover(self, state: str, reason: str = "", slot: int = -1) -> None:
        if (state, reason, slot) != (self.hover_state, self.hover_reason, self.hover_slot):
            self.hover_state, self.hover_reason, self.hover_slot = state, reason, slot
            self.update()

    def clear_hover(self) -> None:
        self.set_hover(IDLE)

    # -------------------------------------------------------------- painting

    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = theme_manager().theme
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.plate_rect()
        plate = theme.color("plate")
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 35))
        p.drawRoundedRect(rect.translated(ui(3), ui(4)), ui(14), ui(14))
        outline = QPen(plate.darker(135), ui(1.5))
        if self.hover_state == FITS:
            outline = QPen(theme.color("ok"), ui(4.0))
        elif self.hover_state == DOES_NOT_FIT:
            outline = QPen(theme.color("bad"), ui(4.0))
        elif self.isSelected():
            outline = QPen(theme.color("accent"), ui(3.0))
        p.setPen(outline)
        p.setBrush(plate)
        p.drawRoundedRect(rect, ui(14), ui(14))
        for i in range(self.slot_count):
            self._paint_slot(p, i, plate)
        self._paint_label(p, rect)

    def _paint_slot(self, p: QPainter, index: int, plate: QColor) -> None:
        theme = theme_manager().theme
        slot = self.slot_rect(index)
        if index == self.hover_slot and self.hover_state in (FITS, DOES_NOT_FIT):
            colour = theme.color("ok" if self.hover_state == FITS else "bad")
            fill = QColor(colour)
            fill.setAlphaF(0.28)
            p.setPen(QPen(colour, ui(2.0), Qt.PenStyle.DashLine))
            p.setBrush(fill)
        else:
            p.setPen(QPen(plate.darker(118), ui(1.0), Qt.PenStyle.DotLine))
            p.setBrush(plate.darker(104))
        p.drawRoundedRect(slot, ui(6), ui(6))
        r = ui(6.0)
        for fx in (0.2, 0.4, 0.6, 0.8):
            for fy in (0.32, 0.72):
                _draw_stud(p, QPointF(slot.left() + slot.width() * fx, slot.top() + slot.height() * fy), r, plate)

    def _paint_label(self, p: QPainter, rect: QRectF) -> None:
        theme = theme_manager().theme
        label = QRectF(rect.left() + self._margin(), rect.bottom() - self._label_height() - ui(4),
                       rect.width() - 2 * self._margin(), self._label_height())
        title_font = theme_manager().font(1.1, bold=True)
        p.setFont(title_font)
        p.setPen(theme.color("text"))
        metrics = QFontMetricsF(title_font)
        title = metrics.elidedText(self.title, Qt.TextElideMode.ElideRight, label.width() * 0.5)
        p.drawText(label, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        p.setFont(theme_manager().font(0.9))
        p.setPen(theme.color("muted"))
        rest = label.adjusted(metrics.horizontalAdvance(title) + ui(14), 0, 0, 0)
        detail = QFontMetricsF(p.font()).elidedText(self.detail, Qt.TextElideMode.ElideRight, rest.width())
        p.drawText(rest, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, detail)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value):
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged and self.scene() is not None:
            self.scene().plate_item_moved(self)  # type: ignore[attr-defined]
        return super().itemChange(change, value)


class ReasonBubble(_Refreshable, QGraphicsObject):
    """A rounded label on the canvas that says, in words, whether a dragged brick fits."""

    def __init__(self) -> None:
        super().__init__()
        self._text = ""
        self._ok = True
        self.setZValue(50)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.hide()

    def text(self) -> str:
        return self._text

    @property
    def ok(self) -> bool:
        return self._ok

    def show_message(self, text: str, ok: bool, anchor: QPointF) -> None:
        self.prepareGeometryChange()
        self._text, self._ok = text, ok
        self.setPos(anchor)
        self.show()
        self.update()

    def _text_rect(self) -> QRectF:
        font = theme_manager().font(0.95, bold=not self._ok)
        width = ui(360.0)
        bound = QFontMetricsF(font).boundingRect(QRectF(0, 0, width, 10_000),
                                                 int(Qt.TextFlag.TextWordWrap), self._text)
        return QRectF(0, 0, min(width, bound.width() + 1), bound.height() + 1)

    def boundingRect(self) -> QRectF:
        r = self._text_rect()
        pad = ui(8.0)
        # anchored at its bottom-centre, floating above the point it explains
        return QRectF(-r.width() / 2 - pad, -r.height() - 2 * pad - ui(8), r.width() + 2 * pad, r.height() + 2 * pad + ui(8))

    def paint(self, p: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = theme_manager().theme
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = self.boundingRect().adjusted(0, 0, 0, -ui(8))
        colour = theme.color("ok" if self._ok else "bad")
        path = QPainterPath()
        path.addRoundedRect(box, ui(7), ui(7))
        tip = QPainterPath()
        tip.moveTo(-ui(7), box.bottom())
        tip.lineTo(0, box.bottom() + ui(8))
        tip.lineTo(ui(7), box.bottom())
        tip.closeSubpath()
        path = path.united(tip)
        p.setPen(QPen(colour.darker(120), ui(1.2)))
        p.setBrush(colour)
        p.drawPath(path)
        p.setPen(readable_on(colour))
        p.setFont(theme_manager().font(0.95, bold=not self._ok))
        pad = ui(8.0)
        p.drawText(box.adjusted(pad, pad, -pad, -pad), int(Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignCenter),
                   self._text)
