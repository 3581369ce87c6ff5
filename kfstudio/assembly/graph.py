"""The brick graph: the one source of truth for what is on the canvas.

A ``BrickGraph`` holds at most one common module and any number of bricks, each with a
canvas position; an edge common -> brick means "attached". It is built on a networkx
``DiGraph`` and emits psygnal events after every change, so the canvas redraws from the
events and never changes the graph itself. Change it through ``kfstudio.assembly.edits``
(reversible, for undo); the primitives below are what the edits call.

Public API
----------
Nodes are strings: ``COMMON`` (= "common") for the common module, any other id for a brick.

Queries
    ``common`` (the CommonFile or None), ``common_position``, ``brick_ids()`` (in canvas
    order), ``attached_ids()`` (attached bricks in canvas order), ``brick(node_id)`` (the
    BrickFile: ``.task``, ``.manifest``, ``.module``), ``title(node_id)``, ``position(node_id)``,
    ``is_attached(node_id)``, ``attached_bricks()``, ``has_node(node_id)``, ``nx_graph``
    (a read-only view), ``check_attach(node_id)`` (raises an AttachError), ``can_attach(node_id)``
    and ``can_attach_brick(brick)`` (yes/no, for hover feedback), ``new_brick_id(brick)``.
Primitives (each emits its event, then ``changed``)
    ``set_common(common, position)``, ``add_brick(brick, position, node_id=None, title=None,
    order=None)``, ``remove_brick(node_id)``, ``attach(node_id)``, ``detach(node_id)``,
    ``move(node_id, position)``, ``rename(node_id, title)``.
Events (psygnal ``Signal``; connect with ``graph.brick_added.connect(callback)``)
    ``common_changed(object)``      the new CommonFile or None
    ``brick_added(str)``            node id
    ``brick_removed(str)``          node id (it was detached first, with ``detached``)
    ``attached(str)``, ``detached(str)``   node id
    ``moved(str, float, float)``    node id (bricks or COMMON), new x, y
    ``renamed(str, str)``           node id, new title
    ``changed()``                   after any of the above (for "modified" and rebuilds)
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from psygnal import Signal

from kfstudio.assembly.rules import BrickFile, CommonFile, brick_title, can_attach, check_attach
from kfstudio.core.errors import KFError

COMMON = "common"
Position = tuple[float, float]


class GraphError(KFError):
    """An edit names a brick that is not on the canvas, or reuses a name."""


class BrickGraph:
    """A common module, bricks on a canvas and which bricks are attached to it."""

    common_changed = Signal(object)
    brick_added = Signal(str)
    brick_removed = Signal(str)
    attached = Signal(str)
    detached = Signal(str)
    moved = Signal(str, float, float)
    renamed = Signal(str, str)
    changed = Signal()

    def __init__(self) -> None:
        self._g = nx.DiGraph()
        self._next_order = 0

    # ------------------------------------------------------------ queries

    @property
    def nx_graph(self) -> nx.DiGraph:
        """A read-only view of the underlying networkx graph."""
        return nx.restricted_view(self._g, [], [])

    @property
    def common(self) -> CommonFile | None:
        return self._g.nodes[COMMON]["obj"] if COMMON in self._g else None

    @property
    def common_position(self) -> Position | None:
        return self._g.nodes[COMMON]["pos"] if COMMON in self._g else None

    def has_node(self, node_id: str) -> bool:
        return node_id in self._g

    def brick_ids(self) -> list[str]:
        """Every brick on the canvas, in the order they were added (kept across undo)."""
        ids = [n for n in self._g if n != COMMON]
        return sorted(ids, key=lambda n: self._g.nodes[n]["order"])

    def attached_ids(self) -> list[str]:
        """The attached bricks, in canvas order: the order of the network's outputs."""
        return [n for n in self.brick_ids() if self._g.has_edge(COMMON, n)]

    def attached_bricks(self) -> list[BrickFile]:
        return [self.brick(n) for n in self.attached_ids()]

    def brick(self, node_id: str) -> BrickFile:
        return self._data(node_id)["obj"]

    def title(self, node_id: str) -> str:
        return self._data(node_id)["title"]

    def position(self, node_id: str) -> Position:
        return self._data(node_id)["pos"]

    def order(self, node_id: str) -> int:
        return self._brick_data(node_id)["order"]

    def is_attached(self, node_id: str) -> bool:
        self._brick_data(node_id)
        return self._g.has_edge(COMMON, node_id)

    def check_attach(self, node_id: str) -> None:
        """Raise an AttachError (in plain words) if the brick cannot attach now."""
        check_attach(self.common, self.attached_bricks(), self.brick(node_id), self.title(node_id))

    def can_attach(self, node_id: str) -> bool:
        return self.has_node(node_id) and can_attach(self.common, self.attached_bricks(), self.brick(node_id))

    def can_attach_brick(self, brick: BrickFile) -> bool:
        """Would this brick (not yet on the canvas) attach? For palette drag hover feedback."""
        return can_attach(self.common, self.attached_bricks(), brick)

    def new_brick_id(self, brick: BrickFile) -> str:
        """A free node id derived from the brick's task name ("brick:7", "brick:7-2", ...)."""
        base = f"brick:{brick.task.name}"
        node_id, n = base, 1
        while node_id in self._g:
            n += 1
            node_id = f"{base}-{n}"
        return node_id

    # ------------------------------------------------------------ primitives

    def set_common(self, common: CommonFile | None, position: Position = (0.0, 0.0)) -> None:
        """Put ``common`` on the canvas (None removes it); every attached brick is detached first."""
        for node_id in self.attached_ids():
            self.detach(node_id)
        if COMMON in self._g:
            self._g.remove_node(COMMON)
        if common is not None:
            self._g.add_node(COMMON, obj=common, pos=_pos(position), title="common module")
        self.common_changed.emit(common)
        self.changed.emit()

    def add_brick(self, brick: BrickFile, position: Position = (0.0, 0.0), node_id: str | None = None,
                  title: str | None = None, order: int | None = None) -> str:
        """Place a brick on the canvas (not attached); return its node id."""
        node_id = node_id or self.new_brick_id(brick)
        if node_id in self._g:
            raise GraphError(f"There is already a brick called '{node_id}' on the canvas.")
        if order is None:
            order = self._next_order
        self._next_order = max(self._next_order, order + 1)
        self._g.add_node(node_id, obj=brick, pos=_pos(position), title=title or brick_title(brick), order=order)
        self.brick_added.emit(node_id)
        self.changed.emit()
        return node_id

    def remove_brick(self, node_id: str) -> None:
        """Take a brick off the canvas, detaching it first."""
        self._brick_data(node_id)
        if self._g.has_edge(COMMON, node_id):
            self.detach(node_id)
        self._g.remove_node(node_id)
        self.brick_removed.emit(node_id)
        self.changed.emit()

    def attach(self, node_id: str) -> None:
        """Attach a brick to the common module; raises an AttachError (and changes nothing) if not allowed."""
        self._brick_data(node_id)
        self.check_attach(node_id)
        self._g.add_edge(COMMON, node_id)
        self.attached.emit(node_id)
        self.changed.emit()

    def detach(self, node_id: str) -> None:
        if not self.is_attached(node_id):
            raise GraphError(f"'{self.title(node_id)}' is not attached.")
        self._g.remove_edge(COMMON, node_id)
        self.detached.emit(node_id)
        self.changed.emit()

    def move(self, node_id: str, position: Position) -> None:
        """Move a brick or the common module (``COMMON``) on the canvas."""
        x, y = self._data(node_id)["pos"] = _pos(position)
        self.moved.emit(node_id, x, y)
        self.changed.emit()

    def rename(self, node_id: str, title: str) -> None:
        title = title.strip()
        if not title:
            raise GraphError("A brick needs a name; the new name is empty.")
        self._brick_data(node_id)["title"] = title
        self.renamed.emit(node_id, title)
        self.changed.emit()

    # ------------------------------------------------------------ helpers

    def _data(self, node_id: str) -> dict[str, Any]:
        if node_id not in self._g:
            raise GraphError(f"There is no '{node_id}' on the canvas.")
        return self._g.nodes[node_id]

    def _brick_data(self, node_id: str) -> dict[str, Any]:
        if node_id == COMMON:
            raise GraphError("The common module is not a brick.")
        return self._data(node_id)


def _pos(position: Position) -> Position:
    x, y = position
    return (float(x), float(y))
