"""Start the studio: the QApplication, the theme, the main window, and an optional demo/project."""

from __future__ import annotations

import sys

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

ORGANIZATION = "KF Studio"
APPLICATION = "KF Studio"


def make_application(argv: list[str] | None = None) -> QApplication:
    """The one QApplication, named so QSettings finds the studio's settings."""
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    return app



def apply_saved_appearance() -> None:
    """The theme and UI scale the user chose last time."""
    from kfstudio.gui.theme import theme_manager

    settings = QSettings()
    try:
        scale = float(settings.value("ui_scale", 1.0))
    except (TypeError, ValueError):
        scale = 1.0
    theme_manager().restore(str(settings.value("theme", "light")), scale)


def run_studio(demo: str | None = None, project: str | None = None) -> int:
    """Open the studio window; with ``demo`` ("digits"/"shapes") load that demo straight away."""
    app = make_application()
    apply_saved_appearance()
    from kfstudio.gui.main_window import MainWindow

    window = MainWindow()
    window.show()
    app.processEvents()   # the window paints before anything loads (a project or demo loads in the background)

    def start() -> None:
        window.begin_session()
        if project:
            window.open_project(project)
        elif demo:
            window.open_demo(demo)

    QTimer.singleShot(0, start)
    return int(app.exec())
