"""The accuracy plot's compact view: every task of a run as one band instead of one curve each.

Ten or more task curves lay on top of each other near 100 % in colours that were hard to tell
apart from the back of a room. The band draws their average as one line and shades from the
lowest to the highest task after each epoch, so the spread is visible at a glance; the plot's
"Each task" switch shows the separate curves again.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor

from kfstudio.gui.theme import theme_manager

LABEL = "tasks: average (shaded: lowest to highest)"


class TaskBand:
    """An average line and a lowest-to-highest band over several tasks' accuracy curves."""

    def __init__(self, plot: pg.PlotWidget) -> None:
        self.mean = plot.plot([], [], name=LABEL, antialias=True, symbol="o", symbolSize=6)  # a dot after epoch 1
        self.low, self.high = pg.PlotCurveItem(), pg.PlotCurveItem()
        self.fill = pg.FillBetweenItem(self.low, self.high)
        for item in (self.low, self.high, self.fill):
            plot.addItem(item)
        self.recolour()

    def set_data(self, x: list[float], rows: list[list[float]]) -> None:
        """``rows``: each task's accuracy after each epoch (NaN where it has none yet)."""
        width = len(x)
        table = np.array([list(row[:width]) + [np.nan] * (width - len(row)) for row in rows], dtype=float)
        xs = np.asarray(x, dtype=float)
        known = ~np.all(np.isnan(table), axis=0) if len(rows) else np.zeros(width, dtype=bool)
        table, xs = table[:, known], xs[known]
        with warnings.catch_warnings():  # an epoch where some task has no value yet
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, low, high = np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)
        self.mean.setData(xs, mean)
        self.low.setData(xs, low)
        self.high.setData(xs, high)

    def values(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """epochs, average, lowest, highest as drawn now (for tests and exports)."""
        x, mean = self.mean.getData()
        if x is None:
            return [], [], [], []
        return list(x), list(mean), list(self.low.getData()[1]), list(self.high.getData()[1])

    def set_visible(self, on: bool) -> None:
        for item in (self.mean, self.low, self.high, self.fill):
            item.setVisible(on)

    def recolour(self) -> None:
        theme, scale = theme_manager().theme, theme_manager().scale
        colour = QColor(theme.accent)
        self.mean.setPen(pg.mkPen(colour, width=2.5 * scale))
        self.mean.setSymbolBrush(pg.mkBrush(colour))
        self.mean.setSymbolPen(pg.mkPen(colour))
        shade = QColor(colour)
        shade.setAlpha(60)
        self.fill.setBrush(pg.mkBrush(shade))
        for edge in (self.low, self.high):
            edge.setPen(pg.mkPen(shade, width=1))
