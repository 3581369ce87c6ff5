"""Loaded files of the session's digits and shapes factorizations, for the graph tests."""

from __future__ import annotations

import pytest

from kfstudio.io.bricks import list_bricks, load_brick, load_common


@pytest.fixture(scope="session")
def digits_common(digits_run):
    return load_common(digits_run[1] / "common.safetensors")


@pytest.fixture(scope="session")
def digits_bricks(digits_run):
    """Task name -> loaded brick, for all ten digits."""
    bricks = [load_brick(p) for p in list_bricks(digits_run[1])]
    return {b.task.name: b for b in bricks}


@pytest.fixture(scope="session")
def shapes_brick(shapes_run):
    """A brick of another teacher: the natural brick that must not attach to digits."""
    return load_brick(list_bricks(shapes_run[1])[0])


@pytest.fixture
def graph(digits_common):
    from kfstudio.assembly.graph import BrickGraph

    g = BrickGraph()
    g.set_common(digits_common, (0.0, 0.0))
    return g
