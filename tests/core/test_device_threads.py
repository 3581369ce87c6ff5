"""Training threads follow the cores that are free, and the CPU's label says the number used."""

from __future__ import annotations

import os

import pytest

from kfstudio.core import devices


@pytest.mark.parametrize("cores, load, reserve, expected", [
    (2, 0.05, 0, 2),   # an idle 2-core machine: both
    (2, 1.1, 0, 1),    # another job running: one
    (2, 3.8, 0, 1),    # overloaded: still one
    (16, 4.6, 0, 11),  # 16 cores, about 5 busy
    (16, 0.0, 1, 15),  # one kept for the window
    (1, 0.0, 1, 1),    # never below one
])
def test_default_threads_from_free_cores(monkeypatch, cores, load, reserve, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert devices.default_threads(reserve) == expected


def test_cpu_label_names_the_threads_really_used(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    cpu = devices.list_devices(cpu_threads=1)[-1]
    assert cpu.name == "cpu" and cpu.threads == 1
    assert "1 of 2 cores" in cpu.label
