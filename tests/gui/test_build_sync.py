"""Every Build-page view follows the graph at once; the plate is fitted when the page is shown."""

from __future__ import annotations

import random

import pytest
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QTabWidget, QWidget

from kfstudio.gui.build.brick_text import percent
from kfstudio.gui.build.page import BuildPage
from kfstudio.gui.build.try_panel import group_title
from kfstudio.core.tasks import group_tasks


@pytest.fixture
def page(open_build_page, digits_run, digits_teacher):
    return open_build_page(digits_run[1], teacher=digits_teacher)


def _assert_views_agree(page) -> None:
    graph = page.graph
    attached = list(graph.attached_ids())
    titles = [graph.title(n) for n in attached]
    assert set(page.scene.bricks) == set(graph.brick_ids())
    assert {n for n, item in page.scene.bricks.items() if item.attached} == set(attached)
    assert page.palette.attached_keys() == {str(graph.brick(n).path) for n in attached}
    figures = page.cost_panel.figures
    if attached:
        assert figures is not None and [k for k in figures.parts if k != "common module"] == titles
    else:
        assert figures is None
    groups = group_tasks([graph.brick(n).task for n in attached])
    assert [p.title for p in page.try_panel.predictions()] == [group_title(g) for g in groups]
    assert page.message.text().startswith(("Attach", "Detach", "Remove", "Add")) or \
        f"{len(attached)} brick" in page.message.text() or not attached


def test_twenty_random_edits_undos_and_redos_keep_every_view_in_step(page):
    rng = random.Random(11)
    stack = page._test_stack
    keys = [e.key for e in page.palette.entries()]
    for _ in range(20):
        graph = page.graph
        attached = list(graph.attached_ids())
        free = [k for k in keys if k not in {str(graph.brick(n).path) for n in graph.brick_ids()}]
        moves = ["undo"] * stack.canUndo() + ["redo"] * stack.canRedo() + ["attach"] * bool(free) + \
            ["detach"] * bool(attached)
        move = rng.choice(moves)
        if move == "undo":
            stack.undo()
        elif move == "redo":
            stack.redo()
        elif move == "attach":
            page.palette.add_requested.emit(rng.choice(free))
        else:
            page.scene.clearSelection()
            page.scene.bricks[rng.choice(attached)].setSelected(True)
            page.detach_selected()
        _assert_views_agree(page)  # no event processing between the step and the check


def test_a_refusal_does_not_stay_under_the_canvas(page):
    key = page.palette.entries()[3].key
    page.palette.add_requested.emit(key)
    page.palette.add_requested.emit(key)  # the same task twice: refused, in red
    assert page.message.property("error") and "already" in page.message.text()
    page._test_stack.undo()
    assert not page.message.property("error")
    assert page.message.text() == "Drag a brick onto the base plate to add its task."
    page._test_stack.redo()
    assert "1 brick attached: digit 3" in page.message.text()
    assert "✓" in page.palette.hint.text()


def test_plate_fitted_when_a_hidden_page_is_shown_and_resized(qtbot, digits_run):
    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    page = BuildPage(QUndoStack())
    tabs.addTab(QWidget(), "Welcome")
    tabs.addTab(page, "Build")
    tabs.resize(1400, 900)
    tabs.show()
    qtbot.waitExposed(tabs)
    page.load_run(digits_run[1])  # while the Build page is hidden, as at the end of a run
    tabs.setCurrentWidget(page)
    view = page.view
    width = lambda: view.mapFromScene(page.scene.plate.sceneBoundingRect()).boundingRect().width()  # noqa: E731
    qtbot.waitUntil(lambda: width() > view.viewport().width() * 0.5, timeout=2_000)
    tabs.resize(1000, 700)
    qtbot.waitUntil(lambda: width() <= view.viewport().width(), timeout=2_000)
    view.zoom_in()  # by hand: no more automatic fitting
    zoom, before = view.zoom(), view.viewport().width()
    tabs.resize(1400, 900)
    qtbot.waitUntil(lambda: view.viewport().width() > before, timeout=2_000)
    assert view.zoom() == zoom and not view.auto_fit


def test_percent_shows_a_decimal_where_it_matters():
    assert percent(0.9972) == "99.7%" and percent(1.0) == "100%" and percent(0.5) == "50%"
    assert percent(0.99996) == "100%" and percent(0.123) == "12.3%"
