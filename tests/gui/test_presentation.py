"""Presentation mode at talk resolutions: the side panels grow with the fonts, nothing is cut off."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QTableWidget

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


@pytest.mark.parametrize("size", [(1600, 1000), (1920, 1080)])
def test_presentation_mode_reflows_the_build_page(qtbot, window, digits_choice, digits_run, size, tmp_path):
    window.set_choice(digits_choice)
    window.load_run(digits_run[1])
    build = window.build_page
    for title in ("digit 3", "digit 7", "digit 8", "digit 9"):
        build.palette.add_requested.emit(next(e.key for e in build.palette.entries() if e.title == title))
    window.tabs.setCurrentIndex(BUILD)
    palette_before = build.splitter.sizes()[0]
    window.presentation_action.setChecked(True)
    window.showNormal()  # offscreen has no real screen: the talk's resolution by hand
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0], timeout=5_000)
    build.sync_views()
    window.grab().save(str(tmp_path / f"presentation-{size[0]}.png"))
    assert theme_manager().scale >= 1.5
    assert build.splitter.sizes()[0] >= palette_before * 1.3  # the palette grew with its fonts
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
