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
from pathlib import Path

from kfstudio.core import safe_json
from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.core.teacher_record import teacher_entry
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


def read_project(path: Path, window) -> list[str]:
    """Load a project (or a recovery file) into the window; returns warnings; raises KFError in words."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The project file '{path}' does not exist.")
    try:
        head = safe_json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise FileFormatError("the file is not a KF Studio project (it may be truncated or corrupt).") from None
    if not isinstance(head, dict):
        raise FileFormatError("the file is not a KF Studio project.")
    studio = head.get("studio") if isinstance(head.get("studio"), dict) else {}
    if head.get("kind") == SESSION_KIND:
        return _restore_session(studio, {}, window, load_runs=True)
    if window.build_page is None:
        raise FileFormatError("this project holds an assembly, but the Build page is not available to show it.")
    from kfstudio.io.project import load_project

    project = load_project(path)
    warnings = _restore_session(studio, _teacher_from_project(project), window, load_runs=False)
    window.build_page.load_graph(project.graph)
    common = project.graph.common
    loaded = {str(Path(common.path).parent.resolve())} if common is not None else set()
    for folder in [*loaded, *(str(Path(f).resolve()) for f in studio.get("runs", []))]:
        if folder in window.run_folders or not Path(folder).is_dir():
            continue
        if folder not in loaded:
            try:
                window.build_page.load_run(Path(folder), as_plate=False)
            except KFError as exc:
                warnings.append(str(exc))
                continue
        window.run_folders.append(folder)
    if loaded:
        window.show_run_curves(next(iter(loaded)))  # the plate's run: its curves and log again
    has_canvas = common is not None or bool(project.graph.brick_ids())
    return warnings + (project.warnings if has_canvas else [])


def _teacher_from_project(project) -> dict:
    config = project.factorization or {}
    ref = (project.teacher or {}).get("ref")
    if not ref:
        return {}
    return {"ref": ref, "data": (project.data or {}).get("ref") or config.get("data"), "tasks": config.get("tasks"),
            "weights": (project.teacher or {}).get("weights") or config.get("teacher_weights"), "input": config.get("teacher_input")}


def _restore_session(studio: dict, fallback_teacher: dict, window, load_runs: bool) -> list[str]:
    warnings = []
    teacher = studio.get("teacher") or fallback_teacher
    if teacher and teacher.get("ref"):
        try:
            window.set_choice(_load_teacher_choice(teacher, window))
        except KFError as exc:
            warnings.append(f"The teacher could not be loaded again: {exc}")
    if load_runs:  # a session file: its runs are all there is
        for folder in studio.get("runs", []):
            if Path(folder).is_dir():
                window.load_run(folder)
    return warnings


def _load_teacher_choice(teacher: dict, window):
    """The project's teacher; a reference that runs code is loaded only after the user says yes."""
    from kfstudio.core.teachers.loaders import UntrustedCodeError
    from kfstudio.gui.train.teacher_wizard import load_choice

    args = (teacher["ref"], teacher.get("data"), teacher.get("tasks"), teacher.get("weights"), teacher.get("input"))
    try:
        return load_choice(*args, allow_code=False)
    except UntrustedCodeError as exc:
        if not window.ask_to_run_code(exc.ref, exc.what):
            raise KFError(f"'{exc.ref}' is code and you chose not to run it.") from None
    return load_choice(*args, allow_code=True)


def write_session_json(path: Path, state: dict) -> None:
    """For tests and tools: a session-only project file."""
    write_json(path, {"schema_version": SESSION_SCHEMA, "kind": SESSION_KIND, "studio": state})
