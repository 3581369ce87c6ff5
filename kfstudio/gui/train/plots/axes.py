"""The plots' left axis in log scale: one label style (0.01, 0.1, 1, 10), never crowded."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFontMetrics


class LogAxis(pg.AxisItem):
    """A left axis whose log scale reads in one style: 0.01, 0.1, 1, 10 (and 0.2, 0.5 ... when
    the range is narrow), never crowded.

    pyqtgraph labels decades as "10¹" but 1 and 0.1 as plain numbers, and every minor tick
    (0.1, 0.09, 0.08 ...) when the range is narrow; the labels overlap and mix two styles."""

    MIN_LABEL_GAP = 2.5  # label heights from one label to the next, at least

    def logTickValues(self, minVal, maxVal, size, stdTicks):
        font = self.style.get("tickFont")
        height = QFontMetrics(font).height() if font is not None else 14
        gap = height * self.MIN_LABEL_GAP * (maxVal - minVal) / max(1.0, size)  # in decades
        return [(None, log_ticks(minVal, maxVal, gap))]

    def logTickStrings(self, values, scale, spacing):
        return [format_tick(10 ** v * scale) for v in values]


def log_ticks(lo: float, hi: float, min_gap: float) -> list[float]:
    """log10 positions of ticks between 10**lo and 10**hi, no two closer than ``min_gap``
    decades: the decades (every 2nd, 5th ... when they crowd), else 1-2-5, else 1..9, else
    plain linear steps (a range inside one step of 1..9)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    first, last = math.floor(lo), math.ceil(hi)
    decades = [float(e) for e in range(first, last + 1) if lo <= e <= hi]
    if len(decades) >= 3 or (decades and min_gap > math.log10(2)):
        stride = next(s for s in (1, 2, 3, 5, 10, 20, 50, 100, 1000) if s >= min_gap)
        return [e for e in decades if e % stride == 0] or decades[:1]
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        values = [v for e in range(first, last + 1) for m in mantissas if lo <= (v := e + math.log10(m)) <= hi]
        if len(values) >= 2 and min(np.diff(values)) >= min_gap:
            return values
        if len(values) >= 2:  # they crowd: the coarser set (1-2-5 or decades) is the most that fits
            return decades or values[:1]
    a, b = 10 ** lo, 10 ** hi
    step = 10 ** math.floor(math.log10((b - a) / 2))
    values = [k * step for k in range(math.ceil(a / step), math.floor(b / step) + 1)]
    return [math.log10(v) for v in values if v > 0]


def format_tick(value: float) -> str:
    """A tick label in one style: 0.001, 0.05, 1, 20, 300; 1e-05 only far from 1."""
    if value == 0 or not math.isfinite(value):
        return "0"
    if 1e-4 <= abs(value) < 1e5:
        digits = max(0, -math.floor(math.log10(abs(value))) + 1)
        text = f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
