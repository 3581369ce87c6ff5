"""Growing the set in the studio: "Train a new brick…" and the Relations tab, driven with qtbot.

The new brick trains in a real child process on a copy of the session's digits run; the
relations are measured in a worker thread and then read back from relatedness.json.
"""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QUndoStack
from PySide6.QtTest import QTest

from kfstudio.gui.build.page import BuildPage
from kfstudio.io.bricks import load_common

TRAIN_TIMEOUT_MS = 180_000  # a spawned child imports torch, then trains one epoch on digits


@pytest.fixture
def page(qtbot, open_build_page, digits_copy):
    page = open_build_page(digits_copy, size=(1400, 860))
    yield page
    dialog = getattr(page, "new_brick_dialog", None)
    if dialog is not None:
        assert dialog.stop(120_000)
    if page.relations.is_computing():
        qtbot.waitUntil(lambda: not page.relations.is_computing(), timeout=60_000)


def test_train_a_new_brick_from_the_palette_and_attach_it(qtbot, page, digits_copy):
    common_bytes = (digits_copy / "common.safetensors").read_bytes()
    qtbot.mouseClick(page.palette.new_brick_button, Qt.MouseButton.LeftButton)
    dialog = page.new_brick_dialog
    assert dialog.isVisible() and dialog.data_edit.text() == "builtin:digits"  # the run's own data, suggested
    dialog.task_edit.setText("low")
    dialog.classes_edit.setText("0,1,2")
    dialog.epochs_box.setValue(1)
    with qtbot.waitSignal(dialog.brick_saved, timeout=TRAIN_TIMEOUT_MS) as saved:
        qtbot.mouseClick(dialog.train_button, Qt.MouseButton.LeftButton)
        assert not dialog.train_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.train_button.isEnabled(), timeout=30_000)
    path = saved.args[0]
    assert path.endswith("bricks/low.safetensors")
    assert dialog.loss_plot.reports_seen > 0 and dialog.progress.value() == dialog.progress.maximum()
    assert "new brick is in the palette" in dialog.status.text()
    # It is in the palette at once, fits the plate and attaches beside the old bricks.
    assert path in page.palette.keys() and page.palette.brick_count() == 11
    page._on_palette_add_requested(path)
    assert "low" in [page.graph.title(n) for n in page.graph.attached_ids()]
    assert (digits_copy / "common.safetensors").read_bytes() == common_bytes
    assert json.loads((digits_copy / "bricks" / "low.json").read_text())["common_fingerprint"] == \
        load_common(digits_copy / "common.safetensors").fingerprint


def test_the_dialog_refuses_a_taken_name_and_a_missing_plate(qtbot, page):
    qtbot.mouseClick(page.palette.new_brick_button, Qt.MouseButton.LeftButton)
    dialog = page.new_brick_dialog
    dialog.task_edit.setText("7")
    with qtbot.waitSignal(dialog.failed, timeout=5_000) as failed:
        qtbot.mouseClick(dialog.train_button, Qt.MouseButton.LeftButton)
    assert "already has a brick '7'" in failed.args[0] and dialog.process is None
    empty = BuildPage(QUndoStack())
    qtbot.addWidget(empty)
    qtbot.mouseClick(empty.palette.new_brick_button, Qt.MouseButton.LeftButton)
    assert not empty.new_brick_dialog.train_button.isEnabled()
    assert "Load a factorization run first" in empty.new_brick_dialog.status.text()
    empty.new_brick_dialog.close()


def test_relations_tab_draws_bricks_and_edges_with_a_threshold_and_clickable_edges(qtbot, page, digits_copy):
    relations = page.relations
    with qtbot.waitSignal(relations.ready, timeout=120_000):
        page.centre_tabs.setCurrentWidget(relations)
    assert not relations.from_cache and (digits_copy / "relatedness.json").is_file()
    assert len(relations.edges) == 45  # 10 bricks, every pair
    relations.slider.setValue(0)
    assert len(relations.visible_edges()) == 45
    relations.slider.setValue(90)
    few = relations.visible_edges()
    assert 1 <= len(few) < 45 and all(e.score >= relations.threshold() for e in few)
    edge = max(few, key=lambda e: e.score)
    midpoint = relations.view.mapFromScene(edge.line().center())
    with qtbot.waitSignal(relations.edge_selected, timeout=5_000) as selected:
        QTest.mouseClick(relations.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         QPoint(midpoint.x(), midpoint.y()))
    titles = [b["title"] for b in relations.doc["bricks"]]
    assert selected.args[0].startswith(f"{titles[edge.a]} and {titles[edge.b]} look at images ")
    assert selected.args[0] in relations.info.text() and "S =" not in relations.info.text()  # words, not symbols
    assert f"S = {edge.score:.3f}" in relations.info.toolTip()  # the scores for who wants them
    # A second view of the same run reads the cache instead of measuring again.
    other = BuildPage(QUndoStack())
    qtbot.addWidget(other)
    other.load_run(digits_copy)
    other.relations.refresh()
    assert other.relations.from_cache and not other.relations.is_computing()
    assert other.relations.doc["matrix"] == relations.doc["matrix"]

