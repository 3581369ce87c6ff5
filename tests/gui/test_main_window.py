"""The main window: pages, menus, theme and scale, presentation mode, projects, crash recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox, QTableWidget

from kfstudio.gui.main_window import FACTORIZE, WELCOME, MainWindow
from kfstudio.gui.project_files import write_session_json
from kfstudio.gui.recovery import session_files
from kfstudio.gui.theme import DARK, LIGHT, theme_manager


class _Nothing(QUndoCommand):
    def __init__(self) -> None:
        super().__init__("Nudge 'digit 7'")

    def redo(self) -> None:
        pass

    def undo(self) -> None:
        pass


def _answer(monkeypatch, button):
    asked = []

    def question(*args, **kwargs):
        asked.append(args[1])
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_starts_on_welcome_with_menus(window):
    assert window.tabs.currentIndex() == WELCOME
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert menus == ["File", "Edit", "View", "Help"]
    for action in (window.open_action, window.save_action, window.save_as_action, window.export_action,
                   window.quit_action, window.undo_action, window.redo_action, window.presentation_action,
                   window.dark_action, window.export_plot_action, window.shortcuts_action):
        assert not action.shortcut().isEmpty(), action.text()
    assert window.presentation_action.shortcut().toString() == "F11"
    assert window.windowTitle().startswith("Untitled")


def test_page_shortcuts_switch_pages(qtbot, window):
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.AltModifier)
    assert window.tabs.currentIndex() == FACTORIZE
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    assert window.tabs.currentIndex() == WELCOME


def test_undo_stack_marks_window_modified_with_named_undo(window):
    assert not window.isWindowModified()
    window.undo_stack.push(_Nothing())
    assert window.isWindowModified()
    assert "[*]" in window.windowTitle()
    assert window.undo_action.text() == "Undo Nudge 'digit 7'"
    window.undo_stack.undo()
    assert not window.isWindowModified()
    assert window.redo_action.text() == "Redo Nudge 'digit 7'"


def test_dark_theme_recolours_plots(qtbot, window):
    plot = window.factorize_page.loss_plot
    assert plot.curve_colour("loss") == LIGHT.curves[0]
    window.dark_action.trigger()
    assert theme_manager().theme is DARK
    assert plot.curve_colour("loss") == DARK.curves[0]
    assert plot.curve_colour("loss_kd") == DARK.curves[3]
    assert plot.plot.backgroundBrush().color().name() == DARK.base
    assert QApplication.palette().window().color().name() == DARK.window
    assert QSettings().value("theme") == "dark"
    window.dark_action.trigger()
    assert plot.curve_colour("loss") == LIGHT.curves[0]


def test_ui_scale_changes_fonts(window):
    base = theme_manager().base_point_size()
    heading = window.welcome_page.heading.font().pointSizeF()
    window.scale_actions[1.5].trigger()
    assert theme_manager().scale == 1.5
    assert QApplication.font().pointSizeF() == pytest.approx(base * 1.5)
    assert window.welcome_page.heading.font().pointSizeF() == pytest.approx(heading * 1.5)
    assert window.factorize_page.loss_plot.title.font().pointSizeF() > base * 1.5
    assert float(QSettings().value("ui_scale")) == 1.5
    window.scale_actions[1.0].trigger()
    assert QApplication.font().pointSizeF() == pytest.approx(base)


def test_presentation_mode_toggles_fullscreen_and_scale(qtbot, window):
    assert not window.isFullScreen()
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert window.presentation_action.isChecked()
    assert window.windowState() & Qt.WindowState.WindowFullScreen
    assert theme_manager().scale == 1.5  # the tests' 1920x1080 screen (tests/conftest.py)
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert not window.presentation_action.isChecked()
    assert not window.windowState() & Qt.WindowState.WindowFullScreen
    assert theme_manager().scale == 1.0


def test_shortcuts_dialog_lists_actions(window):
    window.shortcuts_action.trigger()
    dialog_text = []
    table = window.shortcuts_dialog.findChild(QTableWidget)
    for row in range(table.rowCount()):
        dialog_text.append((table.item(row, 0).text(), table.item(row, 1).text()))
    assert ("Presentation mode", "F11") in dialog_text
    assert any(name == "Save" for name, _keys in dialog_text)
    window.shortcuts_dialog.close()


def _dead_pid() -> int:
    """The process id of a process that has ended (a crashed studio's marker names one)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _crashed_session(home, content: str) -> Path:
    marker, recovery = session_files(home, _dead_pid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("{}")
    recovery.write_text(content)
    return recovery


def test_no_restore_offer_after_clean_exit(make_window, monkeypatch, studio_home):
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    first = make_window()
    marker, recovery = first.recovery.marker, first.recovery.recovery_file
    assert marker.exists()
    first.run_folders.append(str(studio_home))  # something worth autosaving
    assert first.recovery.autosave()
    assert recovery.exists()
    first.close()
    assert not marker.exists() and not recovery.exists()
    make_window()
    assert asked == []


def _live_studio(home) -> tuple[subprocess.Popen, Path]:
    """Another studio, running: a process holding its session marker's lock, with an autosave."""
    code = ("import sys; from pathlib import Path; from kfstudio.gui.recovery import own_session; "
            "s = own_session(Path(sys.argv[1])); s.recovery.write_text('{}'); print(s.recovery, flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return proc, Path(proc.stdout.readline().strip())  # the line comes once the lock is held


def test_two_studios_keep_their_own_autosaves(make_window, monkeypatch, studio_home):
    """A clean exit of one studio never deletes the autosave of another one still open."""
    other, alive = _live_studio(studio_home)
    try:
        asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
        window = make_window()
        assert asked == []  # a live studio's autosave is not offered
        window.close()
        assert alive.exists() and alive.with_suffix(".session").exists()
    finally:
        other.communicate("")


def test_restore_offered_when_the_crashed_studios_pid_was_reused(make_window, monkeypatch, studio_home):
    # The crashed studio's process id now belongs to a live process (here: the one that runs the
    # tests' parent): the free lock, not the id, says the studio is gone.
    dead = _crashed_session(studio_home, "")
    write_session_json(dead, {"teacher": None, "runs": []})
    marker, recovery = session_files(studio_home, os.getppid())
    dead.with_suffix(".session").rename(marker)
    dead.rename(recovery)
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    make_window()
    assert asked == ["Restore unsaved work?"]
    assert not recovery.exists() and not marker.exists()


def test_two_studios_started_after_one_crash_are_not_both_offered_its_work(qtbot, studio_home):
    from kfstudio.gui.recovery import RecoveryManager

    dead = _crashed_session(studio_home, "{}")
    first = RecoveryManager(studio_home, lambda path: path.write_text("{}"))
    assert first.begin_session() == dead  # offered, not answered yet: claimed by this studio
    code = ("import sys; from pathlib import Path; from PySide6.QtCore import QCoreApplication; "
            "app = QCoreApplication([]); from kfstudio.gui.recovery import RecoveryManager; "
            "m = RecoveryManager(Path(sys.argv[1]), lambda p: None); print(m.begin_session()); m.end_session()")
    second = subprocess.run([sys.executable, "-c", code, str(studio_home)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    assert second.stdout.strip() == "None", second.stderr[-2000:]
    first.discard()
    first.end_session()
    assert not dead.exists() and not list((studio_home / "sessions").glob("*.session"))


def test_restore_offered_after_crash(make_window, monkeypatch, studio_home, digits_run, wait_loaded):
    # The last session died with a canvas: its marker and its autosave are still there.
    first = make_window()
    assert first.load_run(digits_run[1])
    page = first.build_page
    if page is not None:
        for entry in page.palette.entries()[:2]:
            page.palette.add_requested.emit(entry.key)
        assert len(page.graph.attached_ids()) == 2
    assert first.recovery.autosave()
    first.recovery._timer.stop()
    saved = first.recovery.recovery_file.read_text()
    first.undo_stack.setClean()
    first.run_folders.clear()  # nothing to ask about: this window closes without a question
    first.close()
    dead = _crashed_session(studio_home, saved)  # as if killed

    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    window = make_window()
    assert asked == ["Restore unsaved work?"]
    wait_loaded(window)
    assert window.isWindowModified()
    assert window.project_path is None
    assert str(digits_run[1]) in window.run_folders
    if window.build_page is not None:
        assert len(window.build_page.graph.attached_ids()) == 2
        assert len(window.build_page.palette.entries()) == 10
    assert not dead.exists() and window.recovery.recovery_file.exists()  # adopted into this session


def test_restore_session_file_loads_teacher(make_window, monkeypatch, studio_home, wait_loaded):
    recovery = _crashed_session(studio_home, "")
    write_session_json(recovery, {"teacher": {"ref": "builtin:digits", "data": "builtin:digits"}, "runs": []})
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    window = make_window()
    assert asked == ["Restore unsaved work?"]
    wait_loaded(window)
    assert window.choice is not None and window.choice.teacher_ref == "builtin:digits"
    assert window.factorize_page.choice is window.choice


def test_declined_restore_discards_the_autosave(make_window, monkeypatch, studio_home):
    recovery = _crashed_session(studio_home, "")
    write_session_json(recovery, {"teacher": None, "runs": []})
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    make_window()
    assert asked == ["Restore unsaved work?"]
    assert not recovery.exists() and not recovery.with_suffix(".session").exists()


def test_autosave_timer_writes_recovery_file(qtbot, make_window, studio_home):
    window = make_window(autosave_s=0.05)
    window.undo_stack.push(_Nothing())
    with qtbot.waitSignal(window.recovery.autosaved, timeout=5_000):
        pass
    data = json.loads(window.recovery.recovery_file.read_text())
    assert "studio" in data or "extra" in data
    assert not list(window.recovery.recovery_file.parent.glob(".*.tmp"))  # written atomically, no temp files left


def test_save_and_reopen_project_updates_recent(qtbot, window, monkeypatch, tmp_path, digits_choice, digits_run,
                                                wait_loaded):
    window.set_choice(digits_choice)
    window.load_run(digits_run[1])
    page = window.build_page
    if page is not None:
        for entry in page.palette.entries()[:3]:
            page.palette.add_requested.emit(entry.key)
        assert window.isWindowModified()
    target = tmp_path / "my project.kfproj"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window.save_as_action.trigger()
    assert target.is_file()
    assert not window.isWindowModified()
    assert window.windowTitle().startswith("my project")
    assert window.welcome_page.recent_list.count() == 1
    doc = json.loads(target.read_text())
    assert doc["studio"]["teacher"]["ref"] == "builtin:digits"
    window.choice = None
    if page is not None:
        window.undo_stack.push(_Nothing())
        window.undo_stack.setClean()
        page.load_graph(type(page.graph)())  # an empty canvas first, with an empty undo history
        window.undo_stack.clear()
    assert window.open_project(target)
    wait_loaded(window)
    assert window.choice is not None and window.choice.data_ref == "builtin:digits"
    if page is not None:
        assert len(page.graph.attached_ids()) == 3
        assert window.tabs.currentIndex() == 2
        assert "3 bricks attached" in page.message.text()  # not the empty canvas's stale line


def test_open_broken_project_shows_words(qtbot, window, message_boxes, tmp_path):
    bad = tmp_path / "bad.kfproj"
    bad.write_text("{ not json")
    with qtbot.waitSignal(window.loader.finished, timeout=60_000) as finished:
        assert window.open_project(bad)
    assert finished.args == [False]
    assert message_boxes and "not a KF Studio project" in message_boxes[0][1]
    assert "Traceback" not in message_boxes[0][1]


def test_run_studio_opens_the_demo(qtbot, studio_home, monkeypatch):
    from kfstudio.gui import app as app_module

    seen = {}

    def check() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and windows[-1].choice is not None:
            seen["window"] = windows[-1]
            QApplication.instance().exit(0)
        else:
            QTimer.singleShot(50, check)

    QTimer.singleShot(0, check)
    assert app_module.run_studio(demo="digits") == 0
    window = seen["window"]
    assert window.tabs.currentIndex() == FACTORIZE
    assert window.choice.teacher_ref == "builtin:digits"
    window.undo_stack.setClean()
    window.close()
    assert not list((studio_home / "sessions").glob("*.session"))
