"""The main window's actions and menus: File, Edit, View, Help, and the shortcuts list.

Every action is also added to the window itself, so its shortcut works in fullscreen too
(no menu bar needed). The Build page's own actions join the Edit and View menus.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTableWidget, QTableWidgetItem, QVBoxLayout

from kfstudio.gui.theme import theme_manager

SCALES = (1.0, 1.25, 1.5, 2.0)


def _action(window, text: str, slot, shortcut=None, tip: str = "", checkable: bool = False) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
    action.setStatusTip(tip)
    action.setToolTip(f"{tip} ({keys})" if keys else tip)
    action.setCheckable(checkable)
    (action.toggled if checkable else action.triggered).connect(slot)
    window.addAction(action)  # shortcuts work in fullscreen too (no menu bar needed)
    return action


def create_actions(window) -> None:
    """Every action of the window (``window.new_action`` ...), shortcuts included."""
    S = QKeySequence.StandardKey

    def a(*args, **kwargs):
        return _action(window, *args, **kwargs)

    window.new_action = a("&New from teacher…", window.new_from_teacher, S.New, "Load a teacher, pick data and tasks")
    window.open_action = a("&Open project…", window.open_project_dialog, S.Open, "Open a saved project")
    window.save_action = a("&Save", window.save_project, S.Save, "Save the project")
    window.save_as_action = a("Save &As…", window.save_project_as, S.SaveAs, "Save the project under a new name")
    window.export_action = a("&Export network…", window.export_network, "Ctrl+E",
                             "Export the assembled network (ONNX, TorchScript, torch.export)")
    window.replay_action = a("&Replay a run…", window.replay_run_dialog, "Ctrl+Shift+R",
                             "Play a recorded run's curves again at 1x-20x, for a talk")
    window.quit_action = a("&Quit", window.close, "Ctrl+Q", "Quit KF Studio")
    window.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
    window.undo_action = window.undo_stack.createUndoAction(window, "Undo")
    window.undo_action.setShortcut(QKeySequence(S.Undo))
    window.redo_action = window.undo_stack.createRedoAction(window, "Redo")
    window.redo_action.setShortcut(QKeySequence(S.Redo))
    for action in (window.undo_action, window.redo_action):
        window.addAction(action)
    window.page_actions = []
    for index, name in enumerate(("Welcome", "Factorize", "Build")):
        window.page_actions.append(a(f"Go to {name}", lambda _=False, i=index: window.tabs.setCurrentIndex(i),
                                     f"Alt+{index + 1}", f"Show the {name} page"))
    window.presentation_action = a("&Presentation mode", window.set_presentation_mode, "F11",
                                   "Fullscreen with a bigger UI, for talks", checkable=True)
    window.dark_action = a("&Dark theme", window._on_dark_action_toggled, "Ctrl+Shift+D",
                           "Switch between the light and the dark theme", checkable=True)
    window.dark_action.setChecked(theme_manager().theme.name == "dark")
    window.export_plot_action = a("Export &plot as PNG…", window.export_plot_dialog, "Ctrl+Shift+P",
                                  "Save the loss and accuracy plots as PNG images")
    window.scale_group = QActionGroup(window)
    window.scale_actions = {}
    for i, scale in enumerate(SCALES):
        action = a(f"{scale:.0%}", lambda on, s=scale: on and window.set_ui_scale(s), f"Ctrl+Alt+{i + 1}",
                   f"Make the interface {scale:.0%} of its normal size", checkable=True)
        window.scale_group.addAction(action)
        window.scale_actions[scale] = action
    window._check_scale_action(theme_manager().scale)
    window.shortcuts_action = a("&Keyboard shortcuts", window.show_shortcuts, "Ctrl+/", "List every keyboard shortcut")
    window.about_action = a("&About KF Studio", window.show_about, None, "What KF Studio is")


def create_menus(window) -> None:
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([window.new_action, window.open_action])
    window.recent_menu = file_menu.addMenu("Open &recent")
    window.recent_menu.aboutToShow.connect(window._on_recent_menu_about_to_show)
    file_menu.addSeparator()
    file_menu.addActions([window.save_action, window.save_as_action])
    file_menu.addSeparator()
    file_menu.addAction(window.export_action)
    file_menu.addAction(window.replay_action)
    file_menu.addSeparator()
    file_menu.addAction(window.quit_action)
    window.edit_menu = bar.addMenu("&Edit")
    window.edit_menu.addActions([window.undo_action, window.redo_action])
    view_menu = bar.addMenu("&View")
    view_menu.addActions(window.page_actions)
    view_menu.addSeparator()
    view_menu.addAction(window.presentation_action)
    scale_menu = view_menu.addMenu("UI &scale")
    scale_menu.addActions(list(window.scale_actions.values()))
    view_menu.addAction(window.dark_action)
    view_menu.addSeparator()
    view_menu.addAction(window.export_plot_action)
    window.view_menu = view_menu
    help_menu = bar.addMenu("&Help")
    help_menu.addActions([window.shortcuts_action, window.about_action])


def add_build_page_actions(window) -> None:
    """The canvas actions go to Edit (editing) and View (zoom); File > Export is the window's own."""
    if window._build_page is None or not hasattr(window._build_page, "actions"):
        return
    own_export = getattr(window._build_page, "export_action", None)
    if own_export is not None:
        own_export.setShortcuts([])  # File > Export network… (Ctrl+E) replaces it: one owner per key
    edit, view = [], []
    for action in window._build_page.actions():
        if action is own_export:
            continue
        words = action.text().replace("&", "").lower()
        (view if any(w in words for w in ("zoom", "fit", "actual size")) else edit).append(action)
    if edit:
        window.edit_menu.addSeparator()
        window.edit_menu.addActions(edit)
    if view:
        window.view_menu.insertSeparator(window.presentation_action)
        for action in view:
            window.view_menu.insertAction(window.presentation_action, action)
        window.view_menu.insertSeparator(window.presentation_action)


def shortcuts_dialog(window) -> QDialog:
    """A dialog listing every action that has a shortcut (not yet shown)."""
    dialog = QDialog(window)
    dialog.setWindowTitle("Keyboard shortcuts")
    rows = sorted({(a.text().replace("&", ""), a.shortcut().toString(QKeySequence.SequenceFormat.NativeText))
                   for a in window.actions() if not a.shortcut().isEmpty()})
    table = QTableWidget(len(rows), 2)
    table.setHorizontalHeaderLabels(["Action", "Shortcut"])
    for i, (text, keys) in enumerate(rows):
        table.setItem(i, 0, QTableWidgetItem(text))
        table.setItem(i, 1, QTableWidgetItem(keys))
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QVBoxLayout(dialog)
    layout.addWidget(table)
    layout.addWidget(buttons)
    dialog.resize(int(460 * theme_manager().scale), int(520 * theme_manager().scale))
    return dialog
