"""``kfstudio assemble``'s cost table and brick choice, read cell by cell against figures worked out
here from the files (on the digits folder cached between sessions, so ``make mutate`` can run them)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
import torch

from kfstudio.cli.app import main
from kfstudio.core.measures.cost import count_macs
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io.bricks import list_bricks, load_brick, load_common


def _row(text: str, label: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(label))
    return line[len(label):].split()


def _whole(cell: str) -> int:
    return int(cell.replace(",", ""))


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def onnx_costs(digits_folder, tmp_path):
    """The printout of assembling bricks 0, 1 and 7 to ONNX beside the demo teacher (made per test:
    mutmut credits a test only with the code run inside it)."""
    out = tmp_path / "net.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["assemble", str(digits_folder), "--tasks", "digit 0,1,7", "--out", str(out)]) == 0
    return printed.getvalue()


def test_the_parts_add_up_to_the_assembly_and_match_the_files(onnx_costs, digits_folder):
    common = load_common(digits_folder / "common.safetensors")
    bricks = {b.task.name: b for b in map(load_brick, list_bricks(digits_folder))}
    parts = {"common module": _row(onnx_costs, "common module")}
    parts.update({t: _row(onnx_costs, f"brick 'digit {t}'") for t in "017"})
    assert _whole(parts["common module"][0]) == _params(common.module)
    for t in "017":
        assert _whole(parts[t][0]) == _params(bricks[t].module)
    total = _row(onnx_costs, "parameters")
    assert _whole(total[0]) == sum(_whole(p[0]) for p in parts.values())
    macs = _row(onnx_costs, "multiply-adds / input")
    assert _whole(macs[0]) == sum(_whole(p[1]) for p in parts.values())
    assert "brick 'digit 2'" not in onnx_costs          # only the bricks asked for


def test_the_teacher_column_and_ratios_are_the_teachers(onnx_costs):
    teacher = load_teacher("builtin:digits", allow_code=True)
    params = _row(onnx_costs, "parameters")
    assert _whole(params[1]) == _params(teacher.module) == 288_170
    assert params[2] == f"{_whole(params[0]) / _whole(params[1]):.0%}"   # assembled / teacher, not inverted
    macs = _row(onnx_costs, "multiply-adds / input")
    with torch.no_grad():
        want = count_macs(lambda: teacher.outputs(torch.zeros(1, 1, 8, 8)), teacher.module)
    assert _whole(macs[1]) == want
    assert macs[2] == f"{_whole(macs[0]) / _whole(macs[1]):.0%}"


def test_every_latency_row_is_timed_beside_the_teacher_in_the_same_runtime(onnx_costs):
    rows = {b: _row(onnx_costs, f"latency, onnxruntime, batch {b}") for b in (1, 64)}
    for cells in rows.values():
        net, teacher, ratio = float(cells[0]), float(cells[2]), cells[4]
        assert cells[1] == cells[3] == "ms" and net > 0 and teacher > 0
        assert abs(int(ratio.rstrip("%")) - 100 * net / teacher) <= 1 + 100 * 0.01 / teacher
    assert "the same runtime and form" in onnx_costs
    assert re.search(r"Onnxruntime: .+\.", onnx_costs)


@pytest.mark.parametrize(("args", "words"), [
    (["--tasks", "digit 0,eleven"], "no brick for the task 'eleven'"),
    (["--common", "x.safetensors"], "either a factorization folder or --common"),
])
def test_choosing_bricks_badly_is_one_sentence(digits_folder, tmp_path, capsys, args, words):
    assert main(["assemble", str(digits_folder), *args, "--out", str(tmp_path / "n.onnx"), "--no-teacher"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "n.onnx").exists()


def test_common_and_bricks_without_a_folder_need_both(digits_folder, tmp_path, capsys):
    common = str(digits_folder / "common.safetensors")
    for args, words in ((["--common", common], "Say what to assemble"),
                        (["--common", common, "--brick", str(digits_folder / "bricks" / "0.safetensors"),
                          "--tasks", "0"], "--tasks picks bricks from a folder")):
        assert main(["assemble", *args, "--out", str(tmp_path / "n.onnx"), "--no-teacher"]) == 2
        assert words in capsys.readouterr().err


def test_int8_needs_an_onnx_file(digits_folder, tmp_path, capsys):
    assert main(["assemble", str(digits_folder), "--tasks", "0", "--int8", "--out", str(tmp_path / "n.ts.pt"),
                 "--no-teacher"]) == 2
    assert "--int8 writes an ONNX file" in capsys.readouterr().err
