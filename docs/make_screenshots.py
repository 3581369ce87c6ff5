"""Render the studio's main screens offscreen to docs/screenshots/*.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshots.py   (or: make screenshots)

It drives the real application: opens the digits demo from the Welcome page, runs a short
real factorization (paused halfway for the Factorize shot, so the plots hold real points),
lets it finish, attaches three bricks through the Build page, and grabs each screen with
``QWidget.grab()`` at 1280x800: welcome, factorize, factorize-finished, build, tryit. Then the
same screens in the dark theme (``*-dark.png``, the loss plot in log scale too) and presentation
mode (F11: fonts at 150 % on these screens) at the two talk resolutions, ``presentation-{factorize,build}-WxH.png``
for 1600x1000 and 1920x1080. Settings and run folders go to a temporary folder, not the user's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
SIZE = (1280, 800)


def _wait(app, predicate, timeout_s: float = 180.0) -> None:
    """Run the event loop until ``predicate()`` holds (the run reports through queued signals)."""
    import time

    from PySide6.QtCore import QEventLoop

    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the studio did not reach the expected state in time")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def _settle(app, seconds: float = 0.8) -> None:
    """Let debounced refreshes (cost, try-it, plot timers) run before a grab."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _shot(app, widget, name: str) -> Path:
    _settle(app)
    path = OUT / name
    widget.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kfstudio-shots-"))
    os.environ["KFSTUDIO_HOME"] = str(tmp / "home")
    from PySide6.QtCore import QSettings

    from kfstudio.gui.app import make_application

    app = make_application(["kfstudio"])
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app.setApplicationName("KF Studio Screenshots")
    from kfstudio.gui.theme import configure_pyqtgraph
    from kfstudio.gui.main_window import FACTORIZE, MainWindow
    from kfstudio.gui.theme import theme_manager

    configure_pyqtgraph()  # exactly what the studio draws with
    theme_manager().restore("light", 1.0)
    OUT.mkdir(parents=True, exist_ok=True)
    window = MainWindow(home=tmp / "home", autosave_s=3600)
    window.resize(*SIZE)
    window.show()
    window.resize(*SIZE)  # offscreen's one screen is 800x600, and a shown window is fitted to its screen
    window.begin_session()
    _shot(app, window, "welcome.png")

    window.welcome_page.digits_button.click()
    _wait(app, lambda: window.choice is not None and not window.is_loading())   # it loads in the background
    page = window.factorize_page
    page.epochs_spin.setValue(8)
    page.size_combo.setCurrentText("Balanced")
    page.config_overrides = {"report_every": 2}
    evals = []
    page.report_received.connect(lambda r: evals.append(r.epoch) if r.kind == "eval" else None)
    page.start()
    _wait(app, lambda: len(evals) >= 5)
    page.pause()
    _wait(app, lambda: page.control.blocked and page.progress.format().startswith("Paused"))
    page.loss_plot.flush()
    page.accuracy_plot.flush()
    _shot(app, window, "factorize.png")
    page.resume()
    _wait(app, lambda: page.last_folder is not None and not page.is_running)
    window.tabs.setCurrentIndex(FACTORIZE)
    _shot(app, window, "factorize-finished.png")

    build = window.build_page
    if build is None:
        print("no Build page in this installation: build.png and tryit.png skipped")
        return 0
    window.tabs.setCurrentIndex(2)
    entries = {e.title: e.key for e in build.palette.entries()}
    for title in ("digit 3", "digit 7", "digit 8"):
        build.palette.add_requested.emit(entries[title])
    _wait(app, lambda: len(build.graph.attached_ids()) == 3)
    _wait(app, lambda: _latency_shown(build.cost_panel.summary))  # measured in the background
    right = build.splitter.widget(2)
    if hasattr(right, "setSizes"):
        right.setSizes([330, 470])  # room for the cost table at 1280x800
    build.view.fit_to_view()
    _shot(app, window, "build.png")
    try_panel = getattr(build, "try_panel", None)
    if try_panel is not None:
        from PySide6.QtWidgets import QSpinBox

        labels = window.choice.test_dataset().labels["digit"].tolist()
        spin = try_panel.findChild(QSpinBox)
        if spin is not None and 7 in labels:
            spin.setValue(labels.index(7))  # a digit the assembled network knows
        build.splitter.setSizes([220, 520, 540])
        _settle(app, 0.2)
        build.view.fit_to_view()
        _shot(app, window, "tryit.png")
    _dark_shots(app, window)
    _presentation_shots(app, window)
    window.undo_stack.setClean()
    window.close()
    return 0


def _latency_shown(table) -> bool:
    cells = [table.item(r, c) for r in range(table.rowCount()) for c in range(table.columnCount())]
    return bool(cells) and not any(cell is not None and "measuring" in cell.text() for cell in cells)


def _dark_shots(app, window) -> None:
    """The same screens in the dark theme (View > Dark theme, Ctrl+Shift+D)."""
    from kfstudio.gui.main_window import BUILD, FACTORIZE, WELCOME

    window.dark_action.setChecked(True)
    for index, name in ((WELCOME, "welcome-dark.png"), (FACTORIZE, "factorize-dark.png"), (BUILD, "build-dark.png")):
        window.tabs.setCurrentIndex(index)
        _shot(app, window, name)
    window.tabs.setCurrentIndex(FACTORIZE)
    window.factorize_page.loss_plot.set_log_scale(True)
    _shot(app, window, "factorize-dark-log.png")
    window.factorize_page.loss_plot.set_log_scale(False)
    window.dark_action.setChecked(False)


def _presentation_shots(app, window) -> None:
    """Presentation mode (F11) at the two resolutions talks use, light theme. Offscreen has one
    800x600 screen: the screen presentation mode lays the window out for is the talk's, by hand."""
    from PySide6.QtCore import QRect

    from kfstudio.gui import screen_fit
    from kfstudio.gui.main_window import BUILD, FACTORIZE

    real_screen = screen_fit.available_geometry
    for size in ((1600, 1000), (1920, 1080)):
        screen_fit.available_geometry = lambda _window, size=size: QRect(0, 0, *size)
        window.presentation_action.setChecked(False)
        window.presentation_action.setChecked(True)
        window.showNormal()
        window.setGeometry(QRect(0, 0, *size))
        _wait(app, lambda: window.width() == size[0], 10)
        for index, name in ((FACTORIZE, "factorize"), (BUILD, "build")):
            window.tabs.setCurrentIndex(index)
            _settle(app, 0.3)
            _shot(app, window, f"presentation-{name}-{size[0]}x{size[1]}.png")
    screen_fit.available_geometry = real_screen
    window.presentation_action.setChecked(False)
    window.resize(*SIZE)


if __name__ == "__main__":
    sys.exit(main())
