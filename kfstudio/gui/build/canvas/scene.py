"""The assembly canvas: ``BrickScene`` draws a ``BrickGraph``; ``BrickView`` (canvas_view) shows and drives it.

The scene redraws from the graph's events only. Gestures never touch the graph: the view
emits ``brick_dropped`` for a palette drop and the scene emits ``move_finished`` when the
user lets go of moved items; the build page turns both into edits on the undo stack, and
the graph's events then put every item where the graph says (orange-canvas-core's split
of scheme, canvas and document).

While a brick is dragged over the base plate the plate turns green where it fits and red
where it does not, with the reason in words in a bubble (``scene.bubble``) and in the
status tip. ``check_palette`` / ``check_node`` are the page's hooks that answer "why not?"
(``None`` means "it fits").
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import QGraphicsScene

from kfstudio.assembly.graph import COMMON, BrickGraph
from kfstudio.gui.build.canvas.items import (
    DOES_NOT_FIT,
    FITS,
    BrickItem,
    PlateItem,
    ReasonBubble,
    brick_size,
    ui,
)
from kfstudio.gui.theme import theme_manager

Reason = str | None
SCENE_EXTENT = 6000.0


class BrickScene(QGraphicsScene):
    """Items for the common module (a plate) and every brick, kept in step with a graph."""

    move_finished = Signal(object)     # {node_id: ((old x, y), (new x, y))}
    status_message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSceneRect(-SCENE_EXTENT, -SCENE_EXTENT, 2 * SCENE_EXTENT, 2 * SCENE_EXTENT)
        self.graph: BrickGraph | None = None
        self.plate: PlateItem | None = None
        self.bricks: dict[str, BrickItem] = {}
        self.bubble = ReasonBubble()
        self.addItem(self.bubble)
        self.colour_index: Callable[[str], int] = lambda node_id: 0
        self.describe_common: Callable[[], tuple[str, str]] = lambda: ("Common module", "")
        self.describe_brick: Callable[[str], str] = lambda node_id: ""
        self.expected_slots: Callable[[], int] = lambda: PlateItem.MIN_SLOTS
        self.check_node: Callable[[str], Reason] = lambda node_id: None
        self._placing = False
        self._pressed: dict[str, tuple[float, float]] = {}
        self._connections: list[tuple[object, Callable]] = []
        theme_manager().changed.connect(self._on_theme_changed)

    # ------------------------------------------------------------------ the graph

    def set_graph(self, graph: BrickGraph) -> None:
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self.graph = graph
        self._connections = [
            (graph.common_changed, self._on_graph_common_changed), (graph.brick_added, self._on_graph_brick_added),
            (graph.brick_removed, self._on_graph_brick_removed), (graph.attached, self._on_graph_attachment),
            (graph.detached, self._on_graph_attachment), (graph.moved, self._on_graph_moved),
            (graph.renamed, self._on_graph_renamed),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self.rebuild()

    def rebuild(self) -> None:
        """Drop every item and draw the graph afresh."""
        for item in list(self.bricks.values()):
            self.removeItem(item)
        self.bricks.clear()
        if self.plate is not None:
            self.removeItem(self.plate)
            self.plate = None
        if self.graph is None:
            return
        self._on_graph_common_changed(self.graph.common)
        for node_id in self.graph.brick_ids():
            self._add_brick_item(node_id)
        self.relayout()

    def _on_graph_common_changed(self, common) -> None:
        if self.plate is not None:
            self.removeItem(self.plate)
            self.plate = None
        if common is not None:
            title, detail = self.describe_common()
            self.plate = PlateItem(title, detail)
            self.addItem(self.plate)
        self.relayout()

    def _add_brick_item(self, node_id: str) -> BrickItem:
        item = BrickItem(node_id, self.graph.title(node_id), self.colour_index(node_id), self.describe_brick(node_id))
        self.bricks[node_id] = item
        self.addItem(item)
        return item

    def _on_graph_brick_added(self, node_id: str) -> None:
        self._add_brick_item(node_id)
        self.relayout()

    def _on_graph_brick_removed(self, node_id: str) -> None:
        item = self.bricks.pop(node_id, None)
        if item is not None:
            self.removeItem(item)
        self.relayout()

    def _on_graph_attachment(self, node_id: str) -> None:
        self.relayout()

    def _on_graph_moved(self, node_id: str, x: float, y: float) -> None:
        self.relayout()

    def _on_graph_renamed(self, node_id: str, title: str) -> None:
        if node_id in self.bricks:
            self.bricks[node_id].set_title(title)

    def relayout(self) -> None:
        """Put every item where the graph says: attached bricks in the plate's slots, in order."""
        if self.graph is None:
            return
        self._placing = True
        try:
            attached = self.graph.attached_ids()
            if self.plate is not None:
                self.plate.set_slot_count(max(self.expected_slots(), len(attached) + 1))
                self.plate.setPos(QPointF(*self.graph.common_position))
            for node_id, item in self.bricks.items():
                is_attached = node_id in attached and self.plate is not None
                item.set_attached(is_attached)
                if is_attached:
                    item.setPos(self.plate.slot_centre(attached.index(node_id)))
                else:
                    item.setPos(QPointF(*self.graph.position(node_id)))
        finally:
            self._placing = False

    def _on_theme_changed(self) -> None:
        for item in self.items():
            if isinstance(item, (BrickItem, PlateItem, ReasonBubble)):
                item.refresh_geometry()
        self.relayout()
        self.update()

    # ------------------------------------------------------------------ questions the page asks

    def next_slot(self) -> int:
        return len(self.graph.attached_ids()) if self.graph is not None else 0

    def over_plate(self, scene_pos: QPointF) -> bool:
        return self.plate is not None and self.plate.contains_scene_point(scene_pos)

    def selected_node_ids(self) -> list[str]:
        return [i.node_id for i in self.selectedItems() if isinstance(i, BrickItem)]

    def free_spot(self) -> tuple[float, float]:
        """A place below the plate, clear of loose bricks, for a brick added without a position."""
        w, h = brick_size()
        top = (self.plate.sceneBoundingRect().bottom() if self.plate is not None else 0.0) + h + ui(30)
        left = self.plate.sceneBoundingRect().left() + w / 2 + ui(16) if self.plate is not None else 0.0
        taken = [i.sceneBoundingRect() for i in self.bricks.values() if not i.attached]
        for row in range(50):
            for col in range(8):
                centre = QPointF(left + col * (w + ui(16)), top + row * (h + ui(24)))
                box = QRectF(centre.x() - w / 2, centre.y() - h / 2, w, h)
                if not any(box.intersects(t) for t in taken):
                    return centre.x(), centre.y()
        return left, top

    # ------------------------------------------------------------------ drag feedback

    def show_fit(self, scene_pos: QPointF, title: str, reason: Reason, verb: str = "attach") -> None:
        """Colour the plate for a brick hovering at ``scene_pos`` and say why, in words."""
        if not self.over_plate(scene_pos):
            self.clear_fit()
            return
        slot = min(self.next_slot(), self.plate.slot_count - 1)
        anchor_rect = self.plate.slot_rect(slot)
        anchor = self.plate.mapToScene(QPointF(anchor_rect.center().x(), anchor_rect.top() - ui(10)))
        if reason is None:
            self.plate.set_hover(FITS, "", slot)
            message = f"Release to {verb} '{title}'."
        else:
            self.plate.set_hover(DOES_NOT_FIT, reason, slot)
            message = reason
        self.bubble.show_message(message, reason is None, anchor)
        self.status_message.emit(message)

    def show_note(self, scene_pos: QPointF, message: str, ok: bool = True) -> None:
        self.bubble.show_message(message, ok, scene_pos)
        self.status_message.emit(message)

    def clear_fit(self) -> None:
        if self.plate is not None:
            self.plate.clear_hover()
        if self.bubble.isVisible():
            self.bubble.hide()
            self.status_message.emit("")

    # ------------------------------------------------------------------ item moves

    def brick_item_moved(self, item: BrickItem) -> None:
        """An item's position changed: during a user drag, show whether it would attach."""
        if self._placing or not self._pressed or item.node_id not in self._pressed:
            return
        centre = item.scenePos()
        if item.attached:
            if self.over_plate(centre):
                self.clear_fit()
            else:
                self.show_note(centre + QPointF(0, -brick_size()[1] / 2), f"Release to detach '{item.title}'.")
        elif len(self._pressed) == 1:
            self.show_fit(centre, item.title, self.check_node(item.node_id))

    def plate_item_moved(self, plate: PlateItem) -> None:
        """The plate is being dragged: the attached bricks ride along."""
        if self._placing or self.graph is None:
            return
        self._placing = True
        try:
            for index, node_id in enumerate(self.graph.attached_ids()):
                if node_id in self.bricks and node_id not in self._pressed:
                    self.bricks[node_id].setPos(plate.slot_centre(index))
        finally:
            self._placing = False

    def _movable_positions(self) -> dict[str, tuple[float, float]]:
        positions = {}
        for item in self.selectedItems():
            if isinstance(item, BrickItem):
                positions[item.node_id] = (item.pos().x(), item.pos().y())
            elif item is self.plate:
                positions[COMMON] = (item.pos().x(), item.pos().y())
        return positions

    def mousePressEvent(self, event) -> None:
        super().mousePressEvent(event)
        self._pressed = self._movable_positions() if event.button() == Qt.MouseButton.LeftButton else {}

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        if event.button() != Qt.MouseButton.LeftButton or not self._pressed:
            return
        pressed, self._pressed = self._pressed, {}
        now = self._movable_positions()
        moves = {n: (old, now[n]) for n, old in pressed.items() if n in now and now[n] != old}
        self.clear_fit()
        if moves:
            self.move_finished.emit(moves)
