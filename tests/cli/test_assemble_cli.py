"""``kfstudio assemble`` and ``kfstudio evaluate`` end to end, and every bad input they refuse."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from kfstudio.cli.app import main


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def test_assemble_digits_0_1_7_to_onnx_with_the_teacher_side_by_side(digits_run, tmp_path, capsys):
    out = tmp_path / "d017.onnx"
    assert main(["assemble", str(digits_run[1]), "--tasks", "0,1,digit 7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "digit 0, digit 1, digit 7" in text and "assembled       teacher" in text
    assert "288,170" in text and "brick 'digit 7'" in text and "Self-test passed" in text
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(6, 1, 8, 8)
    pred = session.run(["digit_prediction"], {"input": x.numpy()})[0]
    factor = digits_run[0].network.cpu().eval()
    with torch.no_grad():
        logits = factor(x)
    # Three of ten calibrated bricks: -1, "none of these", when no logit clears its brick's threshold.
    classes = torch.tensor([0, 1, 7, -1])
    thresholds = torch.tensor([[digits_run[0].detectors[t].threshold for t in "017"]])
    margins = torch.cat([logits[t] for t in "017"], 1) - thresholds
    want = classes[torch.cat([margins, torch.zeros(6, 1)], 1).argmax(1)]
    assert (torch.from_numpy(pred) == want).all()
    assert json.loads((tmp_path / "d017.onnx.json").read_text())["output_names"][:3] == ["digit_0", "digit_1", "digit_7"]


@pytest.mark.parametrize("suffix", [".pt2", ".ts.pt", ".safetensors"])
def test_assemble_from_files_anywhere(digits_run, tmp_path, capsys, suffix):
    folder = digits_run[1]
    out = tmp_path / f"net{suffix}"
    args = ["assemble", "--common", str(folder / "common.safetensors"), "--out", str(out), "--no-teacher"]
    for t in "017":
        args += ["--brick", str(folder / "bricks" / f"{t}.safetensors")]
    assert main(args) == 0
    assert out.is_file() and "Self-test passed" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data", "builtin:digits", "--teacher", "builtin:digits"]) == 0
    text = capsys.readouterr().out
    assert "all digit (together)" in text and "agrees with teacher" in text
    # The calibrated 0/1/7 network says "none of these" to other digits; each brick shows its AUC.
    assert "AUC" in text and 'rightly called "none of these"' in text
    row = next(line for line in text.splitlines() if line.startswith("digit 7 ")).split()
    assert 0.5 < float(row[4]) <= 1  # digit 7, images, accuracy, then the AUC


def test_evaluate_a_teacher_and_a_folder(digits_run, capsys):
    assert main(["evaluate", "builtin:digits", "--data", "builtin:digits"]) == 0
    assert "digit" in capsys.readouterr().out
    assert main(["evaluate", str(digits_run[1]), "--data", "builtin:digits"]) == 0
    assert "digit 9" in capsys.readouterr().out


def _fails_cleanly(args, capsys, folder, message):
    """Exit code 2, one line naming the problem, and nothing changed on disk."""
    before = _files(folder)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert _files(folder) == before


def _assemble(copy, brick, out):
    return ["assemble", "--common", str(copy / "common.safetensors"), "--brick", str(copy / "bricks" / "0.safetensors"),
            "--brick", str(brick), "--out", str(out), "--no-teacher"]


def test_an_incompatible_brick(digits_copy, shapes_run, capsys):
    alien = sorted((shapes_run[1] / "bricks").glob("*.safetensors"))[0]
    _fails_cleanly(_assemble(digits_copy, alien, digits_copy / "x.onnx"), capsys, digits_copy,
                   "was factorized from a different common module (teacher 'shapes demo teacher')")


def test_weights_that_do_not_match_the_manifest(digits_copy, capsys):
    brick = digits_copy / "bricks" / "7.safetensors"
    state = load_file(str(brick))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(brick))
    _fails_cleanly(_assemble(digits_copy, brick, digits_copy / "x.pt2"), capsys, digits_copy,
                   "are not the ones its manifest describes")


def test_a_truncated_brick(digits_copy, capsys):
    brick = digits_copy / "bricks" / "7.safetensors"
    brick.write_bytes(brick.read_bytes()[:300])
    _fails_cleanly(_assemble(digits_copy, brick, digits_copy / "x.ts.pt"), capsys, digits_copy, "truncated")


def test_a_manifest_from_a_newer_schema(digits_copy, capsys):
    manifest = digits_copy / "bricks" / "7.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 99}))
    _fails_cleanly(_assemble(digits_copy, digits_copy / "bricks" / "7.safetensors", digits_copy / "x.onnx"), capsys,
                   digits_copy, "newer KF Studio")


def test_unknown_task_and_unknown_format(digits_copy, capsys):
    _fails_cleanly(["assemble", str(digits_copy), "--tasks", "0,11", "--out", str(digits_copy / "x.onnx")], capsys,
                   digits_copy, "no brick for the task '11'")
    _fails_cleanly(["assemble", str(digits_copy), "--out", str(digits_copy / "x.tflite")], capsys, digits_copy,
                   "Cannot tell the export format")
    _fails_cleanly(["assemble", "--out", str(digits_copy / "x.onnx")], capsys, digits_copy, "Say what to assemble")


def test_evaluate_refuses_a_truncated_export(digits_run, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(["assemble", str(digits_run[1]), "--tasks", "3", "--out", str(out), "--no-teacher"]) == 0
    out.write_bytes(out.read_bytes()[:1000])
    capsys.readouterr()
    _fails_cleanly(["evaluate", str(out), "--data", "builtin:digits"], capsys, tmp_path, "truncated")
    shutil.rmtree(tmp_path)
