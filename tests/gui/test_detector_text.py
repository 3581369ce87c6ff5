"""The Build page palette shows each calibrated brick's figures as a detector of its class."""

from __future__ import annotations

from PySide6.QtGui import QUndoStack

from kfstudio.gui.build.page import BuildPage
from kfstudio.gui.build.palette import SUBTITLE_ROLE


def test_the_palette_shows_each_bricks_auc_and_detector_accuracy(qtbot, digits_run, digits_bricks):
    page = BuildPage(QUndoStack())
    qtbot.addWidget(page)
    page.load_run(digits_run[1])
    entry = next(e for e in page.palette.entries() if e.title == "digit 7")
    detector = digits_bricks["7"].detector
    assert f"AUC {detector['auc']:.2f}" in entry.subtitle and "detects " in entry.subtitle
    row = page.palette.row_of(entry.key)
    shown = page.palette.list.model().index(row, 0).data(SUBTITLE_ROLE)
    assert "AUC" in shown  # what the row draws under the title
