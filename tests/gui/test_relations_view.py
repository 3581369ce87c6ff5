"""The Relations view says what "related" means in words and keeps the names clear of the links."""

from __future__ import annotations

from PySide6.QtCore import QLineF
from PySide6.QtWidgets import QGraphicsEllipseItem, QLabel

from kfstudio.gui.build.relations_view import (
    NODE_RADIUS,
    PLAIN_MEANING,
    RelationsView,
    _crosses,
    label_places,
)


def _document(n: int = 6) -> dict:
    score = [[1.0 if i == j else 0.1 + 0.8 * (1 - abs(i - j) / n) for j in range(n)] for i in range(n)]
    return {"bricks": [{"title": f"digit {i}"} for i in range(n)], "probes": {"n": 64}, "lambda": 0.5,
            "matrix": {"score": score, "attribution": score, "edges": score}}


def test_relations_speak_plainly_and_keep_names_clear_of_links(qtbot):
    """The view spoke of "S", "λ" and "edge rank correlation" and drew links through the names."""
    view = RelationsView(lambda: None)
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    view.set_document(_document())
    shown = " ".join(label.text() for label in view.findChildren(QLabel))
    assert PLAIN_MEANING in view.info.text()
    assert not any(word in shown for word in ("S ≥", "S =", "λ", "rank correlation"))
    assert "λ = 0.5" in view.info.toolTip()  # the details stay one hover away
    lines = [edge.line() for edge in view.edges]
    nodes = [item.sceneBoundingRect().center() for item in view.scene.items() if isinstance(item, QGraphicsEllipseItem)]
    chosen = below = 0
    for label in view.labels:
        assert label.zValue() > max(edge.zValue() for edge in view.edges)  # a name is drawn over any link
        assert label.brush().color().alpha() == 255  # on a plate of its own
        chosen += sum(_crosses(line, label.sceneBoundingRect()) for line in lines)
    for label in view.labels:
        rect = label.sceneBoundingRect()
        centre = min(nodes, key=lambda p: QLineF(p, rect.center()).length())
        default = label_places(centre, rect.width() - 6, rect.height() - 6)[0]
        below += sum(_crosses(line, default) for line in lines)
    assert chosen < below  # each name went where fewer links cross it than right under its node
    for line in lines:  # links stop at the nodes' borders
        for end in (line.p1(), line.p2()):
            assert min(QLineF(end, centre).length() for centre in nodes) >= NODE_RADIUS - 0.01


def test_clicking_a_link_says_how_alike_the_two_bricks_are(qtbot):
    view = RelationsView(lambda: None)
    qtbot.addWidget(view)
    view.set_document(_document())
    with qtbot.waitSignal(view.edge_selected) as said:
        view.scene.edge_clicked.emit(0, 1)
    assert said.args[0].startswith("digit 0 and digit 1 look at images in very much the same way")
    assert "S = " in view.info.toolTip() and "S = " not in view.info.text()
