"""The canvas's view: ``BrickView`` shows a ``BrickScene`` and turns gestures into requests.

Zoom (Ctrl+wheel, keys), pan (middle drag or space+drag), rubber-band selection, drops from
the palette (``brick_dropped``) with the fits / does-not-fit feedback, and the context menus.
It fits the assembly to itself whenever it is shown or resized, until the user zooms by hand.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPen, QTransform, QWheelEvent
from PySide6.QtWidgets import QGraphicsView, QMenu, QWidget

from kfstudio.gui.build.canvas.scene import BrickScene, Reason
from kfstudio.gui.build.canvas.items import BrickItem, PlateItem, ui
from kfstudio.gui.build.palette import decode_brick_mime
from kfstudio.gui.theme import theme_manager


class BrickView(QGraphicsView):
    """Zoom (Ctrl+wheel), pan (middle drag or space+drag), rubber-band selection and drops."""

    brick_dropped = Signal(str, QPointF)   # palette key, scene position
    zoom_changed = Signal(float)

    MIN_ZOOM, MAX_ZOOM = 0.1, 6.0

    def __init__(self, scene: BrickScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.brick_scene = scene
        self.check_palette: Callable[[str], Reason] = lambda key: None
        self.palette_title: Callable[[str], str] = lambda key: key
        self.brick_actions: list = []
        self.canvas_actions: list = []
        self.setAcceptDrops(True)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPointF | None = None
        self._space_down = False
        # Fit the assembly whenever the view is shown or resized, until the user zooms by hand
        # (fitting a hidden view gives a plate a few pixels wide: it has no real size yet).
        self.auto_fit = True
        theme_manager().changed.connect(self.viewport().update)

    # ------------------------------------------------------------------ zoom and fit

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        self.auto_fit = False
        target = max(self.MIN_ZOOM, min(self.MAX_ZOOM, self.zoom() * factor))
        factor = target / self.zoom()
        if abs(factor - 1.0) > 1e-9:
            self.scale(factor, factor)
            self.zoom_changed.emit(self.zoom())

    def zoom_in(self) -> None:
        self.zoom_by(1.25)

    def zoom_out(self) -> None:
        self.zoom_by(0.8)

    def reset_zoom(self) -> None:
        self.auto_fit = False
        self.setTransform(QTransform())
        self.zoom_changed.emit(1.0)

    def fit_to_view(self) -> None:
        """Show every brick and the plate, no larger than twice their size (now, or when shown)."""
        self.auto_fit = True
        if not self.isVisible() or self.viewport().width() < 2:
            return  # showEvent fits
        items = [i for i in self.scene().items() if isinstance(i, (BrickItem, PlateItem))]
        if not items:
            self.setTransform(QTransform())
            self.centerOn(0, 0)
            self.zoom_changed.emit(1.0)
            return
        rect = QRectF()
        for item in items:
            rect = rect.united(item.sceneBoundingRect())
        margin = ui(40)
        self.fitInView(rect.adjusted(-margin, -margin, margin, margin), Qt.AspectRatioMode.KeepAspectRatio)
        if self.zoom() > 2.0:
            self.setTransform(QTransform.fromScale(2.0, 2.0))
            self.centerOn(rect.center())
        self.zoom_changed.emit(self.zoom())

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.auto_fit:
            self.fit_to_view()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.auto_fit:
            self.fit_to_view()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120.0
            if steps:
                self.zoom_by(1.15 ** steps)
            event.accept()
            return
        super().wheelEvent(event)

    # ------------------------------------------------------------------ panning

    def _start_pan(self, event: QMouseEvent) -> None:
        self._pan_from = event.position()
        self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
                self._space_down and event.button() == Qt.MouseButton.LeftButton):
            self._start_pan(event)
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space_down else Qt.CursorShape.ArrowCursor)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.viewport().unsetCursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        self._space_down = False
        super().focusOutEvent(event)

    # ------------------------------------------------------------------ palette drops

    def _drag_key(self, event) -> str | None:
        return decode_brick_mime(event.mimeData())

    def dragEnterEvent(self, event) -> None:
        key = self._drag_key(event)
        if key is None:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self._feedback(key, self.mapToScene(event.position().toPoint()))

    def dragMoveEvent(self, event) -> None:
        key = self._drag_key(event)
        if key is None:
            event.ignore()
            return
        pos = self.mapToScene(event.position().toPoint())
        fits = self._feedback(key, pos)
        event.setDropAction(Qt.DropAction.CopyAction)
        event.setAccepted(fits or not self.brick_scene.over_plate(pos))

    def dragLeaveEvent(self, event) -> None:
        self.brick_scene.clear_fit()
        event.accept()

    def dropEvent(self, event) -> None:
        key = self._drag_key(event)
        if key is None:
            event.ignore()
            return
        pos = self.mapToScene(event.position().toPoint())
        if self.brick_scene.over_plate(pos):
            reason = self.check_palette(key)
            if reason is not None:
                # refused: the reason stays on the canvas until the next gesture
                self.brick_scene.show_fit(pos, self.palette_title(key), reason)
                event.ignore()
                return
        self.brick_scene.clear_fit()
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.brick_dropped.emit(key, pos)

    def _feedback(self, key: str, scene_pos: QPointF) -> bool:
        if not self.brick_scene.over_plate(scene_pos):
            self.brick_scene.clear_fit()
            return True
        reason = self.check_palette(key)
        self.brick_scene.show_fit(scene_pos, self.palette_title(key), reason)
        return reason is None

    # ------------------------------------------------------------------ context menus

    def context_menu_for(self, view_pos) -> QMenu:
        """The menu for a right-click at ``view_pos``: brick actions on a brick (which gets
        selected), canvas actions elsewhere."""
        item = self.itemAt(view_pos)
        while item is not None and not isinstance(item, (BrickItem, PlateItem)):
            item = item.parentItem()
        menu = QMenu(self)
        if isinstance(item, BrickItem):
            if not item.isSelected():
                self.scene().clearSelection()
                item.setSelected(True)
            actions = self.brick_actions
        else:
            actions = self.canvas_actions
        for action in actions:
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        return menu

    def contextMenuEvent(self, event) -> None:
        menu = self.context_menu_for(event.pos())
        menu.exec(event.globalPos())
        menu.deleteLater()

    # ------------------------------------------------------------------ background

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        theme = theme_manager().theme
        painter.fillRect(rect, QColor(theme.window))
        step = ui(24.0)
        if self.zoom() * step < 8:
            return
        painter.setPen(QPen(QColor(theme.grid), 0))
        left = int(rect.left() // step) * step
        top = int(rect.top() // step) * step
        points = []
        y = top
        while y < rect.bottom():
            x = left
            while x < rect.right():
                points.append(QPointF(x, y))
                x += step
            y += step
        painter.drawPoints(points)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent) \
                and event.key() == Qt.Key.Key_Space:
            event.accept()
            return True
        return super().event(event)
