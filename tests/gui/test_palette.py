"""The palette's rows: the brick's whole name and its "on the plate" mark stay readable."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QStyleOptionViewItem

from kfstudio.gui.build.palette import ATTACHED_ROLE, BrickPalette, PaletteEntry
from kfstudio.gui.build.palette_delegate import ON_PLATE, TITLE_ROLE
from kfstudio.gui.theme import theme_manager

LONG = "shapes-hard: large triangle or pentagon against the rest"
FILE = "brick_from_a_folder_named_customer_images_2026_final_v3"
GROUP = "digits demo teacher · 20261202-004224"


def _entries() -> list[PaletteEntry]:
    sub = "one-vs-rest · 12,345 parameters · 97.3% accurate"
    return [PaletteEntry(f"/runs/a/{i}", title, sub, i, GROUP)
            for i, title in enumerate(("digit 7", LONG, FILE))]


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_rows_wrap_the_name_and_show_the_mark_at_every_size(qtbot, scale, tmp_path):
    theme_manager().set_scale(scale)
    palette = BrickPalette()
    qtbot.addWidget(palette)
    palette.resize(int(230 * scale), 600)
    palette.show()
    palette.set_entries(_entries())
    palette.set_attached({"/runs/a/1", "/runs/a/2"})
    qtbot.waitExposed(palette)
    palette.grab().save(str(tmp_path / f"palette-{scale}.png"))
    delegate = palette.list.itemDelegate()
    model = palette.model
    rows = [model.index(r, 0) for r in range(model.rowCount()) if model.index(r, 0).data(TITLE_ROLE)]
    assert len(rows) == 3
    header = model.index(0, 0)
    option = _option(palette, header)
    lines, font = delegate.header_lines(option, header)
    width = delegate._text_rect(option).width() + palette.list.iconSize().width() + 8
    assert lines[0].startswith("digits demo teacher") and all(QFontMetrics(font).horizontalAdvance(t) <= width
                                                              for t in lines)
    assert palette.list.visualRect(header).height() >= len(lines) * QFontMetrics(font).height()
    assert header.data(0x03) == GROUP
    for index in rows:
        text = delegate.row_text(_option(palette, index), index)
        for line, font, _mark in text.lines:
            assert QFontMetrics(font).horizontalAdvance(line) <= text.width, line  # nothing runs past the edge
        assert palette.list.visualRect(index).height() >= text.height  # the row is as tall as its lines
        marks = [line for line, _font, mark in text.lines if mark]
        assert marks == ([ON_PLATE] if index.data(ATTACHED_ROLE) else [])
        if index.data(TITLE_ROLE) == LONG:  # attached, so its name is bold: wrapped over lines, not cut
            name_lines = [line for line, font, mark in text.lines if font.bold() and not mark]
            assert " ".join(name_lines) == LONG and len(name_lines) >= 2
        if index.data(TITLE_ROLE) == FILE:
            name = text.lines[0][0]
            assert name.startswith("brick_") and name.endswith("v3") and "…" in name  # elided in the middle
        assert index.data(TITLE_ROLE) in index.data(0x03)  # the tooltip has the full name


def _option(palette, index) -> QStyleOptionViewItem:
    option = QStyleOptionViewItem()
    option.initFrom(palette.list)
    option.rect = palette.list.visualRect(index)
    option.decorationSize = palette.list.iconSize()
    return option


def test_attaching_a_brick_never_moves_the_rows_below(qtbot):
    """An attached row grew a line ("✓ on the plate"): every row under it moved under the presenter's hand."""
    palette = BrickPalette()
    qtbot.addWidget(palette)
    palette.resize(230, 600)
    palette.show()
    palette.set_entries(_entries())
    qtbot.waitExposed(palette)
    model = palette.model

    def row_rects():
        return [palette.list.visualRect(model.index(r, 0)) for r in range(model.rowCount())]

    before = row_rects()
    palette.set_attached({"/runs/a/0", "/runs/a/1"})
    assert model.index(1, 0).data(ATTACHED_ROLE)  # row 0 is the run's heading
    palette.list.doItemsLayout()
    assert row_rects() == before
