"""The accuracy plot: each group of tasks after every epoch, the tasks as one band or one curve
each, and the teacher's accuracy as dashed lines."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtWidgets import QCheckBox

from kfstudio.gui.train.plots.accuracy_band import LABEL as BAND_LABEL
from kfstudio.gui.train.plots.accuracy_band import TaskBand
from kfstudio.gui.train.plots.base import ThemedPlot
from kfstudio.gui.theme import theme_manager


class AccuracyPlotWidget(ThemedPlot):
    """Test accuracy per task group (thick) after each epoch, and the tasks as one band (their
    average, shaded from the lowest to the highest: ``TaskBand``) or, with "Each task", one thin
    curve per task.

    Where the data has no labels, agreement with the teacher is drawn instead.
    """

    def __init__(self, parent=None) -> None:
        super().__init__("Accuracy on the test split", "accuracy", parent)
        self.plot.setYRange(0, 1.02, padding=0)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.plot.setToolTip("Accuracy of each group of tasks (thick lines) and of the tasks (their average, "
                             "shaded from the lowest to the highest; or each task as a thin line) after every "
                             "epoch. Dashed lines show the teacher's accuracy for comparison.")
        self.each_task_box = QCheckBox("Each task")
        self.each_task_box.setToolTip("Draw every task as its own curve instead of one band for all of them")
        self.each_task_box.toggled.connect(self._on_each_task_box_toggled)
        self.header.addWidget(self.each_task_box)
        self.band: TaskBand | None = None
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
        self.band = None
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

    @property
    def each_task(self) -> bool:
        return self.each_task_box.isChecked()

    def set_each_task(self, on: bool) -> None:
        self.each_task_box.setChecked(on)

    def _tasks(self) -> list[str]:
        return [name for name in self._y if name not in self._groups]

    def redraw(self) -> None:
        for name, values in self._y.items():
            self._curve(name).setData(self._x[:len(values)], values)
        tasks = self._tasks()
        if tasks:
            self._band().set_data(self._x, [self._y[name] for name in tasks])
        self._fit_legend()

    def _band(self) -> TaskBand:
        if self.band is None:
            self.band = TaskBand(self.plot)
            self._show_tasks()
        return self.band

    def _show_tasks(self) -> None:
        """The band or the task curves, in the plot and in the legend."""
        each = self.each_task
        for name in self._tasks():
            self._show_in_legend(self.curves.get(name), each, self._titles.get(name, name))
        if self.band is not None:
            self.band.set_visible(not each)
            self._show_in_legend(self.band.mean, not each, BAND_LABEL)

    def _show_in_legend(self, curve, on: bool, label: str) -> None:
        if curve is None:
            return
        curve.setVisible(on)
        listed = any(sample.item is curve for sample, _label in self.legend.items)
        if on and not listed:
            self.legend.addItem(curve, label)
        elif listed and not on:
            self.legend.removeItem(curve)

    def _on_each_task_box_toggled(self, _on: bool) -> None:
        self._show_tasks()
        self._fit_legend()
        self._on_theme_changed()  # legend labels in the current font

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
        if not group:
            self._band()
            self._show_in_legend(curve, self.each_task, label)
        if group and name in self._teacher:
            line = pg.InfiniteLine(self._teacher[name], angle=0, pen=self.pen_for(index, 1.5, dashed=True))
            line.setToolTip(f"The teacher's accuracy on {name}")
            self.plot.addItem(line)
        return curve

    def _fit_legend(self) -> None:
        self.legend.setColumnCount(min(6, max(1, len(self.curves))))
        self._show_legend()

    def recolour(self) -> None:
        if getattr(self, "band", None) is not None:
            self.band.recolour()
        for i, (name, curve) in enumerate(self.curves.items()):
            curve.setPen(self.pen_for(i, 3.5 if name in self._groups else 1.5))
            curve.setSymbolBrush(pg.mkBrush(theme_manager().theme.curve(i)))
            curve.setSymbolPen(pg.mkPen(theme_manager().theme.curve(i)))


def _value(metrics) -> float:
    value = metrics.accuracy if metrics.accuracy is not None else metrics.agreement
    return float("nan") if value is None else float(value)
