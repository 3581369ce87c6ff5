"""Checks before work: resume settings, a runnable --resume line, input sizes taken from the data
or from what a run recorded, and numbers that must be finite."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import torch

from kfstudio.cli.app import main
from kfstudio.cli.launch import resume_command

TINY = ["--epochs", "1", "--batch-size", "256", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1",
        "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_printed_resume_command_is_complete_and_runs_as_printed():
    argv = ["factorize", "--teacher", "my teacher.onnx", "--out", "runs/x", "--seed", "3", "--resume", "old.pt"]
    line = resume_command(argv, "runs/x/checkpoint.pt")
    words = shlex.split(line)
    assert words[:2] == ["kfstudio", "factorize"] and words.count("--resume") == 1
    assert words[words.index("--teacher") + 1] == "my teacher.onnx" and words[-1] == "runs/x/checkpoint.pt"
    assert words[words.index("--seed") + 1] == "3"


def test_resume_refuses_other_settings(digits_run, tmp_path, capsys):
    checkpoint = digits_run[1] / "checkpoint.pt"
    args = ["factorize", "--teacher", "builtin:digits", "--out", str(tmp_path / "r"), *TINY, "--seed", "5",
            "--resume", str(checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "seed was 0, now 5" in err


class EightByEight(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_a_torchscript_teacher_takes_its_input_size_from_the_data(tmp_path, capsys):
    teacher = tmp_path / "net.ts.pt"
    torch.jit.script(EightByEight().eval()).save(str(teacher))  # records no input size
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((60, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 60))
    out = tmp_path / "run"
    assert main(["factorize", "--teacher", str(teacher), "--data", str(data), "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert "does not record its input size; using 1x8x8" in text and "from the data" in text
    # evaluate and assemble read the input the run recorded instead of asking for --input
    assert main(["evaluate", str(out), "--data", str(data), "--teacher", str(teacher)]) == 0
    assert "from the bricks of" in capsys.readouterr().out
    assert main(["assemble", str(out), "--teacher", str(teacher), "--out", str(tmp_path / "n.onnx")]) == 0
    assert "from the common module's manifest" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["1,8,8:nan:1", "1,8,8:0:inf", "1,8,8:0:0"])
def test_input_mean_and_std_must_be_finite_and_std_positive(spec, tmp_path, capsys):
    assert main(["factorize", "--teacher", "builtin:digits", "--input", spec, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "finite" in err or "positive" in err


def test_a_second_ctrl_c_aborts_at_once(monkeypatch, capsys):
    import signal

    from kfstudio.cli import factorize_cmd
    from kfstudio.core.runs import RunControl

    control = RunControl()
    handler = factorize_cmd._cancel_once(control)
    exits = []
    monkeypatch.setattr(factorize_cmd.os, "_exit", lambda code: exits.append(code))
    handler(signal.SIGINT, None)
    assert control.cancelled and exits == []  # the first asks the run to stop after this step
    handler(signal.SIGINT, None)
    assert exits == [130] and "Aborted" in capsys.readouterr().err
