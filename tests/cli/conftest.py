"""Loaded files of the session's factorizations, and copies of brick files to spoil."""

from __future__ import annotations

import shutil

import pytest

from kfstudio.io.bricks import list_bricks, load_brick, load_common


@pytest.fixture(scope="session")
def digits_common(digits_run):
    return load_common(digits_run[1] / "common.safetensors")


@pytest.fixture(scope="session")
def digits_bricks(digits_run):
    return {b.task.name: b for b in (load_brick(p) for p in list_bricks(digits_run[1]))}


@pytest.fixture(scope="session")
def shapes_brick(shapes_run):
    return load_brick(list_bricks(shapes_run[1])[0])


@pytest.fixture
def digits_copy(digits_run, tmp_path):
    """A private copy of the digits factorization folder (safe to spoil)."""
    out = tmp_path / "run"
    shutil.copytree(digits_run[1], out, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return out
