"""``kfstudio evaluate`` on the cached digits folder (``digits_folder``, no factorization per
session): every figure it prints is checked against one computed here, each split, each kind of
FILE (a folder, an export, a teacher file, a factory with weights), and its refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kfstudio.cli.app import main
from kfstudio.cli.evaluate_cmd import _split, open_network
from kfstudio.core.data.sources import load_data, prepare, scoring_set
from kfstudio.core.teachers.demos import shipped_files
from kfstudio.core.teachers.loaders import load_teacher

FACTORY = "kfstudio.core.teachers.demos:DigitsTeacherNet"  # the digits teacher's network, as user code


def _rows(text: str) -> dict[str, list[str]]:
    """The table's cells by task title (titles may hold one space: 'digit 7', 'all digit (together)')."""
    rows = {}
    for line in text.splitlines():
        if line.startswith(("digit ", "all digit")):
            title, _, cells = line.partition("  ")
            rows[title.strip()] = cells.split()
    return rows


def _teacher_accuracy(data) -> float:
    """The shipped digits teacher's accuracy on ``data``, in plain torch."""
    teacher = load_teacher("builtin:digits")
    x = prepare(data, teacher.input_spec).x
    with torch.no_grad():
        pred = teacher.module(x).argmax(1)
    return float((pred == data.labels["digit"]).float().mean())


def _spec_flag(spec) -> str:
    return (f"{spec.channels},{spec.height},{spec.width}:{','.join(map(str, spec.mean))}:"
            f"{','.join(map(str, spec.std))}")


def test_a_folder_against_its_teacher_prints_what_the_network_and_the_teacher_score(digits_folder, capsys):
    assert main(["evaluate", str(digits_folder), "--data", "builtin:digits", "--teacher", "builtin:digits"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == (f"Evaluated the bricks of {digits_folder} on 360 test images of builtin:digits "
                                    "(its fixed test split).")
    header = next(line for line in text.splitlines() if line.startswith("task "))
    assert header.split() == ["task", "images", "accuracy", "AUC", "detector", "agrees", "with", "teacher",
                              "teacher", "accuracy"]
    rows = _rows(text)
    assert list(rows) == [f"digit {d}" for d in range(10)] + ["all digit (together)"]
    test = scoring_set("builtin:digits")[0]
    together = rows["all digit (together)"]
    assert together[0] == "360" and together[2:4] == ["-", "-"]
    assert together[5] == f"{_teacher_accuracy(test):.2%}"  # the teacher's accuracy, by hand
    assert 0.7 < float(together[1].rstrip("%")) / 100 < 1
    for title, cells in rows.items():  # images, accuracy, AUC, detector, agreement, teacher accuracy
        assert len(cells) == 6 and cells[0] == "360", (title, cells)
    assert all(0.85 <= float(rows[f"digit {d}"][1].rstrip("%")) / 100 <= 1 for d in range(10))
    assert all(0.9 < float(rows[f"digit {d}"][2]) <= 1 for d in range(10))
    assert all(0.8 < float(rows[f"digit {d}"][3].rstrip("%")) / 100 <= 1 for d in range(10))  # detector
    assert "none of these" not in text  # ten bricks cover every class: no rest line


def test_without_a_teacher_the_table_has_no_teacher_columns(digits_folder, capsys):
    assert main(["evaluate", str(digits_folder), "--data", "builtin:digits"]) == 0
    text = capsys.readouterr().out
    assert "agrees with teacher" not in text and all(len(c) == 4 for c in _rows(text).values())


@pytest.mark.parametrize("which, images, words", [
    ("auto", "360", "360 test images of builtin:digits (its fixed test split)"),
    ("test", "360", "360 images of builtin:digits (test split: builtin:digits has a fixed test split of 360 images)"),
    ("train", "1,437", "1,437 images of builtin:digits (train split: builtin:digits has a fixed test split of 360 images)"),
    ("all", "1,797", "1,797 images of builtin:digits (all split: builtin:digits has a fixed test split of 360 images)"),
])
def test_each_split_scores_the_images_it_names(digits_folder, capsys, which, images, words):
    assert main(["evaluate", str(digits_folder), "--data", "builtin:digits", "--split", which]) == 0
    text = capsys.readouterr().out
    assert f" on {words}." in text.splitlines()[0]
    assert {cells[0] for cells in _rows(text).values()} == {images}


def test_split_all_and_split_test_give_the_same_prediction_for_every_test_image(digits_folder):
    opened = open_network(str(digits_folder))
    (everything, _), (test, _) = _split("builtin:digits", "all"), _split("builtin:digits", "test")
    split = load_data("builtin:digits")
    assert len(everything) == len(split.train) + len(test) and torch.equal(everything.x[len(split.train):], test.x)
    assert torch.equal(_split("builtin:digits", "train")[0].x, split.train.x)
    on_all = opened.task_logits(prepare(everything, opened.input_spec).x)
    on_test = opened.task_logits(prepare(test, opened.input_spec).x)
    for task in opened.tasks:
        assert torch.equal(on_all[task.name][len(split.train):].argmax(1), on_test[task.name].argmax(1))


def test_an_export_scores_as_the_folder_of_its_bricks(digits_folder, tmp_path, capsys):
    """Three calibrated bricks: their thresholds decide "none of these", so a lost threshold shows."""
    part = tmp_path / "part"
    (part / "bricks").mkdir(parents=True)
    for name in ("common.safetensors", "common.json"):
        shutil.copy(digits_folder / name, part / name)
    for task in "017":
        for suffix in (".safetensors", ".json"):
            shutil.copy(digits_folder / "bricks" / f"{task}{suffix}", part / "bricks" / f"{task}{suffix}")
    out = tmp_path / "n.onnx"
    assert main(["assemble", str(part), "--out", str(out), "--no-teacher"]) == 0
    capsys.readouterr()
    args = ["--data", "builtin:digits", "--teacher", "builtin:digits"]
    assert main(["evaluate", str(part), *args]) == 0
    from_folder = capsys.readouterr().out
    assert main(["evaluate", str(out), *args]) == 0
    from_file = capsys.readouterr().out
    assert from_file.splitlines()[0] == "Evaluated n.onnx (onnx) on 360 test images of builtin:digits (its fixed test split)."
    assert from_file.splitlines()[1:] == from_folder.splitlines()[1:]
    assert 'images of other classes rightly called "none of these": ' in from_file
    assert from_file.splitlines()[-1].startswith("digit: ") and from_file.splitlines()[-1].endswith("%")


def test_an_export_whose_manifest_is_broken_is_refused_in_words(digits_folder, tmp_path, capsys):
    out = tmp_path / "n.ts.pt"
    assert main(["assemble", str(digits_folder), "--tasks", "0", "--out", str(out), "--no-teacher"]) == 0
    capsys.readouterr()
    manifest = tmp_path / "n.ts.pt.json"
    for broken in ("{ not json", "[1, 2]"):
        manifest.write_text(broken)
        assert main(["evaluate", str(out), "--data", "builtin:digits"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "n.ts.pt.json" in err and "Traceback" not in err, err


def _torchscript_teacher(path):
    teacher = load_teacher("builtin:digits")
    example = torch.zeros(2, *teacher.input_spec.shape)
    torch.jit.trace(teacher.module, example, strict=False).save(str(path))
    return teacher


def test_a_teacher_file_with_its_own_input_manifest_is_a_teacher_not_an_export(tmp_path, capsys):
    teacher = _torchscript_teacher(tmp_path / "t.ts.pt")
    (tmp_path / "t.ts.pt.json").write_text(json.dumps({"input": teacher.input_spec.to_dict()}))
    assert main(["evaluate", str(tmp_path / "t.ts.pt"), "--data", "builtin:digits"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("Evaluated t.ts on 360 test images")
    accuracy = f"{_teacher_accuracy(scoring_set('builtin:digits')[0]):.2%}"
    assert next(line for line in text.splitlines() if line.startswith("output ")).split() == ["output", "360", accuracy]


def test_a_teacher_file_that_records_no_input_takes_the_input_flag(tmp_path, capsys):
    teacher = _torchscript_teacher(tmp_path / "t.ts.pt")
    accuracy = f"{_teacher_accuracy(scoring_set('builtin:digits')[0]):.2%}"
    args = ["evaluate", str(tmp_path / "t.ts.pt"), "--data", "builtin:digits"]
    assert main(args + ["--input", _spec_flag(teacher.input_spec), "--teacher", str(tmp_path / "t.ts.pt")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("output "))
    assert row.split() == ["output", "360", accuracy, "100.00%", accuracy]
    # The pixels' own mean/std: the teacher sees other numbers, and says a different figure.
    spec = teacher.input_spec
    assert main(args + ["--input", f"{spec.channels},{spec.height},{spec.width}"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("output "))
    assert row.split()[2] != accuracy


def test_a_factory_teacher_with_weights(digits_folder, capsys):
    weights, _ = shipped_files("digits")
    accuracy = f"{_teacher_accuracy(scoring_set('builtin:digits')[0]):.2%}"
    assert main(["evaluate", FACTORY, "--weights", str(weights), "--data", "builtin:digits"]) == 0
    text = capsys.readouterr().out
    assert next(line for line in text.splitlines() if line.startswith("digit ")).split() == ["digit", "360", accuracy]
    # A folder against that factory: --weights goes to the teacher, which then agrees with itself.
    assert main(["evaluate", str(digits_folder), "--data", "builtin:digits", "--teacher", FACTORY,
                 "--weights", str(weights)]) == 0
    text = capsys.readouterr().out
    assert _rows(text)["all digit (together)"][5] == accuracy
