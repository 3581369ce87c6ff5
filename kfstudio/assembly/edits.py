"""Reversible changes to a BrickGraph: the model of undo, tested without Qt.

Every canvas gesture becomes one edit. An edit is built from the graph as it is now
(that is where it reads titles and old positions), then ``apply(graph)`` performs it and
``revert(graph)`` undoes it exactly; apply/revert may alternate any number of times (undo,
redo). ``text`` names it for menus ("Attach 'digit 7'"). The GUI wraps each edit in a
thin ``QUndoCommand`` (redo -> apply, undo -> revert, setText(text)).

An edit that is not allowed (e.g. attaching a brick from another common module) raises
a ``KFError`` from ``apply`` and leaves the graph unchanged; call ``graph.check_attach`` or
``graph.can_attach`` first to give feedback without trying.

Public API
----------
``Edit`` (protocol: ``text``, ``apply(graph)``, ``revert(graph)``)
``AddBrick(graph, brick, position, node_id=None)``   ``.node_id`` is fixed once built
``AttachBrick(graph, node_id, title=None)``, ``DetachBrick(graph, node_id)``
``MoveBricks(graph, {node_id: new_position}, old_positions=None)``  multi-select; COMMON too
``RenameBrick(graph, node_id, new_title)``
``RemoveBrick(graph, node_id)``      revert restores title, position, order and attachment
``SetCommonModule(graph, common, position)``  revert restores the old one and its bricks
``CompoundEdit(text, edits)``        several edits as one undo step
``add_and_attach(graph, brick, position)``  a drop onto the common module (Add + Attach)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from kfstudio.assembly.graph import COMMON, BrickGraph, Position
from kfstudio.assembly.rules import BrickFile, CommonFile, brick_title


class Edit(Protocol):
    """One reversible change; ``text`` is what Undo/Redo menus show after the verb."""

    text: str

    def apply(self, graph: BrickGraph) -> None: ...

    def revert(self, graph: BrickGraph) -> None: ...


class AddBrick:
    """Put a brick on the canvas, unattached."""

    def __init__(self, graph: BrickGraph, brick: BrickFile, position: Position, node_id: str | None = None) -> None:
        self.brick = brick
        self.position = position
        self.node_id = node_id or graph.new_brick_id(brick)
        self.order: int | None = None
        self.text = f"Add '{brick_title(brick)}'"

    def apply(self, graph: BrickGraph) -> None:
        # The order is kept across redo so the brick returns to its place in the outputs.
        graph.add_brick(self.brick, self.position, self.node_id, order=self.order)
        self.order = graph.order(self.node_id)

    def revert(self, graph: BrickGraph) -> None:
        graph.remove_brick(self.node_id)


class AttachBrick:
    """Snap a brick onto the common module (the rules are checked on every apply)."""

    def __init__(self, graph: BrickGraph, node_id: str, title: str | None = None) -> None:
        self.node_id = node_id
        self.text = f"Attach '{title or graph.title(node_id)}'"

    def apply(self, graph: BrickGraph) -> None:
        graph.attach(self.node_id)

    def revert(self, graph: BrickGraph) -> None:
        graph.detach(self.node_id)


class DetachBrick:
    """Pull a brick off the common module; it stays on the canvas."""

    def __init__(self, graph: BrickGraph, node_id: str) -> None:
        self.node_id = node_id
        self.text = f"Detach '{graph.title(node_id)}'"

    def apply(self, graph: BrickGraph) -> None:
        graph.detach(self.node_id)

    def revert(self, graph: BrickGraph) -> None:
        graph.attach(self.node_id)


class MoveBricks:
    """Move one or more items (a multi-selection drag) to new positions.

    ``old_positions`` defaults to the graph's current positions; pass them when the view
    already moved the graph during the drag.
    """

    def __init__(self, graph: BrickGraph, new_positions: dict[str, Position],
                 old_positions: dict[str, Position] | None = None) -> None:
        self.new = dict(new_positions)
        self.old = dict(old_positions) if old_positions is not None else {n: graph.position(n) for n in self.new}
        if len(self.new) == 1:
            self.text = f"Move '{graph.title(next(iter(self.new)))}'"
        else:
            self.text = f"Move {len(self.new)} items"

    def apply(self, graph: BrickGraph) -> None:
        for node_id, pos in self.new.items():
            graph.move(node_id, pos)

    def revert(self, graph: BrickGraph) -> None:
        for node_id, pos in self.old.items():
            graph.move(node_id, pos)


class RenameBrick:
    def __init__(self, graph: BrickGraph, node_id: str, new_title: str) -> None:
        self.node_id = node_id
        self.old_title = graph.title(node_id)
        self.new_title = new_title.strip()
        self.text = f"Rename '{self.old_title}' to '{self.new_title}'"

    def apply(self, graph: BrickGraph) -> None:
        graph.rename(self.node_id, self.new_title)

    def revert(self, graph: BrickGraph) -> None:
        graph.rename(self.node_id, self.old_title)


@dataclass
class _BrickState:
    """Everything needed to put a removed brick back exactly where it was."""

    brick: BrickFile
    title: str
    position: Position
    order: int
    attached: bool

    @classmethod
    def of(cls, graph: BrickGraph, node_id: str) -> "_BrickState":
        return cls(graph.brick(node_id), graph.title(node_id), graph.position(node_id), graph.order(node_id),
                   graph.is_attached(node_id))


class RemoveBrick:
    """Delete a brick from the canvas; undo restores its name, place, order and attachment."""

    def __init__(self, graph: BrickGraph, node_id: str) -> None:
        self.node_id = node_id
        self.state: _BrickState | None = None
        self.text = f"Remove '{graph.title(node_id)}'"

    def apply(self, graph: BrickGraph) -> None:
        self.state = _BrickState.of(graph, self.node_id)
        graph.remove_brick(self.node_id)

    def revert(self, graph: BrickGraph) -> None:
        s = self.state
        graph.add_brick(s.brick, s.position, self.node_id, s.title, s.order)
        if s.attached:
            graph.attach(self.node_id)


class SetCommonModule:
    """Place (or replace, or with None remove) the common module; bricks on it are detached."""

    def __init__(self, graph: BrickGraph, common: CommonFile | None, position: Position = (0.0, 0.0)) -> None:
        self.common, self.position = common, position
        self.old: CommonFile | None = None
        self.old_position: Position = (0.0, 0.0)
        self.old_attached: list[str] = []
        teacher = (common.manifest.get("teacher") or {}).get("name", "") if common is not None else ""
        self.text = f"Use the common module of '{teacher}'" if common is not None else "Remove the common module"

    def apply(self, graph: BrickGraph) -> None:
        self.old, self.old_position = graph.common, graph.common_position or (0.0, 0.0)
        self.old_attached = graph.attached_ids()
        graph.set_common(self.common, self.position)

    def revert(self, graph: BrickGraph) -> None:
        graph.set_common(self.old, self.old_position)
        for node_id in self.old_attached:
            graph.attach(node_id)


def add_and_attach(graph: BrickGraph, brick: BrickFile, position: Position) -> "CompoundEdit":
    """A palette drop onto the common module: add the brick and attach it, as one undo step."""
    add = AddBrick(graph, brick, position)
    title = brick_title(brick)
    return CompoundEdit(f"Attach '{title}'", [add, AttachBrick(graph, add.node_id, title)])


@dataclass
class CompoundEdit:
    """Several edits as one undo step; if one fails to apply, the earlier ones are reverted."""

    text: str
    edits: Sequence[Edit] = field(default_factory=list)

    def apply(self, graph: BrickGraph) -> None:
        done: list[Edit] = []
        try:
            for edit in self.edits:
                edit.apply(graph)
                done.append(edit)
        except Exception:
            for edit in reversed(done):
                edit.revert(graph)
            raise

    def revert(self, graph: BrickGraph) -> None:
        for edit in reversed(self.edits):
            edit.revert(graph)


__all__ = ["COMMON", "Edit", "AddBrick", "AttachBrick", "DetachBrick", "MoveBricks", "RenameBrick", "RemoveBrick",
           "SetCommonModule", "CompoundEdit", "add_and_attach"]
