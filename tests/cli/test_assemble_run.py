"""``kfstudio assemble`` end to end on the digits folder cached between sessions (``digits_folder``,
so ``make mutate`` can run these): the file it writes runs like the network built here from the same
files, the lines it prints, the teacher it compares with (recorded, named, a factory with weights,
none, one that cannot load), the scoring on ``--data``, and where ``--int8`` takes its images from.
Every printout is made inside its test: mutmut credits a test only with the code run inside it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.assembly.measure import teacher_parity
from kfstudio.cli.app import main
from kfstudio.cli.evaluate_cmd import print_evaluation
from kfstudio.core.data.sources import load_data, scoring_set
from kfstudio.core.teachers.demos import shipped_files
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io.bricks import list_bricks, load_brick, load_common

FACTORY = "kfstudio.core.teachers.demos:DigitsTeacherNet"  # the digits teacher's network, as user code
NO_TEACHER_NOTE = "The bricks do not say which teacher they came from; give --teacher to compare with it."


def _assemble(*args: str) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["assemble", *args])
    return code, printed.getvalue()


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(label))
    return line[len(label):].split()


def _copy(digits_folder, tmp_path, teacher=...):
    """A private copy of the digits folder; ``teacher``: the common module's teacher entry to record
    instead (None: the key removed)."""
    folder = tmp_path / "run"
    shutil.copytree(digits_folder, folder)
    if teacher is not ...:
        path = folder / "common.json"
        manifest = json.loads(path.read_text())
        if teacher is None:
            del manifest["teacher"]
        else:
            manifest["teacher"] = teacher
        path.write_text(json.dumps(manifest))
    return folder


def _bare_weights(tmp_path):
    """The shipped digits teacher's weights without the manifest beside them: the factory then records
    neither its input nor its outputs' names."""
    weights = tmp_path / "digits-weights.safetensors"
    shutil.copyfile(shipped_files("digits")[0], weights)
    return weights


def _network(folder, tasks):
    common = load_common(folder / "common.safetensors")
    bricks = {b.task.name: b for b in map(load_brick, list_bricks(folder))}
    return build_from_files(common, [bricks[t] for t in tasks]).cpu().eval()


# ---------------------------------------------------------------- the file, the lines, the scoring

def test_the_onnx_file_runs_like_the_network_and_the_printout_says_what_was_done(digits_folder, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "net.onnx"
    code, text = _assemble(str(digits_folder), "--tasks", "0,1,digit 7", "--out", str(out), "--data", "builtin:digits")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "Assembled 3 bricks on the common module of 'digits demo teacher': digit 0, digit 1, digit 7."
    # the file, reloaded in onnxruntime, gives what the network built here from the same files gives
    network = _network(digits_folder, "017")
    manifest = json.loads((tmp_path / "net.onnx.json").read_text())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = network(x)
    assert len(got) == len(network.output_names) == len(manifest["output_names"])
    for name, value in zip(network.output_names, got):
        assert np.allclose(value, want[name].numpy(), atol=1e-4), name
    assert manifest["output_names"][:3] == ["digit_0", "digit_1", "digit_7"]
    # scored on the fixed test split, against the recorded teacher, as computed here
    test, words = scoring_set("builtin:digits")
    assert words == "360 test images of builtin:digits (its fixed test split)"
    assert f"\n\nScored on {words}.\n" in text
    evaluation = teacher_parity(network, load_teacher("builtin:digits"), test)
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_evaluation(network.tasks, evaluation)
    assert table.getvalue() in text and "agrees with teacher" in table.getvalue()
    assert manifest["metrics"] == json.loads(json.dumps({**evaluation.to_dict(), "scored_on": words}))
    # and where it went, last
    assert f"\n\nWrote {out} (onnx) and its manifest net.onnx.json.\n" in text
    assert lines[-1].startswith("Self-test passed") and lines[-2] == f"Wrote {out} (onnx) and its manifest net.onnx.json."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.onnx.json"]


def test_without_a_teacher_data_is_not_scored_and_the_teacher_column_is_empty(digits_folder, tmp_path):
    out = tmp_path / "net.pt2"
    code, text = _assemble(str(digits_folder), "--tasks", "3", "--out", str(out), "--data", "builtin:digits",
                           "--no-teacher")
    assert code == 0 and out.is_file()
    assert "Scored on" not in text and "agrees with teacher" not in text
    assert _row(text, "parameters")[1:] == ["-", "-"]
    assert list(json.loads((tmp_path / "net.pt2.json").read_text())["metrics"]) == ["3"]  # what the brick recorded
    assert NO_TEACHER_NOTE not in text and "Not comparing" not in text  # asked for: nothing to explain
    assert text.splitlines()[0] == "Assembled 1 brick on the common module of 'digits demo teacher': digit 3."


def test_a_teacher_without_data_is_compared_on_costs_only(digits_folder, tmp_path):
    out = tmp_path / "net.onnx"
    code, text = _assemble(str(digits_folder), "--tasks", "3", "--out", str(out))
    assert code == 0
    assert _row(text, "parameters")[1] == "288,170" and "Scored on" not in text
    assert list(json.loads((tmp_path / "net.onnx.json").read_text())["metrics"]) == ["3"]
    # the recorded teacher is a built-in: nothing to say about loading it
    assert text.splitlines()[0].startswith("Assembled 1 brick") and "\n\n" in text
    assert not any(line.startswith(("Using the weights", "No weights", "The teacher '", "'"))
                   for line in text.splitlines())


def test_an_output_that_is_a_folder_is_refused_before_any_work(digits_folder, tmp_path, capsys):
    (tmp_path / "net.onnx").mkdir()
    assert main(["assemble", str(digits_folder), "--out", str(tmp_path / "net.onnx")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.strip() == (f"kfstudio assemble: '{tmp_path / 'net.onnx'}' is a folder; give --out a file name, "
                           f"e.g. {tmp_path / 'net.onnx' / 'network.onnx'}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_the_device_asked_for_must_exist(digits_folder, tmp_path, capsys):
    assert main(["assemble", str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"), "--no-teacher",
                 "--device", "nowhere"]) == 2
    assert "'nowhere' is not a device" in capsys.readouterr().err
    assert not (tmp_path / "n.onnx").exists()


def test_a_common_module_and_bricks_from_anywhere_in_the_format_asked_for(digits_folder, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "net.model"   # no known suffix: --format says what to write
    code, text = _assemble("--common", str(digits_folder / "common.safetensors"), "--brick",
                           str(digits_folder / "bricks" / "7.safetensors"), "--brick",
                           str(digits_folder / "bricks" / "2.safetensors"), "--out", str(out), "--format", "onnx",
                           "--no-teacher")
    assert code == 0
    assert text.splitlines()[0] == "Assembled 2 bricks on the common module of 'digits demo teacher': digit 7, digit 2."
    assert f"\nWrote {out} (onnx) and its manifest net.model.json.\n" in text
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    network = _network(digits_folder, "72")
    with torch.no_grad():
        want = network(x)
    assert network.output_names[:2] == ["7", "2"]
    for name, value in zip(network.output_names, got):
        assert np.allclose(value, want[name].numpy(), atol=1e-4), name


def _refused(capsys, args, sentence):
    assert main(["assemble", *args, "--no-teacher"]) == 2
    assert capsys.readouterr().err.strip() == f"kfstudio assemble: {sentence}"


def test_each_way_of_asking_badly_is_refused_in_its_own_sentence(digits_folder, tmp_path, capsys):
    out = ["--out", str(tmp_path / "n.onnx")]
    common, brick = str(digits_folder / "common.safetensors"), str(digits_folder / "bricks" / "0.safetensors")
    _refused(capsys, [str(digits_folder), "--tasks", "0,eleven", *out],
             "The folder has no brick for the task 'eleven'; it has: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9.")
    _refused(capsys, [str(digits_folder), "--brick", brick, *out],
             "Give either a factorization folder or --common with --brick, not both.")
    _refused(capsys, [str(tmp_path), *out],
             f"'{tmp_path}' is not a folder written by 'kfstudio factorize' (no common.safetensors).")
    _refused(capsys, ["--brick", brick, *out],
             "Say what to assemble: a factorization folder, or --common FILE with one --brick FILE or more.")
    _refused(capsys, ["--common", common, "--brick", brick, "--tasks", "0", *out],
             "--tasks picks bricks from a folder; with --common, list the bricks with --brick.")
    _refused(capsys, [str(digits_folder), "--int8", "--out", str(tmp_path / "n.pt2")],
             "--int8 writes an ONNX file, not pt2; end --out with .onnx or give --format onnx.")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- which teacher

def test_no_recorded_teacher_says_how_to_name_one(digits_folder, tmp_path):
    folder = _copy(digits_folder, tmp_path, teacher=None)
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"), "--data", "builtin:digits")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == NO_TEACHER_NOTE
    assert lines[1] == "Assembled 1 brick on the common module of 'unknown teacher': digit 0."
    assert _row(text, "parameters")[1:] == ["-", "-"] and "Scored on" not in text
    # naming it fills the column
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "m.onnx"), "--teacher", "builtin:digits")
    assert code == 0 and NO_TEACHER_NOTE not in text and _row(text, "parameters")[1] == "288,170"


def test_a_recorded_teacher_without_a_ref_is_not_loaded(digits_folder, tmp_path):
    folder = _copy(digits_folder, tmp_path, teacher={"name": "somebody's net", "ref": None})
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"))
    assert code == 0 and text.splitlines()[0] == NO_TEACHER_NOTE
    assert text.splitlines()[1] == "Assembled 1 brick on the common module of 'somebody's net': digit 0."


def test_a_teacher_recorded_without_a_name_is_called_unknown(digits_folder, tmp_path):
    folder = _copy(digits_folder, tmp_path, teacher={"name": None, "ref": None})
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"))
    assert code == 0
    assert text.splitlines()[1] == "Assembled 1 brick on the common module of 'unknown teacher': digit 0."


def test_data_with_no_teacher_says_why_nothing_is_scored(digits_folder, tmp_path):
    code, text = _assemble(str(digits_folder), "--tasks", "0,1", "--out", str(tmp_path / "n.onnx"), "--no-teacher",
                           "--data", "builtin:digits")
    assert code == 0 and "Scored on" not in text
    assert text.splitlines()[1] == ("--data is not scored with --no-teacher: the accuracy is measured against the "
                                    "teacher's answers.")
    # said only then: not when the teacher scores --data, not when there is no --data to score
    for extra in (["--data", "builtin:digits"], ["--no-teacher"]):
        code, text = _assemble(str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "m.onnx"), *extra)
        assert code == 0 and "is not scored" not in text


def test_a_teacher_that_cannot_load_is_left_out_in_words(digits_folder, tmp_path):
    missing = tmp_path / "gone.onnx"
    code, text = _assemble(str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"),
                           "--teacher", str(missing), "--data", "builtin:digits")
    assert code == 0
    first = text.splitlines()[0]
    assert first.startswith("Not comparing with the teacher: ") and "gone.onnx" in first
    assert _row(text, "parameters")[1:] == ["-", "-"] and "Scored on" not in text


def test_a_factory_teacher_with_weights_takes_its_input_from_the_common_module(digits_folder, tmp_path):
    weights = _bare_weights(tmp_path)
    code, text = _assemble(str(digits_folder), "--tasks", "0,1", "--out", str(tmp_path / "n.onnx"),
                           "--teacher", FACTORY, "--weights", str(weights), "--data", "builtin:digits")
    assert code == 0
    spec = load_common(digits_folder / "common.safetensors").input_spec
    lines = text.splitlines()
    assert lines[0] == (f"'{FACTORY}' does not record its input size; using {spec.describe()} "
                        "from the common module's manifest.")
    assert lines[1].startswith("The teacher '") and lines[1].endswith(
        "names its outputs differently from the bricks: its output 'output' (10 classes) stands for the "
        "bricks' 'digit' (matched by shape).")
    assert lines[2].startswith("Assembled 2 bricks")
    assert _row(text, "parameters")[1] == "288,170"
    # the trained weights, not a random network: the table reads as with the built-in teacher itself
    assert "No weights were given" not in text
    code, builtin = _assemble(str(digits_folder), "--tasks", "0,1", "--out", str(tmp_path / "m.onnx"),
                              "--teacher", "builtin:digits", "--data", "builtin:digits")
    assert code == 0
    for row in ("digit 0", "digit 1", "all digit (together)"):
        assert _row(text, row) == _row(builtin, row) and len(_row(text, row)) == 6


def test_a_factory_teacher_with_its_input_given_needs_no_fallback(digits_folder, tmp_path):
    weights = _bare_weights(tmp_path)
    spec = load_common(digits_folder / "common.safetensors").input_spec
    flag = f"{spec.channels},{spec.height},{spec.width}:{','.join(map(str, spec.mean))}:{','.join(map(str, spec.std))}"
    code, text = _assemble(str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"),
                           "--teacher", FACTORY, "--weights", str(weights), "--input", flag)
    assert code == 0
    assert "does not record its input size" not in text and text.splitlines()[0].startswith("The teacher '")
    assert _row(text, "parameters")[1] == "288,170"


def test_the_weights_the_run_records_are_used_and_said(digits_folder, tmp_path):
    weights = _bare_weights(tmp_path)
    folder = _copy(digits_folder, tmp_path, teacher={"name": "digits net", "ref": FACTORY, "weights": str(weights)})
    # named in a file only, code is not run: left out in words
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"))
    assert code == 0 and text.splitlines()[0].startswith("Not comparing with the teacher: The teacher ")
    assert f"--teacher {FACTORY} --weights {weights}" in text.splitlines()[0]
    # named by the user, it loads with the recorded weights, and every note is printed in order
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "m.onnx"), "--teacher", FACTORY)
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == f"Using the weights the run records for {FACTORY}: {weights}."
    assert lines[1].startswith(f"'{FACTORY}' does not record its input size")
    assert lines[2].startswith("The teacher '") and lines[3].startswith("Assembled 1 brick on the common module "
                                                                         "of 'digits net'")


# ---------------------------------------------------------------- int8: which images

def _digits_npz(path):
    """The digits as a user's own .npz file (another name than the run's data)."""
    split = load_data("builtin:digits")
    x = torch.cat([split.train.x, split.test.x]).numpy()
    y = torch.cat([split.train.labels["digit"], split.test.labels["digit"]]).numpy()
    np.savez(path, x=x, y=y)
    return path


def test_int8_calibrates_on_the_runs_data_unless_data_is_given(digits_folder, tmp_path):
    code, text = _assemble(str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "a.onnx"), "--int8",
                           "--no-teacher")
    assert code == 0
    assert json.loads((tmp_path / "a.onnx.json").read_text())["int8"]["data"] == "builtin:digits"
    assert "points against the float network" in text
    own = _digits_npz(tmp_path / "own.npz")
    folder = _copy(digits_folder, tmp_path)
    (folder / "run.json").unlink()   # --data alone says where the images are
    code, text = _assemble(str(folder), "--tasks", "0", "--out", str(tmp_path / "b.onnx"), "--int8", "--no-teacher",
                           "--data", str(own))
    assert code == 0
    check = json.loads((tmp_path / "b.onnx.json").read_text())["int8"]
    assert check["data"] != "builtin:digits" and "own" in check["data"]


def test_int8_data_given_wins_over_the_runs(digits_folder, tmp_path):
    own = _digits_npz(tmp_path / "own.npz")
    code, _ = _assemble(str(digits_folder), "--tasks", "0", "--out", str(tmp_path / "a.onnx"), "--int8",
                        "--no-teacher", "--data", str(own))
    assert code == 0
    assert "own" in json.loads((tmp_path / "a.onnx.json").read_text())["int8"]["data"]


def test_int8_without_images_is_refused_in_one_sentence(digits_folder, tmp_path, capsys):
    folder = _copy(digits_folder, tmp_path)
    (folder / "run.json").unlink()
    assert main(["assemble", str(folder), "--tasks", "0", "--out", str(tmp_path / "n.onnx"), "--int8",
                 "--no-teacher"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--int8 needs images to calibrate on: give --data (the data the bricks were trained on).")
    assert not list(tmp_path.glob("n.*"))
