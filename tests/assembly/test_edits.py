"""Every edit applies, reverts exactly, and re-applies (undo, redo) without Qt."""

from __future__ import annotations

import pytest

from kfstudio.assembly.edits import (
    COMMON,
    AddBrick,
    AttachBrick,
    CompoundEdit,
    DetachBrick,
    MoveBricks,
    RemoveBrick,
    RenameBrick,
    SetCommonModule,
    add_and_attach,
)
from kfstudio.assembly.rules import DifferentCommonModule


def snapshot(graph):
    """Everything the canvas shows, to compare before/after."""
    bricks = {n: (graph.brick(n), graph.title(n), graph.position(n), graph.order(n), graph.is_attached(n))
              for n in graph.brick_ids()}
    return graph.common, graph.common_position, bricks, graph.attached_ids()


def round_trip(graph, edit):
    """apply -> revert -> apply; return (before, after) snapshots and check revert restores."""
    before = snapshot(graph)
    edit.apply(graph)
    after = snapshot(graph)
    assert after != before
    edit.revert(graph)
    assert snapshot(graph) == before
    edit.apply(graph)
    assert snapshot(graph) == after
    return before, after


@pytest.fixture
def populated(graph, digits_bricks):
    for i, t in enumerate(("0", "1", "7")):
        graph.add_brick(digits_bricks[t], (100.0 * i, 50.0))
    graph.attach("brick:0")
    graph.attach("brick:1")
    return graph


def test_add_brick(graph, digits_bricks):
    edit = AddBrick(graph, digits_bricks["7"], (1, 2))
    round_trip(graph, edit)
    assert edit.text == "Add 'digit 7'" and graph.brick_ids() == [edit.node_id]


def test_attach_brick(populated):
    edit = AttachBrick(populated, "brick:7")
    round_trip(populated, edit)
    assert edit.text == "Attach 'digit 7'" and populated.is_attached("brick:7")


def test_refused_attach_raises_and_changes_nothing(graph, shapes_brick):
    node = graph.add_brick(shapes_brick)
    before = snapshot(graph)
    with pytest.raises(DifferentCommonModule):
        AttachBrick(graph, node).apply(graph)
    assert snapshot(graph) == before


def test_detach_brick(populated):
    edit = DetachBrick(populated, "brick:1")
    round_trip(populated, edit)
    assert edit.text == "Detach 'digit 1'" and populated.attached_ids() == ["brick:0"]


def test_move_bricks_multi_select(populated):
    edit = MoveBricks(populated, {"brick:0": (5, 5), "brick:7": (9, 9), COMMON: (1, 1)})
    round_trip(populated, edit)
    assert edit.text == "Move 3 items" and populated.position("brick:7") == (9.0, 9.0)
    single = MoveBricks(populated, {"brick:1": (0, 0)}, old_positions={"brick:1": (100, 50)})
    assert single.text == "Move 'digit 1'"


def test_rename_brick(populated):
    edit = RenameBrick(populated, "brick:7", "lucky seven")
    round_trip(populated, edit)
    assert edit.text == "Rename 'digit 7' to 'lucky seven'" and populated.title("brick:7") == "lucky seven"


def test_remove_brick_restores_attachment_position_and_order(populated):
    populated.rename("brick:0", "zero")
    edit = RemoveBrick(populated, "brick:0")
    round_trip(populated, edit)
    assert edit.text == "Remove 'zero'" and populated.brick_ids() == ["brick:1", "brick:7"]
    edit.revert(populated)
    assert populated.attached_ids() == ["brick:0", "brick:1"] and populated.title("brick:0") == "zero"


def test_set_common_module_restores_attached_bricks(populated, digits_common):
    edit = SetCommonModule(populated, None)
    round_trip(populated, edit)
    assert edit.text == "Remove the common module" and populated.attached_ids() == []
    edit.revert(populated)
    assert populated.attached_ids() == ["brick:0", "brick:1"]
    assert SetCommonModule(populated, digits_common).text == "Use the common module of 'digits demo teacher'"


def test_add_and_attach_is_one_step(graph, digits_bricks):
    edit = add_and_attach(graph, digits_bricks["7"], (3, 3))
    round_trip(graph, edit)
    assert edit.text == "Attach 'digit 7'" and graph.attached_ids() == ["brick:7"]


def test_compound_edit_rolls_back_when_a_part_fails(graph, digits_bricks, shapes_brick):
    good = AddBrick(graph, digits_bricks["7"], (0, 0))
    alien = AddBrick(graph, shapes_brick, (0, 0))
    edit = CompoundEdit("Add two", [good, alien, AttachBrick(graph, alien.node_id, "alien")])
    before = snapshot(graph)
    with pytest.raises(DifferentCommonModule):
        edit.apply(graph)
    assert snapshot(graph) == before
