"""The main window: Welcome / Factorize / Build pages, menus, project files, autosave.

One ``QUndoStack`` is shared with the Build page; the window is "modified" while the stack
is not clean. Projects are saved through ``kfstudio.io.project`` (see ``project_files``).
A running factorization is cancelled cleanly (after asking) when the window closes.

The Factorize and Build pages (and with them torch, about a second to import) are built
just after the Welcome page is on screen, or at once when something asks for them: the
window appears before torch is loaded (benchmarks/startup.py).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QUndoStack
from PySide6.QtWidgets import QDialog, QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget, QWidget

from kfstudio.core.errors import KFError
from kfstudio.gui import screen_fit, window_actions
from kfstudio.gui.project_files import ProjectCommands
from kfstudio.gui.gc_pauses import freeze_long_lived
from kfstudio.gui.loading import BackgroundLoad
from kfstudio.gui.recovery import RecoveryManager, studio_home
from kfstudio.gui.theme import theme_manager
from kfstudio.gui.window_actions import SCALES  # noqa: F401  (the scales the View menu offers)
from kfstudio.gui.welcome import WelcomePage

APP_NAME = "KF Studio"
WELCOME, FACTORIZE, BUILD = 0, 1, 2


def _make_build_page(undo_stack: QUndoStack):
    """The canvas page, or None while it is not part of this installation."""
    try:
        from kfstudio.gui.build.page import BuildPage
    except ImportError:
        return None
    return BuildPage(undo_stack)


class MainWindow(ProjectCommands, QMainWindow):
    def __init__(self, home: Path | None = None, autosave_s: float | None = None, parent=None) -> None:
        super().__init__(parent)
        self.home = Path(home) if home else studio_home()
        self.undo_stack = QUndoStack(self)
        self.project_path: Path | None = None
        self.choice = None  # the TeacherChoice being factorized
        self.run_folders: list[str] = []
        self._scale_before_presentation = 1.0
        self._presenting = False
        self._closing = False

        self.welcome_page = WelcomePage()
        self._factorize_page = None
        self._build_page = None
        self._pages_built = False
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.welcome_page, "Welcome")
        for name in ("Factorize", "Build"):
            self.tabs.addTab(QLabel("Loading…", alignment=Qt.AlignmentFlag.AlignCenter), name)
        self.tabs.setTabToolTip(WELCOME, "Demos, projects and new teachers (Alt+1)")
        self.tabs.setTabToolTip(FACTORIZE, "Train a common module and task bricks (Alt+2)")
        self.tabs.setTabToolTip(BUILD, "Snap bricks onto the common module (Alt+3)")
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)
        self.setCentralWidget(self.tabs)

        self._connect_welcome_page()
        window_actions.create_actions(self)
        window_actions.create_menus(self)
        self.undo_stack.cleanChanged.connect(self._on_undo_stack_clean_changed)
        self.undo_stack.indexChanged.connect(self._on_undo_stack_index_changed)
        settings = QSettings()
        interval = autosave_s if autosave_s is not None else float(settings.value("autosave_seconds", 60))
        self.recovery = RecoveryManager(self.home, self._write_recovery, interval, self._has_work, parent=self)
        self.loader = BackgroundLoad(self)   # demos, projects: read in a worker, the window answers meanwhile
        self.loader.started.connect(self._on_loader_started)
        self.loader.finished.connect(self._on_loader_finished)
        self.statusBar().showMessage("Welcome. Start with a demo, or load your own teacher.", 8000)
        self._update_title()
        self.resize(1280, 800)

    # ------------------------------------------------------------------ the pages, built on first need
    @property
    def factorize_page(self):
        self.build_pages()
        return self._factorize_page

    @property
    def build_page(self):
        self.build_pages()
        return self._build_page

    def build_pages(self) -> None:
        """Build the Factorize and Build pages (this imports torch); at once when asked for."""
        if self._pages_built:
            return
        self._pages_built = True
        from kfstudio.gui.theme import configure_pyqtgraph
        from kfstudio.gui.train.page import FactorizePage

        configure_pyqtgraph()

        current = self.tabs.currentIndex()
        self.tabs.blockSignals(True)
        self._factorize_page = FactorizePage(runs_home=self.home / "runs")
        self._build_page = _make_build_page(self.undo_stack)
        for index, page in ((FACTORIZE, self._factorize_page), (BUILD, self._build_page or self._missing_build_page())):
            text, tip = self.tabs.tabText(index), self.tabs.tabToolTip(index)
            placeholder = self.tabs.widget(index)
            self.tabs.removeTab(index)
            self.tabs.insertTab(index, page, text)
            self.tabs.setTabToolTip(index, tip)
            placeholder.deleteLater()
        self.tabs.setCurrentIndex(current)
        self.tabs.blockSignals(False)
        self._connect_factorize_page()
        window_actions.add_build_page_actions(self)
        if self._build_page is not None and hasattr(self._build_page, "graph_changed"):
            self._build_page.graph_changed.connect(self._update_title)
        freeze_long_lived()   # torch, the pages: later full collections need not walk them

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._presenting and not self.isFullScreen():
            screen_fit.fit_normal_window(self)  # 1280x800 is taller than a 720-line screen
        if not self._pages_built:
            QTimer.singleShot(150, self.build_pages)  # once the Welcome page is painted

    def _on_tabs_current_changed(self, _index: int) -> None:
        self.build_pages()

    # ------------------------------------------------------------------ construction
    def _missing_build_page(self) -> QWidget:
        label = QLabel("The Build page (the brick canvas) is not installed in this version.\n"
                       "Factorization still writes the common module and bricks to disk.")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        return label

    def _connect_welcome_page(self) -> None:
        w = self.welcome_page
        w.demo_requested.connect(self.open_demo)
        w.open_requested.connect(self.open_project_dialog)
        w.open_path_requested.connect(self.open_project)
        w.new_from_teacher_requested.connect(self.new_from_teacher)

    def _connect_factorize_page(self) -> None:
        f = self._factorize_page
        f.run_saved.connect(self._on_factorize_page_run_saved)
        f.run_failed.connect(self._on_factorize_page_run_failed)
        f.status_message.connect(self._on_page_status_message)
        f.change_teacher_requested.connect(self.new_from_teacher)
        f.run_started.connect(self._on_factorize_page_run_started)

    # ------------------------------------------------------------------ session and recovery
    def ask_to_run_code(self, ref: str, what: str = "") -> bool:
        """Files never run code on their own: a project naming Python code, TorchScript or a .pt2
        program as its teacher asks first. ``what`` says what kind of code it is."""
        kind = f"\nIt is {what}." if what else ""
        answer = QMessageBox.question(
            self, "Run code from this project?",
            f"This project loads its teacher from code: {ref}{kind}\n\nRunning it can do anything your account "
            "can do (read, change or delete files). Run it only if you trust where the project came from. "
            "Run it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    # ------------------------------------------------------------------ demos, wizard, runs
    def open_demo(self, name: str) -> bool:
        """Load a built-in demo (teacher, data, tasks) in the background, then go to Factorize.
        False (nothing starts) while another load runs; ``loader.finished`` says when it is ready."""
        from kfstudio.gui.train.teacher_wizard import load_demo_choice

        def job():
            choice = load_demo_choice(name)
            choice.test_dataset()   # prepared here, not on the GUI thread
            return choice

        def ready(choice) -> None:
            self.set_choice(choice)
            self.statusBar().showMessage(f"The {name} demo is ready: press Start factorizing (Ctrl+R).", 10000)

        return self.loader.start(f"Loading the {name} demo…", job, ready,
                                 lambda message: self.show_error("Could not open the demo", message))

    def is_loading(self) -> bool:
        """A demo or project is being read in the background."""
        return self.loader.is_busy()

    def _on_loader_started(self, what: str) -> None:
        self.statusBar().showMessage(what)
        self.welcome_page.set_loading(what)

    def _on_loader_finished(self, _ok: bool) -> None:
        self.welcome_page.set_loading(None)

    def set_choice(self, choice) -> None:
        """What to factorize: a ``TeacherChoice`` (kfstudio.gui.train.teacher_wizard)."""
        self.choice = choice
        self.factorize_page.set_choice(choice)
        if self.build_page is not None:
            self.build_page.set_teacher(choice.teacher)
            self.build_page.set_test_data(choice.test_dataset())
        self.tabs.setCurrentIndex(FACTORIZE)
        self._update_title()

    def new_from_teacher(self) -> None:
        if self.factorize_page.is_running:
            self.show_error("A run is in progress", "Stop the running factorization before loading another teacher.")
            return
        from kfstudio.gui.train.teacher_wizard import TeacherWizard

        wizard = TeacherWizard(self)
        if wizard.exec() == QDialog.DialogCode.Accepted and wizard.choice is not None:
            self.set_choice(wizard.choice)

    def load_run(self, folder: str | Path, preloaded: tuple | None = None) -> bool:
        """Put a run's bricks in the palette (``preloaded``: as read in the background) and show its curves."""
        folder = str(Path(folder).resolve())
        if self.build_page is not None:
            try:
                self.build_page.load_run(Path(folder), preloaded=preloaded)
            except KFError as exc:
                self.show_error("Could not load the bricks", str(exc))
                return False
        if folder not in self.run_folders:
            self.run_folders.append(folder)
        self.show_run_curves(folder)
        return True

    def show_run_curves(self, folder: str | Path) -> None:
        """Draw a saved run's curves and log on the Factorize page (unless it shows them, or trains)."""
        page = self.factorize_page
        if not page.is_running and page.shown_folder != Path(folder):
            page.show_run(folder)

    def replay_run_dialog(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        from kfstudio.gui.train.replay import SPEEDS

        start = self.run_folders[-1] if self.run_folders else str(self.home / "runs")
        folder = QFileDialog.getExistingDirectory(self, "Replay which run?", start)
        if not folder:
            return
        speed, ok = QInputDialog.getItem(self, "Replay speed", "Play the run at:", [f"{s}x" for s in SPEEDS], 3, False)
        if ok:
            self.replay_run(folder, float(speed.rstrip("x")))

    def replay_run(self, folder: str | Path, speed: float) -> bool:
        """Play a recorded run on the Factorize page at ``speed`` x (1-20)."""
        page = self.factorize_page
        if page.is_running:
            self.show_error("A run is in progress", "Stop the running factorization before replaying another one.")
            return False
        try:
            played = page.replay_run(folder, speed)
        except KFError as exc:
            self.show_error("Could not replay the run", str(exc))
            return False
        if not played:
            self.show_error("Nothing to replay", f"{folder} holds no recorded reports (reports.jsonl); runs made "
                            "by this version of the studio have them.")
            return False
        self.tabs.setCurrentIndex(FACTORIZE)
        self.statusBar().showMessage(f"Replaying {Path(folder).name} at {speed:g}x", 8000)
        return True

    def _on_factorize_page_run_started(self) -> None:
        self.tabs.setCurrentIndex(FACTORIZE)

    def _on_factorize_page_run_saved(self, folder: str, cancelled: bool) -> None:
        if self._closing:
            return
        if self.load_run(folder):
            state = "stopped early" if cancelled else "finished"
            if self.build_page is not None:
                self.tabs.setCurrentIndex(BUILD)
            self.statusBar().showMessage(f"The run {state}; its bricks are in the palette. Drag them onto the "
                                         "common module.", 10000)

    def _on_factorize_page_run_failed(self, message: str) -> None:
        if not self._closing:
            self.show_error("The factorization stopped", message)

    def _on_page_status_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    # ------------------------------------------------------------------ projects
    def export_network(self) -> None:
        if self.build_page is None:
            self.show_error("Nothing to export", "The Build page is not available, so there is no network to export.")
            return
        self.tabs.setCurrentIndex(BUILD)
        self.build_page.open_export_dialog()

    # ------------------------------------------------------------------ view
    def set_ui_scale(self, scale: float) -> None:
        theme_manager().set_scale(scale)
        QSettings().setValue("ui_scale", scale)
        self._check_scale_action(scale)
        self.statusBar().showMessage(f"UI scale {scale:.0%}", 4000)

    def _check_scale_action(self, scale: float) -> None:
        action = self.scale_actions.get(round(scale, 2))
        if action is not None and not action.isChecked():
            action.setChecked(True)

    def set_presentation_mode(self, on: bool) -> None:
        """Fullscreen at the biggest UI scale that fits this screen (``screen_fit``), or back."""
        if on == self._presenting:
            return
        self._presenting = on
        if on:
            self.build_pages()  # every page's minimum size counts (F11 may come before they are built)
            self._scale_before_presentation = theme_manager().scale
            screen_fit.choose_presentation_scale(self, screen_fit.available_geometry(self))
            self.showFullScreen()
            self.statusBar().showMessage("Presentation mode: press F11 to leave.", 6000)
        else:
            theme_manager().set_scale(self._scale_before_presentation)
            self.showNormal()
        QTimer.singleShot(0, lambda: screen_fit.fit_build_page(self._build_page, on))  # at the new size
        if self.presentation_action.isChecked() != on:
            self.presentation_action.setChecked(on)

    def _on_dark_action_toggled(self, on: bool) -> None:
        theme_manager().set_theme("dark" if on else "light")
        QSettings().setValue("theme", theme_manager().theme.name)

    def export_plot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plot as PNG", str(Path.home() / "loss.png"),
                                              "PNG images (*.png)")
        if path:
            self.export_plots(Path(path))

    def export_plots(self, path: Path) -> list[Path]:
        """The loss plot to ``path`` and the accuracy plot beside it (``*-accuracy.png``)."""
        path = Path(path).with_suffix(".png")
        written = [self.factorize_page.loss_plot.export_png(path),
                   self.factorize_page.accuracy_plot.export_png(path.with_name(path.stem + "-accuracy.png"))]
        self.statusBar().showMessage(f"Saved the plots as {written[0]} and {written[1].name}", 8000)
        return written

    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = window_actions.shortcuts_dialog(self)
        self.shortcuts_dialog.open()

    def show_about(self) -> None:
        from kfstudio import __version__

        QMessageBox.about(self, "About KF Studio",
                          f"<b>KF Studio {__version__}</b><p>Knowledge Factorization (Yang et al., ECCV 2022): "
                          "factorize a pretrained teacher into a common module and one brick per task with the "
                          "InfoMax-Bottleneck objective, then snap bricks together into custom networks "
                          "without retraining.</p>")

    def show_error(self, title: str, message: str) -> None:
        self.statusBar().showMessage(message, 10000)
        QMessageBox.warning(self, title, message)

    # ------------------------------------------------------------------ title and closing
    def _on_undo_stack_clean_changed(self, clean: bool) -> None:
        self._update_title()

    def _on_undo_stack_index_changed(self, _index: int) -> None:
        self._update_title()

    def _update_title(self, *_args, modified: bool | None = None) -> None:
        name = self.project_path.stem if self.project_path else "Untitled"
        self.setWindowTitle(f"{name}[*] — {APP_NAME}")
        self.setWindowModified((not self.undo_stack.isClean()) if modified is None else modified)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._factorize_page is not None and self._factorize_page.is_running:
            answer = QMessageBox.question(
                self, "Stop the factorization?",
                "A factorization is running. Stop it and quit? The bricks learned so far are saved.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if not self._maybe_save():
            event.ignore()
            return
        self._closing = True
        self.loader.cancel()
        if self._factorize_page is not None:
            self._factorize_page.stop_and_wait()
        self.recovery.end_session()
        if self._presenting:
            theme_manager().set_scale(self._scale_before_presentation)
        event.accept()
