"""A full disk, on a real small filesystem (tmpfs): each writing command says so in one sentence,
exit code 2, and leaves no file half-written and no temp file or folder behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kfstudio.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1", "--quiet"]


class SmallDisk(type(Path())):
    """The mount point of a small tmpfs; ``fill(free)`` leaves about ``free`` bytes on it."""

    def fill(self, free: int) -> None:
        filler = self / "filler"
        filler.unlink(missing_ok=True)
        filler.write_bytes(b"\0" * max(0, shutil.disk_usage(self).free - free))


@pytest.fixture
def disk(tmp_path):
    """A 2 MB tmpfs. Skips, with the reason, where this machine does not allow mounting one."""
    mount = SmallDisk(tmp_path / "disk")
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"a small real filesystem is needed and this machine does not allow mounting one "
                    f"({result.stderr.strip() or 'mount failed'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _one_line_no_space(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "No space left on device" in lines[0] and "Nothing was left half-written" in lines[0]
    assert "Traceback" not in err


def _leftovers(folder: Path) -> list[str]:
    """Hidden files and folders left behind, but the lock file a writer keeps (see kfstudio/io/locks.py)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") and p.name != ".kfstudio.lock")


def test_factorize_on_a_full_disk_says_so(disk, capsys):
    disk.fill(200_000)  # room for the bricks, not for the 700 KB checkpoint
    assert main(["factorize", "--out", str(disk / "run"), *TINY]) == 2
    _one_line_no_space(capsys.readouterr().err)
    assert not (disk / "run" / "checkpoint.pt").exists() and not _leftovers(disk)


def test_add_brick_on_a_full_disk_writes_neither_file(disk, digits_run, capsys):
    run = disk / "run"
    shutil.copytree(digits_run[1], run, ignore=shutil.ignore_patterns("checkpoint.pt", "reports.jsonl"))
    before = sorted(p.name for p in (run / "bricks").iterdir())
    disk.fill(8_000)
    assert main(["add-brick", str(run), "--data", "builtin:digits", "--task", "odd=1,3,5,7,9", "--epochs", "1",
                 "--threads", "1", "--quiet"]) == 2
    _one_line_no_space(capsys.readouterr().err)
    assert sorted(p.name for p in (run / "bricks").iterdir()) == before and not _leftovers(run)


def test_train_teacher_on_a_full_disk_writes_neither_file(disk, capsys, monkeypatch):
    from kfstudio.core.teachers import demos as demo_teachers

    monkeypatch.setattr(demo_teachers, "_recipe", lambda name: {"epochs": 1, "lr": 0.05, "batch": 128})
    torch.set_num_threads(1)
    (disk / "t").mkdir()
    disk.fill(50_000)  # the manifest would fit, the 290 KB weights do not
    assert main(["train-teacher", "digits", "--out", str(disk / "t")]) == 2
    _one_line_no_space(capsys.readouterr().err)
    assert [p.name for p in (disk / "t").iterdir()] == [".kfstudio.lock"]


@pytest.mark.parametrize("suffix", [".ts.pt", ".pt2"])
def test_assemble_on_a_full_disk_says_so_instead_of_aborting(disk, digits_run, suffix):
    # In a child process: torch's own file writer used to abort the whole process (SIGABRT).
    out = disk / f"net{suffix}"
    disk.fill(30_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "kfstudio", "assemble", str(digits_run[1]), "--tasks", "0,1",
                           "--out", str(out), "--no-teacher"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    _one_line_no_space(done.stderr)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no file, no manifest, no temp folder
