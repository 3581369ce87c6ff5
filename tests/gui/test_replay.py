"""A run's reports come back: drawn again when its folder is opened, and replayed at 1x-20x."""

from __future__ import annotations

import shutil

from kfstudio.core.runs import EvalReport, SetupReport, StepReport
from kfstudio.core.measures.metrics import TaskMetrics
from kfstudio.gui.main_window import FACTORIZE
from kfstudio.gui.train.replay import RunReplay, report_times
from kfstudio.io.reports import read_reports, write_reports

STEPS = 60


def _recorded_run(folder, seconds: float = 3.0) -> list:
    m = TaskMetrics(0.9, 0.95, 0.97, 100)
    reports = [SetupReport(("hello",), ("0", "1"), ("digit 0", "digit 1"), "cpu", 30, STEPS, 0, {"common": 10},
                           {"digit": m})]
    for step in range(1, STEPS + 1):
        reports.append(StepReport(step, STEPS, step / 30, {"loss": 2.0 / step, "loss_infomax": -0.3}, 0.1, 500.0,
                                  1.0, seconds * step / STEPS))
        if step % 30 == 0:
            reports.append(EvalReport(step // 30, step, {"0": m, "1": m}, {"digit": m}))
    write_reports(folder, reports)
    return reports


def test_reports_round_trip_as_plain_json(tmp_path):
    reports = _recorded_run(tmp_path)
    assert read_reports(tmp_path) == reports
    assert "pickle" not in (tmp_path / "reports.jsonl").read_text()[:200]
    times = report_times(reports)
    assert times[0] == 0.0 and times == sorted(times) and times[-1] == reports[-2].elapsed_s - reports[1].elapsed_s


def test_replay_plays_on_the_training_clock_faster(qtbot, tmp_path):
    reports = _recorded_run(tmp_path, seconds=4.0)
    replay = RunReplay(reports, 20, None)
    shown = []
    replay.report.connect(shown.append)
    replay.start()
    assert 0 < len(shown) < len(reports)  # not everything at once
    assert abs(replay.duration_s - 0.2 * (STEPS - 1) / STEPS) < 0.01
    with qtbot.waitSignal(replay.finished, timeout=5_000):
        pass
    assert shown == reports


def test_file_replay_fills_the_same_plots(qtbot, window, tmp_path):
    _recorded_run(tmp_path)
    assert window.replay_run(tmp_path, 20)
    page = window.factorize_page
    assert window.tabs.currentIndex() == FACTORIZE and page.replay is not None
    qtbot.waitUntil(lambda: page.replay is None, timeout=10_000)
    assert page.step_count == STEPS and page.progress.format().startswith("Replay finished")
    page.loss_plot.flush()
    assert len(page.loss_plot.curve_data("loss")[0]) == STEPS
    page.accuracy_plot.flush()
    assert page.accuracy_plot.curve_data("digit")[0] == [1.0, 2.0]


def test_opening_a_run_folder_draws_its_curves_again(window, digits_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(digits_run[1], folder)
    _recorded_run(folder)
    assert window.load_run(folder)
    page = window.factorize_page
    assert page.step_count == STEPS and page.shown_folder == folder.resolve()
    assert "Epoch 2: accuracy digit 90.0%" in page.log.toPlainText()
    assert page.progress.format().startswith("Saved run")


def test_a_folder_without_reports_cannot_be_replayed(window, tmp_path, message_boxes):
    assert not window.replay_run(tmp_path, 10)
    assert message_boxes and "no recorded reports" in message_boxes[-1][1]


def test_a_live_run_spans_its_epochs_and_a_saved_one_fits_its_data(window, digits_run, tmp_path):
    from dataclasses import replace

    folder = tmp_path / "run"
    shutil.copytree(digits_run[1], folder)
    reports = _recorded_run(folder)
    planned = replace(reports[0], total_steps=20 * 30)  # 20 epochs planned, 2 done: a run stopped early
    write_reports(folder, [planned, *reports[1:]])
    page = window.factorize_page
    page.clear_curves()
    page.take_report(planned)
    for plot in (page.loss_plot, page.accuracy_plot):
        low, high = plot.plot.getViewBox().viewRange()[0]
        assert low <= 0 and 20 <= high < 21  # the whole run's frame from its first report: nothing relaid per frame
    assert window.load_run(folder)
    page.loss_plot.flush()
    assert page.loss_plot.plot.getViewBox().viewRange()[0][1] < 3  # the saved run fills the plot
