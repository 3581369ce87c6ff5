"""The shared path row: the button opens the right dialog, the choice lands in the field and is announced."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from kfstudio.gui.path_picker import FOLDER, OPEN, SAVE, PathPicker


def test_each_mode_opens_its_dialog_and_fills_the_field(qtbot, monkeypatch):
    asked = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a: asked.append(("open", a[1:])) or ("/data/x.npz", "")))
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a: asked.append(("save", a[1:])) or ("/out/net.onnx", "")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a: asked.append(("folder", a[1:])) or "/runs/new"))
    suffix = [".onnx"]
    pickers = {OPEN: PathPicker(OPEN, "Data", file_filter="NumPy data (*.npz)", start="/data"),
               SAVE: PathPicker(SAVE, "Export to", file_filter=lambda: f"ONNX (*{suffix[0]})"),
               FOLDER: PathPicker(FOLDER, "Save in", start=lambda: "/runs")}
    for picker in pickers.values():
        qtbot.addWidget(picker)
    suffix[0] = ".pt2"  # a filter given as a function is read when the button is pressed
    chosen = []
    for picker in pickers.values():
        picker.chosen.connect(chosen.append)
        qtbot.mouseClick(picker.button, Qt.MouseButton.LeftButton)
    assert [p.text() for p in pickers.values()] == ["/data/x.npz", "/out/net.onnx", "/runs/new"]
    assert chosen == ["/data/x.npz", "/out/net.onnx", "/runs/new"]
    assert asked == [("open", ("Data", "/data", "NumPy data (*.npz)")), ("save", ("Export to", "", "ONNX (*.pt2)")),
                     ("folder", ("Save in", "/runs"))]


def test_a_cancelled_dialog_leaves_the_field_and_says_nothing(qtbot, monkeypatch):
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a: ("", "")))
    picker = PathPicker(OPEN, "Data", text="builtin:digits")
    qtbot.addWidget(picker)
    chosen = []
    picker.chosen.connect(chosen.append)
    qtbot.mouseClick(picker.button, Qt.MouseButton.LeftButton)
    assert picker.text() == "builtin:digits" and chosen == []
