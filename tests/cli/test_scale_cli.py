"""Scale: the resnet and mobilenetv2 students on a 32x32 RGB 10-class teacher, and a run of two
processes through ``--nproc-per-node`` that loses one process (torchrun's failure handling)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kfstudio.cli.app import main


class Cifarish(nn.Module):
    """A small random-initialized 3x32x32 -> 10 classes CNN, the shape of a CIFAR-10 teacher."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def cifarish(tmp_path_factory) -> tuple[Path, Path]:
    """The teacher as TorchScript and 96 generated images with labels (an .npz)."""
    folder = tmp_path_factory.mktemp("cifarish")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Cifarish().eval()).save(str(folder / "teacher.pt"))
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.random((96, 3, 32, 32), dtype=np.float32),
             y=(np.arange(96) % 10).astype(np.int64))
    return folder / "teacher.pt", folder / "data.npz"


@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_resnet_and_mobilenetv2_students_factorize_a_32x32_teacher(cifarish, tmp_path, arch):
    teacher, data = cifarish
    out = tmp_path / arch
    stdout, stderr = io.StringIO(), io.StringIO()
    before = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["factorize", "--teacher", str(teacher), "--input", "3,32,32", "--data", str(data),
                         "--tasks", "one-vs-rest:0,1", "--common", arch, "--task-net", arch,
                         "--common-width", "0.1", "--task-width", "0.1", "--epochs", "1", "--batch-size", "32",
                         "--device", "cpu", "--threads", "1", "--quiet", "--out", str(out)])
    finally:
        torch.set_num_threads(before)
    assert code == 0, stderr.getvalue()
    common = json.loads((out / "common.json").read_text())
    assert common["architecture"]["arch"] == arch and common["architecture"]["in_channels"] == 3
    assert common["input"]["height"] == 32 and common["tasks"] == ["0", "1"]
    for task in ("0", "1"):
        brick = json.loads((out / "bricks" / f"{task}.json").read_text())
        assert brick["kind"] == "task-brick"
    assert "Finished after 1 epoch(s)" in stdout.getvalue()


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (to check that none is left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
    return found


def test_a_failing_process_stops_the_run_with_one_message_and_keeps_the_checkpoint(tmp_path):
    from kfstudio.core.checkpoint import load_checkpoint
    from kfstudio.core.distributed import NAN_HOOK_ENV

    out = tmp_path / "two"
    # 1437 digits at batch 200: 8 steps an epoch; process 1's loss turns NaN at step 10, in epoch 2.
    env = {**os.environ, NAN_HOOK_ENV: "1:10", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "kfstudio", "factorize", "--teacher", "builtin:digits", "--out", str(out),
               "--epochs", "3", "--batch-size", "200", "--common-width", "0.25", "--task-width", "0.25",
               "--tasks", "one-vs-rest:3,7", "--device", "cpu", "--quiet", "--nproc-per-node", "2", "--threads", "1",
               "--calibration-fraction", "0"]  # no images held out: all 1437 train
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    finally:
        leftovers = _processes_naming(str(out))
        for pid in leftovers:  # never leave a stray process, even when the test fails
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
    assert leftovers == []
    assert done.returncode == 1, done.stderr
    stderr = done.stderr
    assert stderr.count("The loss became nan at step 10") == 1
    assert stderr.count("process 1 of 2 failed (exit code 2") == 1
    assert "Traceback" not in stderr and "[rank0]" not in stderr
    assert "--resume" in stderr and "--nproc-per-node 2" in stderr.split("continue with:")[1]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["step"] == 8  # the last good one: after epoch 1
    assert not any(k.startswith("module.") for k in (*state["model"], *state["objective"]))
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("flags, words", [
    (["--nproc-per-node", "0"], "a number of processes from 1 to 64"),
    (["--nproc-per-node", "two"], "is not a number of processes"),
    (["--infomax-stats", "everywhere"], "invalid choice"),
])
def test_distributed_flags_out_of_range_are_refused_in_words(tmp_path, capsys, flags, words):
    assert main(["factorize", "--teacher", "builtin:digits", "--out", str(tmp_path / "x"), *flags]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_more_processes_than_gpus_is_refused_before_any_starts(tmp_path, capsys):
    code = main(["factorize", "--teacher", "builtin:digits", "--out", str(tmp_path / "x"), "--device", "cuda",
                 "--nproc-per-node", "64"])
    assert code == 2 and "--nproc-per-node 64 needs 64 GPUs" in capsys.readouterr().err
