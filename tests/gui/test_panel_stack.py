"""Panels one above the other while they fit, tabs when the height is short, and back."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from kfstudio.gui.panel_stack import PanelStack, VerticalScroll


def _panel(height: int) -> QWidget:
    """A panel whose content needs ``height`` pixels (what its layout says, as for real panels)."""
    panel = QWidget()
    content = QLabel("panel")
    content.setMinimumHeight(height)
    QVBoxLayout(panel).addWidget(content)
    return panel


def test_panels_become_tabs_when_short_and_stack_again_when_tall(qtbot):
    window = QWidget()  # the stack inside a page, as on the Build page
    qtbot.addWidget(window)
    stack = PanelStack()
    QVBoxLayout(window).addWidget(stack)
    cost, trial = _panel(300), _panel(400)
    stack.add_panel(cost, "Cost")
    stack.add_panel(trial, "Try it", stretch=1)
    assert stack.minimumSizeHint().height() < 700  # it never asks for both heights at once
    window.resize(400, 900)
    window.show()
    qtbot.waitUntil(lambda: cost.isVisible() and trial.isVisible())
    assert not stack.tabbed
    window.resize(400, 500)
    qtbot.waitUntil(lambda: stack.tabbed)
    assert stack.tabs.count() == 2 and trial.height() >= 400  # a tab shows its panel whole
    stack.tabs.setCurrentWidget(trial)
    assert trial.isVisible() and not cost.isVisible()
    window.resize(400, 900)
    qtbot.waitUntil(lambda: not stack.tabbed and cost.isVisible() and trial.isVisible())
    assert stack.splitter.indexOf(cost) == 0 and stack.splitter.indexOf(trial) == 1


def test_a_tall_column_scrolls_instead_of_asking_for_its_height(qtbot):
    column = _panel(900)
    area = VerticalScroll(column)
    qtbot.addWidget(area)
    assert area.minimumSizeHint().height() <= VerticalScroll.MIN_HEIGHT
    assert area.minimumSizeHint().width() >= column.minimumSizeHint().width()  # never cut sideways
