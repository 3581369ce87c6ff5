"""The plots' bounded cost and readable axes."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtWidgets import QGraphicsItem

from kfstudio.core.runs import StepReport
from kfstudio.gui.train.plots.accuracy import AccuracyPlotWidget
from kfstudio.gui.train.plots.loss import MAX_POINTS, DecimatedSeries, LossPlotWidget


def _step(step: int, losses: dict) -> StepReport:
    return StepReport(step, 100_000, step / 100, losses, 0.1, 1000.0, 1.0, 1.0)


def test_decimated_series_keeps_a_bounded_history_of_bucket_means():
    series = DecimatedSeries(("a", "b"), capacity=100)
    for i in range(1, 1001):
        series.append(float(i), {"a": i * 2.0, "b": float(i % 2)})
        assert series.points <= 100
    assert series.seen == 1000 and series.stride == 16
    x, settled = series.x, series.size
    assert x[0] == 8.5 and np.all(np.diff(x[:settled]) == series.stride)  # means of 1..16, 17..32, ...
    assert np.array_equal(series.y("a"), x * 2)  # x and y stay paired through every merge
    assert np.all(series.y("b")[:settled] == 0.5)  # a mean, not one sampled step of an alternating loss
    assert x[-1] == (993 + 1000) / 2  # the bucket still filling is shown: the curve ends at the newest report
    series.append(1001.0, {"a": math.nan, "b": 0.0})
    assert math.isnan(series.y("a")[-1])  # a NaN loss stays visible as a gap, never averaged away


def test_loss_plot_redraws_only_the_tail_of_a_long_curve(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    history = plot.curves["loss"]
    assert history.curve.cacheMode() == QGraphicsItem.CacheMode.DeviceCoordinateCache
    for step in range(1, 501):
        plot.add_report(_step(step, {"loss": 1.0 / step}))
    plot.flush()
    settled = len(history.xData)
    plot.add_report(_step(501, {"loss": 0.001}))
    plot.flush()
    assert len(history.xData) == settled  # the cached history was not drawn again
    xs, ys = plot.curve_data("loss")
    assert len(xs) == 501 and ys[-1] == 0.001 and ys[:settled] == list(history.yData)


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


def _labels(axis, lo: float, hi: float, size: int) -> tuple[list[float], list[str]]:
    values = [v for _spacing, level in axis.logTickValues(lo, hi, size, []) for v in level]
    return values, axis.logTickStrings(values, 1.0, None)


def test_log_axis_labels_one_style_and_never_crowd(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    axis = plot.plot.getAxis("left")
    values, labels = _labels(axis, -3.0, 1.5, 400)
    assert labels == ["0.001", "0.01", "0.1", "1", "10"]  # decades in plain numbers, no "10¹"
    values, labels = _labels(axis, -6.0, 3.0, 200)  # nine decades in 200 px: every other one
    assert len(labels) <= 6 and "1" in labels and not any("⁻" in t or "¹" in t for t in labels)
    for lo, hi, size in ((-1.2, -0.9, 400), (-1.2, -0.9, 80), (-1.3, 0.2, 300), (-0.45, -0.4, 300)):
        values, labels = _labels(axis, lo, hi, size)
        assert values and len(set(labels)) == len(labels)
        gaps = np.diff(values) * size / (hi - lo)
        assert all(g >= 28 for g in gaps), (lo, hi, labels)  # 2.5 label heights of the 14 px default font


def test_legend_sits_below_the_curves(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    plot.resize(800, 420)
    plot.show()
    for step in range(1, 50):
        plot.add_report(_step(step, {key: 1.0 / step for key in plot.curves}))
    plot.flush()
    qtbot.waitUntil(lambda: plot.legend.isVisible())
    view = plot.plot.getViewBox().sceneBoundingRect()
    legend = plot.legend.sceneBoundingRect()
    assert legend.top() >= view.bottom() - 1  # it never covers a curve, loss_infomin included
    assert "loss_infomin" in [label.text for _sample, label in plot.legend.items]


def test_accuracy_legend_hidden_until_there_is_a_curve(qtbot):
    from kfstudio.core.runs import EvalReport
    from kfstudio.core.measures.metrics import TaskMetrics

    plot = AccuracyPlotWidget()
    qtbot.addWidget(plot)
    plot.show()
    assert not plot.legend.isVisible()
    m = TaskMetrics(0.9, 0.95, 0.97, 100)
    plot.add_report(EvalReport(1, 10, {"0": m}, {"digit": m}))
    plot.flush()
    assert plot.legend.isVisible() and len(plot.legend.items) == 2
    dots = {name: curve.opts["symbolBrush"].color().name() for name, curve in plot.curves.items()}
    assert dots == {name: plot.curve_colour(name) for name in plot.curves}  # each task's dots in its colour
    assert len(set(dots.values())) == 2
    plot.reset()
    assert not plot.legend.isVisible()


def test_accuracy_curves_are_made_when_the_run_starts_not_mid_training(qtbot):
    from kfstudio.core.runs import EvalReport

    plot = AccuracyPlotWidget()
    qtbot.addWidget(plot)
    plot.set_each_task(True)
    plot.set_titles({"3": "digit 3"})
    plot.prepare(["digit"], ["3", "7"])
    assert list(plot.curves) == ["digit", "3", "7"] and plot.legend.isVisible()
    assert [label.text for _sample, label in plot.legend.items] == ["digit (all)", "digit 3", "7"]
    made = dict(plot.curves)
    report = EvalReport(epoch=1, step=10, tasks={"3": _metrics(0.9), "7": _metrics(0.8)}, groups={"digit": _metrics(0.85)})
    plot.add_report(report)
    plot.flush()
    assert plot.curves == made  # the same items, now filled
    assert plot.curve_data("digit") == ([1.0], [0.85]) and plot.curve_data("7") == ([1.0], [0.8])


def _metrics(accuracy: float):
    from kfstudio.core.measures.metrics import TaskMetrics

    return TaskMetrics(accuracy=accuracy, agreement=accuracy, teacher_accuracy=1.0, samples=100)


def test_drawn_curve_follows_the_series_while_buckets_fill(qtbot):
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    for step in range(1, MAX_POINTS + 200):  # past the first merge: buckets of 2, a provisional last point
        plot.add_report(_step(step, {"loss": 1.0 + (step % 7)}))
        plot.flush()
        xs, ys = plot.curve_data("loss")
        assert xs == list(plot.series.x) and ys == list(plot.series.y("loss")), step
        cached = plot.curves["loss"].yData  # the cached part holds settled points only, never the provisional one
        assert list(cached) == ys[:len(cached)], step


def test_shapes_view_shows_a_small_term_as_plainly_as_a_big_one(qtbot):
    """One raw term (about 11, weighted 1e-3 in the total) squashed every other curve into the
    bottom tenth of the plot; in the Shapes view each term spans its own 0 to 1."""
    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    for step in range(1, 200):
        plot.add_report(_step(step, {"loss": 0.5 + 1.0 / step, "loss_infomin": 11.0 + 2.0 / step,
                                     "loss_infomax": -0.01 * step / 200}))
    plot.flush()
    small = plot.curve_data("loss")[1]
    assert max(small) < 0.15 * max(plot.curve_data("loss_infomin")[1])  # raw: the total is a flat line
    plot.set_shapes(True)
    plot.flush()
    assert not plot.log_box.isEnabled()
    for name in ("loss", "loss_infomin", "loss_infomax"):
        ys = plot.curve_data(name)[1]
        assert min(ys) <= 0.05 and max(ys) >= 0.95, name  # every term fills the height
    assert plot.curve_data("loss")[1][0] == 1.0  # it starts at its highest and falls
    history = plot.curves["loss"]
    settled = list(history.yData)
    plot.add_report(_step(200, {"loss": 0.4}))
    plot.flush()
    assert list(history.yData) == settled  # the cached part is not drawn again for one report
    plot.set_shapes(False)
    plot.flush()
    assert plot.curve_data("loss")[1][:3] == small[:3]


def test_accuracy_shows_the_tasks_as_one_band_with_the_teacher(qtbot):
    """Eleven overlapping task curves near 100 % became an average line and a lowest-highest band."""
    from kfstudio.core.runs import EvalReport

    plot = AccuracyPlotWidget()
    qtbot.addWidget(plot)
    plot.show()
    tasks = [str(i) for i in range(10)]
    plot.set_teacher_metrics({"digit": _metrics(0.97)})
    plot.prepare(["digit"], tasks)
    for epoch, base in ((1, 0.80), (2, 0.90)):
        plot.add_report(EvalReport(epoch=epoch, step=10 * epoch, groups={"digit": _metrics(base)},
                                   tasks={t: _metrics(base + i / 100) for i, t in enumerate(tasks)}))
    plot.flush()
    x, mean, low, high = plot.band.values()
    assert x == [1.0, 2.0] and low == [0.80, 0.90] and high == [0.89, 0.99]
    assert abs(mean[1] - 0.945) < 1e-9
    labels = [label.text for _sample, label in plot.legend.items]
    assert labels == ["digit (all)", "tasks: average (shaded: lowest to highest)"]  # not eleven entries
    assert not plot.curves["3"].isVisible() and plot.band.mean.isVisible()
    teacher = [item for item in plot.plot.getPlotItem().items if type(item).__name__ == "InfiniteLine"]
    assert [line.value() for line in teacher] == [0.97]
    plot.set_each_task(True)
    assert plot.curves["3"].isVisible() and not plot.band.mean.isVisible()
    assert len(plot.legend.items) == 11
    colours = {plot.curve_colour(name) for name in plot.curves}
    assert len(colours) == 11  # every curve its own colour
