"""The export dialog writes a working network with a passed self-test, or says why not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QSpinBox

from kfstudio.assembly.build import build_network
from kfstudio.gui.build.page import BuildPage
from kfstudio.gui.build.export_dialog import ExportDialog
from kfstudio.io.export import list_export_formats


@pytest.fixture
def page(qtbot, digits_run):
    page = BuildPage(QUndoStack())
    qtbot.addWidget(page)
    page.load_run(digits_run[1])
    for title in ("digit 2", "digit 5", "digit 8"):
        key = next(e.key for e in page.palette.entries() if e.title == title)
        page.palette.add_requested.emit(key)
    return page


def test_export_onnx_of_three_bricks(qtbot, page, tmp_path):
    import onnxruntime as ort

    dialog = page.open_export_dialog()
    assert isinstance(dialog, ExportDialog) and dialog.isVisible()
    assert [dialog.format_combo.itemData(i) for i in range(dialog.format_combo.count())] == \
        [f.name for f in list_export_formats()]
    assert dialog.format_name() == "onnx" and dialog.path_edit.text().endswith(".onnx")
    target = tmp_path / "out" / "three.onnx"
    dialog.set_path(target)
    with qtbot.waitSignal(dialog.export_finished, timeout=180_000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert target.is_file() and target.with_name("three.onnx.json").is_file()
    text = dialog.result_label.text()
    assert "Self-test passed" in text and str(target) in text and "three.onnx.json" in text

    network = build_network(page.graph)
    x = network.example_input(4)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    names = [o.name for o in session.get_outputs()]
    with torch.no_grad():
        expected = network(x)
    assert len(names) == 4
    np.testing.assert_allclose(outputs[names.index("digit_2")], expected["2"].numpy(), atol=1e-4)
    np.testing.assert_array_equal(outputs[names.index("digit_prediction")], expected["digit_prediction"].numpy())
    dialog.set_format("pt2")
    assert dialog.path_edit.text().endswith("three.pt2")


def test_export_error_is_shown_in_words(qtbot, page, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    dialog = ExportDialog(page.graph)
    qtbot.addWidget(dialog)
    dialog.set_format("safetensors")
    dialog.set_path(blocker / "net.safetensors")
    with qtbot.waitSignal(dialog.export_failed, timeout=60_000) as failed:
        dialog.start_export()
    assert "is a file, not a folder" in failed.args[0] and "Traceback" not in failed.args[0]  # checked before any work
    assert dialog.result_label.text() == failed.args[0] and dialog.export_button.isEnabled()
    assert not dialog.is_running()


class _ClaimsEveryShortcut(QObject):
    """What Qt's line edits do with Ctrl+E on X11 (the emacs "end of line"): claim the key before
    any window shortcut sees it. The offscreen platform has no such binding, so it is added here."""

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride:
            event.accept()
        return False


@pytest.mark.parametrize("field_of", [lambda page: page.palette.filter,
                                      lambda page: page.try_panel.findChild(QSpinBox)], ids=["filter", "image"])
def test_ctrl_e_in_a_text_field_exports(qtbot, page, field_of):
    page.show()
    page.activateWindow()
    qtbot.waitUntil(page.isActiveWindow, timeout=5_000)  # window shortcuts work in the active window
    field = field_of(page)
    claimer = _ClaimsEveryShortcut(field)
    field.installEventFilter(claimer)  # runs before the studio's own filter, as the field's binding would
    field.setFocus()
    qtbot.keyClick(field, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert page.export_dialog is not None and page.export_dialog.isVisible()  # the window's shortcut, not the field's
    page.export_dialog.close()


def test_int8_export_shows_its_accuracy_and_latency_against_the_teacher(qtbot, page, tmp_path):
    import json

    import onnx
    import onnxruntime as ort

    from kfstudio.core.teachers.loaders import load_teacher

    page.set_teacher(load_teacher("builtin:digits"))
    dialog = page.open_export_dialog()
    dialog.set_format("pt2")
    assert not dialog.int8_check.isEnabled()   # int8 is an ONNX file
    dialog.set_format("onnx")
    assert dialog.int8_check.isEnabled() and "builtin:digits" in dialog.int8_check.toolTip()
    qtbot.mouseClick(dialog.int8_check, Qt.MouseButton.LeftButton)
    assert dialog.int8_check.isChecked()
    target = tmp_path / "int8.onnx"
    dialog.set_path(target)
    with qtbot.waitSignal(dialog.export_finished, timeout=240_000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    check = json.loads(target.with_name("int8.onnx.json").read_text())["int8"]
    text = dialog.result_label.text()
    assert f"checked on {check['images']} test images" in text and "points against the float network" in text
    assert "Latency vs teacher, both in onnxruntime (int8 ONNX file; teacher exported to float ONNX), 1 thread" in text
    assert "batch 1:" in text and "batch 64:" in text and "int8 against the float ONNX file" in text
    assert {n for n in dialog.runtime.ms} == {"network", "teacher", "float network"}
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(target)).graph.node)
    assert session.get_outputs()[-1].name == "digit_prediction"
    assert dialog.int8_check.isEnabled() and dialog.export_button.isEnabled()
