"""The "Relations" tab: a run's bricks as nodes, their DEPARA relatedness as edges.

The scores come from ``kfstudio.io.relatedness`` (the same as ``kfstudio relate``): read from
the run's ``relatedness.json`` when it still matches the run's bricks, otherwise computed in
a worker thread (a few seconds: one forward and backward pass of 64 probe images per brick)
and written there. Nodes are laid out by networkx's spring layout, more related bricks
nearer; a slider hides the weaker links; clicking a link says in words how alike the two
bricks are (the DEPARA scores themselves are in the tooltip). Links stop at the nodes' edges and
each name goes on the side of its node that no link crosses, on a plate of its own above the
links, so the names stay readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import networkx as nx
from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsLineItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from kfstudio.core.errors import KFError
from kfstudio.gui.build.canvas.items import task_colour
from kfstudio.gui.theme import theme_manager

SCALE = 220.0  # scene units per unit of layout
NODE_RADIUS = 18.0
LABEL_PAD = 3.0
PLAIN_MEANING = "Bricks that look at images the same way are linked: the thicker and shorter the link, the more alike."


def _between_borders(a: QPointF, b: QPointF) -> tuple[QPointF, QPointF]:
    """The part of the segment a-b outside both nodes' circles: a link stops at the nodes' edges."""
    line = QLineF(a, b)
    length = line.length()
    if length <= 2 * NODE_RADIUS:
        return a, a
    return line.pointAt(NODE_RADIUS / length), line.pointAt(1 - NODE_RADIUS / length)


def label_places(centre: QPointF, width: float, height: float) -> list[QRectF]:
    """Where a node's name may go: below, above, right of and left of the node (in that order)."""
    w, h, gap = width + 2 * LABEL_PAD, height + 2 * LABEL_PAD, NODE_RADIUS + 2
    x, y = centre.x(), centre.y()
    return [QRectF(x - w / 2, y + gap, w, h), QRectF(x - w / 2, y - gap - h, w, h),
            QRectF(x + gap, y - h / 2, w, h), QRectF(x - gap - w, y - h / 2, w, h)]


def _crosses(line: QLineF, rect: QRectF) -> bool:
    """Whether a link passes through a label's rectangle."""
    if rect.contains(line.p1()) or rect.contains(line.p2()):
        return True
    corners = [rect.topLeft(), rect.topRight(), rect.bottomRight(), rect.bottomLeft()]
    return any(line.intersects(QLineF(corners[i], corners[(i + 1) % 4]))[0] == QLineF.IntersectionType.BoundedIntersection
               for i in range(4))


def _how_alike(rank: float) -> str:
    """Words for where a pair stands among the run's pairs (0 = least alike, 1 = most)."""
    if rank >= 0.8:
        return "in very much the same way"
    if rank >= 0.5:
        return "in fairly similar ways"
    if rank >= 0.2:
        return "in somewhat different ways"
    return "in very different ways"


def _compute_job(folder: str) -> dict:
    """Runs in a worker thread: compute the scores and cache them in the run folder."""
    import torch

    from kfstudio.io.relatedness import compute_relatedness, save_relatedness

    torch.set_num_threads(1)
    doc = compute_relatedness(folder)
    save_relatedness(folder, doc)
    return doc


class RelationEdgeItem(QGraphicsLineItem):
    """A line between two bricks that is easy to click (its shape is 10 px wide)."""

    def __init__(self, a: int, b: int, score: float, line: tuple[QPointF, QPointF]) -> None:
        start, end = _between_borders(*line)
        super().__init__(start.x(), start.y(), end.x(), end.y())
        self.a, self.b, self.score = a, b, score
        self.setZValue(-1)

    def shape(self) -> QPainterPath:
        path = QPainterPath(self.line().p1())
        path.lineTo(self.line().p2())
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        return stroker.createStroke(path)


class RelationsScene(QGraphicsScene):
    edge_clicked = Signal(int, int)

    def mousePressEvent(self, event) -> None:
        for item in self.items(event.scenePos()):
            if isinstance(item, RelationEdgeItem) and item.isVisible():
                self.edge_clicked.emit(item.a, item.b)
                event.accept()
                return
        super().mousePressEvent(event)


def layout_positions(score: list[list[float]], seed: int = 0) -> list[tuple[float, float]]:
    """Spring layout with each pair's attraction its relatedness (negative scores attract not at all)."""
    n = len(score)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            graph.add_edge(i, j, weight=max(0.0, score[i][j]) + 1e-3)
    pos = nx.spring_layout(graph, weight="weight", seed=seed)
    return [(float(pos[i][0]), float(pos[i][1])) for i in range(n)]


class RelationsView(QWidget):
    """Draws a relatedness document; ``folder_of()`` says which run the plate comes from."""

    ready = Signal()             # a document is drawn
    edge_selected = Signal(str)  # the text shown for a clicked edge

    def __init__(self, folder_of: Callable[[], Path | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder_of = folder_of
        self.doc: dict | None = None
        self.folder: Path | None = None
        self.from_cache = False
        self._worker = None
        self.edges: list[RelationEdgeItem] = []
        self.labels: list[QGraphicsRectItem] = []
        self.scene = RelationsScene(self)
        self.scene.edge_clicked.connect(self._on_scene_edge_clicked)
        self.view = QGraphicsView(self.scene, self)
        self.view.setObjectName("relationsView")
        self.view.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 100)
        self.slider.setValue(50)
        self.slider.setToolTip("Move right to keep only the links between the most alike bricks")
        self.slider.valueChanged.connect(self._on_slider_value_changed)
        self.threshold_label = QLabel(self)
        self.refresh_button = QPushButton("Recompute", self)
        self.refresh_button.clicked.connect(lambda: self.refresh(force=True))
        self.info = QLabel("Open the Relations tab with a run on the plate to see how its bricks relate.", self)
        self.info.setWordWrap(True)
        self.info.setObjectName("relationsInfo")
        row = QHBoxLayout()
        row.addWidget(QLabel("Hide weaker links", self))
        row.addWidget(self.slider, 1)
        row.addWidget(self.threshold_label)
        row.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(row)
        layout.addWidget(self.info)

    # ------------------------------------------------------------------ data

    def invalidate(self) -> None:
        """The run's bricks changed: measure again the next time the tab is shown."""
        self.doc = None
        if self.isVisible():
            self.refresh()

    def is_computing(self) -> bool:
        return self._worker is not None

    def refresh(self, force: bool = False) -> None:
        """Draw the plate's run: from relatedness.json when it still fits, else compute in the background."""
        folder = self.folder_of()
        if folder is None or self.is_computing():
            return
        folder = Path(folder)
        if not force and self.doc is not None and folder == self.folder:
            return
        self.folder = folder
        from kfstudio.io.relatedness import cached_relatedness

        try:
            cached = None if force else cached_relatedness(folder)
        except KFError as exc:
            self.info.setText(str(exc))
            return
        if cached is not None:
            self.from_cache = True
            self.set_document(cached)
            return
        self.from_cache = False
        self.info.setText("Measuring how the bricks relate (DEPARA on 64 probe images)…")
        self._worker = create_worker(_compute_job, str(folder), _start_thread=True,
                                     _connect={"returned": self._on_worker_returned,
                                               "errored": self._on_worker_errored})

    def _on_worker_returned(self, doc: dict) -> None:
        self._worker = None
        self.set_document(doc)

    def _on_worker_errored(self, exc: Exception) -> None:
        self._worker = None
        self.info.setText(str(exc) if isinstance(exc, KFError) else f"Could not measure the relations: {exc}")

    def set_document(self, doc: dict) -> None:
        self.doc = doc
        self._draw()
        source = "read from relatedness.json" if self.from_cache else "measured now and saved to relatedness.json"
        self.info.setText(f"{PLAIN_MEANING} Click a link to compare two bricks.")
        self.info.setToolTip(f"{len(doc['bricks'])} bricks compared with DEPARA on {doc['probes']['n']} probe "
                             f"images ({source}): S = attribution cosine + λ × edge rank correlation, "
                             f"λ = {doc['lambda']}.")
        self.ready.emit()

    # ------------------------------------------------------------------ drawing

    def _off_diagonal(self) -> list[float]:
        score = self.doc["matrix"]["score"]
        return [score[i][j] for i in range(len(score)) for j in range(i + 1, len(score))]

    def threshold(self) -> float:
        values = self._off_diagonal() if self.doc else [0.0]
        lo, hi = min(values), max(values)
        return lo + (hi - lo) * self.slider.value() / 100

    def _draw(self) -> None:
        self.scene.clear()
        self.edges = []
        score = self.doc["matrix"]["score"]
        points = [QPointF(x * SCALE, y * SCALE) for x, y in layout_positions(score)]
        values = self._off_diagonal()
        lo, hi = min(values), max(values)
        theme = theme_manager().theme
        for i in range(len(points)):
            for j in range(i + 1, len(points)):
                edge = RelationEdgeItem(i, j, score[i][j], (points[i], points[j]))
                weight = (score[i][j] - lo) / (hi - lo) if hi > lo else 1.0
                edge.setPen(QPen(theme.color("accent"), 1 + 6 * weight))
                self.scene.addItem(edge)
                self.edges.append(edge)
        for i, (brick, p) in enumerate(zip(self.doc["bricks"], points)):
            node = QGraphicsEllipseItem(p.x() - NODE_RADIUS, p.y() - NODE_RADIUS, 2 * NODE_RADIUS, 2 * NODE_RADIUS)
            node.setBrush(QBrush(task_colour(i)))
            node.setPen(QPen(QColor(theme.color("text")), 1))
            self.scene.addItem(node)
        self._apply_threshold()
        self.labels = [self._label(brick["title"], p) for brick, p in zip(self.doc["bricks"], points)]
        self.view.fitInView(self.scene.itemsBoundingRect().adjusted(-30, -30, 30, 30),
                            Qt.AspectRatioMode.KeepAspectRatio)

    def _label(self, title: str, centre: QPointF) -> QGraphicsRectItem:
        """A node's name on a plate above the links, on the side of the node that crosses fewest links."""
        theme = theme_manager().theme
        text = QGraphicsSimpleTextItem(title)
        text.setBrush(QBrush(theme.color("text")))
        size = text.boundingRect().size()
        places = label_places(centre, size.width(), size.height())
        lines = [edge.line() for edge in self.edges]
        place = min(places, key=lambda rect: sum(_crosses(line, rect) for line in lines))
        plate = QGraphicsRectItem(place)
        plate.setBrush(QBrush(QColor(theme.base)))
        plate.setPen(QPen(Qt.PenStyle.NoPen))
        plate.setZValue(1)
        text.setParentItem(plate)
        text.setPos(place.topLeft() + QPointF(LABEL_PAD, LABEL_PAD))
        self.scene.addItem(plate)
        return plate

    def _apply_threshold(self) -> None:
        t = self.threshold()
        for edge in self.edges:
            edge.setVisible(edge.score >= t)
        self.threshold_label.setText(f"{len(self.visible_edges())} of {len(self.edges)} links")
        self.slider.setToolTip(f"Move right to keep only the links between the most alike bricks (now: S ≥ {t:.3f})")

    def visible_edges(self) -> list[RelationEdgeItem]:
        return [e for e in self.edges if e.isVisible()]

    def _on_slider_value_changed(self, _value: int) -> None:
        if self.doc is not None:
            self._apply_threshold()

    def _on_scene_edge_clicked(self, a: int, b: int) -> None:
        m, names = self.doc["matrix"], [x["title"] for x in self.doc["bricks"]]
        values = self._off_diagonal()
        rank = sum(v <= m["score"][a][b] for v in values) / len(values)
        text = f"{names[a]} and {names[b]} look at images {_how_alike(rank)} (closer than {rank:.0%} of the pairs here)."
        self.info.setText(text)
        self.info.setToolTip(f"{names[a]} — {names[b]}: S = {m['score'][a][b]:.3f} (attribution cosine "
                             f"{m['attribution'][a][b]:.3f}, edge rank correlation {m['edges'][a][b]:.3f}, "
                             f"λ = {self.doc['lambda']})")
        self.edge_selected.emit(text)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
