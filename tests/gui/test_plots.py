"""The plots' bounded cost and readable axes."""

from __future__ import annotations

import math

import numpy as np

from kfstudio.core.factorize import StepReport
from kfstudio.gui.plots import MAX_POINTS, AccuracyPlotWidget, DecimatedSeries, LossPlotWidget


def _step(step: int, losses: dict) -> StepReport:
    return StepReport(step, 100_000, step / 100, losses, 0.1, 1000.0, 1.0, 1.0)


def test_decimated_series_keeps_a_bounded_evenly_spaced_history():
    series = DecimatedSeries(("a",), capacity=100)
    for i in range(1, 1001):
        series.append(float(i), {"a": i * 2.0})
        assert series.size <= 100
    assert series.seen == 1000 and series.stride == 16
    x = series.x
    assert x[0] == 1.0 and np.all(np.diff(x) == series.stride)  # every stride-th report, from the first
    assert np.array_equal(series.y("a"), x * 2)  # x and y stay paired through every halving
    assert x[-1] > 1000 - series.stride  # the newest part of the run is on screen


def test_loss_plot_draws_at_most_max_points_per_curve(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    for step in range(1, 3 * MAX_POINTS):
        plot.add_report(_step(step, {"loss": 1.0 / step, "loss_infomax": -0.5}))
    plot.flush()
    xs, ys = plot.curve_data("loss")
    assert 0 < len(xs) <= MAX_POINTS and plot.reports_seen == 3 * MAX_POINTS - 1
    assert all(math.isnan(y) for y in plot.curve_data("loss_kd")[1])  # a term the run did not report
    assert not plot.curves["loss"].opts["antialias"]  # long live curves: no antialiasing


def test_log_axis_labels_decades_not_every_minor_tick(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    axis = plot.plot.getAxis("left")
    wide = axis.logTickValues(-3.0, 0.5, 400, [])
    minor = [v for spacing, values in wide if spacing is None for v in values]
    assert minor and all(abs(v - round(v)) < 1e-9 for v in minor)  # 0.001, 0.01, 0.1, 1 only
    narrow = axis.logTickValues(-1.2, -0.9, 400, [])  # 0.063 .. 0.126: 0.1 and 0.08 would crowd
    labels = sorted(round(10 ** v, 6) for spacing, values in narrow if spacing is None for v in values)
    assert labels == [0.1]


def test_accuracy_legend_hidden_until_there_is_a_curve(qtbot):
    from kfstudio.core.factorize import EvalReport
    from kfstudio.core.metrics import TaskMetrics

    plot = AccuracyPlotWidget()
    qtbot.addWidget(plot)
    plot.show()
    assert not plot.legend.isVisible()
    m = TaskMetrics(0.9, 0.95, 0.97, 100)
    plot.add_report(EvalReport(1, 10, {"0": m}, {"digit": m}))
    plot.flush()
    assert plot.legend.isVisible() and len(plot.legend.items) == 2
    plot.reset()
    assert not plot.legend.isVisible()
