"""A kill at any moment leaves every file absent or complete, and a full disk is a message.

- Saving a run over an older one is interrupted after each of its file operations in turn
  (a simulated kill); the next access rolls the journal forward, and the folder holds exactly
  the old run or exactly the new one, never a mix.
- ``kfstudio factorize`` is killed with SIGKILL at seeded random moments; every file left
  loads, and ``--resume`` finishes the run.
- A write limit (RLIMIT_FSIZE, as a full disk) ends a run with one sentence and exit code 2.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import kfstudio.io.atomic as atomic_module
import kfstudio.io.run_folder as run_folder
from kfstudio.io import locks
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization

REPO = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even except-clauses for Exception."""


def _kill_after(monkeypatch, n: int) -> None:
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if calls["n"] == n:
            raise Killed
        calls["n"] += 1
        real(src, dst)

    for module in (run_folder.os, atomic_module.os):
        monkeypatch.setattr(module, "replace", replace)


def _which_run(folder: Path) -> str:
    """'old', 'new' or a description of the mix; every file present must load."""
    common = load_common(folder / "common.safetensors")
    bricks = [load_brick(p) for p in list_bricks(folder)]
    assert all(b.common_fingerprint == common.fingerprint for b in bricks), "bricks of another common module"
    sources = {b.task.source for b in bricks}
    assert not list(folder.rglob(".*.tmp")) and not (folder / run_folder.STAGING).exists()
    return "old" if sources == {"digit"} else "new" if sources <= {"shape", "colour", "size", "x"} else f"mix {sources}"


def test_a_save_killed_at_any_step_leaves_the_old_run_or_the_new_one(digits_run, shapes_run, tmp_path, monkeypatch):
    outcomes = []
    for n in range(40):
        folder = tmp_path / f"run{n}"
        shutil.copytree(digits_run[1], folder, ignore=shutil.ignore_patterns("checkpoint.pt"))
        with monkeypatch.context() as patch:
            _kill_after(patch, n)
            try:
                save_factorization(shapes_run[0], folder)
                finished = True
            except Killed:
                finished = False
        run_folder.finish_interrupted_save(folder)  # what the next access does
        outcomes.append(_which_run(folder))
        shutil.rmtree(folder)
        if finished:
            break
    assert finished, "the save needs more than 40 renames?"
    assert set(outcomes) == {"old", "new"} and outcomes[-1] == "new"
    assert outcomes.index("new") > 5  # the kill landed in the middle of writing, not only at the end


def _factorize_argv(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kfstudio", "factorize", "--teacher", "builtin:digits", "--out", str(out),
            "--epochs", "2", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1", "--quiet", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _every_file_is_whole(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_dir():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".pt":
            torch.load(str(path), weights_only=True)
        else:
            # the journal, the report log, and the folder's lock with its holder (kfstudio/io/locks.py)
            assert path.name in (run_folder.JOURNAL, locks.LOCK_NAME, locks.OWNER_NAME) or path.suffix == ".jsonl", \
                f"unexpected file {path}"


def _kill_after_line(argv: list[str], trigger: str) -> None:
    """Run ``argv`` and SIGKILL it the moment it prints a line starting with ``trigger``."""
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith(trigger):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Killed as training starts, right after an epoch's evaluation (while the checkpoint is being
    written) or as the run folder is being written; each time every file left is whole."""
    out = tmp_path / "run"
    # one seeded moment here (the suite shares two cores); benchmarks/reliability.py kills ten times
    moments = random.Random(7).sample(["Factorizing into", "epoch 1:", "epoch 2:"], 1)
    for trigger in moments:
        resume = ["--resume", str(out / "checkpoint.pt")] if (out / "checkpoint.pt").exists() else []
        _kill_after_line(_factorize_argv(out, *resume), trigger)
        _every_file_is_whole(out)
    resume = ["--resume", str(out / "checkpoint.pt")] if (out / "checkpoint.pt").exists() else []
    done = subprocess.run(_factorize_argv(out, *resume), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    _every_file_is_whole(out)
    assert len(list_bricks(out)) == 10 and _which_run(out) == "old"


def _limit_writes() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing


def test_a_full_disk_is_one_sentence_and_leaves_no_half_written_file(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(_factorize_argv(out), env=_env(), capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_writes)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kfstudio factorize: KF Studio could not write") and "Traceback" not in proc.stderr
    assert not list(out.rglob(".*.tmp"))
    _every_file_is_whole(out)
