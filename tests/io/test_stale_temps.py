"""Temp files of killed writers (a project save, an export) are removed when their folder is next
written, and never while their writer is alive. Real processes, paused mid-write by a pipe, then
SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfstudio.core import tempfiles
from kfstudio.io.atomic import write_json

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(tempfiles.fcntl is None, reason="telling a live writer needs flock (POSIX)")

# Each child writes its temp file or folder the real way, prints its path, then waits on stdin.
PROJECT_SAVE = """
import sys
from kfstudio.io.atomic import write_with
def stuck(tmp):
    tmp.write_text("{}")
    print(tmp, flush=True)
    sys.stdin.read()
write_with(sys.argv[1] + "/p1.kfproj", stuck)
"""
EXPORT = """
import sys
import kfstudio.io.export as E
from kfstudio.assembly.build import build_from_files
from kfstudio.io.bricks import list_bricks, load_brick, load_common
real = E._write
def stuck(fmt, network, staged):
    real(fmt, network, staged)
    print(staged.parent, flush=True)
    sys.stdin.read()
E._write = stuck
run = sys.argv[2]
network = build_from_files(load_common(run + "/common.safetensors"), [load_brick(list_bricks(run)[0])])
E.export_network(network, sys.argv[1] + "/asm.onnx")
"""


def _writer_stuck_mid_write(code: str, folder: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), *extra], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    temp = Path(proc.stdout.readline().strip())
    assert temp.exists() and tempfiles.TEMP_NAME.match(temp.name), temp
    old = time.time() - 3600  # older than any write in progress could be
    os.utime(temp, (old, old))
    return proc, temp


@pytest.mark.parametrize("writer", ["project save", "export"])
def test_a_killed_writers_temp_is_removed_by_the_next_write_and_a_live_ones_kept(writer, tmp_path, digits_run):
    code, extra = (PROJECT_SAVE, ()) if writer == "project save" else (EXPORT, (str(digits_run[1]),))
    proc, temp = _writer_stuck_mid_write(code, tmp_path, *extra)
    try:
        write_json(tmp_path / "other.json", {})  # another write into the folder while the writer lives
        assert temp.exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert temp.exists()  # what a kill leaves
    write_json(tmp_path / "other.json", {})
    assert not temp.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".kfstudio.lock")) == ["other.json"]
