"""The studio at the speed of the hand: edits show what is known at once and measure the rest
in a worker; demos load in the background while the window answers clicks."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from kfstudio.core.measures.metrics import group_logits, group_outcomes
from kfstudio.core.tasks import group_tasks
from kfstudio.assembly.build import build_network
from kfstudio.core.measures.cost import count_macs, count_parameters
from kfstudio.gui.build.cost_panel import COUNTING, MEASURING


@pytest.fixture
def page(open_build_page, digits_run, digits_teacher):
    return open_build_page(digits_run[1], teacher=digits_teacher)


def _fresh_totals(graph) -> tuple[int, int]:
    """Parameters and multiply-adds of the graph's network, computed from scratch."""
    network = build_network(graph)
    x = network.example_input(1)
    return count_parameters(network), count_macs(lambda: network(x), network)


def _shown(panel) -> list[list[str]]:
    return [[panel.summary.item(r, c).text() for c in range(4)] for r in range(panel.summary.rowCount())]


def test_ten_attaches_show_counts_at_once_and_measure_the_rest_in_a_worker(qtbot, page):
    panel = page.cost_panel
    keys = [e.key for e in page.palette.entries()]
    assert len(keys) == 10
    seen = []
    for i, key in enumerate(keys):
        page.palette.add_requested.emit(key)
        # at once, with no event processed: the parameters are right, what needs a forward pass is stale
        figures = panel.figures
        assert len(figures.parts) == i + 2
        assert figures.network.parameters == count_parameters(page.graph.common.module) + sum(
            count_parameters(page.graph.brick(n).module) for n in page.graph.attached_ids())
        assert panel.is_stale() and figures.network.macs is None and figures.network.latency_ms is None
        macs_row = _shown(panel)[1]
        assert macs_row[1] == COUNTING and _shown(panel)[2][1] == MEASURING
        with qtbot.waitSignal(panel.latency_measured, timeout=60_000):
            pass
        assert not panel.is_stale()
        assert (panel.figures.network.parameters, panel.figures.network.macs) == _fresh_totals(page.graph)
        assert panel.figures.network.latency_ms > 0 and panel.figures.teacher.latency_ms > 0
        assert MEASURING not in str(_shown(panel)) and COUNTING not in str(_shown(panel))
        seen.append(_shown(panel))
    stack = page._test_stack
    for i in range(9, 0, -1):   # undo: the earlier figures again, at once (counts and latency remembered)
        stack.undo()
        assert not panel.is_stale() and _shown(panel) == seen[i - 1]
    for i in range(1, 10):
        stack.redo()
        assert not panel.is_stale() and _shown(panel) == seen[i]
    qtbot.waitUntil(lambda: not panel.is_measuring(), timeout=60_000)


def test_try_panel_follows_edits_from_per_brick_outputs(qtbot, page):
    panel = page.try_panel
    keys = [e.key for e in page.palette.entries()][:4]
    for key in keys:
        page.palette.add_requested.emit(key)
    network = build_network(page.graph)
    x = panel.current_input()
    with torch.no_grad():
        out = network(x)
    # four of ten calibrated one-vs-rest bricks: the network answers among them or "none of these"
    (group,) = group_tasks(network.tasks)
    stacked = group_logits(group, out, network.thresholds)[0]
    (prediction,) = panel.predictions()
    assert prediction.class_index == int(group_outcomes(group)[int(stacked.argmax())])
    assert prediction.confidence == pytest.approx(float(torch.softmax(stacked, 0).max()), abs=1e-4)
    page._test_stack.undo()
    (after_undo,) = panel.predictions()
    assert after_undo.title.count(",") == 2   # three bricks left, read together
    qtbot.waitUntil(lambda: not page.cost_panel.is_measuring(), timeout=60_000)


@pytest.fixture
def gated_demo(monkeypatch):
    """The demo's load waits in its worker until the test lets it go (a flag, not a sleep)."""
    from kfstudio.gui.train import teacher_wizard

    gate = threading.Event()
    real = teacher_wizard.load_demo_choice

    def gated(name):
        assert gate.wait(120), "the test never let the load go"
        return real(name)

    monkeypatch.setattr(teacher_wizard, "load_demo_choice", gated)
    yield gate
    gate.set()


def test_demo_loads_in_the_background_while_the_window_answers(qtbot, window, gated_demo):
    from kfstudio.gui.main_window import BUILD, FACTORIZE

    window.build_pages()
    qtbot.mouseClick(window.welcome_page.digits_button, Qt.MouseButton.LeftButton)
    welcome = window.welcome_page
    assert window.is_loading()
    assert welcome.loading.isVisible() and welcome.loading.text() == "Loading the digits demo…"
    assert "Loading the digits demo" in window.statusBar().currentMessage()
    assert QGuiApplication.overrideCursor() is not None
    assert QGuiApplication.overrideCursor().shape() == Qt.CursorShape.WaitCursor
    assert not welcome.digits_button.isEnabled()   # one load at a time
    bar = window.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(BUILD).center())
    assert window.tabs.currentIndex() == BUILD and window.is_loading()   # answered before the load finished
    with qtbot.waitSignal(window.loader.finished, timeout=120_000) as finished:
        gated_demo.set()
    assert finished.args == [True]
    assert window.choice is not None and window.choice.teacher_ref == "builtin:digits"
    assert window.tabs.currentIndex() == FACTORIZE
    assert not welcome.loading.isVisible() and welcome.digits_button.isEnabled()
    assert QGuiApplication.overrideCursor() is None
    # what the load brought in is out of the collector's full passes (a pass over the whole heap in a
    # worker thread held the interpreter lock ~100-200 ms and froze the window)
    teacher_module = window.choice.teacher.module
    assert gc.is_tracked(teacher_module)
    assert all(obj is not teacher_module for obj in gc.get_objects())


def test_project_opens_in_the_background(qtbot, make_window, digits_run, tmp_path, monkeypatch):
    from kfstudio.gui import project_files

    first = make_window()
    assert first.load_run(digits_run[1])
    for entry in first.build_page.palette.entries()[:3]:
        first.build_page.palette.add_requested.emit(entry.key)
    target = tmp_path / "talk.kfproj"
    assert first._save_to(target)
    gate = threading.Event()
    real = project_files.read_project_files
    monkeypatch.setattr(project_files, "read_project_files", lambda *a: (gate.wait(120), real(*a))[1])
    window = make_window()
    assert window.open_project(target)
    assert window.is_loading() and window.welcome_page.loading.text() == "Opening talk.kfproj…"
    assert window.build_page.graph.common is None   # nothing read on the GUI thread yet
    with qtbot.waitSignal(window.loader.finished, timeout=120_000):
        gate.set()
    page = window.build_page
    assert len(page.graph.attached_ids()) == 3 and len(page.palette.entries()) == 10
    assert window.project_path == target and not window.isWindowModified()
    qtbot.waitUntil(lambda: not page.cost_panel.is_measuring(), timeout=60_000)


@pytest.fixture(scope="module")
def light_run(tmp_path_factory):
    """A short digits factorization whose bricks read stage 1 of the common module (the default
    the command line and the studio start from)."""
    from kfstudio.core.factorize import FactorizeConfig, factorize
    from kfstudio.io.bricks import save_factorization

    out = tmp_path_factory.mktemp("light_run")
    result = factorize(FactorizeConfig(teacher="builtin:digits", data="builtin:digits", tasks="one-vs-rest:3,7",
                                       epochs=1, common_width=0.25, task_width=0.25, brick_input="stage1",
                                       device="cpu", seed=0))
    save_factorization(result, out)
    return out


def test_light_bricks_are_costed_and_tried_on_the_stage_they_read(qtbot, open_build_page, light_run,
                                                                digits_teacher):
    """The cost child and the try-it panel ran each brick on the image: a stage-1 brick failed
    ("expected input to have 16 channels") and its figures never came."""
    page = open_build_page(light_run, teacher=digits_teacher)
    for entry in page.palette.entries():
        page.palette.add_requested.emit(entry.key)
    panel = page.cost_panel
    qtbot.waitUntil(lambda: not panel.is_measuring() and not panel.is_stale(), timeout=60_000)
    assert "Could not" not in panel.note.text()
    assert (panel.figures.network.parameters, panel.figures.network.macs) == _fresh_totals(page.graph)
    (prediction,) = page.try_panel.predictions()
    network = build_network(page.graph)
    with torch.no_grad():
        out = network(page.try_panel.current_input())
    (group,) = group_tasks(network.tasks)
    stacked = group_logits(group, out, network.thresholds)[0]
    assert prediction.confidence == pytest.approx(float(torch.softmax(stacked, 0).max()), abs=1e-4)


def test_the_measuring_child_starts_off_the_gui_thread(qtbot, monkeypatch):
    """Spawning the cost panel's child takes tens of milliseconds: the window must not wait for it."""
    from kfstudio.gui.build import cost_child

    started_in = []
    real_run = cost_child._run

    def recording_run(fn, *args):
        started_in.append(threading.current_thread() is threading.main_thread())
        return real_run(fn, *args)

    monkeypatch.setattr(cost_child, "_run", recording_run)
    monkeypatch.setattr(cost_child, "_warm", None)
    cost_child.warm()
    cost_child.warm()   # a second call while the first is starting starts nothing more
    qtbot.waitUntil(cost_child.is_ready, timeout=60_000)
    assert started_in == [False]
    assert cost_child._warm.result() is True
