"""``kfstudio factorize`` on an image folder forced to stream from disk: bricks that evaluate, and a
Ctrl-C (to every process, as a terminal sends it) that leaves no worker process behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kfstudio.cli.app import main

FLAGS = ["--teacher", "builtin:digits", "--tasks", "one-vs-rest:3,7", "--common-width", "0.25", "--task-width", "0.25",
         "--batch-size", "16", "--device", "cpu", "--threads", "1", "--quiet", "--stream-above-mb", "0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """64 small grayscale digits-like PNGs, one subfolder per class."""
    root = tmp_path_factory.mktemp("digit-images")
    rng = np.random.default_rng(0)
    for i in range(64):
        (root / str(i % 10)).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(root / str(i % 10) / f"{i}.png")
    return root


def test_a_streamed_cli_run_writes_bricks_that_evaluate(folder, tmp_path, capsys):
    out = tmp_path / "run"
    # --no-augment: without shifted copies the teacher's outputs for the streamed images are cached
    assert main(["factorize", "--data", str(folder), "--out", str(out), "--epochs", "1", "--workers", "1",
                 "--no-augment", *FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "they stream from disk through 1 worker process (--workers)" in printed
    assert "The teacher's outputs for the 51 training images are kept in memory" in printed
    assert main(["evaluate", str(out), "--data", str(folder), "--teacher", "builtin:digits"]) == 0
    evaluated = capsys.readouterr().out
    assert "Evaluated the bricks of" in evaluated and "on 64 test images of" in evaluated and "digit 3" in evaluated


def test_the_workers_flag_is_range_checked(tmp_path, capsys):
    assert main(["factorize", "--teacher", "builtin:digits", "--out", str(tmp_path / "x"), "--workers", "-1"]) == 2
    assert "use a number of worker processes from 0 to 64" in capsys.readouterr().err


def test_ctrl_c_on_a_streamed_run_stops_it_and_its_workers(folder, tmp_path, capsys, monkeypatch):
    from kfstudio.core import factorize

    real, seen = factorize.iter_factorize, []

    def interrupted(*args, **kwargs):
        gen = real(*args, **kwargs)
        report = next(gen)
        while True:
            yield report
            if report.kind == "step" and not seen:
                seen.extend(multiprocessing.active_children())  # the epoch's readers
                for worker in seen:  # a terminal's Ctrl-C reaches every process of the group
                    os.kill(worker.pid, signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            try:
                report = next(gen)
            except StopIteration as stop:
                return stop.value

    monkeypatch.setattr(factorize, "iter_factorize", interrupted)
    out = tmp_path / "interrupted"
    code = main(["factorize", "--data", str(folder), "--out", str(out), "--epochs", "5", "--workers", "2", *FLAGS])
    captured = capsys.readouterr()
    assert code == 130, captured.err
    assert len(seen) == 2 and not any(w.is_alive() for w in seen)  # they ignored it and were stopped by the run
    assert multiprocessing.active_children() == []
    assert "Cancelled after" in captured.out and (out / "checkpoint.pt").is_file()
