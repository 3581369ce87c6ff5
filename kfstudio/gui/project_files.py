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

from kfstudio.core import safe_json
from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.core.teachers.record import teacher_entry
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


def save_project(path: Path, window) -> None:
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


def read_project_files(path: Path, known_runs: set[str], build_page: bool = True, prepare=None) -> LoadedProject:
    """Read a project (or a recovery file) and all it names: runs in a worker thread. Raises
    KFError in words. ``known_runs`` are run folders the window has loaded already; ``prepare(choice)``
    readies what showing the teacher choice needs (the Factorize page's memory estimate)."""
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
    if loaded.choice is not None and prepare is not None:
        prepare(loaded.choice)
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
