"""Thin QUndoCommand wrappers around the reversible edits of ``kfstudio.assembly.edits``.

The edit carries all the logic (and is tested without Qt); the command only calls
``apply`` on redo and ``revert`` on undo and shows the edit's ``text`` ("Attach 'digit 7'").
``push_edit`` applies the edit once *before* it goes on the stack, so an edit that is not
allowed raises its plain-words ``KFError`` to the caller and never reaches the stack.
"""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand, QUndoStack

from kfstudio.assembly.edits import Edit
from kfstudio.assembly.graph import BrickGraph


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
