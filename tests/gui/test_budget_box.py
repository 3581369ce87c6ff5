"""The Factorize page's cost controls: the live estimate follows the budget and the brick input,
and the run gets what was chosen."""

from __future__ import annotations

import re

from PySide6.QtCore import Qt

from kfstudio.gui.main_window import FACTORIZE


def _share(text: str) -> int:
    """The share of the teacher that all bricks cost, as the estimate says it ("... (78% of the teacher's")."""
    return int(re.search(r"multiply-adds \((\d+)% of the teacher's", text).group(1))


def test_the_estimate_follows_the_budget_and_the_brick_input(qtbot, window, wait_loaded):
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
    large = box.estimate.text()
    assert "all 10 bricks" in large and "one brick + common" in large and _share(large) > 100
    box.input_combo.setCurrentText("Stage 2 of the common module (lighter)")
    assert _share(box.estimate.text()) < _share(large)
    box.budget_combo.setCurrentText("At most half the teacher's (1/2)")
    halved = box.estimate.text()
    assert halved.startswith("widths ") and _share(halved) <= 50
    config = page.config()
    assert (config.budget, config.brick_input) == ("1/2", "stage2")
