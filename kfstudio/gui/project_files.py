"""Project files from the window's point of view: what to write, and how to read it back.

The brick graph goes through ``kfstudio.io.project`` (versioned, migrated, atomic) when that
module is present; the studio's own session facts (which teacher, data and tasks were
loaded, which run folders fed the palette) ride along in a small "studio" section. Without
``kfstudio.io.project`` the studio writes the session facts alone, so autosave and recovery
keep working.
"""

from __future__ import annotations

import json
from pathlib import Path

from kfstudio.core.errors import FileFormatError
from kfstudio.io.atomic import write_json

SESSION_KIND = "kfstudio-session"
SESSION_SCHEMA = 1


def _project_api():
    try:
        from kfstudio.io import project
    except ImportError:
        return None
    return project if hasattr(project, "save_project") and hasattr(project, "load_project") else None


def session_state(window) -> dict:
    choice = window.choice
    teacher = None
    if choice is not None:
        teacher = {"ref": choice.teacher_ref, "weights": choice.teacher_weights, "input": choice.teacher_input,
                   "data": choice.data_ref, "tasks": choice.tasks_spec}
    return {"teacher": teacher, "runs": list(window.run_folders)}


def write_project(path: Path, window) -> None:
    """Write the project to ``path`` (the caller makes it atomic where needed)."""
    api = _project_api()
    graph = getattr(window.build_page, "graph", None)
    if api is not None and graph is not None:
        api.save_project(path, graph, extra={"studio": session_state(window)})
        return
    Path(path).write_text(json.dumps({"schema_version": SESSION_SCHEMA, "kind": SESSION_KIND,
                                      "studio": session_state(window)}, indent=2) + "\n")


def save_project(path: Path, window) -> None:
    """Save atomically (temp file, fsync, rename)."""
    from kfstudio.io.atomic import write_with

    write_with(path, lambda tmp: write_project(tmp, window))


def read_project(path: Path, window) -> None:
    """Load a project (or a recovery file) into the window; raises KFError in words."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"The project file '{path}' does not exist.")
    try:
        head = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise FileFormatError("the file is not a KF Studio project (it may be truncated or corrupt).") from None
    if not isinstance(head, dict):
        raise FileFormatError("the file is not a KF Studio project.")
    studio = head.get("studio") or head.get("extra", {}).get("studio") or {}
    _restore_session(studio, window)
    if head.get("kind") == SESSION_KIND:
        return
    api = _project_api()
    graph = getattr(window.build_page, "graph", None)
    if api is None or graph is None:
        raise FileFormatError("this project holds an assembly, but the Build page is not available to show it.")
    api.load_project(path, graph)


def _restore_session(studio: dict, window) -> None:
    from kfstudio.gui.teacher_wizard import load_choice

    teacher = studio.get("teacher")
    if teacher and teacher.get("ref"):
        window.set_choice(load_choice(teacher["ref"], teacher.get("data"), teacher.get("tasks"),
                                      teacher.get("weights"), teacher.get("input")))
    for folder in studio.get("runs", []):
        if Path(folder).is_dir():
            window.load_run(folder)


def write_session_json(path: Path, state: dict) -> None:
    """For tests and tools: a session-only project file."""
    write_json(path, {"schema_version": SESSION_SCHEMA, "kind": SESSION_KIND, "studio": state})
