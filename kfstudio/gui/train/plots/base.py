"""The plots' common part: a pyqtgraph plot with a header row, a legend under the curves, a
fixed x axis for the whole run, the ~20 Hz redraw timer, the theme, and PNG export
(kfstudio.gui.train.plots has the design notes)."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from kfstudio.gui.train.plots.axes import LogAxis
from kfstudio.gui.theme import theme_manager

REDRAW_MS = 50  # 20 Hz
IDLE_TICKS = 4  # redraw ticks without new data before the timer stops


class ThemedPlot(QWidget):
    """A pyqtgraph PlotWidget with a header row, themed colours and PNG export."""

    def __init__(self, title: str, y_label: str, parent=None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(axisItems={"left": LogAxis("left")})
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
