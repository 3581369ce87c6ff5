"""Live learning curves: every IMB loss term as its own curve, and accuracy per task.

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
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QCheckBox, QGraphicsItem, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from kfstudio.core.imb import TERMS
from kfstudio.gui.theme import theme_manager

REDRAW_MS = 50  # 20 Hz
IDLE_TICKS = 4  # redraw ticks without new data before the timer stops
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


class _LogAxis(pg.AxisItem):
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


class _ThemedPlot(QWidget):
    """A pyqtgraph PlotWidget with a header row, themed colours and PNG export."""

    def __init__(self, title: str, y_label: str, parent=None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(axisItems={"left": _LogAxis("left")})
        self.plot.setMenuEnabled(False)
        # No grid: pyqtgraph repaints its grid lines across the whole plot on every frame, and
        # that alone kept the GUI thread busy for half of a live run (benchmarks/gui_responsiveness:
        # 99th-percentile lateness 50 ms with a grid, 21 ms without). Ticks stay on the axes.
        self.plot.setClipToView(True)  # zoomed in, only the visible part is drawn
        self.plot.setLabel("bottom", "epoch")
        self.plot.setLabel("left", y_label)
        self.legend = self._legend_below()
        self.title = QLabel(title)
        self.header = QHBoxLayout()
        self.header.addWidget(self.title)
        self.header.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.header)
        layout.addWidget(self.plot, 1)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._dirty = False
        self._idle_ticks = 0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse timer may come 5 % late
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()

    def _legend_below(self) -> pg.LegendItem:
        """A legend under the plot, not over it: it never hides a curve."""
        item = self.plot.getPlotItem()
        legend = pg.LegendItem(colCount=3, horSpacing=12)
        item.layout.addItem(legend, 4, 1)
        item.legend = legend  # plot(name=...) adds its curve here
        legend.setVisible(False)  # shown once it holds a curve: no empty box before a run
        return legend

    def set_span(self, epochs: float) -> None:
        """Fix the x axis to the whole run (0 to ``epochs``) when its length is known: the curves
        grow across a still frame, so the axis is not laid out and drawn again on every redraw,
        and the cached part of each curve stays valid."""
        if epochs > 0:
            self.plot.getViewBox().enableAutoRange(x=False)
            self.plot.setXRange(0, epochs, padding=0.02)

    def fit_span_to_data(self) -> None:
        """Let the x axis follow the data again (a saved run may have stopped before its span)."""
        self.plot.getViewBox().enableAutoRange(x=True)

    def _show_legend(self) -> None:
        self.legend.setVisible(bool(self.legend.items))

    # ---- buffering and drawing
    def _mark_dirty(self) -> None:
        self._dirty = True
        if not self._timer.isActive():
            self._idle_ticks = 0
            self._timer.start()

    def _on_timer_timeout(self) -> None:
        if self._dirty:
            self._idle_ticks = 0
            self.flush()
            return
        # A short gap between reports keeps the cadence (a restarted timer would redraw 50 ms after
        # the next report, not on the beat: ~17 Hz instead of 20); a long one stops the wake-ups.
        self._idle_ticks += 1
        if self._idle_ticks >= IDLE_TICKS:
            self._timer.stop()

    def flush(self) -> None:
        """Draw everything buffered now (the timer would within 50 ms)."""
        self._dirty = False
        self.redraw()
        self._settle()

    def _settle(self) -> None:
        """Fit the axes to the new data now, not while painting: pyqtgraph fits them in the paint
        itself, and what the fit changes (the range, the axes, the clipped curves) asks for a second
        paint at once, so every redraw painted the plot twice."""
        self.plot.getViewBox().prepareForPaint()

    def redraw(self) -> None:
        raise NotImplementedError

    def curve_data(self, name: str) -> tuple[list[float], list[float]]:
        """The points a curve shows now (for tests and exports)."""
        curve = self.curves.get(name)
        if curve is None or curve.xData is None:
            return [], []
        return list(curve.xData), list(curve.yData)

    # ---- theme
    def pen_for(self, index: int, width: float = 2.0, dashed: bool = False):
        theme = theme_manager().theme
        style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
        return pg.mkPen(theme.curve(index), width=width * theme_manager().scale, style=style)

    def _on_theme_changed(self) -> None:
        theme = theme_manager().theme
        self.plot.setBackground(theme.base)
        font = theme_manager().font(0.9)
        for name in ("left", "bottom"):
            axis = self.plot.getAxis(name)
            axis.setPen(pg.mkPen(theme.muted))
            axis.setTextPen(pg.mkPen(theme.text))
            axis.setTickFont(font)
            axis.label.setFont(font)
        self.legend.setBrush(pg.mkBrush(theme.base + "d0"))
        self.legend.setPen(pg.mkPen(theme.grid))
        self.legend.setLabelTextColor(theme.text)
        self.legend.setLabelTextSize(f"{font.pointSizeF():.0f}pt")
        for _sample, label in self.legend.items:
            label.setText(label.text, color=theme.text, size=f"{font.pointSizeF():.0f}pt")
        self.title.setFont(theme_manager().font(1.1, bold=True))
        self.recolour()

    def recolour(self) -> None:
        for i, curve in enumerate(self.curves.values()):
            curve.setPen(self.pen_for(i))

    def curve_colour(self, name: str) -> str:
        """The colour a curve is drawn in now, as #rrggbb."""
        return self.curves[name].opts["pen"].color().name()

    # ---- export
    def export_png(self, path: str | Path, width: int = 1600) -> Path:
        """Write the plot as a PNG image; returns the path written."""
        from pyqtgraph.exporters import ImageExporter

        self.flush()
        exporter = ImageExporter(self.plot.plotItem)
        exporter.parameters()["width"] = int(width)
        path = Path(path)
        exporter.export(str(path))
        return path


class LossPlotWidget(_ThemedPlot):
    """The total loss and each IMB term as its own curve, with a linear/log switch."""

    log_scale_changed = Signal(bool)

    def __init__(self, parent=None) -> None:
        super().__init__("Loss terms", "loss", parent)
        self.log_box = QCheckBox("Log scale")
        self.log_box.setToolTip("Show the losses on a logarithmic axis. loss_infomax can be negative, "
                                "so in log scale its absolute value |loss_infomax| is drawn.")
        self.log_box.toggled.connect(self._on_log_box_toggled)
        self.header.addWidget(self.log_box)
        self.plot.setToolTip("\n".join(f"{k}: {v}" for k, v in LOSS_HELP.items()))
        self.series = DecimatedSeries(LOSS_KEYS)
        self._tails: dict[str, pg.PlotDataItem] = {}
        self._history_key = None  # which points the cached history curves show
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
        when the series merges its points, or when the axes change."""
        x = self.series.x
        # the cached part ends on a settled point: the provisional last one changes with every report
        split = max(0, (self.series.size - 1) // TAIL_POINTS * TAIL_POINTS)
        history_key = (split, self.series.generation, self.log_scale)
        for key, curve in self.curves.items():
            values = self._shown(self.series.y(key))
            if history_key != self._history_key:
                curve.setData(x[:split + 1], values[:split + 1])
            self._tails[key].setData(x[split:], values[split:])
        self._history_key = history_key

    def _shown(self, values: np.ndarray) -> np.ndarray:
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
        self.plot.setLabel("left", "loss (log scale; |loss_infomax|)" if on else "loss")
        self.flush()
        self.plot.getViewBox().enableAutoRange(y=True)  # x keeps the run's span
        self.log_scale_changed.emit(on)


class AccuracyPlotWidget(_ThemedPlot):
    """Test accuracy per task (thin) and per task group (thick) after each epoch.

    Where the data has no labels, agreement with the teacher is drawn instead.
    """

    def __init__(self, parent=None) -> None:
        super().__init__("Accuracy on the test split", "accuracy", parent)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.plot.setToolTip("Accuracy of each task (thin lines) and each group of tasks (thick lines) after "
                             "every epoch. Dashed lines show the teacher's accuracy for comparison.")
        self._x: list[float] = []
        self._y: dict[str, list[float]] = {}
        self._groups: set[str] = set()
        self._teacher: dict[str, float] = {}
        self._titles: dict[str, str] = {}

    def set_titles(self, titles: dict[str, str]) -> None:
        """How each task is named in the legend ("digit 7" rather than "7")."""
        self._titles = dict(titles)

    def reset(self) -> None:
        self._x.clear()
        self._y.clear()
        self._groups.clear()
        self._teacher.clear()
        self.legend.clear()
        self.plot.clear()
        self.curves.clear()
        self.fit_span_to_data()
        self._show_legend()

    def set_teacher_metrics(self, metrics: dict) -> None:
        """Dashed reference lines at the teacher's accuracy for each group."""
        self._teacher = {k: _value(m) for k, m in metrics.items()}

    def add_report(self, report) -> None:
        """Buffer one EvalReport."""
        self._x.append(float(report.epoch))
        for name, metrics in list(report.groups.items()) + list(report.tasks.items()):
            if name in report.groups:
                self._groups.add(name)
            series = self._y.setdefault(name, [math.nan] * (len(self._x) - 1))
            series.append(_value(metrics))
        self._mark_dirty()

    @property
    def point_count(self) -> int:
        return len(self._x)

    def prepare(self, groups, tasks) -> None:
        """Make the curves (and legend entries) a run will fill before its first epoch ends: made
        at the first epoch's end, during training, they were the longest stall of a live run."""
        self._groups.update(groups)
        for name in [*groups, *tasks]:
            self._y.setdefault(name, [math.nan] * len(self._x))
            self._curve(name)
        self._fit_legend()

    def redraw(self) -> None:
        for name, values in self._y.items():
            self._curve(name).setData(self._x[:len(values)], values)
        self._fit_legend()

    def _curve(self, name: str) -> pg.PlotDataItem:
        curve = self.curves.get(name)
        if curve is not None:
            return curve
        index = len(self.curves)
        group = name in self._groups
        label = f"{name} (all)" if group else self._titles.get(name, name)
        colour = theme_manager().theme.curve(index)  # the dots too: pyqtgraph's default is one navy
        curve = self.plot.plot([], [], name=label, pen=self.pen_for(index, 3.5 if group else 1.5),
                               symbol="o", symbolSize=6 if group else 4, symbolBrush=pg.mkBrush(colour),
                               symbolPen=pg.mkPen(colour), antialias=True)
        self.curves[name] = curve
        if group and name in self._teacher:
            line = pg.InfiniteLine(self._teacher[name], angle=0, pen=self.pen_for(index, 1.5, dashed=True))
            line.setToolTip(f"The teacher's accuracy on {name}")
            self.plot.addItem(line)
        return curve

    def _fit_legend(self) -> None:
        self.legend.setColumnCount(min(6, max(1, len(self.curves))))
        self._show_legend()

    def recolour(self) -> None:
        for i, (name, curve) in enumerate(self.curves.items()):
            curve.setPen(self.pen_for(i, 3.5 if name in self._groups else 1.5))
            curve.setSymbolBrush(pg.mkBrush(theme_manager().theme.curve(i)))
            curve.setSymbolPen(pg.mkPen(theme_manager().theme.curve(i)))


def _value(metrics) -> float:
    value = metrics.accuracy if metrics.accuracy is not None else metrics.agreement
    return float("nan") if value is None else float(value)
