"""Project files (``.kfproj``, JSON): a canvas saved with everything needed to reopen it.

A project holds the teacher reference, the data reference, the factorization config, the
common module and brick files (paths relative to the project file where possible, with
sha256 hashes) and the brick graph with positions, titles and attachments.

Loading goes parse -> migrate -> validate -> build. Older schemas are migrated step by
step (``MIGRATIONS``); a newer schema, bad JSON or a wrong structure raise a
``ProjectError``. Problems with the files a project points at (missing, changed since the
save, unreadable, no longer attachable) do not stop the load: each becomes one sentence in
``Project.warnings`` and the rest of the canvas opens (``strict=True`` raises instead).

Schema history: v1 (teacher and data as plain strings, ``config``, ``common`` as a path,
bricks as ``{"file", "x", "y", "attached"}``, no hashes); v2 (current).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kfstudio.assembly.graph import BrickGraph
from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.core.teachers.loaders import file_sha256
from kfstudio.io.atomic import read_json, write_json
from kfstudio.io import schema
from kfstudio.io.bricks import load_brick, load_common, read_run_json
from kfstudio.io.bundle import load_bundle, load_bundle_brick
from kfstudio.io.manifests import PROJECT_V1, PROJECT_V2

PROJECT_SCHEMA_VERSION = 2
PROJECT_KIND = "kfstudio-project"
PROJECT_SUFFIX = ".kfproj"


class ProjectError(FileFormatError):
    """A project file cannot be read, or (strict loading) points at a missing or changed file."""


@dataclass
class Project:
    """A canvas plus where it came from; ``warnings`` lists what did not load as saved."""

    graph: BrickGraph
    teacher: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    factorization: dict = field(default_factory=dict)
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)


def project_from_graph(graph: BrickGraph, run_folder: str | Path | None = None) -> Project:
    """A project for ``graph``: teacher from the common module, data and config from ``run.json``."""
    teacher = dict((graph.common.manifest.get("teacher") or {}) if graph.common else {})
    data, config = {}, {}
    run_json = Path(run_folder) / "run.json" if run_folder else None
    if run_json and run_json.is_file():
        config = read_run_json(run_json)["config"]
        data = {"ref": config.get("data"), "test_ref": config.get("test_data")}
    return Project(graph, teacher, data, config)


# ---------------------------------------------------------------- saving

def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` where that is possible (same drive), else absolute."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def to_document(project: Project, folder: Path) -> dict:
    """The v2 JSON document of ``project``, with paths relative to ``folder``."""
    g = project.graph
    common = None
    if g.common is not None:
        common = {"path": _relative(g.common.path, folder), "sha256": file_sha256(g.common.path),
                  "bundle_prefix": g.common.manifest.get("bundle_prefix"),
                  "position": list(g.common_position or (0.0, 0.0))}
    bricks = []
    for node in g.brick_ids():
        brick = g.brick(node)
        bricks.append({"id": node, "path": _relative(brick.path, folder), "sha256": file_sha256(brick.path),
                       "bundle_prefix": brick.manifest.get("bundle_prefix"), "title": g.title(node),
                       "position": list(g.position(node)), "attached": g.is_attached(node)})
    return {"schema_version": PROJECT_SCHEMA_VERSION, "kind": PROJECT_KIND, "teacher": project.teacher,
            "data": project.data, "factorization": project.factorization, "common": common, "bricks": bricks}


def save_project(project: Project, path: str | Path) -> Path:
    """Write the project atomically; ``project.path`` becomes ``path``."""
    path = Path(path)
    if path.suffix != PROJECT_SUFFIX:
        path = path.with_name(path.name + PROJECT_SUFFIX)
    write_json(path, to_document(project, path.parent))
    project.path = path
    return path


# ---------------------------------------------------------------- loading: parse, migrate, validate

def parse(path: Path) -> dict:
    doc = read_json(
        path, missing=ProjectError(f"The project file '{path}' does not exist."),
        corrupt=ProjectError(f"'{path.name}' is not a readable project file (it may be truncated or corrupt)."))
    if not isinstance(doc, dict) or not isinstance(doc.get("schema_version"), int):
        raise ProjectError(f"'{path.name}' is not a KF Studio project (it has no schema_version).")
    return doc


def _v1_to_v2(doc: dict) -> dict:
    """v1 kept references as plain strings and no hashes; v2 adds hashes, titles and ids."""
    bricks = [{"id": f"brick:{i}", "path": b["file"], "sha256": None, "bundle_prefix": None, "title": None,
               "position": [b.get("x", 0.0), b.get("y", 0.0)], "attached": bool(b.get("attached", True))}
              for i, b in enumerate(doc.get("bricks", []))]
    common = {"path": doc["common"], "sha256": None, "position": [0.0, 0.0]} if doc.get("common") else None
    return {"schema_version": 2, "kind": PROJECT_KIND, "teacher": {"ref": doc.get("teacher")},
            "data": {"ref": doc.get("data"), "test_ref": None}, "factorization": doc.get("config", {}),
            "common": common, "bricks": bricks}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2}
SCHEMAS = {1: PROJECT_V1, 2: PROJECT_V2}


def migrate(doc: dict, path: Path) -> dict:
    """Bring a document up to the current schema, checking each version's shape before it is used."""
    name = f"The project '{path.name}'"
    version = doc["schema_version"]
    if version > PROJECT_SCHEMA_VERSION:
        raise ProjectError(f"{name} was saved by a newer KF Studio (schema {version}); update KF Studio to open it.")
    while version < PROJECT_SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ProjectError(f"{name} has schema {version}, which this KF Studio cannot read.")
        doc = MIGRATIONS[version](schema.validate(doc, SCHEMAS[version], path, "project", ProjectError))
        version = doc["schema_version"]
    return doc


def validate(doc: dict, path: Path) -> dict:
    """Check the current structure; raise a ProjectError naming the first thing that is wrong."""
    doc = schema.validate(doc, PROJECT_V2, path, "project", ProjectError)
    if doc["kind"] != PROJECT_KIND:
        raise ProjectError(f"'{path.name}' is not marked as a KF Studio project.")
    ids = [b["id"] for b in doc["bricks"]]
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice is not None:
        raise ProjectError(f"'{path.name}' is damaged: the brick id '{twice}' is used twice.")
    return doc


# ---------------------------------------------------------------- loading: build

def _resolve(ref: str, folder: Path) -> Path:
    """The file a project names, as an absolute path without ``..`` (the studio knows run folders
    by their resolved path: a project beside its runs names them ``../runs/...``)."""
    p = Path(ref).expanduser()
    return (p if p.is_absolute() else folder / p).resolve()


def _changed(path: Path, sha: str | None) -> bool:
    return sha is not None and file_sha256(path) != sha


def _load_part(entry: dict, folder: Path, what: str, loader: Callable[[Path], Any], warnings: list[str]):
    """Load one referenced file, or record in plain words why not (and return None)."""
    path = _resolve(entry["path"], folder)
    if not path.is_file():
        warnings.append(f"The file of {what} is missing: '{path}'. It was left out.")
        return None
    if _changed(path, entry.get("sha256")):
        warnings.append(f"The file of {what} has changed since the project was saved: '{path}'.")
    try:
        return loader(path)
    except KFError as exc:
        warnings.append(f"{what[0].upper()}{what[1:]} could not be loaded and was left out: {exc}")
        return None


def build(doc: dict, folder: Path) -> Project:
    warnings: list[str] = []
    graph = BrickGraph()
    if doc["common"] is not None:
        loader = (lambda p: load_bundle(p).common) if doc["common"].get("bundle_prefix") else load_common
        common = _load_part(doc["common"], folder, "the common module", loader, warnings)
        if common is not None:
            graph.set_common(common, tuple(doc["common"].get("position") or (0.0, 0.0)))
    else:
        warnings.append("The project has no common module, so no brick can be attached.")
    for entry in doc["bricks"]:
        label = f"the brick '{entry.get('title') or entry['id']}'"
        prefix = entry.get("bundle_prefix")
        loader = (lambda p, pre=prefix: load_bundle_brick(p, pre)) if prefix else load_brick
        brick = _load_part(entry, folder, label, loader, warnings)
        if brick is None:
            continue
        node = graph.add_brick(brick, tuple(entry["position"]), entry["id"],
                               entry.get("title") or None)
        if entry.get("attached"):
            _attach(graph, node, warnings)
    return Project(graph, doc["teacher"], doc["data"], doc["factorization"], warnings=warnings)


def _attach(graph: BrickGraph, node: str, warnings: list[str]) -> None:
    """Re-attach through the same rules as a drop on the canvas."""
    try:
        graph.attach(node)
    except KFError as exc:
        warnings.append(f"{exc} It was left unattached.")


def load_project(path: str | Path, *, strict: bool = False) -> Project:
    """Open a project: parse -> migrate -> validate -> build. With ``strict``, the first
    problem with a referenced file raises a ProjectError instead of becoming a warning."""
    path = Path(path)
    doc = validate(migrate(parse(path), path), path)
    project = build(doc, path.parent)
    project.path = path
    if strict and project.warnings:
        raise ProjectError(project.warnings[0])
    return project
