"""builtin:shapes-hard through the command line: a tiny factorization and a short teacher retraining."""

from __future__ import annotations

import json

import torch

from kfstudio.cli.app import main
from kfstudio.core.teachers import demos as demo_teachers
from kfstudio.core.data import shapes_hard

TINY = ["--epochs", "1", "--batch-size", "512", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1",
        "--device", "cpu", "--quiet"]


def test_factorize_the_shapes_hard_teacher(tmp_path, monkeypatch):
    # Fewer images than the real 2000 + 1000 (the same generator and split): the teacher's pass stays short.
    monkeypatch.setattr(shapes_hard, "TRAIN_IMAGES", 256)
    monkeypatch.setattr(shapes_hard, "TEST_IMAGES", 128)
    out = tmp_path / "hard"
    code = main(["factorize", "--teacher", "builtin:shapes-hard", "--tasks", "rotation,colour", "--out", str(out),
                 *TINY])
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert [t["name"] for t in run["tasks"]] == ["rotation", "colour"]
    assert (out / "bricks" / "rotation.safetensors").is_file() and (out / "bricks" / "colour.safetensors").is_file()
    common = json.loads((out / "common.json").read_text())
    assert common["input"]["height"] == 32 and common["input"]["channels"] == 3


def test_train_teacher_shapes_hard_is_deterministic_and_says_what_it_held_back(tmp_path, capsys, monkeypatch):
    # The real recipe draws 6000 images for each of 10 epochs; 2 epochs of 128 take the same path.
    monkeypatch.setattr(demo_teachers, "SHAPES_HARD_TEACHER_IMAGES", 128)
    monkeypatch.setattr(shapes_hard, "TRAIN_IMAGES", 64)  # the test split it scores on, cut too
    monkeypatch.setattr(shapes_hard, "TEST_IMAGES", 64)
    monkeypatch.setattr(demo_teachers, "_recipe",
                        lambda name: {"epochs": 2, "lr": 0.05, "batch": 64, "augment": False, "fresh": 128})
    torch.set_num_threads(1)
    for folder in ("a", "b"):
        assert main(["train-teacher", "shapes-hard", "--out", str(tmp_path / folder)]) == 0
    assert "epoch   2/2" in capsys.readouterr().out
    weights = (tmp_path / "a" / "shapes-hard.safetensors").read_bytes()
    assert weights == (tmp_path / "b" / "shapes-hard.safetensors").read_bytes()
    manifest = json.loads((tmp_path / "a" / "shapes-hard.json").read_text())
    assert manifest["outputs"] == list(demo_teachers.SHAPES_HARD_HEADS) and manifest["held_back"] == "shape"
    assert manifest["architecture"] == "ShapesHardTeacherNet" and manifest["input"]["height"] == 32
