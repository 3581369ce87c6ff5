"""Opening a project never runs code it names unless the user says yes in a dialog."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from kfstudio.gui.project_files import write_session_json


@pytest.fixture
def evil_project(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    (tmp_path / "kf_evil_gui_teacher.py").write_text(
        f"import os\nos.mkdir({str(marker)!r})\ndef make():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    project = tmp_path / "evil.kfproj"
    write_session_json(project, {"teacher": {"ref": "kf_evil_gui_teacher:make", "data": "builtin:digits"}, "runs": []})
    return project, marker


def _answer(monkeypatch, button):
    asked = []

    def question(_parent, title, text, *args, **kwargs):
        asked.append((title, text))
        return button

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_saying_no_runs_nothing_and_says_why(window, evil_project, monkeypatch, message_boxes, wait_loaded):
    project, marker = evil_project
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    assert window.open_project(project)
    wait_loaded(window)
    assert not marker.exists()
    assert asked and "kf_evil_gui_teacher:make" in asked[0][1] and "trust" in asked[0][1]
    assert any("chose not to run it" in text for _title, text in message_boxes)


def test_saying_yes_runs_it(window, evil_project, monkeypatch, wait_loaded):
    project, marker = evil_project
    _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    window.open_project(project)
    wait_loaded(window)
    assert marker.exists()  # the user's explicit yes: the module was imported


@pytest.fixture
def pt2_project(tmp_path, monkeypatch):
    """A project whose teacher is a plain .pt2 program; records every torch.export.load."""
    import torch

    teacher = tmp_path / "teacher.pt2"
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).eval()
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=1024)}})
    torch.export.save(program, str(teacher))
    loads = []
    real_load = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    project = tmp_path / "pt2.kfproj"
    write_session_json(project, {"teacher": {"ref": str(teacher), "data": "builtin:digits"}, "runs": []})
    return project, teacher, loads


def test_a_pt2_teacher_asks_first_and_no_loads_nothing(window, pt2_project, monkeypatch, message_boxes, wait_loaded):
    project, teacher, loads = pt2_project
    asked = _answer(monkeypatch, QMessageBox.StandardButton.No)
    assert window.open_project(project)
    wait_loaded(window)
    assert not loads  # not even opened
    assert asked and str(teacher) in asked[0][1] and "torch.export program" in asked[0][1]
    assert "trust" in asked[0][1]
    assert any("chose not to run it" in text for _title, text in message_boxes)


def test_a_pt2_teacher_loads_after_yes(window, pt2_project, monkeypatch, message_boxes, wait_loaded):
    project, _teacher, loads = pt2_project
    asked = _answer(monkeypatch, QMessageBox.StandardButton.Yes)
    window.open_project(project)
    wait_loaded(window)
    assert asked and loads  # the user's explicit yes: checked, then loaded
    assert not any("could not be loaded" in text for _title, text in message_boxes)


def test_a_project_naming_a_crafted_pt2_or_a_pickled_brick_runs_nothing(window, tmp_path, monkeypatch, message_boxes,
                                                                        wait_loaded):
    import json
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from test_no_code_runs import Exploit, crafted_pt2

    marker = tmp_path / "pwned"
    evil = crafted_pt2(tmp_path / "evil.pt2", marker)
    (tmp_path / "evil.json").write_text(json.dumps({"input": {"channels": 1, "height": 8, "width": 8}}))
    brick = tmp_path / "brick.safetensors"
    torch.save(Exploit(marker), brick)
    project = tmp_path / "p.kfproj"
    project.write_text(json.dumps({
        "schema_version": 2, "kind": "kfstudio-project", "teacher": {"ref": str(evil)},
        "data": {"ref": "builtin:digits"}, "factorization": {},
        "common": {"path": str(brick), "position": [0, 0]},
        "bricks": [{"id": "b", "path": str(brick), "position": [1, 1], "attached": True}],
        "studio": {"teacher": {"ref": str(evil), "data": "builtin:digits"}, "runs": []}}))
    _answer(monkeypatch, QMessageBox.StandardButton.Yes)  # even a careless yes to everything
    window.open_project(project)
    wait_loaded(window)
    assert not marker.exists()
    shown = " ".join(text for _title, text in message_boxes)
    assert "not a plain torch.export program" in shown
