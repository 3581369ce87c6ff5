"""The Factorize page's cost controls: the live estimate follows the budget and the brick input,
and the run gets what was chosen."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer

from kfstudio.gui.main_window import FACTORIZE


def _share(text: str) -> int:
    """The share of the teacher that all bricks cost, as the estimate says it ("... (78% of the teacher's")."""
    return int(re.search(r"multiply-adds \((\d+)% of the teacher's", text).group(1))


def test_the_estimate_follows_the_budget_and_the_brick_input(qtbot, window, wait_loaded, wait_estimated):
    box = window.factorize_page.budget_box
    # the studio starts where the command line does: a budget of the teacher's cost, stage-1 bricks
    assert (box.budget_combo.currentData(), box.input_combo.currentData()) == ("1x", "stage1")
    qtbot.mouseClick(window.welcome_page.digits_button, Qt.MouseButton.LeftButton)
    wait_loaded(window)
    assert window.tabs.currentIndex() == FACTORIZE
    page = window.factorize_page
    box = page.budget_box
    box.budget_combo.setCurrentIndex(0)                       # the student size as chosen, no budget
    box.input_combo.setCurrentIndex(0)
    page.size_combo.setCurrentText("Large")
    wait_estimated(page)
    large = box.estimate.text()
    assert "all 10 bricks" in large and "one brick + common" in large and _share(large) > 100
    box.input_combo.setCurrentText("Stage 2 of the common module (lighter)")
    wait_estimated(page)
    assert _share(box.estimate.text()) < _share(large)
    box.budget_combo.setCurrentText("At most half the teacher's (1/2)")
    wait_estimated(page)
    halved = box.estimate.text()
    assert halved.startswith("widths ") and _share(halved) <= 50
    config = page.config()
    assert (config.budget, config.brick_input, config.task_net) == ("1/2", "stage2", "auto")   # as the CLI's


def test_the_estimates_are_worked_out_off_the_gui_thread_and_the_newest_wins(qtbot, monkeypatch, digits_choice,
                                                                             wait_estimated):
    import kfstudio.gui.train.page as fp

    threads, real, gate = [], fp.sized_config, threading.Event()

    def held_sizing(config, teacher, tasks):
        threads.append(threading.current_thread())
        gate.wait(30)   # held until the GUI thread has shown that it stays awake meanwhile
        return real(config, teacher, tasks)

    monkeypatch.setattr(fp, "sized_config", held_sizing)
    page = fp.FactorizePage(runs_home=Path("unused"))
    qtbot.addWidget(page)
    page.set_choice(digits_choice)                      # returns at once: sizing runs elsewhere
    assert page.estimates.is_busy() and page.budget_box.estimate.text().startswith("Working out")
    page.budget_box.budget_combo.setCurrentText("At most half the teacher's (1/2)")   # a newer estimate
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    qtbot.waitUntil(lambda: len(ticks) >= 3)
    gate.set()
    wait_estimated(page)
    assert len(threads) == 2 and threading.main_thread() not in threads
    assert _share(page.budget_box.estimate.text()) <= 50   # the newest settings' answer, not the first
    assert "student parameters" in page.memory_label.text()


def test_the_estimate_says_when_the_budget_gave_the_bricks_a_wide_middle():
    from types import SimpleNamespace

    from kfstudio.core.factorize import FactorizeConfig, sized_config
    from kfstudio.core.tasks import resolve_tasks
    from kfstudio.core.teachers.loaders import load_teacher
    from kfstudio.gui.train.run_settings import estimate_cost

    teacher = load_teacher("builtin:shapes-hard", allow_code=True)
    choice = SimpleNamespace(teacher=teacher, tasks=resolve_tasks(None, teacher.class_names))
    config = FactorizeConfig(teacher="builtin:shapes-hard", data="builtin:shapes-hard", budget="1x",
                             brick_input="stage1", stem_stride="auto", task_net="auto")
    wide = estimate_cost(choice, *sized_config(config, teacher, choice.tasks))
    assert wide.startswith("widths 1 / 0.5, bricks with a wide middle (tiny-mid); all 5 bricks")
    plain = estimate_cost(choice, *sized_config(replace(config, task_net="tiny"), teacher, choice.tasks))
    assert plain.startswith("widths 1 / 0.5; all 5 bricks") and _share(plain) < _share(wide)
