"""Two real processes writing one run folder: the second refuses in words naming the first, and
nothing is lost. The first is paused (SIGSTOP) once it holds the folder, so the second always
meets it there: no sleeps, no timing luck."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kfstudio.io.bricks import list_bricks, load_common

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--epochs", "1", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1", "--quiet"]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pausing a process needs SIGSTOP (POSIX)")


def _kfstudio(*args: str) -> list[str]:
    return [sys.executable, "-m", "kfstudio", *map(str, args)]


def _second_while_first_holds(first_args: list[str], first_line: str, second_args: list[str]):
    """Start the first command, pause it once it printed ``first_line`` (it holds the folder by
    then), run the second to its end, resume the first; return (first, its output, second)."""
    first = subprocess.Popen(_kfstudio(*first_args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    seen = []
    for line in first.stdout:
        seen.append(line)
        if line.startswith(first_line):
            break
    else:
        raise AssertionError("".join(seen))
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(_kfstudio(*second_args), env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    rest, _ = first.communicate(timeout=300)
    return first, "".join(seen) + rest, second


def _refused_naming(second, first_pid: int, command: str) -> None:
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
    assert "is being written by" in lines[0] and f"process {first_pid}" in lines[0] and command in lines[0]


def test_two_factorize_into_one_folder_one_refuses_and_nothing_is_lost(tmp_path):
    out = tmp_path / "run"
    args = ["factorize", "--out", str(out), *TINY]
    first, output, second = _second_while_first_holds(args, "Factorizing into", args)
    _refused_naming(second, first.pid, "kfstudio factorize")
    assert first.returncode == 0, output[-2000:]
    assert len(list_bricks(out)) == 10 and load_common(out / "common.safetensors").fingerprint
    assert not (out / ".staging").exists()


def test_two_add_brick_of_one_task_exactly_one_succeeds(tmp_path, digits_run):
    run = tmp_path / "run"
    shutil.copytree(digits_run[1], run, ignore=shutil.ignore_patterns("checkpoint.pt"))
    args = ["add-brick", str(run), "--data", "builtin:digits", "--task", "odd=1,3,5,7,9", "--epochs", "1",
            "--threads", "1", "--quiet"]
    first, output, second = _second_while_first_holds(args, "builtin:digits has", args)
    _refused_naming(second, first.pid, "kfstudio add-brick --task odd")
    assert first.returncode == 0, output[-2000:]
    assert "Wrote" in output and (run / "bricks" / "odd.safetensors").is_file()
