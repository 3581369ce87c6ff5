"""The brick graph's primitives and the events the canvas redraws from."""

from __future__ import annotations

import pytest

from kfstudio.assembly.graph import COMMON, BrickGraph, GraphError
from kfstudio.assembly.rules import DifferentCommonModule


class Recorder:
    """Collects every event a graph emits as (name, args)."""

    NAMES = ("common_changed", "brick_added", "brick_removed", "attached", "detached", "moved", "renamed", "changed")

    def __init__(self, graph: BrickGraph) -> None:
        self.events: list[tuple] = []
        for name in self.NAMES:
            getattr(graph, name).connect(lambda *args, n=name: self.events.append((n, *args)))

    def names(self) -> list[str]:
        return [e[0] for e in self.events if e[0] != "changed"]


def test_add_attach_detach_remove_emit_events(graph, digits_bricks):
    rec = Recorder(graph)
    node = graph.add_brick(digits_bricks["7"], (10, 20))
    graph.attach(node)
    graph.detach(node)
    graph.attach(node)
    graph.remove_brick(node)
    assert rec.names() == ["brick_added", "attached", "detached", "attached", "detached", "brick_removed"]
    assert rec.events[0] == ("brick_added", node)
    assert sum(1 for e in rec.events if e[0] == "changed") == 6
    assert graph.brick_ids() == []


def test_nodes_remember_files_titles_positions(graph, digits_bricks):
    node = graph.add_brick(digits_bricks["1"], (3, 4))
    assert node == "brick:1" and graph.title(node) == "digit 1"
    assert graph.position(node) == (3.0, 4.0) and graph.brick(node) is digits_bricks["1"]
    assert graph.new_brick_id(digits_bricks["1"]) == "brick:1-2"
    assert graph.nx_graph.nodes[node]["title"] == "digit 1"


def test_attached_order_is_canvas_order(graph, digits_bricks):
    ids = [graph.add_brick(digits_bricks[t]) for t in ("7", "0", "1")]
    for node in reversed(ids):
        graph.attach(node)
    assert graph.attached_ids() == ids
    assert [b.task.name for b in graph.attached_bricks()] == ["7", "0", "1"]


def test_move_and_rename_emit_their_values(graph, digits_bricks):
    rec = Recorder(graph)
    node = graph.add_brick(digits_bricks["7"])
    graph.move(node, (5, 6))
    graph.move(COMMON, (-1, 0))
    graph.rename(node, "  seven ")
    assert ("moved", node, 5.0, 6.0) in rec.events and ("moved", COMMON, -1.0, 0.0) in rec.events
    assert ("renamed", node, "seven") in rec.events and graph.title(node) == "seven"
    assert graph.common_position == (-1.0, 0.0)
    with pytest.raises(GraphError, match="empty"):
        graph.rename(node, " ")


def test_refused_attach_changes_nothing(graph, shapes_brick):
    rec = Recorder(graph)
    node = graph.add_brick(shapes_brick)
    rec.events.clear()
    assert not graph.can_attach(node) and not graph.can_attach_brick(shapes_brick)
    with pytest.raises(DifferentCommonModule):
        graph.attach(node)
    assert rec.events == [] and graph.attached_ids() == []


def test_replacing_the_common_module_detaches_bricks(graph, digits_bricks, digits_common):
    node = graph.add_brick(digits_bricks["7"])
    graph.attach(node)
    rec = Recorder(graph)
    graph.set_common(None)
    assert rec.names() == ["detached", "common_changed"] and graph.common is None
    assert not graph.can_attach(node)
    graph.set_common(digits_common)
    assert graph.can_attach(node)


def test_unknown_nodes_and_duplicate_ids_are_refused(graph, digits_bricks):
    node = graph.add_brick(digits_bricks["7"])
    with pytest.raises(GraphError, match="already a brick"):
        graph.add_brick(digits_bricks["7"], node_id=node)
    with pytest.raises(GraphError, match="no 'nothing'"):
        graph.move("nothing", (0, 0))
    with pytest.raises(GraphError, match="not attached"):
        graph.detach(node)
    with pytest.raises(GraphError, match="not a brick"):
        graph.remove_brick(COMMON)
    assert not graph.can_attach("nothing")


def test_assembly_imports_neither_io_nor_qt():
    """Layers run core <- assembly <- io <- cli/gui: the graph must load without io or Qt."""
    import subprocess
    import sys

    code = ("import sys, kfstudio.assembly.graph, kfstudio.assembly.edits, kfstudio.assembly.build, "
            "kfstudio.assembly.measure; bad = [m for m in sys.modules if m.startswith(('kfstudio.io', 'kfstudio.gui', "
            "'PySide6', 'pyqtgraph'))]; assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
