"""Crafted or damaged files and flags: one sentence and exit code 2, never a traceback, before any
memory is allocated or any teacher is loaded."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from kfstudio.cli.app import main
from kfstudio.core.errors import FileFormatError
from kfstudio.io.export import load_exported


def _header_bomb(path, rows: int, image: tuple[int, ...], compressed: bool = False):
    """An .npz of a few KB whose x.npy header claims ``rows`` float32 images of ``image``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, *image)})
    buf.write(b"\0" * 4096)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", buf.getvalue())
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("command", ["evaluate", "add-brick", "relate", "factorize"])
def test_an_npz_whose_header_claims_terabytes_is_refused_before_any_allocation(command, compressed, digits_run,
                                                                               tmp_path, capsys):
    # 3.5 TiB of 3x18000x18000 images for the in-memory loaders; a billion 28x28 images (2.9 TiB)
    # for factorize, which lists the file first and used to try to index every row.
    rows, image = ((10**9, (1, 28, 28)) if command == "factorize" else (1000, (3, 18000, 18000)))
    bomb = _header_bomb(tmp_path / "bomb.npz", rows, image, compressed)
    run = tmp_path / "run"
    shutil.copytree(digits_run[1], run, ignore=shutil.ignore_patterns("checkpoint.pt"))
    argv = {"evaluate": ["evaluate", str(run)], "relate": ["relate", str(run)],
            "add-brick": ["add-brick", str(run), "--task", "y", "--epochs", "1", "--quiet"],
            "factorize": ["factorize", "--out", str(tmp_path / "out"), "--epochs", "1", "--quiet"]}[command]
    assert main([*argv, "--data", str(bomb)]) == 2
    line = _one_line(capsys)
    assert "is corrupt or crafted: its array 'x' claims" in line and " TB but the file is " in line


def test_json_nested_5000_deep_is_refused_in_words(digits_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_run[1], run, ignore=shutil.ignore_patterns("checkpoint.pt"))
    (run / "common.json").write_text("[" * 5000 + "]" * 5000)
    assert main(["assemble", str(run), "--out", str(tmp_path / "a.onnx"), "--no-teacher"]) == 2
    assert "nests lists or tables more than 64 levels deep" in _one_line(capsys)
    (run / "common.json").write_text('{"a": ' * 100 + "1" + "}" * 100)  # parses, but deeper than any file of ours
    assert main(["assemble", str(run), "--out", str(tmp_path / "a.onnx"), "--no-teacher"]) == 2
    assert "nests lists or tables more than 64 levels deep" in _one_line(capsys)


def test_an_export_manifest_that_lost_an_output_name_is_refused_on_load(digits_run, tmp_path, capsys):
    out = tmp_path / "net.safetensors"
    assert main(["assemble", str(digits_run[1]), "--tasks", "0,1", "--out", str(out), "--no-teacher"]) == 0
    manifest_path = tmp_path / "net.safetensors.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["output_names"].remove("digit_1")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FileFormatError, match="describes an output 'digit_1' that the file does not give"):
        load_exported(out)


def test_a_malformed_input_spec_is_refused_by_the_parser_before_the_teacher_loads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["factorize", "--teacher", "builtin:digits", "--input", "x", "--out", str(out)]) == 2
    assert "argument --input: Cannot read the input spec 'x'" in _one_line(capsys)
    assert not out.exists()  # refused before anything was made or loaded
    assert main(["assemble", str(tmp_path), "--input", "0,8,8", "--out", str(tmp_path / "a.onnx")]) == 2
    assert "at least one channel" in _one_line(capsys)
