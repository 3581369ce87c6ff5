"""The whole newcomer's path in one window, as the studio issue's "done when" puts it:
welcome -> digits demo -> factorize -> drag three bricks onto the plate -> export ONNX,
with no terminal in between."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from gestures import drag, frame, key_of, plate_point
from PySide6.QtCore import Qt

from kfstudio.assembly.build import build_network
from kfstudio.gui.main_window import BUILD


def test_from_welcome_to_an_exported_three_task_onnx(qtbot, window, short_run, tmp_path):
    with qtbot.waitSignal(window.loader.finished, timeout=120_000):   # the demo loads in the background
        qtbot.mouseClick(window.welcome_page.digits_button, Qt.MouseButton.LeftButton)
    factorize = window.factorize_page
    short_run(factorize, epochs=1)
    with qtbot.waitSignal(factorize.run_saved, timeout=120_000):
        qtbot.mouseClick(factorize.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not factorize.is_running, timeout=30_000)
    assert window.tabs.currentIndex() == BUILD

    page = window.build_page
    page.resize(1500, 900)
    frame(page)
    for title in ("digit 0", "digit 1", "digit 7"):
        assert drag(page, key_of(page, title), plate_point(page)), title
    graph = page.graph
    assert sorted(graph.title(n) for n in graph.attached_ids()) == ["digit 0", "digit 1", "digit 7"]
    assert window.isWindowModified() and window.undo_stack.undoText() == "Attach 'digit 7'"

    window.export_action.trigger()
    dialog = page.export_dialog
    assert dialog.isVisible() and dialog.format_name() == "onnx"
    target = tmp_path / "digits017.onnx"
    dialog.set_path(target)
    with qtbot.waitSignal(dialog.export_finished, timeout=180_000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    assert "Self-test passed" in dialog.result_label.text()

    # The file is a 3-way classifier (calibrated bricks: or "none of these", -1) that onnxruntime runs
    # with the network's own answers.
    network = build_network(graph)
    x = network.example_input(5)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.numpy()})))
    with torch.no_grad():
        expected = network(x)
    assert set(names) == {"digit_0", "digit_1", "digit_7", "digit_prediction"}
    np.testing.assert_array_equal(outputs["digit_prediction"], expected["digit_prediction"].numpy())
    assert set(outputs["digit_prediction"].tolist()) <= {0, 1, 7, -1}
