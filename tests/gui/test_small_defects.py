"""Small things a presenter trips over: the replay's epoch total, the time left after a pause, a
message longer than the progress bar, and recent projects that opened only on a double-click."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from kfstudio.core.runs import SetupReport, StepReport
from kfstudio.core.measures.metrics import TaskMetrics
from kfstudio.gui.train.run_bar import RunBar, RunClock
from kfstudio.io.reports import write_reports

STEPS = 60


def _step(step: int, eta_s: float = 900.0, elapsed: float = 0.0) -> StepReport:
    return StepReport(step, STEPS, step / 30, {"loss": 1.0 / step}, 0.1, 500.0, eta_s, elapsed)


def test_a_replay_says_the_runs_own_epochs_and_its_own_time_left(qtbot, window, tmp_path):
    """A replay showed "Epoch 14.6 of 1 · 0:15 left": no epoch total, and the training's time left."""
    m = TaskMetrics(0.9, 0.95, 0.97, 100)
    setup = SetupReport(("hello",), ("0",), ("digit 0",), "cpu", 30, STEPS, 0, {"common": 10}, {"digit": m})
    write_reports(tmp_path, [setup] + [_step(s, elapsed=2.0 * s / STEPS) for s in range(1, STEPS + 1)])
    page = window.factorize_page
    assert window.replay_run(tmp_path, 1)
    qtbot.waitUntil(lambda: page.progress.format().startswith("Epoch 1."), timeout=10_000)
    text = page.progress.format()
    assert " of 2 " in text  # 60 steps of 30: two epochs
    assert "15:00 left" not in text and text.endswith(("0:00 left", "0:01 left", "0:02 left"))
    page.stop_replay()


def test_the_time_left_leaves_out_a_pause():
    """After Pause and Resume the time left went up: the paused minutes counted as training."""
    now = [0.0]
    clock = RunClock(lambda: now[0])
    bar_left = []
    for step in range(1, 11):  # one second a step
        now[0] = float(step)
        bar_left.append(clock.time_left(step, 100))
    assert bar_left[-1] == 90.0
    clock.pause()
    now[0] += 300.0  # five minutes paused
    clock.resume()
    now[0] += 1.0
    assert clock.time_left(11, 100) == 89.0  # not 89 steps x 31 s


def test_the_bar_shows_the_clocks_time_left_not_the_last_windows(qtbot):
    bar = RunBar()
    qtbot.addWidget(bar)
    now = [0.0]
    bar.clock = RunClock(lambda: now[0])
    for step in range(1, 6):
        now[0] = float(step)
        bar.show_step(_step(step, eta_s=900.0), 2)
        bar.flush()
    assert bar.progress.format().endswith("0:55 left")  # 55 steps of 1 s; the child's window said 15:00


def test_a_long_message_is_cut_to_the_bar_with_the_whole_text_in_its_tooltip(qtbot):
    bar = RunBar()
    qtbot.addWidget(bar)
    bar.resize(300, 80)
    bar.show()
    qtbot.waitExposed(bar)
    text = "Saved run 20261204-101500-digits-demo-teacher-with-a-long-name: 55 steps shown"
    bar.say(text)
    shown = bar.progress.format()
    assert shown != text and "…" in shown and shown.startswith("Saved run") and shown.endswith("steps shown")
    assert bar.progress.fontMetrics().horizontalAdvance(shown) <= bar.progress.contentsRect().width()
    assert bar.progress.toolTip() == text
    bar.resize(1200, 80)
    qtbot.waitUntil(lambda: bar.progress.format() == text)  # room again: the whole text


def test_one_click_or_enter_opens_a_recent_project(qtbot, tmp_path):
    from kfstudio.gui.welcome import WelcomePage, add_recent_project

    for name in ("a", "b"):
        add_recent_project(tmp_path / f"{name}.kfproj")
    page = WelcomePage()
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    assert page.recent_hint.isVisible() and "Click" in page.recent_hint.text()
    opened = []
    page.open_path_requested.connect(opened.append)
    view = page.recent_list
    rect = view.visualItemRect(view.item(1))
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert opened == [str((tmp_path / "a.kfproj").resolve())]  # one click opens
    QTest.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, rect.center())
    assert len(opened) == 1  # the rest of a double-click does not open it again
    view.setCurrentRow(0)
    view.setFocus()
    QTest.keyClick(view, Qt.Key.Key_Return)
    assert opened[1:] == [str((tmp_path / "b.kfproj").resolve())]
