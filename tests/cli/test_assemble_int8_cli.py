"""``kfstudio assemble --int8``, and latency figures that say in which runtime and form both were timed."""

from __future__ import annotations

import json

from kfstudio.cli.app import main


def test_assemble_int8_reports_the_check_and_times_the_file_in_onnxruntime(digits_run, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    assert main(["assemble", str(digits_run[1]), "--tasks", "0,1,7", "--out", str(out), "--int8"]) == 0
    text, err = capsys.readouterr()
    assert "WARNING" not in err and "Inference failed" not in err   # the quantizer's log is not the user's business
    manifest = json.loads((tmp_path / "int8.onnx.json").read_text())
    check = manifest["int8"]
    assert check["data"] == "builtin:digits"   # calibrated on the run's own data (its run.json)
    assert f"checked on {check['images']} test images" in text and "points against the float network" in text
    assert f"largest logit difference {check['max_logit_difference']:.3f}" in text
    # the file is timed where it runs, next to the teacher exported to ONNX, and the output says so
    assert "latency, onnxruntime, batch 1" in text and "latency, onnxruntime, batch 64" in text
    assert "Onnxruntime: int8 ONNX file; teacher exported to float ONNX." in text
    assert "int8 against the float ONNX file, both in onnxruntime" in text
    assert "Eager torch: both BatchNorm folded, channels_last." in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "int8.onnx.json"]  # no float copy left


def test_assemble_times_a_torchscript_file_against_a_frozen_teacher(digits_run, tmp_path, capsys):
    out = tmp_path / "net.ts.pt"
    assert main(["assemble", str(digits_run[1]), "--tasks", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("latency, TorchScript, batch 1"))
    assert row.rstrip().endswith("%") and row.count("ms") == 2   # the file and the teacher, and their ratio
    assert "TorchScript: both traced and frozen." in text


def test_int8_needs_onnx_and_data(digits_copy, tmp_path, capsys):
    assert main(["assemble", str(digits_copy), "--out", str(tmp_path / "n.pt2"), "--int8"]) == 2
    assert "--int8 writes an ONNX file, not pt2" in capsys.readouterr().err
    (digits_copy / "run.json").unlink()   # nothing says which data the bricks were trained on
    assert main(["assemble", str(digits_copy), "--out", str(tmp_path / "n.onnx"), "--int8", "--no-teacher"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--int8 needs images to calibrate on: give --data" in err
    assert not list(tmp_path.glob("n.*"))
