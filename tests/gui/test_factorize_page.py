"""Driving a real (short) factorization from the studio, as a user would."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import QMessageBox

from kfstudio.gui.main_window import BUILD, FACTORIZE
from kfstudio.runner.training_child import TRAINING_NICENESS


def _open_digits(qtbot, window):
    with qtbot.waitSignal(window.loader.finished, timeout=120_000):   # the demo loads in the background
        qtbot.mouseClick(window.welcome_page.digits_button, Qt.MouseButton.LeftButton)
    assert window.tabs.currentIndex() == FACTORIZE
    assert window.factorize_page.choice is not None
    return window.factorize_page


def _drain_events() -> None:
    for _ in range(5):
        QCoreApplication.processEvents()


def test_demo_run_pause_resume_cancel(qtbot, window, short_run):
    page = _open_digits(qtbot, window)
    short_run(page, epochs=200)  # far more than it will run: the test cancels it
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.is_running and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: page.step_count >= 2, timeout=60_000)
    if hasattr(os, "getpriority"):  # the training process gives the CPU to the window first
        assert os.getpriority(os.PRIO_PROCESS, page.worker.pid) >= TRAINING_NICENESS

    page.loss_plot.flush()
    for key in ("loss", "loss_cls", "loss_task", "loss_kd", "loss_infomax", "loss_infomin"):
        xs, ys = page.loss_plot.curve_data(key)
        assert len(xs) > 0 and len(xs) == len(ys), key

    # Pause: the training thread really blocks inside RunControl.wait_while_paused.
    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert page.control.paused and page.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: page.control.blocked, timeout=30_000)
    _drain_events()  # deliver reports sent before the worker blocked
    paused_count = page.step_count
    _drain_events()
    assert page.control.blocked
    assert page.step_count == paused_count  # nothing new while the worker is blocked
    qtbot.waitUntil(lambda: page.progress.format().startswith("Paused"), timeout=5_000)

    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert not page.control.paused and page.pause_button.text() == "Pause"
    qtbot.waitUntil(lambda: page.step_count > paused_count, timeout=30_000)

    with qtbot.waitSignal(page.run_saved, timeout=60_000) as saved:
        qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    folder, cancelled = Path(saved.args[0]), saved.args[1]
    assert cancelled
    qtbot.waitUntil(lambda: not page.is_running, timeout=30_000)
    assert (folder / "common.safetensors").is_file()
    assert len(list((folder / "bricks").glob("*.safetensors"))) == 10
    assert json.loads((folder / "run.json").read_text())["cancelled"] is True
    assert folder.parent == window.home / "runs"
    assert str(folder) in window.run_folders
    assert page.start_button.isEnabled()
    if window.build_page is not None:
        assert window.tabs.currentIndex() == BUILD
        assert len(window.build_page.palette.entries()) == 10  # the bricks are ready to drag
        assert window.build_page.graph.common is not None


def test_finished_run_fills_accuracy_plot_and_writes_bricks(qtbot, window, short_run):
    page = _open_digits(qtbot, window)
    short_run(page, epochs=1)
    evals = []
    page.report_received.connect(lambda r: evals.append(r.epoch) if r.kind == "eval" else None)
    with qtbot.waitSignal(page.run_saved, timeout=90_000) as saved:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert saved.args[1] is False
    qtbot.waitUntil(lambda: not page.is_running, timeout=30_000)
    assert evals == [1]
    page.accuracy_plot.flush()
    xs, ys = page.accuracy_plot.curve_data("digit")
    assert xs == [1.0] and 0.0 <= ys[0] <= 1.0
    assert page.progress.format().startswith("Finished")
    manifest = json.loads((Path(saved.args[0]) / "common.json").read_text())
    assert manifest["complete"] is True


def test_closing_during_a_run_asks_then_stops_cleanly(qtbot, window, short_run, monkeypatch):
    page = _open_digits(qtbot, window)
    short_run(page, epochs=200)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.step_count >= 1, timeout=60_000)

    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda *a, **k: asked.append(a[1]) or QMessageBox.StandardButton.No))
    assert not window.close()
    assert asked == ["Stop the factorization?"] and page.is_running and window.isVisible()

    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda *a, **k: asked.append(a[1]) or QMessageBox.StandardButton.Yes))
    assert window.close()
    assert not page.is_running
    assert page.worker is None
    assert not (window.home / "session.lock").exists()
    runs = list((window.home / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "common.safetensors").is_file()


def test_start_needs_a_teacher(qtbot, window, message_boxes):
    page = window.factorize_page
    assert not page.start_button.isEnabled()
    with qtbot.waitSignal(page.run_failed) as failed:
        assert not page.start()
    assert "teacher" in failed.args[0]
    assert message_boxes and "teacher" in message_boxes[-1][1] and "Traceback" not in message_boxes[-1][1]


def test_presets_and_memory_estimate(qtbot, window, digits_choice, wait_estimated):
    page = window.factorize_page
    window.set_choice(digits_choice)
    page.budget_box.budget_combo.setCurrentIndex(0)  # "Student size as chosen": the presets decide, no budget
    assert page.device_combo.count() >= 1
    assert page.device_combo.itemData(page.device_combo.count() - 1).name == "cpu"
    sizes = {}
    for name in ("Small & fast", "Balanced", "Large"):
        page.size_combo.setCurrentText(name)
        wait_estimated(page)
        text = page.memory_label.text()
        assert "parameters" in text and "memory" in text
        sizes[name] = int(text.split(" student")[0].replace(",", ""))
    assert sizes["Small & fast"] < sizes["Balanced"] < sizes["Large"]
    page.epochs_spin.setValue(3)
    config = page.config()
    cpu = page.device_combo.itemData(page.device_combo.count() - 1)
    assert config.epochs == 3 and config.common_width == 2.0
    assert config.num_threads == cpu.threads >= 1 and f"CPU: {cpu.threads} of" in cpu.label  # the label tells


def test_loss_plot_log_scale_and_throttle(qtbot):
    from kfstudio.core.runs import StepReport
    from kfstudio.gui.train.plots.loss import LossPlotWidget

    plot = LossPlotWidget()
    qtbot.addWidget(plot)
    losses = {"loss": 2.0, "loss_cls": 1.0, "loss_task": 0.5, "loss_kd": 0.3, "loss_infomax": -0.7,
              "loss_infomin": 0.01}
    for step in range(1, 51):
        plot.add_report(StepReport(step, 100, step / 10, losses, 0.1, 1000.0, 1.0, 1.0))
    assert plot.curve_data("loss") == ([], [])  # buffered, not drawn yet
    qtbot.waitUntil(lambda: len(plot.curve_data("loss")[0]) == 50, timeout=2_000)  # the 20 Hz timer drew it
    assert plot.curve_data("loss_infomax")[1][0] == -0.7
    plot.log_box.setChecked(True)
    ys = plot.curve_data("loss_infomax")[1]
    assert all(y > 0 for y in ys) and math.isclose(ys[0], 0.7)
    assert "|loss_infomax|" in plot.log_box.toolTip() or "absolute" in plot.log_box.toolTip()
    assert any(label.text == "|loss_infomax|" for _sample, label in plot.legend.items)
    plot.log_box.setChecked(False)
    assert any(label.text == "loss_infomax" for _sample, label in plot.legend.items)


def test_plot_png_export(qtbot, window, tmp_path):
    from kfstudio.core.runs import StepReport

    plot = window.factorize_page.loss_plot
    for step in range(1, 6):
        plot.add_report(StepReport(step, 10, step / 5, {"loss": 1.0 / step}, 0.1, 1.0, 1.0, 1.0))
    written = window.export_plots(tmp_path / "curves.png")
    assert [p.name for p in written] == ["curves.png", "curves-accuracy.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_killed_training_process_leaves_the_studio_running_and_resumable(qtbot, window, short_run):
    """SIGKILL the child mid-run: a message in words, and Resume run goes on from the checkpoint."""
    import os
    import signal

    from kfstudio.io.reports import read_reports

    page = _open_digits(qtbot, window)
    short_run(page, epochs=3)
    page.config_overrides["tasks"] = "one-vs-rest:0,1"
    checkpoints = []
    page.report_received.connect(lambda r: checkpoints.append(r.epoch) if r.kind == "checkpoint" else None)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: checkpoints == [1], timeout=90_000)
    folder = page.worker.folder
    with qtbot.waitSignal(page.run_failed, timeout=30_000) as failed:
        os.kill(page.worker.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not page.is_running, timeout=30_000)
    assert "killed" in failed.args[0] and "checkpoint" in failed.args[0] and "Traceback" not in failed.args[0]
    assert window.isVisible() and page.start_button.text() == "Resume run"
    saved_steps = [r.step for r in read_reports(folder) if r.kind == "step"]
    assert saved_steps and read_reports(folder)[-1].kind == "checkpoint"  # the file matches the checkpoint

    with qtbot.waitSignal(page.run_saved, timeout=120_000) as saved:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert Path(saved.args[0]) == folder and saved.args[1] is False
    qtbot.waitUntil(lambda: not page.is_running, timeout=30_000)
    run = json.loads((folder / "run.json").read_text())
    assert run["epochs_done"] == 3 and not run["cancelled"]
    steps = [r.step for r in read_reports(folder) if r.kind == "step"]
    assert steps[:len(saved_steps)] == saved_steps and steps == sorted(steps)  # resumed where it stopped
    assert page.start_button.text() == "Start factorizing"


def test_objective_section_is_folded_away_and_reaches_the_run_config(qtbot, window, digits_choice):
    page = window.factorize_page
    window.set_choice(digits_choice)
    panel = page.objective_panel
    assert panel.body.isHidden()  # collapsed by default
    assert page.config().imb.infomax == "1/B" and not page.config().gaussian_bricks
    qtbot.mouseClick(panel.toggle, Qt.MouseButton.LeftButton)
    assert not panel.body.isHidden()
    for control in [panel.infomax_combo, panel.gaussian_check, *panel.spins.values()]:
        assert len(control.toolTip()) > 20, control
    panel.infomax_combo.setCurrentIndex(panel.infomax_combo.findData("authors"))
    assert "authors' code" in panel.infomax_combo.currentText()
    panel.spins["beta"].setValue(0.01)
    panel.spins["l_kd"].setValue(0.0)
    panel.spins["temperature"].setValue(4.0)
    qtbot.mouseClick(panel.gaussian_check, Qt.MouseButton.LeftButton)
    imb = page.config().imb
    assert (imb.infomax, imb.beta, imb.l_kd, imb.temperature) == ("authors", 0.01, 0.0, 4.0)
    assert page.config().gaussian_bricks
    assert panel.spins["temperature"].minimum() > 0  # a zero temperature cannot be typed in
    qtbot.mouseClick(panel.toggle, Qt.MouseButton.LeftButton)
    assert panel.body.isHidden()


def test_the_health_badge_says_in_words_when_infomax_has_collapsed(qtbot, window):
    from kfstudio.core.runs import EvalReport, StepReport
    from kfstudio.core.imb import StageHealth

    page = window.factorize_page
    badge = page.health_badge
    assert badge.state == "idle" and "not measured" in badge.text()

    def epoch_with(step, health):
        page._on_worker_report(StepReport(step, 100, step / 10, {"loss": 1.0}, 0.1, 100.0, 1.0, 1.0, health))
        page._on_worker_report(EvalReport(step // 10, step, {}, {}))

    collapsed = tuple(StageHealth(-0.98, -0.98, 0.99) for _ in range(3))  # the review's figures
    healthy = (StageHealth(0.53, 0.04, 0.69), StageHealth(0.75, 0.01, 0.38), StageHealth(0.87, 0.0, 0.21))
    epoch_with(4, collapsed)
    assert badge.state == "warming"
    epoch_with(20, collapsed)
    assert badge.state == "collapsed" and "collapsed" in badge.text() and "1/B" in badge.text()
    assert "-0.98" in badge.toolTip()
    epoch_with(30, healthy)
    assert badge.state == "healthy" and "healthy" in badge.text()
    badge.reset(enabled=False)  # a run with the InfoMax weight at 0: nothing to judge
    epoch_with(40, collapsed)
    assert badge.state == "off" and "off" in badge.text()


def test_a_burst_of_step_reports_changes_the_progress_text_a_few_times_and_ends_on_the_last(qtbot):
    # Every change of the rate line's text can relayout the page; 30+ reports a second must not.
    from kfstudio.core.runs import StepReport
    from kfstudio.gui.train.run_bar import TEXT_REFRESH_MS, RunBar

    bar = RunBar()
    qtbot.addWidget(bar)
    changes = []
    original = bar.rate_label.setText
    bar.rate_label.setText = lambda text: (changes.append(text), original(text))
    for step in range(1, 51):
        bar.show_step(StepReport(step, 50, step / 10, {"loss": 1.0 / step}, 0.1, 100.0, 1.0, 1.0), 5)
    assert len(changes) == 1 and "step 1 of 50" in changes[0]  # the first at once, the rest wait
    qtbot.waitUntil(lambda: "step 50 of 50" in bar.rate_label.text(), timeout=10 * TEXT_REFRESH_MS)
    assert len(changes) == 2
    bar.show_step(StepReport(51, 60, 5.1, {"loss": 0.1}, 0.1, 100.0, 1.0, 1.0), 6)
    bar.drop_pending()  # a state message ("Pausing…") replaces a waiting step
    bar.show_step(StepReport(52, 60, 5.2, {"loss": 0.1}, 0.1, 100.0, 1.0, 1.0), 6)
    bar.drop_pending()
    bar.flush()  # what the refresh timer does when it fires: nothing is waiting
    assert "step 51 of 60" in bar.rate_label.text()


def test_the_health_badge_follows_the_theme_and_the_presentation_scale(qtbot, window):
    from kfstudio.gui.theme import theme_manager

    manager = theme_manager()
    saved = (manager.theme.name, manager.scale)
    badge = window.factorize_page.health_badge
    badge._show("healthy", "InfoMax: healthy.", "")
    light_size = badge.font().pointSizeF()
    assert manager.theme.ok in badge.styleSheet() and badge.font().bold()
    try:
        manager.restore("dark", saved[1] * 1.5)  # presentation mode in the dark theme
        assert badge.font().pointSizeF() > 1.4 * light_size
        assert manager.theme.ok in badge.styleSheet()  # the dark theme's brighter green
        badge._show("collapsed", "InfoMax: collapsed.", "")
        assert manager.theme.bad in badge.styleSheet()
    finally:
        manager.restore(*saved)
