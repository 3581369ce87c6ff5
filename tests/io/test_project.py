"""Project files: save/load round trip, migration from v1, and every way a project can be broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kfstudio.assembly.graph import BrickGraph
from kfstudio.io.bricks import load_brick, load_common
from kfstudio.io.project import (
    PROJECT_SCHEMA_VERSION,
    Project,
    ProjectError,
    load_project,
    project_from_graph,
    save_project,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _canvas(folder: Path) -> BrickGraph:
    graph = BrickGraph()
    graph.set_common(load_common(folder / "common.safetensors"), (10, 20))
    for i, t in enumerate(("0", "1", "7")):
        graph.add_brick(load_brick(folder / "bricks" / f"{t}.safetensors"), (200, 100 * i))
    graph.attach("brick:0")
    graph.attach("brick:7")
    graph.rename("brick:7", "lucky")
    return graph


def _state(graph: BrickGraph):
    return ([(n, graph.title(n), graph.position(n), graph.is_attached(n), graph.brick(n).task.name)
             for n in graph.brick_ids()], graph.common.fingerprint, graph.common_position)


def test_save_and_load_round_trip(digits_copy):
    project = project_from_graph(_canvas(digits_copy), digits_copy)
    path = save_project(project, digits_copy / "my")
    assert path.name == "my.kfproj" and project.path == path
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == PROJECT_SCHEMA_VERSION and doc["common"]["path"] == "common.safetensors"
    assert doc["bricks"][2]["path"] == "bricks/7.safetensors" and len(doc["bricks"][2]["sha256"]) == 64
    assert doc["teacher"]["ref"] == "builtin:digits" and doc["data"]["ref"] == "builtin:digits"
    assert doc["factorization"]["epochs"] == 2
    loaded = load_project(path)
    assert loaded.warnings == [] and _state(loaded.graph) == _state(project.graph)
    assert not [p for p in digits_copy.iterdir() if p.name.endswith(".tmp")]


def test_a_moved_project_folder_still_opens(digits_copy, tmp_path):
    save_project(project_from_graph(_canvas(digits_copy)), digits_copy / "p.kfproj")
    moved = shutil.move(str(digits_copy), str(tmp_path / "elsewhere"))
    assert load_project(Path(moved) / "p.kfproj").warnings == []


def test_a_v1_project_is_migrated(digits_copy):
    shutil.copy(FIXTURES / "digits_v1.kfproj", digits_copy / "old.kfproj")
    project = load_project(digits_copy / "old.kfproj")
    assert project.warnings == []
    g = project.graph
    assert [g.title(n) for n in g.brick_ids()] == ["digit 0", "digit 1", "digit 7"]
    assert g.attached_ids() == ["brick:0", "brick:1"] and g.position("brick:2") == (240.0, 220.0)
    assert project.teacher == {"ref": "builtin:digits"} and project.factorization["epochs"] == 2
    save_project(project, digits_copy / "old.kfproj")
    assert json.loads((digits_copy / "old.kfproj").read_text())["schema_version"] == 2


def test_a_missing_brick_file_is_a_warning(digits_copy):
    path = save_project(project_from_graph(_canvas(digits_copy)), digits_copy / "p.kfproj")
    (digits_copy / "bricks" / "7.safetensors").unlink()
    before = path.read_bytes()
    project = load_project(path)
    assert len(project.warnings) == 1 and "'lucky' is missing" in project.warnings[0]
    assert project.graph.attached_ids() == ["brick:0"]
    with pytest.raises(ProjectError, match="missing"):
        load_project(path, strict=True)
    assert path.read_bytes() == before


def test_a_changed_brick_file_is_a_warning(digits_copy):
    path = save_project(project_from_graph(_canvas(digits_copy)), digits_copy / "p.kfproj")
    shutil.copy(digits_copy / "bricks" / "3.safetensors", digits_copy / "bricks" / "1.safetensors")
    shutil.copy(digits_copy / "bricks" / "3.json", digits_copy / "bricks" / "1.json")
    project = load_project(path)
    assert any("'digit 1' has changed since the project was saved" in w for w in project.warnings)


def test_a_brick_that_no_longer_fits_stays_unattached(digits_copy, shapes_run):
    path = save_project(project_from_graph(_canvas(digits_copy)), digits_copy / "p.kfproj")
    doc = json.loads(path.read_text())
    alien = sorted((shapes_run[1] / "bricks").glob("*.safetensors"))[0]
    doc["bricks"][0].update(path=str(alien), sha256=None)
    path.write_text(json.dumps(doc))
    project = load_project(path)
    assert any("different common module" in w and "left unattached" in w for w in project.warnings)
    assert "brick:0" in project.graph.brick_ids() and not project.graph.is_attached("brick:0")


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 3, "kind": "kfstudio-project"}', "newer KF Studio"),
    ('{"schema_version": 2, "kind": "kfstudio-pro', "truncated or corrupt"),
    ('[1, 2]', "not a KF Studio project"),
    ('{"schema_version": 2, "kind": "kfstudio-project", "teacher": {}, "data": {}, "factorization": {}, '
     '"common": null, "bricks": [{"id": "a"}]}', r"not a valid project: bricks\[0\]\.path is missing"),
])
def test_broken_project_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.kfproj"
    path.write_text(content)
    with pytest.raises(ProjectError, match=message):
        load_project(path)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.kfproj"]


def test_a_missing_project_file(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "nothing.kfproj")


def test_an_empty_project_saves_and_loads(tmp_path):
    path = save_project(Project(BrickGraph()), tmp_path / "empty.kfproj")
    project = load_project(path)
    assert project.graph.common is None and "no common module" in project.warnings[0]


def test_a_project_with_bricks_from_a_bundle(digits_common, digits_bricks, tmp_path):
    from kfstudio.assembly.build import build_from_files
    from kfstudio.io.bundle import graph_from_bundle
    from kfstudio.io.export import export_network

    net = build_from_files(digits_common, [digits_bricks[t] for t in "17"], ["one", "seven"], [(1, 1), (2, 2)])
    bundle = export_network(net, tmp_path / "net.safetensors").path
    graph = graph_from_bundle(bundle)
    path = save_project(Project(graph), tmp_path / "b.kfproj")
    loaded = load_project(path)
    assert loaded.warnings == [] and _state(loaded.graph) == _state(graph)
    assert [loaded.graph.title(n) for n in loaded.graph.attached_ids()] == ["one", "seven"]
