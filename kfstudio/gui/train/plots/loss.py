"""Live learning curves: every IMB loss term as its own curve (kfstudio.gui.train.plots.accuracy has
the accuracy plot, kfstudio.gui.train.plots.base their common part).

Reports are buffered as they arrive and drawn with ``setData`` by a ~20 Hz timer, so the
trainer never waits for the GUI however fast it reports ("throttle the plot, not the
trainer"). The paint cost is bounded whatever the run's length (benchmarks/gui_responsiveness):
each loss curve keeps at most ``MAX_POINTS`` bucket means (``DecimatedSeries``), its settled
part is cached as an image and only the newest points are drawn on each frame, the x axis
spans the whole run from its first report, the axes are fitted before painting (not during
it, which painted twice), and loss curves are drawn without antialiasing. Both plots follow
the theme and the UI scale, and export to PNG (pyqtgraph's SVG exporter is broken on Qt 6.12,
so PNG only). pyqtgraph's global options are set in one place,
``kfstudio.gui.theme.configure_pyqtgraph`` (the studio and its benchmarks call it)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QGraphicsItem

from kfstudio.core.imb import TERMS
from kfstudio.gui.train.plots.base import ThemedPlot

LOSS_KEYS = ("loss",) + TERMS
LOSS_HELP = {
    "loss": "the total IMB objective that is minimised",
    "loss_cls": "classification: each brick against the labels",
    "loss_task": "task head: the brick's own features alone classify the task",
    "loss_kd": "distillation: bricks match the teacher's logits",
    "loss_infomax": "InfoMax: common features keep the teacher's information (can be negative)",
    "loss_infomin": "InfoMin (bottleneck): each brick keeps no more than its task needs",
}
_LOG_FLOOR = 1e-6
MAX_POINTS = 1000  # per curve: about one per pixel of a wide plot, a bounded cost per redraw
TAIL_POINTS = 32  # the newest points of a curve, drawn anew on every frame (the rest is cached)


class DecimatedSeries:
    """x and several y series of at most ``capacity`` points, kept in numpy.

    Each point is the mean of ``stride`` consecutive reports (its x too). When the buffer is
    full, neighbouring points merge in pairs and the stride doubles, so a run of any length
    costs the same to draw, and every point summarises as many steps as its neighbours: the
    curve shows the trend, not whichever step happened to be kept. The bucket still filling is
    shown as a provisional last point, so the end of the curve follows every report."""

    def __init__(self, keys, capacity: int = MAX_POINTS) -> None:
        self.keys = tuple(keys)
        self.capacity = max(4, capacity - capacity % 2)
        self._data = np.full((len(self.keys) + 1, self.capacity), np.nan)
        self.generation = 0
        self.clear()

    def clear(self) -> None:
        self.size, self.stride, self.seen = 0, 1, 0
        self.generation += 1  # changes whenever the kept points change place
        self._sums = [0.0] * (len(self.keys) + 1)  # the bucket being filled: x, then each key
        self._count = 0

    def append(self, x: float, values: dict) -> None:
        self.seen += 1
        sums = self._sums
        sums[0] += x
        for i, key in enumerate(self.keys, 1):
            sums[i] += values.get(key, math.nan)
        self._count += 1
        if self._count < self.stride:
            return
        self._data[:, self.size] = np.divide(sums, self._count)
        self.size += 1
        self._sums = [0.0] * len(sums)
        self._count = 0
        if self.size == self.capacity:
            half = self.capacity // 2
            self._data[:, :half] = (self._data[:, 0::2] + self._data[:, 1::2]) / 2
            self.size = half
            self.stride *= 2
            self.generation += 1

    def _row(self, index: int) -> np.ndarray:
        kept = self._data[index, :self.size]
        if not self._count:
            return kept
        return np.append(kept, self._sums[index] / self._count)

    @property
    def points(self) -> int:
        """Points on screen per curve (at most ``capacity``)."""
        return self.size + bool(self._count)

    @property
    def x(self) -> np.ndarray:
        return self._row(0)

    def y(self, key: str) -> np.ndarray:
        return self._row(self.keys.index(key) + 1)


class LossPlotWidget(ThemedPlot):
    """The total loss and each IMB term as its own curve, with a linear/log switch."""

    log_scale_changed = Signal(bool)

    def __init__(self, parent=None) -> None:
        super().__init__("Loss terms", "loss", parent)
        self.log_box = QCheckBox("Log scale")
        self.log_box.setToolTip("Show the losses on a logarithmic axis. loss_infomax can be negative, "
                                "so in log scale its absolute value |loss_infomax| is drawn.")
        self.log_box.toggled.connect(self._on_log_box_toggled)
        self.shapes_box = QCheckBox("Shapes")
        self.shapes_box.setToolTip("Draw each term on its own scale, from its lowest (0) to its highest (1) value, "
                                   "so a term much smaller than the others still shows how it moves.")
        self.shapes_box.toggled.connect(self._on_shapes_box_toggled)
        self.header.addWidget(self.shapes_box)
        self.header.addWidget(self.log_box)
        self.plot.setToolTip("\n".join(f"{k}: {v}" for k, v in LOSS_HELP.items()))
        self.series = DecimatedSeries(LOSS_KEYS)
        self._tails: dict[str, pg.PlotDataItem] = {}
        self._history_keys: dict[str, tuple] = {}  # which points each cached history curve shows
        for key in LOSS_KEYS:
            self.curves[key] = self.plot.plot([], [], name=key, antialias=False)
            self.curves[key].curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            self._tails[key] = self.plot.plot([], [], antialias=False)
        self.legend.setColumnCount(len(LOSS_KEYS))
        self._show_legend()
        self.recolour()

    @property
    def log_scale(self) -> bool:
        return self.log_box.isChecked()

    def set_log_scale(self, on: bool) -> None:
        self.log_box.setChecked(on)

    @property
    def shapes(self) -> bool:
        """Each term scaled to its own range (0 to 1), not the raw values."""
        return self.shapes_box.isChecked()

    def set_shapes(self, on: bool) -> None:
        self.shapes_box.setChecked(on)

    def reset(self) -> None:
        self.series.clear()
        self.fit_span_to_data()
        self.flush()

    def add_report(self, report) -> None:
        """Buffer one StepReport (cheap; drawing happens on the timer)."""
        self.series.append(float(report.epoch), report.losses)
        self._mark_dirty()

    @property
    def point_count(self) -> int:
        """Points on screen per curve (at most MAX_POINTS)."""
        return self.series.points

    @property
    def reports_seen(self) -> int:
        return self.series.seen

    def redraw(self) -> None:
        """Each curve is its settled history, drawn once into a cached image (Qt's device-coordinate
        cache) and blitted on every frame, plus the live tail since the last TAIL_POINTS boundary,
        the only part drawn anew. Drawing all six whole curves on every frame was most of the
        window's work during a run; the history is drawn again only when it grows by TAIL_POINTS,
        when the series merges its points, or when the axes change.

        In the "Shapes" view a term's range is read from its settled history, so it changes only
        when that history is drawn again anyway (the tail may reach a little past 0 or 1)."""
        x = self.series.x
        # the cached part ends on a settled point: the provisional last one changes with every report
        split = max(0, (self.series.size - 1) // TAIL_POINTS * TAIL_POINTS)
        for key, curve in self.curves.items():
            raw = self.series.y(key)
            span = _span(raw[:split + 1] if split else raw) if self.shapes else None
            values = self._shown(raw, span)
            history_key = (split, self.series.generation, self.log_scale, span)
            if history_key != self._history_keys.get(key):
                curve.setData(x[:split + 1], values[:split + 1])
                self._history_keys[key] = history_key
            self._tails[key].setData(x[split:], values[split:])

    def _shown(self, values: np.ndarray, span: tuple[float, float] | None) -> np.ndarray:
        if span is not None:
            low, high = span
            return (values - low) / (high - low) if high > low else np.where(np.isnan(values), np.nan, 0.5)
        return np.maximum(np.abs(values), _LOG_FLOOR) if self.log_scale else values

    def curve_data(self, name: str) -> tuple[list[float], list[float]]:
        """The points a loss curve shows now, its history and its tail together (they share a point)."""
        hx, hy = super().curve_data(name)
        tail = self._tails[name]
        if tail.xData is None or not len(tail.xData):
            return hx, hy
        return hx[:-1] + list(tail.xData), hy[:-1] + list(tail.yData)

    def recolour(self) -> None:
        for i, (key, curve) in enumerate(self.curves.items()):
            pen = self.pen_for(i, 3.0 if key == "loss" else 2.0)
            curve.setPen(pen)
            self._tails[key].setPen(pen)

    def _on_log_box_toggled(self, on: bool) -> None:
        self.plot.setLogMode(y=on)
        for _sample, label in self.legend.items:
            if label.text.startswith("loss_infomax") or label.text.startswith("|loss_infomax|"):
                label.setText("|loss_infomax|" if on else "loss_infomax")
        self._label_axis()
        self.flush()
        self.plot.getViewBox().enableAutoRange(y=True)  # x keeps the run's span
        self.log_scale_changed.emit(on)

    def _on_shapes_box_toggled(self, on: bool) -> None:
        self.log_box.setEnabled(not on)  # 0 to 1 needs no log axis
        if on and self.log_scale:
            self.log_box.setChecked(False)
        self._label_axis()
        self.flush()
        self.plot.getViewBox().enableAutoRange(y=True)

    def _label_axis(self) -> None:
        if self.shapes:
            self.plot.setLabel("left", "each term: lowest 0 … highest 1")
        else:
            self.plot.setLabel("left", "loss (log scale; |loss_infomax|)" if self.log_scale else "loss")


def _span(values: np.ndarray) -> tuple[float, float] | None:
    """The lowest and highest value of a curve (None while it has no value)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if len(finite) else None
