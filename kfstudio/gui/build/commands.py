"""The Build page's commands: every gesture and menu action becomes one undoable edit.

``BrickCommands`` (a mixin of ``BuildPage``) turns drops, palette clicks, moves and the selection
actions (attach, detach, delete, rename, select all) into edits of ``kfstudio.assembly.edits``,
checked first by the attach rules so a refusal is said in words. ``EditCommand`` is the thin
QUndoCommand around one edit.

The edit carries all the logic (and is tested without Qt); the command only calls
``apply`` on redo and ``revert`` on undo and shows the edit's ``text`` ("Attach 'digit 7'").
``push_edit`` applies the edit once *before* it goes on the stack, so an edit that is not
allowed raises its plain-words ``KFError`` to the caller and never reaches the stack.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF
from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import QInputDialog

from kfstudio.assembly import edits
from kfstudio.assembly.edits import Edit
from kfstudio.assembly.graph import COMMON, BrickGraph
from kfstudio.assembly.rules import AttachError, check_attach
from kfstudio.core.errors import KFError
from kfstudio.gui.build.brick_text import plural


class EditCommand(QUndoCommand):
    """One edit as one undo step."""

    def __init__(self, graph: BrickGraph, edit: Edit, *, applied: bool = False) -> None:
        super().__init__(edit.text)
        self.graph = graph
        self.edit = edit
        self._skip_first_redo = applied

    def redo(self) -> None:
        if self._skip_first_redo:
            self._skip_first_redo = False
            return
        self.edit.apply(self.graph)

    def undo(self) -> None:
        self.edit.revert(self.graph)


def push_edit(stack: QUndoStack, graph: BrickGraph, edit: Edit) -> EditCommand:
    """Apply ``edit`` to ``graph`` and put it on ``stack``; raises (and pushes nothing) if it fails."""
    edit.apply(graph)
    command = EditCommand(graph, edit, applied=True)
    stack.push(command)
    return command


class BrickCommands:
    """Gestures and selection actions as undoable edits. A mixin of ``BuildPage``: it uses the
    page's ``_graph``, ``library``, ``scene``, ``undo_stack``, ``_show_message`` and ``_attached_line``."""

    def _check_palette(self, key: str) -> str | None:
        brick = self.library.get(key)
        if brick is None:
            return "This brick is no longer loaded; load its factorization folder again."
        try:
            check_attach(self._graph.common, self._graph.attached_bricks(), brick)
        except AttachError as exc:
            return str(exc)
        return None

    def _check_node(self, node_id: str) -> str | None:
        if not self._graph.has_node(node_id) or self._graph.is_attached(node_id):
            return None
        try:
            self._graph.check_attach(node_id)
        except AttachError as exc:
            return str(exc)
        return None

    def _push(self, edit) -> bool:
        """Apply ``edit`` and put it on the undo stack; say why in words if it is not allowed."""
        try:
            push_edit(self.undo_stack, self._graph, edit)
        except KFError as exc:
            self._show_message(str(exc), error=True)
            self.scene.relayout()
            return False
        self._show_message(f"{edit.text}. {self._attached_line()}")
        return True

    def _slot_position(self) -> tuple[float, float]:
        if self.scene.plate is None:
            return self.scene.free_spot()
        centre = self.scene.plate.slot_centre(min(self.scene.next_slot(), self.scene.plate.slot_count - 1))
        return centre.x(), centre.y()

    def _on_view_brick_dropped(self, key: str, scene_pos: QPointF) -> None:
        brick = self.library.get(key)
        if brick is None:
            return
        if self.scene.over_plate(scene_pos):
            self._push(edits.add_and_attach(self._graph, brick, self._slot_position()))
        else:
            self._push(edits.AddBrick(self._graph, brick, (scene_pos.x(), scene_pos.y())))

    def _on_palette_add_requested(self, key: str) -> None:
        brick = self.library.get(key)
        if brick is None:
            return
        reason = self._check_palette(key)
        if reason is None:
            self._push(edits.add_and_attach(self._graph, brick, self._slot_position()))
        else:
            self._show_message(reason, error=True)

    def _on_scene_move_finished(self, moves: dict) -> None:
        steps, texts = [], []
        for node_id, (old, new) in moves.items():
            item_steps, text = self._move_steps(node_id, new)
            steps += item_steps
            texts += [text] if item_steps else []
        if not steps:
            self.scene.relayout()   # nothing changes: every item goes back where the graph says
            return
        text = texts[0] if len(moves) == 1 else f"Move {plural(len(moves), 'item')}"
        self._push(steps[0] if len(steps) == 1 else edits.CompoundEdit(text, steps))

    def _move_steps(self, node_id: str, new: tuple) -> tuple[list, str]:
        """The edits one moved item stands for (a move, a detach or an attach) and their name."""
        graph = self._graph
        if node_id == COMMON:
            move = edits.MoveBricks(graph, {COMMON: new}, {COMMON: graph.common_position})
            return [move], "Move the common module"
        move = edits.MoveBricks(graph, {node_id: new}, {node_id: graph.position(node_id)})
        on_plate = self.scene.over_plate(QPointF(*new))
        if graph.is_attached(node_id):
            if on_plate:
                return [], ""   # it stays in its slot
            detach = edits.DetachBrick(graph, node_id)
            return [detach, move], detach.text
        if on_plate:
            reason = self._check_node(node_id)
            if reason is not None:
                self._show_message(reason, error=True)
                return [], ""
            attach = edits.AttachBrick(graph, node_id)
            return [attach], attach.text
        return [move], move.text

    def _selected(self) -> list[str]:
        return self.scene.selected_node_ids()

    def _batch(self, steps: list, verb: str) -> None:
        if not steps:
            return
        if len(steps) == 1:
            self._push(steps[0])
        else:
            self._push(edits.CompoundEdit(f"{verb} {plural(len(steps), 'brick')}", steps))

    def delete_selected(self) -> None:
        self._batch([edits.RemoveBrick(self._graph, n) for n in self._selected()], "Remove")

    def detach_selected(self) -> None:
        self._batch([edits.DetachBrick(self._graph, n) for n in self._selected() if self._graph.is_attached(n)],
                    "Detach")

    def attach_selected(self) -> None:
        loose = [n for n in self._selected() if not self._graph.is_attached(n)]
        for node_id in loose:
            reason = self._check_node(node_id)
            if reason is not None:
                self._show_message(reason, error=True)
                return
        self._batch([edits.AttachBrick(self._graph, n) for n in loose], "Attach")

    def rename_selected(self) -> None:
        selected = self._selected()
        if len(selected) != 1:
            return
        node_id = selected[0]
        title, ok = QInputDialog.getText(self, "Rename brick", "New name:", text=self._graph.title(node_id))
        if ok:
            self.rename_brick(node_id, title)

    def rename_brick(self, node_id: str, title: str) -> None:
        if title.strip() and title.strip() != self._graph.title(node_id):
            self._push(edits.RenameBrick(self._graph, node_id, title))

    def select_all(self) -> None:
        for item in self.scene.bricks.values():
            item.setSelected(True)
