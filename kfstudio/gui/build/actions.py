"""The Build page's actions (Edit and View menus, canvas context menus), each with its shortcuts."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QAbstractSpinBox, QLineEdit


def _action(page, text: str, shortcuts, slot, tip: str) -> QAction:
    action = QAction(text, page)
    keys = [QKeySequence(s) for s in (shortcuts if isinstance(shortcuts, (list, tuple)) else [shortcuts])]
    action.setShortcuts(keys)
    action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.setStatusTip(tip)
    action.setToolTip(f"{tip} ({keys[0].toString(QKeySequence.SequenceFormat.NativeText)})")
    action.triggered.connect(slot)
    page.addAction(action)
    return action


def create_actions(page) -> None:
    """The page's actions, as ``page.delete_action`` ... ``page.export_action``, and the canvas's menus."""
    page.delete_action = _action(page, "&Delete", [QKeySequence.StandardKey.Delete, "Backspace"],
                                 page.delete_selected, "Remove the selected bricks from the canvas")
    page.detach_action = _action(page, "De&tach", "Ctrl+D", page.detach_selected,
                                 "Pull the selected bricks off the common module")
    page.attach_action = _action(page, "&Attach", "Ctrl+Return", page.attach_selected,
                                 "Snap the selected loose bricks onto the common module")
    page.rename_action = _action(page, "&Rename…", "F2", page.rename_selected, "Give the selected brick a new name")
    page.select_all_action = _action(page, "Select &All", QKeySequence.StandardKey.SelectAll, page.select_all,
                                     "Select every brick on the canvas")
    page.zoom_in_action = _action(page, "Zoom &In", [QKeySequence.StandardKey.ZoomIn, "Ctrl+="], page.view.zoom_in,
                                  "Zoom into the canvas")
    page.zoom_out_action = _action(page, "Zoom &Out", QKeySequence.StandardKey.ZoomOut, page.view.zoom_out,
                                   "Zoom out of the canvas")
    page.fit_action = _action(page, "&Fit to View", ["F", "Ctrl+0"], page.view.fit_to_view,
                              "Show the whole assembly")
    page.actual_size_action = _action(page, "Actual &Size", "Ctrl+1", page.view.reset_zoom,
                                      "Show the canvas at 100%")
    page.export_action = _action(page, "&Export Network…", "Ctrl+E", page.open_export_dialog,
                                 "Write the assembled network as ONNX, TorchScript, .pt2 or safetensors")
    let_through = ShortcutsThrough([page.export_action], page)
    for field in page.findChildren(QLineEdit) + page.findChildren(QAbstractSpinBox):
        field.installEventFilter(let_through)
    page.view.brick_actions = [page.detach_action, page.attach_action, page.rename_action, None, page.delete_action]
    page.view.canvas_actions = [page.fit_action, page.select_all_action, None, page.zoom_in_action,
                                page.zoom_out_action, page.actual_size_action]


class ShortcutsThrough(QObject):
    """Lets the given actions' shortcuts through the text fields it watches: on X11 Qt's line
    edits take Ctrl+E (the emacs "end of line") before any window shortcut sees it, so Ctrl+E in
    the palette's filter or the try-it panel's image number moved the cursor instead of exporting."""

    def __init__(self, actions, parent: QObject) -> None:
        super().__init__(parent)
        self._keys = [key for action in actions for key in action.shortcuts()]

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and \
                QKeySequence(event.keyCombination()) in self._keys:
            event.ignore()  # not the field's: the window's shortcut runs
            return True
        return False
