"""GUI fixtures: isolated settings and data folder, the main window, short factorization runs.

Every test gets its own KFSTUDIO_HOME and QSettings folder, the light theme at 100 %, and a
main window whose background run (if any) is stopped before the window goes away: a
running QThread that is garbage-collected aborts the whole process.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QMessageBox



@pytest.fixture(autouse=True)
def isolated_studio(tmp_path, monkeypatch, qapp):
    """A private data folder and settings file; the default look afterwards."""
    home = tmp_path / "studio-home"
    monkeypatch.setenv("KFSTUDIO_HOME", str(home))
    QCoreApplication.setOrganizationName("KF Studio Tests")
    QCoreApplication.setApplicationName("KF Studio Tests")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield home
    from kfstudio.gui.theme import theme_manager

    theme_manager().restore("light", 1.0)


@pytest.fixture(autouse=True)
def message_boxes(monkeypatch):
    """Warnings and notes are recorded instead of opening a modal box (which would hang a test)."""
    shown: list[tuple[str, str]] = []

    def record(_parent, title, text, *args, **kwargs):
        shown.append((str(title), str(text)))
        return QMessageBox.StandardButton.Ok

    for name in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(record))
    return shown


@pytest.fixture
def studio_home(isolated_studio):
    return isolated_studio


def close_window(window) -> None:
    """Close without dialogs, stopping any run; safe to call twice."""
    page = window.factorize_page
    if page.is_running:
        assert page.stop_and_wait(120_000), "the factorization thread did not stop"
    window.undo_stack.setClean()
    original = QMessageBox.question
    QMessageBox.question = staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes)
    try:
        window.close()
    finally:
        QMessageBox.question = original


@pytest.fixture
def make_window(qtbot, studio_home):
    """Build main windows (all closed, with their threads stopped, at teardown)."""
    from kfstudio.gui.main_window import MainWindow

    made = []

    def make(begin: bool = True, **kwargs):
        window = MainWindow(home=studio_home, autosave_s=kwargs.pop("autosave_s", 3600), **kwargs)
        qtbot.addWidget(window, before_close_func=close_window)
        window.show()
        qtbot.waitExposed(window)
        if begin:
            window.begin_session()
        made.append(window)
        return window

    yield make
    for window in made:
        close_window(window)


@pytest.fixture
def wait_loaded(qtbot):
    """Wait until a window's background load (a demo, a project) is in place."""
    def wait(window, timeout: int = 120_000) -> None:
        qtbot.waitUntil(lambda: not window.is_loading(), timeout=timeout)
    return wait


@pytest.fixture
def wait_estimated(qtbot):
    """Wait until the Factorize page shows the estimates for its settings now (worked out in a worker)."""
    def wait(page, timeout: int = 60_000) -> None:
        qtbot.waitUntil(lambda: not page.estimates.is_busy(), timeout=timeout)
    return wait


@pytest.fixture
def window(make_window):
    return make_window()


def _configure_short_run(page, epochs: int = 1) -> None:
    """The smallest students, few epochs, a report after every step: a run of a few seconds."""
    page.epochs_spin.setValue(epochs)
    page.size_combo.setCurrentText("Small & fast")
    page.config_overrides = {"report_every": 1, "batch_size": 128}


@pytest.fixture
def short_run():
    return _configure_short_run


@pytest.fixture(scope="session")
def digits_choice():
    """The digits demo (teacher, data, tasks), loaded once."""
    from kfstudio.gui.train.teacher_wizard import load_demo_choice

    return load_demo_choice("digits")


@pytest.fixture(scope="module")
def digits_teacher():
    from kfstudio.core.teachers.loaders import load_teacher

    return load_teacher("builtin:digits")


@pytest.fixture
def open_build_page(qtbot):
    """``open_build_page(folder, size=(1400, 900), teacher=None)``: a shown Build page on a
    factorization folder; with a teacher, it is set and its test images feed the try-it panel.
    The page's undo stack is ``page._test_stack``."""
    from PySide6.QtGui import QUndoStack

    from kfstudio.core.data.sources import load_data, prepare
    from kfstudio.gui.build.page import BuildPage

    def open_page(folder, *, size=(1400, 900), teacher=None):
        stack = QUndoStack()
        page = BuildPage(stack)
        page._test_stack = stack
        qtbot.addWidget(page)
        page.resize(*size)
        page.show()
        qtbot.waitExposed(page)
        page.load_run(folder)
        if teacher is not None:
            page.set_teacher(teacher)
            page.set_test_data(prepare(load_data(teacher.ref).test, teacher.input_spec))
        return page
    return open_page
