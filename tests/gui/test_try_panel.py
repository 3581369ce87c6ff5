"""The try-it panel: predictions equal the assembled network's choice; the draw pad makes inputs."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from kfstudio.assembly.build import build_network
from kfstudio.core.measures.metrics import group_logits, group_outcomes
from kfstudio.core.tasks import group_tasks


@pytest.fixture
def page(open_build_page, digits_run, digits_teacher):
    return open_build_page(digits_run[1], teacher=digits_teacher)


def attach(page, *titles):
    for title in titles:
        key = next(e.key for e in page.palette.entries() if e.title == title)
        page.palette.add_requested.emit(key)


def test_nothing_attached_gives_a_friendly_hint(page):
    page.try_panel.refresh()
    assert page.try_panel.predictions() == []
    assert "Nothing is attached" in page.try_panel.hint.text()
    assert page.try_panel.result_stack.currentWidget() is page.try_panel.hint


def test_predictions_equal_the_assembled_networks_choice(qtbot, page, digits_teacher):
    attach(page, "digit 1", "digit 4", "digit 7")
    panel = page.try_panel
    network = build_network(page.graph)
    group = group_tasks(network.tasks)[0]
    for index in (3, 5, 17):  # each a change of image: the panel runs again
        with qtbot.waitSignal(panel.predictions_changed, timeout=5_000):
            panel.set_index(index)
        x = page.try_panel._data.x[index : index + 1]
        with torch.no_grad():
            out = network(x)
            # Calibrated bricks: margins above their thresholds, and a "none of these" column.
            stacked = group_logits(group, out, network.thresholds)
        (pred,) = panel.predictions()
        assert pred.class_index == int(group_outcomes(group)[int(stacked.argmax())]) == int(out["digit_prediction"][0])
        assert pred.confidence == pytest.approx(float(torch.softmax(stacked, 1).max()), abs=1e-5)
        teacher_choice = int(digits_teacher.outputs(x)["digit"].argmax())
        assert pred.teacher_name.startswith(str(teacher_choice))
        assert panel.results.item(0, 1).text().startswith(pred.class_name)
    assert "digit (1, 4, 7)" == panel.results.item(0, 0).text()


def test_draw_pad_makes_a_normalized_input(qtbot, page, digits_teacher):
    attach(page, "digit 0", "digit 1")
    panel = page.try_panel
    panel.sources.setCurrentIndex(1)
    panel.refresh()
    assert panel.sources.isTabEnabled(1)
    assert "Draw a digit" in panel.hint.text()
    pad = panel.draw_pad
    assert pad.is_empty()
    # A vertical stroke with the real mouse: a "1".
    pad.resize(240, 240)
    top, bottom = QPoint(120, 30), QPoint(120, 210)
    QTest.mousePress(pad, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, top)
    for i in range(1, 9):
        QTest.mouseMove(pad, top + (bottom - top) * i / 8)
    with qtbot.waitSignal(panel.predictions_changed, timeout=5_000):
        QTest.mouseRelease(pad, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, bottom)
    spec = digits_teacher.input_spec
    x = pad.input_tensor(spec)
    assert tuple(x.shape) == (1, *spec.shape)
    pixels = pad.pixels()
    assert pixels.shape == (spec.height, spec.width) and 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert pixels[:, 3:5].mean() > 0.3 and pixels[:, 0].max() == 0.0   # ink in the middle columns only
    assert torch.allclose(x, (torch.from_numpy(pixels) - spec.mean[0]) / spec.std[0])
    assert torch.equal(panel.current_input(), x)
    (pred,) = panel.predictions()
    network = build_network(page.graph)
    assert pred.class_index == int(network(x)["digit_prediction"][0])
    pad.clear()
    assert pad.is_empty()


def test_a_calibrated_brick_alone_says_none_of_these_to_other_classes(qtbot, page):
    attach(page, "digit 3")
    panel = page.try_panel
    labels = page.try_panel._data.labels["digit"]
    one = int((labels == 1).nonzero()[1])
    with qtbot.waitSignal(panel.predictions_changed, timeout=5_000):
        panel.set_index(one)
    (pred,) = panel.predictions()
    assert pred.class_name == "none of these" and panel.results.item(0, 1).text().startswith("none of these")
    three = int((labels == 3).nonzero()[1])
    with qtbot.waitSignal(panel.predictions_changed, timeout=5_000):
        panel.set_index(three)
    assert panel.predictions()[0].class_name == "3"


def test_a_group_trained_against_the_rest_can_answer_none_of_these():
    from kfstudio.core.tasks import ONE_VS_REST, Task
    from kfstudio.gui.build.try_panel import NONE_OF_THESE, read_predictions

    tasks = [Task(str(c), "digit", (c,), (str(c),), ONE_VS_REST, True) for c in (3, 7)]
    (group,) = group_tasks(tasks)
    low = {"3": torch.tensor([[-2.0]]), "7": torch.tensor([[-3.0]])}
    teacher = {"digit": torch.tensor([[0.0, 9.0] + [0.0] * 8])}  # the teacher says 1
    (pred,) = read_predictions([group], low, teacher, {"digit": "1"})
    assert pred.class_name == NONE_OF_THESE and pred.class_index == -1
    assert pred.confidence == pytest.approx(float(torch.softmax(torch.tensor([-2.0, -3.0, 0.0]), 0)[2]))
    assert pred.teacher_name == "1 (not attached)" and pred.note == ""
    (pred,) = read_predictions([group], {"3": torch.tensor([[4.0]]), "7": torch.tensor([[-3.0]])}, None)
    assert pred.class_name == "3"


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_draw_pads_hint_reads_clearly_in_both_themes(qtbot, theme):
    """The hint was the theme's muted grey on the black pad: 4:1 in the light theme."""
    from PySide6.QtGui import QColor

    from kfstudio.gui.theme import contrast_ratio, theme_manager
    from kfstudio.gui.build.try_images import DrawPad, hint_colour

    theme_manager().set_theme(theme)
    pad = DrawPad()
    qtbot.addWidget(pad)
    pad.set_grid(8, 8)
    pad.resize(240, 240)
    pad.show()
    qtbot.waitExposed(pad)
    background = QColor(0, 0, 0)  # no ink
    assert contrast_ratio(hint_colour(), background) >= 7.0
    image = pad.grab().toImage()
    seen = {image.pixelColor(x, y).name() for x in range(0, 240, 1) for y in range(100, 140)}
    assert hint_colour().name() in seen  # the hint is painted in that colour
