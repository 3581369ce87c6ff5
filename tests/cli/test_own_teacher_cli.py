"""Your own teacher, as users bring it (tests/own_teacher.py): a factory + weights file, mean 0.3 /
std 0.2, labelled .npz files already normalized, and the same network in ONNX and TorchScript.
Every figure is checked against one computed by hand with torch (normalize once, argmax)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from kfstudio.cli.app import main
from own_teacher import INPUT


def _by_hand(own, which: str = "test") -> tuple[torch.Tensor, float]:
    """The teacher's predictions on ``which``.npz and its accuracy, in plain torch."""
    with np.load(own.folder / f"{which}.npz") as npz:
        x, y = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"])
    with torch.no_grad():
        pred = own.network()(x).argmax(1)
    return pred, float((pred == y).float().mean())


def _accuracy_row(text: str, task: str) -> str:
    """The accuracy printed for ``task``, which must be scored on all 200 images of test.npz."""
    images, accuracy = next(line.split()[1:3] for line in text.splitlines() if line.startswith(task + " "))
    assert images == "200"
    return accuracy


def test_evaluate_a_factory_teacher_on_a_normalized_npz_gives_the_figure_torch_gives(
        own_teacher_importable, capsys):
    own = own_teacher_importable
    _, accuracy = _by_hand(own)
    assert 0.6 < accuracy < 0.95  # a real teacher: far from chance, not perfect
    assert main(["evaluate", own.factory, "--weights", str(own.weights), "--data", str(own.test)]) == 0
    text = capsys.readouterr().out
    assert _accuracy_row(text, "output") == f"{accuracy:.2%}"
    assert f"on 200 test images of {own.test} (all of it)" in text


def test_evaluate_with_input_given_normalizes_a_normalized_npz_once(own_teacher, tmp_path, capsys):
    """The issue's command: a teacher file that records no input, --input C,H,W:mean:std, an .npz."""
    plain = tmp_path / "plain.ts"
    shutil.copy(own_teacher.torchscript, plain)  # no manifest beside it
    _, accuracy = _by_hand(own_teacher)
    assert main(["evaluate", str(plain), "--data", str(own_teacher.test), "--input", INPUT,
                 "--teacher", str(plain)]) == 0  # main said 40.50% here: the images normalized twice
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("output "))
    assert row.split() == ["output", "200", f"{accuracy:.2%}", "100.00%", f"{accuracy:.2%}"]
    assert main(["evaluate", str(plain), "--data", str(own_teacher.test), "--input", INPUT]) == 0
    assert _accuracy_row(capsys.readouterr().out, "output") == f"{accuracy:.2%}"


def test_split_all_and_split_test_give_the_same_prediction_for_every_image_they_share(own_teacher_importable):
    from kfstudio.cli.evaluate_cmd import _split, open_network
    from kfstudio.core.data.sources import prepare

    own = own_teacher_importable
    opened = open_network(own.factory, None, str(own.weights))
    predictions = {}
    for which in ("all", "test"):
        data, _ = _split(str(own.test), which)
        assert data.normalized
        x = prepare(data, opened.input_spec).x
        pred = opened.task_logits(x)["output"].argmax(1)
        predictions[which] = {tuple(img.flatten()[:12].tolist()): int(p) for img, p in zip(data.x, pred)}
    shared = predictions["test"].keys() & predictions["all"].keys()
    assert len(shared) == 40
    assert all(predictions["test"][k] == predictions["all"][k] for k in shared)
    by_hand, _ = _by_hand(own)
    with np.load(own.test) as npz:
        rows = {tuple(torch.from_numpy(img).flatten()[:12].tolist()): i for i, img in enumerate(npz["x"])}
    assert all(predictions["all"][k] == int(by_hand[rows[k]]) for k in predictions["all"])


def test_evaluate_an_onnx_teacher_with_its_own_manifest_and_labels_without_repeating_it(own_teacher, capsys):
    _, accuracy = _by_hand(own_teacher)
    assert main(["evaluate", str(own_teacher.onnx), "--data", str(own_teacher.test)]) == 0
    text = capsys.readouterr().out
    assert _accuracy_row(text, "logits") == f"{accuracy:.2%}"


def test_inspect_a_factory_says_whether_it_has_weights(own_teacher_importable, capsys):
    own = own_teacher_importable
    assert main(["inspect", own.factory, "--input", INPUT]) == 0
    assert "randomly initialised" in capsys.readouterr().out
    assert main(["inspect", own.factory, "--weights", str(own.weights)]) == 0
    text = capsys.readouterr().out
    described = json.loads(text[: text.rindex("}") + 1])
    assert described["weights"] == str(own.weights.resolve()) and "randomly" not in text
    assert described["input"]["mean"] == [0.3] * 3 and described["input"]["std"] == [0.2] * 3


@pytest.fixture(scope="module")
def own_run_and_output(own_teacher, tmp_path_factory):
    """A one-epoch factorization of the own teacher, from the command line: its folder, and what it
    printed (stdout + stderr)."""
    out = tmp_path_factory.mktemp("own_run") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        mp.syspath_prepend(str(own_teacher.folder))
        assert main(["factorize", "--teacher", own_teacher.factory, "--weights", str(own_teacher.weights),
                     "--data", str(own_teacher.train), "--test-data", str(own_teacher.test), "--epochs", "1",
                     "--common-width", "0.5", "--task-width", "0.25", "--device", "cpu",
                     "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def own_run(own_run_and_output):
    return own_run_and_output[0]


def test_factorize_says_what_it_does_before_the_first_step(own_run_and_output, own_teacher):
    text = own_run_and_output[1]
    first_step = text.index("Factorizing into")
    # shifted copies (the default): the teacher labels each training batch itself, so no pass over them first
    for line in (f"Reading the data {own_teacher.train} and {own_teacher.test}", "Loading the teacher mynet:build",
                 "60 training images are held out to calibrate",
                 "The teacher runs on every batch (it labels each batch's shifted copies",
                 "The teacher's outputs for the test images: 100%", "200/200"):
        assert -1 < text.find(line) < first_step, line
    assert "The teacher's outputs for the training images" not in text
    assert f"Scored on 200 test images: Evaluating on {own_teacher.test} (200 images)" in text


def test_factorize_records_the_weights_and_scores_on_the_test_file(own_run, own_teacher):
    for name in ("common.json", "run.json"):
        entry = json.loads((own_run / name).read_text())["teacher"]
        assert entry["ref"] == own_teacher.factory
        assert entry["weights"] == str(own_teacher.weights.resolve())
        assert len(entry["weights_sha256"]) == 64 and entry["weights_sha256"] == entry["sha256"]


def test_assemble_uses_the_recorded_weights_for_the_teacher_you_name(own_run, own_teacher_importable, tmp_path,
                                                                    capsys):
    own = own_teacher_importable
    capsys.readouterr()
    out = tmp_path / "net.onnx"
    assert main(["assemble", str(own_run), "--teacher", own.factory, "--data", str(own.test),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"Using the weights the run records for {own.factory}: {own.weights.resolve()}" in text
    assert f"Scored on 200 test images of {own.test} (all of it)." in text
    _, accuracy = _by_hand(own)
    together = next(line for line in text.splitlines() if line.startswith("all output (together)"))
    assert together.split()[-1] == f"{accuracy:.2%}"  # the teacher's accuracy column


def test_a_folder_whose_teacher_is_code_says_the_flags_that_load_it_with_its_weights(own_run, own_teacher,
                                                                                    tmp_path, capsys):
    capsys.readouterr()
    assert main(["assemble", str(own_run), "--out", str(tmp_path / "n.onnx")]) == 0
    text = capsys.readouterr().out
    assert f"(--teacher {own_teacher.factory} --weights {own_teacher.weights.resolve()})" in text


def test_evaluate_a_folder_against_its_teacher_takes_the_recorded_weights(own_run, own_teacher_importable, capsys):
    own = own_teacher_importable
    _, accuracy = _by_hand(own)
    assert main(["evaluate", str(own_run), "--data", str(own.test), "--teacher", own.factory]) == 0
    text = capsys.readouterr().out
    assert "Using the weights the run records" in text
    assert next(ln for ln in text.splitlines() if ln.startswith("all output")).split()[-1] == f"{accuracy:.2%}"


def test_bricks_of_the_python_teacher_are_scored_against_its_onnx_copy_matched_by_shape(own_run, own_teacher, capsys):
    _, accuracy = _by_hand(own_teacher)
    capsys.readouterr()
    assert main(["evaluate", str(own_run), "--data", str(own_teacher.test), "--teacher", str(own_teacher.onnx)]) == 0
    text = capsys.readouterr().out
    assert "its output 'logits' (4 classes) stands for the bricks' 'output' (matched by shape)" in text
    assert next(ln for ln in text.splitlines() if ln.startswith("all output")).split()[-1] == f"{accuracy:.2%}"


# Multiply-adds of mynet for one 3x16x16 input, by hand: three convolutions and the linear layer.
MYNET_MACS = 8 * 16 * 16 * (3 * 9) + 16 * 8 * 8 * (8 * 9) + 16 * 4 * 4 * (16 * 9) + 4 * 16


@pytest.mark.parametrize("copy", ["onnx", "torchscript"])
def test_an_onnx_or_torchscript_teacher_has_its_parameters_and_multiply_adds_counted(own_run, own_teacher, copy,
                                                                                     tmp_path, capsys):
    params = sum(p.numel() for p in own_teacher.network().parameters())
    capsys.readouterr()
    assert main(["assemble", str(own_run), "--teacher", str(getattr(own_teacher, copy)),
                 "--out", str(tmp_path / "n.onnx")]) == 0
    rows = {line.rsplit(None, 3)[0].strip(): line.split()[-3:] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("parameters", "multiply-adds / input"))}
    assert rows["parameters"][1] == f"{params:,}"
    assert rows["multiply-adds / input"][1] == f"{MYNET_MACS:,}"


def test_add_brick_on_normalized_data_distils_from_the_teacher_as_torch_scores_it(own_run, own_teacher_importable,
                                                                                  tmp_path, capsys):
    from kfstudio.core.data.sources import load_data

    own = own_teacher_importable
    run = tmp_path / "run"
    shutil.copytree(own_run, run)
    held_out = load_data(str(own.test), seed=0).test  # the part add-brick scores on
    with torch.no_grad():
        accuracy = float((own.network()(held_out.x).argmax(1) == held_out.labels["label"]).float().mean())
    capsys.readouterr()
    assert main(["add-brick", str(run), "--data", str(own.test), "--task", "level", "--label", "label",
                 "--teacher", own.factory, "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"on {len(held_out)} images, teacher {accuracy:.2%}" in text
    grown = json.loads((run / "bricks" / "level.json").read_text())["grown"]["distilled_from"]
    assert grown["weights"] == str(own.weights.resolve())  # the run's weights, used again


def test_relate_loads_the_runs_teacher_with_its_recorded_weights_only_when_named(own_run, own_teacher_importable):
    from kfstudio.core.teachers.loaders import UntrustedCodeError
    from kfstudio.io.relatedness import run_teacher

    own = own_teacher_importable
    assert run_teacher(own_run, own.factory).weights == str(own.weights.resolve())
    with pytest.raises(UntrustedCodeError, match=f"--teacher {own.factory} --weights {own.weights.resolve()}"):
        run_teacher(own_run, None)  # named only inside run.json: not run
