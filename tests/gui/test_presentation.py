"""Presentation mode at talk resolutions: the side panels grow with the fonts, nothing is cut off."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QTableWidget

from kfstudio.gui import screen_fit
from kfstudio.gui.main_window import BUILD
from kfstudio.gui.theme import theme_manager


def _elided_cells(table: QTableWidget) -> list[str]:
    """Cells (and headers) whose text is wider than their column."""
    header = table.horizontalHeader()
    cut = []
    for c in range(table.columnCount()):
        width = header.sectionSize(c) - 2
        head = table.horizontalHeaderItem(c)
        items = ([head] if head is not None else []) + [table.item(r, c) for r in range(table.rowCount())]
        for item in filter(None, items):
            own = item.data(Qt.ItemDataRole.FontRole)  # None: the table's own font
            metrics = QFontMetrics(own if own is not None else (header.font() if item is head else table.font()))
            cut += [line for line in item.text().splitlines() if metrics.horizontalAdvance(line) > width]
    return cut


def _combo_text_fits(combo: QComboBox) -> bool:
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo)
    return QFontMetrics(combo.font()).horizontalAdvance(combo.currentText()) <= field.width()


def _present_on(window, monkeypatch, qtbot, size) -> None:
    """Presentation mode on a screen of ``size``: offscreen has one 800x600 screen, so the screen
    the window sees is patched and the fullscreen window is given that screen's size by hand."""
    screen = QRect(0, 0, *size)
    monkeypatch.setattr(screen_fit, "available_geometry", lambda _window: screen)
    window.presentation_action.setChecked(True)
    window.showNormal()
    window.setGeometry(screen)
    qtbot.waitUntil(lambda: window.size() == screen.size(), timeout=5_000)


def _on_screen(widget, window) -> bool:
    """Shown, not empty, and inside the window (what the audience can see or reach by a tab)."""
    if not widget.isVisible() or widget.width() < 20 or widget.height() < 20:
        return False
    top_left = widget.mapTo(window, widget.rect().topLeft())
    return window.rect().contains(QRect(top_left, widget.size()))


def _reachable(panel, stack, window) -> bool:
    """On screen now, or one click away: its tab in the stack's tab bar is on screen."""
    if _on_screen(panel, window):
        return True
    return stack.tabbed and _on_screen(stack.tabs.tabBar(), window) and stack.tabs.indexOf(panel) >= 0


@pytest.mark.parametrize("size", [(1280, 720), (1366, 768), (1600, 1000), (1920, 1080)])
def test_presentation_mode_fits_the_screen(qtbot, window, digits_choice, digits_run, size, monkeypatch):
    """At 1280x720 presentation mode made the window 1280x1195: the bottom 40 % off screen."""
    window.set_choice(digits_choice)
    window.load_run(digits_run[1])
    build = window.build_page
    for title in ("digit 3", "digit 7", "digit 8"):
        build.palette.add_requested.emit(next(e.key for e in build.palette.entries() if e.title == title))
    window.tabs.setCurrentIndex(BUILD)
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.width() == 1280)
    build.fit_layout()
    brick = next(iter(build.scene.bricks.values()))
    brick_before = build.view.mapFromScene(brick.sceneBoundingRect()).boundingRect().width()
    _present_on(window, monkeypatch, qtbot, size)
    need = screen_fit.minimum_size(window)
    assert need.width() <= size[0] and need.height() <= size[1]  # every page fits the screen
    assert theme_manager().scale >= 1.25
    stack = build.right_stack
    qtbot.waitUntil(lambda: _on_screen(build.view.viewport(), window) and _on_screen(build.palette.list, window)
                    and _reachable(build.cost_panel, stack, window) and _reachable(build.try_panel, stack, window))
    assert build.view.viewport().width() >= 0.45 * size[0]  # the canvas keeps half the width
    grown = 0.95 * brick_before * size[0] / 1280  # the bricks grow with the screen's width (they shrank 2x)
    qtbot.waitUntil(lambda: build.view.mapFromScene(brick.sceneBoundingRect()).boundingRect().width() >= grown)
    window.tabs.setCurrentWidget(window.factorize_page)
    page = window.factorize_page
    for widget in (page.loss_plot, page.accuracy_plot, page.start_button):
        qtbot.waitUntil(lambda w=widget: _on_screen(w, window) or w is page.start_button)
    start = page.start_button
    page.splitter.widget(0).ensureWidgetVisible(start)
    qtbot.waitUntil(lambda: _on_screen(start, window))  # the settings scroll to it
    window.presentation_action.setChecked(False)
    assert theme_manager().scale == 1.0


@pytest.mark.parametrize("size", [(1600, 1000), (1920, 1080)])
def test_presentation_mode_reflows_the_build_page(qtbot, window, digits_choice, digits_run, size, tmp_path,
                                                  monkeypatch):
    window.set_choice(digits_choice)
    window.load_run(digits_run[1])
    build = window.build_page
    for title in ("digit 3", "digit 7", "digit 8", "digit 9"):
        build.palette.add_requested.emit(next(e.key for e in build.palette.entries() if e.title == title))
    window.tabs.setCurrentIndex(BUILD)
    palette_before = build.splitter.sizes()[0]
    _present_on(window, monkeypatch, qtbot, size)
    qtbot.waitUntil(lambda: build.splitter.sizes()[0] >= palette_before)  # never narrower (its rows wrap)
    build.sync_views()
    window.grab().save(str(tmp_path / f"presentation-{size[0]}.png"))
    assert theme_manager().scale >= 1.5
    for table in build.findChildren(QTableWidget):
        if table.isVisible():
            assert _elided_cells(table) == [], table.objectName()
    panel, parts = build.cost_panel, build.cost_panel.parts
    qtbot.waitUntil(lambda: parts.mapTo(panel, parts.rect().bottomLeft()).y() <= panel.height(), timeout=5_000)
    rows = [parts.rowHeight(r) for r in range(parts.rowCount())]
    assert max(rows) < 2 * min(rows)  # no row kept the height of a narrower moment
    image = build.try_panel.image_view
    pixmap = image.pixmap()
    assert pixmap is not None and pixmap.width() <= image.width() and pixmap.height() <= image.height()
    window.tabs.setCurrentWidget(window.factorize_page)
    combo = window.factorize_page.device_combo
    assert _combo_text_fits(combo), combo.currentText()  # the device list says its whole line
    window.presentation_action.setChecked(False)
    assert theme_manager().scale == 1.0


def test_the_cost_table_shows_every_part_at_the_default_size(qtbot, window, digits_choice, digits_run):
    """At 1280x800 the splitter gave the cost panel a fixed share: the third brick's row was cut off."""
    window.set_choice(digits_choice)
    window.load_run(digits_run[1])
    build = window.build_page
    window.tabs.setCurrentIndex(BUILD)
    for title in ("digit 3", "digit 7", "digit 8"):
        build.palette.add_requested.emit(next(e.key for e in build.palette.entries() if e.title == title))
    build.cost_panel.refresh()
    qtbot.waitUntil(lambda: build.cost_panel.parts.rowCount() == 4, timeout=5_000)
    panel, table = build.cost_panel, build.cost_panel.parts
    bottom = table.mapTo(panel, table.rect().bottomLeft()).y()
    assert bottom <= panel.height()  # every row of the parts table is on screen
    assert build.try_panel.height() >= build.try_panel.minimumSizeHint().height()


def test_the_normal_window_fits_a_small_screen(qtbot, window, monkeypatch):
    """The window opened at 1280x800 and could not be made shorter than 722 px: on a 1280x720
    screen its bottom was off screen."""
    screen = QRect(0, 0, 1280, 720)
    monkeypatch.setattr(screen_fit, "available_geometry", lambda _window: screen)
    window.build_pages()
    window.hide()
    window.resize(1280, 800)
    window.show()
    qtbot.waitUntil(lambda: screen.contains(window.frameGeometry()))
    need = screen_fit.minimum_size(window)
    assert need.height() <= 720 - 100  # room to spare: the panels scroll or become tabs
