"""The teacher wizard: load a teacher in words, pick data and tasks, see samples and predictions."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWizard

from kfstudio.gui.train.teacher_wizard import TeacherWizard, tensor_to_qimage


def _wizard(qtbot) -> TeacherWizard:
    wizard = TeacherWizard()
    qtbot.addWidget(wizard)
    wizard.show()
    return wizard


def _click_load(qtbot, page) -> None:
    """Press Load teacher and wait for the background load to say how it went."""
    with qtbot.waitSignal(page.loader.finished, timeout=60_000):
        qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)


def _load(qtbot, page, ref: str) -> None:
    page.ref_edit.setText(ref)
    _click_load(qtbot, page)


def test_builtin_teacher_loads_and_describes_itself(qtbot):
    wizard = _wizard(qtbot)
    page = wizard.teacher_page
    assert not page.isComplete()
    qtbot.keyClicks(page.ref_edit, "builtin:shapes")
    _click_load(qtbot, page)
    assert page.isComplete()
    text = page.info.text()
    assert "shapes demo teacher" in text
    assert "3x16x16" in text
    assert "shape (3 classes)" in text and "colour (4 classes)" in text
    assert "Parameters: 293,612" in text
    assert "InfoMax" in text  # the feature note
    assert page.error.isHidden()


def test_missing_file_shows_error_in_words(qtbot, tmp_path):
    wizard = _wizard(qtbot)
    page = wizard.teacher_page
    qtbot.keyClicks(page.ref_edit, str(tmp_path / "nowhere.onnx"))
    _click_load(qtbot, page)
    assert not page.isComplete()
    assert page.error.isVisible()
    assert "does not exist" in page.error.text()
    assert "Traceback" not in page.error.text()


def test_bad_input_spec_shows_error(qtbot):
    wizard = _wizard(qtbot)
    page = wizard.teacher_page
    page.ref_edit.setText("builtin:digits")
    qtbot.keyClicks(page.input_edit, "one,two")
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    assert not page.isComplete()
    assert "C,H,W" in page.error.text()


def test_data_page_shows_samples_predictions_and_tasks(qtbot):
    wizard = _wizard(qtbot)
    _click_load(qtbot, wizard.teacher_page)  # nothing given: an error
    assert wizard.teacher_page.error.isVisible()
    _load(qtbot, wizard.teacher_page, "builtin:digits")
    wizard.next()
    data = wizard.data_page
    assert wizard.currentPage() is data
    assert data.data_edit.text() == "builtin:digits"  # filled in for a built-in teacher
    assert data.isComplete()
    assert len(data.choice.tasks) == 10 and data.choice.tasks[0].kind == "one-vs-rest"
    images = [data.samples.itemAtPosition(0, i).widget() for i in range(8)]
    captions = [data.samples.itemAtPosition(1, i).widget().text() for i in range(8)]
    assert all(isinstance(w, QLabel) and not w.pixmap().isNull() for w in images)
    assert all(c.isdigit() for c in captions)  # the teacher's predicted digit under each image
    assert "10 bricks" in data.tasks_label.text()

    data.mode_combo.setCurrentIndex(data.mode_combo.findData("groups"))
    qtbot.keyClicks(data.groups_edit, "small=0,1,2,3,4;large=5,6,7,8,9")
    qtbot.mouseClick(data.preview_button, Qt.MouseButton.LeftButton)
    assert [t.name for t in data.choice.tasks] == ["small", "large"]
    assert data.choice.config().tasks == "small=0,1,2,3,4;large=5,6,7,8,9"

    data.groups_edit.setText("small=0,99")
    data.preview()
    assert not data.isComplete() and "no class '99'" in data.error.text()


def test_missing_data_folder_is_reported(qtbot, tmp_path):
    wizard = _wizard(qtbot)
    _load(qtbot, wizard.teacher_page, "builtin:digits")
    wizard.next()
    wizard.data_page.data_edit.setText(str(tmp_path / "no-such-folder"))
    wizard.data_page.preview()
    assert not wizard.data_page.isComplete()
    assert wizard.data_page.error.isVisible() and wizard.data_page.error.text()


def test_finished_wizard_goes_to_factorize(qtbot, window, monkeypatch):
    from kfstudio.gui import main_window

    class AutoWizard(TeacherWizard):
        def exec(self):
            self.restart()
            _load(qtbot, self.teacher_page, "builtin:digits")
            self.next()
            return QWizard.DialogCode.Accepted

    monkeypatch.setattr("kfstudio.gui.train.teacher_wizard.TeacherWizard", AutoWizard)  # main_window imports it when asked
    qtbot.mouseClick(window.welcome_page.new_button, Qt.MouseButton.LeftButton)
    assert window.tabs.currentIndex() == main_window.FACTORIZE
    assert window.factorize_page.choice.teacher_ref == "builtin:digits"
    assert window.factorize_page.start_button.isEnabled()


def test_teacher_loads_in_a_worker_while_the_wizard_answers(qtbot):
    """Choosing a builtin teacher loads it off the GUI thread: a timer keeps ticking meanwhile, the
    page says what loads, its controls wait (no second load), and Next stays off until it is in."""
    import threading

    from PySide6.QtCore import QTimer

    from kfstudio.gui.train import teacher_wizard

    wizard = _wizard(qtbot)
    page = wizard.teacher_page
    release, threads, ticks = threading.Event(), [], []
    real_load = teacher_wizard.load_teacher

    def held_load(*args, **kwargs):   # the load waits until the GUI thread has ticked (never without a worker)
        threads.append(threading.current_thread())
        release.wait(30)
        return real_load(*args, **kwargs)

    def tick() -> None:
        ticks.append(1)
        if len(ticks) >= 3:
            release.set()

    teacher_wizard.load_teacher = held_load
    try:
        timer = QTimer(page)
        timer.timeout.connect(tick)
        timer.start(5)
        with qtbot.waitSignal(page.loader.finished, timeout=60_000) as finished:
            qtbot.mouseClick(page.demo_buttons[0], Qt.MouseButton.LeftButton)   # builtin:digits
            assert "Loading the teacher builtin:digits" in page.info.text()
            assert not page.load_button.isEnabled() and not any(b.isEnabled() for b in page.demo_buttons)
            assert not page.ref_picker.isEnabled() and not page.isComplete()
            assert not page.load()   # no double start
        timer.stop()
    finally:
        teacher_wizard.load_teacher = real_load
    assert finished.args == [True]
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert len(ticks) >= 3
    assert page.isComplete() and "digits demo teacher" in page.info.text()
    assert page.load_button.isEnabled() and all(b.isEnabled() for b in page.demo_buttons)


def test_tensor_to_qimage_grey_and_rgb():
    import torch

    grey = tensor_to_qimage(torch.rand(1, 8, 8), scale=4)
    rgb = tensor_to_qimage(torch.rand(3, 16, 16), scale=2)
    assert (grey.width(), grey.height()) == (32, 32)
    assert (rgb.width(), rgb.height()) == (32, 32)
