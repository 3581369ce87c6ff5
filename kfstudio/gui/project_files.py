"""Project files from the window's point of view: what to write, and how to read it back.

The canvas goes through ``kfstudio.io.project`` (versioned, migrated, validated): its
``to_document`` gives the JSON, which the studio writes atomically itself (so the same
code serves Save and the autosave to a temporary recovery path). The teacher, data and
factorization sections come from the run that made the common module, or, before any run,
from the teacher the user loaded. A ``studio`` section (ignored by ``kfstudio.io.project``)
lists every run folder that fed the palette. Without a Build page the studio writes that
session section alone, so autosave and recovery keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from kfstudio.core import safe_json
from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.gui.welcome import add_recent_project, recent_projects
from kfstudio.io.atomic import write_json, write_with

SESSION_KIND = "kfstudio-session"
SESSION_SCHEMA = 1


def session_state(window) -> dict:
    choice = window.choice
    teacher = None
    if choice is not None:
        teacher = {"ref": choice.teacher_ref, "weights": choice.teacher_weights, "input": choice.teacher_input,
                   "data": choice.data_ref, "tasks": choice.tasks_spec}
    return {"teacher": teacher, "runs": list(window.run_folders)}


def project_document(window, folder: Path) -> dict:
    """The JSON document of the window's project, paths relative to ``folder``."""
    from kfstudio.core.teachers.record import teacher_entry  # torch: not before the window shows

    graph = getattr(window.build_page, "graph", None)
    state = session_state(window)
    if graph is None:
        return {"schema_version": SESSION_SCHEMA, "kind": SESSION_KIND, "studio": state}
    from kfstudio.io.project import project_from_graph, to_document

    run_folder = Path(graph.common.path).parent if graph.common is not None else None
    project = project_from_graph(graph, run_folder)
    choice = window.choice
    if choice is not None:
        if not project.teacher.get("ref"):
            project.teacher = teacher_entry(choice.teacher)
        if not project.data.get("ref"):
            project.data = {"ref": choice.data_ref, "test_ref": None}
        if not project.factorization:
            project.factorization = choice.config().to_dict()
    doc = to_document(project, folder)
    doc["studio"] = state
    return doc


def write_project(path: Path, window, folder: Path | None = None) -> None:
    """Write the project to ``path`` as is (callers make it atomic)."""
    doc = project_document(window, Path(folder) if folder else Path(path).parent)
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def save_project_file(path: Path, window) -> None:
    """Save atomically (temp file, fsync, rename)."""
    path = Path(path)
    write_with(path, lambda tmp: write_project(tmp, window, path.parent))


@dataclass
class LoadedProject:
    """Everything a project names, read from disk in the background (``read_project_files``);
    ``apply_project`` then puts it into the window on the GUI thread without reading a file."""

    studio: dict
    project: object | None = None               # a kfstudio.io.project.Project (None: a session file)
    choice: object | None = None                # the teacher's TeacherChoice
    untrusted: tuple | None = None              # the teacher's load arguments when they name code
    untrusted_what: str = ""                    # what kind of code it is, for the question
    runs: dict = field(default_factory=dict)    # run folder -> (common, bricks) or the KFError reading it
    warnings: list = field(default_factory=list)

    @property
    def plate_path(self) -> Path | None:
        """The plate's run folder as the project names it (the palette's keys are under it)."""
        common = self.project.graph.common if self.project is not None else None
        return Path(common.path).parent if common is not None else None

    @property
    def plate_folder(self) -> str | None:
        """The same, resolved (as ``window.run_folders`` holds it)."""
        return str(self.plate_path.resolve()) if self.plate_path is not None else None


def read_project_files(path: Path, known_runs: set[str], build_page: bool = True) -> LoadedProject:
    """Read a project (or a recovery file) and all it names: runs in a worker thread. Raises
    KFError in words. ``known_runs`` are run folders the window has loaded already."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The project file '{path}' does not exist.")
    try:
        head = safe_json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise FileFormatError("the file is not a KF Studio project (it may be truncated or corrupt).") from None
    if not isinstance(head, dict):
        raise FileFormatError("the file is not a KF Studio project.")
    loaded = LoadedProject(head.get("studio") if isinstance(head.get("studio"), dict) else {})
    teacher = loaded.studio.get("teacher") or {}
    runs = [str(f) for f in loaded.studio.get("runs", [])]
    if head.get("kind") != SESSION_KIND:
        if not build_page:
            raise FileFormatError("this project holds an assembly, but the Build page is not available to show it.")
        from kfstudio.io.project import load_project

        loaded.project = load_project(path)
        teacher = teacher or _teacher_from_project(loaded.project)
        runs = [f for f in [loaded.plate_folder, *(str(Path(r).resolve()) for r in runs)] if f]
    if teacher and teacher.get("ref"):
        _read_teacher(teacher, loaded)
    for folder in runs:
        if folder not in known_runs and folder not in loaded.runs and Path(folder).is_dir():
            loaded.runs[folder] = _read_run(loaded.plate_path if folder == loaded.plate_folder else Path(folder))
    return loaded


def _read_teacher(teacher: dict, loaded: LoadedProject) -> None:
    """The project's teacher; a reference that runs code waits for the user's yes (``apply_project`` asks)."""
    from kfstudio.core.teachers.loaders import UntrustedCodeError
    from kfstudio.gui.train.teacher_wizard import load_choice

    args = (teacher["ref"], teacher.get("data"), teacher.get("tasks"), teacher.get("weights"), teacher.get("input"))
    try:
        loaded.choice = load_choice(*args, allow_code=False)
        loaded.choice.test_dataset()   # prepared here, not on the GUI thread
    except UntrustedCodeError as exc:
        loaded.untrusted, loaded.untrusted_what = args, exc.what
    except KFError as exc:
        loaded.warnings.append(f"The teacher could not be loaded again: {exc}")


def _read_run(folder: Path):
    from kfstudio.gui.build.brick_library import read_run

    try:
        return read_run(folder)
    except KFError as exc:
        return exc


def apply_project(loaded: LoadedProject, window) -> list[str]:
    """Put a project read by ``read_project_files`` into the window; returns its warnings."""
    warnings = list(loaded.warnings)
    choice = (loaded.choice if loaded.untrusted is None
              else _trusted_choice(loaded.untrusted, loaded.untrusted_what, window, warnings))
    if choice is not None:
        window.set_choice(choice)
    if loaded.project is None:  # a session file: its runs are all there is
        for folder, run in loaded.runs.items():
            if isinstance(run, KFError):
                warnings.append(str(run))
            else:
                window.load_run(folder, run)
        return warnings
    plate = loaded.plate_folder
    plate_run = loaded.runs.get(plate)
    if plate_run is not None and not isinstance(plate_run, KFError):
        window.build_page.load_run(loaded.plate_path, as_plate=False, preloaded=plate_run)
    project = loaded.project
    window.build_page.load_graph(project.graph)
    for folder in [plate, *loaded.runs]:
        if folder is None or folder in window.run_folders or not Path(folder).is_dir():
            continue
        run = loaded.runs.get(folder)
        if folder != plate:
            if isinstance(run, KFError):
                warnings.append(str(run))
                continue
            if run is not None:
                window.build_page.load_run(Path(folder), as_plate=False, preloaded=run)
        window.run_folders.append(folder)
    if plate is not None:
        window.show_run_curves(plate)  # the plate's run: its curves and log again
    has_canvas = project.graph.common is not None or bool(project.graph.brick_ids())
    return warnings + (project.warnings if has_canvas else [])


def _trusted_choice(args: tuple, what: str, window, warnings: list[str]):
    """A teacher named as code in the file: loaded only after the user says yes in a dialog (then
    here, on the GUI thread, while the answer is fresh: it is the user's explicit choice)."""
    from kfstudio.gui.train.teacher_wizard import load_choice

    if not window.ask_to_run_code(args[0], what):
        warnings.append(f"The teacher could not be loaded again: '{args[0]}' is code and you chose not to run it.")
        return None
    try:
        return load_choice(*args, allow_code=True)
    except KFError as exc:
        warnings.append(f"The teacher could not be loaded again: {exc}")
        return None


def _teacher_from_project(project) -> dict:
    config = project.factorization or {}
    ref = (project.teacher or {}).get("ref")
    if not ref:
        return {}
    return {"ref": ref, "data": (project.data or {}).get("ref") or config.get("data"), "tasks": config.get("tasks"),
            "weights": (project.teacher or {}).get("weights") or config.get("teacher_weights"), "input": config.get("teacher_input")}


def write_session_json(path: Path, state: dict) -> None:
    """For tests and tools: a session-only project file."""
    write_json(path, {"schema_version": SESSION_SCHEMA, "kind": SESSION_KIND, "studio": state})

PROJECT_FILTER = "KF Studio projects (*.kfproj);;All files (*)"


class ProjectCommands:
    """The main window's project and autosave commands: open, save, save as, recent projects, and
    the crash-recovery offer. A mixin of ``MainWindow``: it uses the window's ``undo_stack``,
    ``recovery``, ``loader``, ``project_path``, ``run_folders``, pages and status bar."""

    def begin_session(self) -> None:
        """Mark the session as running; after a crash, offer the autosaved project back."""
        offer = self.recovery.begin_session()
        if offer is None:
            return
        answer = QMessageBox.question(
            self, "Restore unsaved work?",
            "KF Studio did not close properly last time. Restore the work that was autosaved then?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes)
        if answer == QMessageBox.StandardButton.Yes:
            self.restore_recovery(offer, then=self.recovery.adopt)
        else:
            self.recovery.discard()

    def restore_recovery(self, path: Path, then=None) -> bool:
        """Load the autosaved work in the background; ``then()`` once it is in place."""
        def restored() -> None:
            self.project_path = None  # a recovered project has no name until saved
            self.statusBar().showMessage("Restored the autosaved work. Save it to keep it.", 10000)
            self.setWindowModified(True)
            self._update_title(modified=True)
            if then is not None:
                then()

        return self._load_project_file(Path(path), remember=False, then=restored)

    def _has_work(self) -> bool:
        return not self.undo_stack.isClean() or (self.project_path is None and bool(self.run_folders))

    def _write_recovery(self, tmp: Path) -> None:
        write_project(tmp, self)

    def open_project_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", str(self._project_dir()), PROJECT_FILTER)
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path) -> bool:
        if not self._maybe_save():
            return False
        return self._load_project_file(Path(path), remember=True)

    def _load_project_file(self, path: Path, remember: bool, then=None) -> bool:
        """Read the project and all it names in the background, then show it; False while another
        load runs. ``then()`` runs once it is in place; ``loader.finished`` says how it went."""
        known = set(self.run_folders)
        has_build = self.build_page is not None

        def opened(loaded) -> None:
            warnings = apply_project(loaded, self)
            if warnings:
                QMessageBox.information(self, "Opened with changes", "\n\n".join(warnings[:5]))
            if remember:
                self.project_path = path
                add_recent_project(path)
                self.welcome_page.refresh_recent()
            self.undo_stack.setClean()
            self.tabs.setCurrentWidget(self.build_page if self.build_page is not None else self.factorize_page)
            self._update_title()
            self.statusBar().showMessage(f"Opened {path}", 6000)
            if then is not None:
                then()

        return self.loader.start(f"Opening {path.name}…", lambda: read_project_files(path, known, has_build),
                                 opened, lambda message: self.show_error("Could not open the project", f"{path.name}: {message}"))

    def save_project(self) -> bool:
        if self.project_path is None:
            return self.save_project_as()
        return self._save_to(self.project_path)

    def save_project_as(self) -> bool:
        suggested = str(self._project_dir() / "untitled.kfproj")
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", suggested, PROJECT_FILTER)
        if not path:
            return False
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".kfproj")
        return self._save_to(path)

    def _save_to(self, path: Path) -> bool:
        try:
            save_project_file(path, self)
        except (KFError, OSError) as exc:
            self.show_error("Could not save the project", f"{path}: {exc}")
            return False
        self.project_path = Path(path)
        self.undo_stack.setClean()
        self.recovery.discard()
        add_recent_project(path)
        self.welcome_page.refresh_recent()
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 6000)
        return True

    def _project_dir(self) -> Path:
        return self.project_path.parent if self.project_path else Path.home()

    def _maybe_save(self) -> bool:
        """Ask about unsaved changes; False when the user cancels."""
        if self.undo_stack.isClean():
            return True
        answer = QMessageBox.question(
            self, "Save changes?", "The project has changes that are not saved. Save them first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save_project()
        return answer == QMessageBox.StandardButton.Discard

    def _on_recent_menu_about_to_show(self) -> None:
        self.recent_menu.clear()
        paths = recent_projects()
        for path in paths:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.open_project(p))
        if not paths:
            self.recent_menu.addAction("No recent projects").setEnabled(False)
