"""New from teacher: load any teacher the engine supports, pick data and tasks, check by eye.

``TeacherChoice`` is what the wizard (or a one-click demo) produces: the loaded teacher,
the data split and the resolved tasks, plus the references to rebuild the same run in the
worker thread (``config()``). Every problem is a ``KFError`` shown inline in words.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QToolButton, QVBoxLayout, QWizard, QWizardPage)

from kfstudio.core.data.sources import DataSplit, load_data, prepare, to_pixels
from kfstudio.core.errors import KFError
from kfstudio.core.factorize import FactorizeConfig
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task, resolve_tasks
from kfstudio.core.teachers.loaders import Teacher, TeacherOptions, load_teacher
from kfstudio.gui.loading import BackgroundLoad
from kfstudio.gui.path_picker import OPEN, PathPicker
from kfstudio.gui.theme import theme_manager

SAMPLES = 8
TASK_MODES = (
    ("Automatic (heads of a multi-output teacher, else one per class)", "auto"),
    ("One brick per output head", "heads"),
    ("One brick per class (one-vs-rest)", "one-vs-rest"),
    ("Named class groups…", "groups"),
)


@dataclass
class TeacherChoice:
    """A teacher with its data and tasks, ready to factorize."""

    teacher: Teacher = field(repr=False)
    teacher_ref: str
    data_ref: str
    split: DataSplit = field(repr=False)
    tasks: list[Task] = field(repr=False)
    tasks_spec: str | None = None
    teacher_weights: str | None = None
    teacher_input: str | None = None
    _test: object = field(default=None, repr=False)

    def config(self, **overrides) -> FactorizeConfig:
        return FactorizeConfig(teacher=self.teacher_ref, data=self.data_ref, tasks=self.tasks_spec,
                               teacher_weights=self.teacher_weights, teacher_input=self.teacher_input, **overrides)

    def test_dataset(self):
        """The test split in the teacher's input space (for the try-it panel)."""
        if self._test is None:
            self._test = prepare(self.split.test, self.teacher.input_spec)
        return self._test

    def summary_html(self) -> str:
        t = self.teacher
        outs = ", ".join(f"{html.escape(n)} ({len(c)})" for n, c in t.class_names.items())
        titles = ", ".join(html.escape(task.title) for task in self.tasks[:12]) + ("…" if len(self.tasks) > 12 else "")
        return (f"<b>{html.escape(t.name)}</b> — outputs {outs}<br>"
                f"Data: {html.escape(self.data_ref)} ({len(self.split.train):,} training, "
                f"{len(self.split.test):,} test images)<br>"
                f"{len(self.tasks)} tasks: {titles}")


def load_choice(teacher_ref: str, data_ref: str | None = None, tasks_spec: str | None = None,
                weights: str | None = None, input_text: str | None = None, *, allow_code: bool = True) -> TeacherChoice:
    """Load everything a run needs; raises KFError with a readable message.

    ``allow_code`` is False for a reference read from a project file: code then runs only
    after the user said yes (``UntrustedCodeError`` tells the caller to ask)."""
    teacher_ref = teacher_ref.strip()
    if not teacher_ref:
        raise KFError("Give a teacher: builtin:digits, package.module:function, or a model file.")
    spec = InputSpec.parse(input_text) if input_text else None
    teacher = load_teacher(teacher_ref, TeacherOptions(weights=weights or None, input_spec=spec), allow_code=allow_code)
    data_ref = (data_ref or "").strip() or (teacher_ref if teacher_ref.startswith("builtin:") else "")
    if not data_ref:
        raise KFError("Say which data to train on: a folder of images, an .npz file or a built-in data set.")
    split = load_data(data_ref)
    tasks = resolve_tasks(tasks_spec, teacher.class_names)
    return TeacherChoice(teacher, teacher_ref, data_ref, split, tasks, tasks_spec or None, weights or None,
                         input_text or None)


def load_demo_choice(name: str) -> TeacherChoice:
    """A built-in demo: its teacher, its data, the default tasks."""
    return load_choice(f"builtin:{name}")


def describe_teacher(teacher: Teacher) -> str:
    """What a teacher is, as rich text for a label."""
    rows = [f"<b>{html.escape(teacher.name)}</b>",
            f"Input: {html.escape(teacher.input_spec.describe())}",
            "Outputs: " + ", ".join(f"{html.escape(n)} ({len(c)} classes)" for n, c in teacher.class_names.items())]
    if teacher.num_parameters:
        rows.append(f"Parameters: {teacher.num_parameters:,}")
    if teacher.feature_note:
        rows.append(html.escape(teacher.feature_note))
    return "<br>".join(rows)


def tensor_to_qimage(pixels, scale: int = 8) -> QImage:
    """One (C, H, W) image with values in [0, 1] as a QImage, scaled up without smoothing."""
    arr = (pixels.detach().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)
    if arr.shape[0] == 1:
        data = np.ascontiguousarray(arr[0])
        image = QImage(data.data, data.shape[1], data.shape[0], data.strides[0], QImage.Format.Format_Grayscale8)
    else:
        data = np.ascontiguousarray(arr[:3].transpose(1, 2, 0))
        image = QImage(data.data, data.shape[1], data.shape[0], data.strides[0], QImage.Format.Format_RGB888)
    image = image.copy()  # own the pixels; ``data`` goes away
    return image.scaled(image.width() * scale, image.height() * scale, Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.FastTransformation)


def _busy(fn):
    def wrapper(*args, **kwargs):
        QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            return fn(*args, **kwargs)
        finally:
            QGuiApplication.restoreOverrideCursor()
    return wrapper


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


class TeacherPage(QWizardPage):
    """Step 1: which teacher, in whatever format."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setTitle("Load a teacher")
        self.setSubTitle("A built-in demo, a Python factory (package.module:function, with a weights file), "
                         "or a model file: TorchScript (.pt/.ts), torch.export (.pt2) or ONNX (.onnx).")
        self.teacher: Teacher | None = None
        self.ref_picker = PathPicker(OPEN, "Open a teacher model", start=lambda: "", button_tooltip="Pick a model file",
                                     file_filter="Models (*.pt *.ts *.pth *.pt2 *.onnx);;All files (*)",
                                     placeholder="builtin:digits · mypkg.models:make_net · /path/to/model.onnx",
                                     tooltip="What the teacher is: builtin:NAME, package.module:function, or a file path")
        self.ref_edit = self.ref_picker.edit
        self.ref_edit.textChanged.connect(self._on_input_changed)
        self.ref_picker.chosen.connect(lambda _path: self.load())
        self.loader = BackgroundLoad(self)   # a model file may take seconds: the wizard answers meanwhile
        demos = QHBoxLayout()
        self.demo_buttons = []
        for name in ("digits", "shapes", "shapes-hard"):
            button = QPushButton(f"builtin:{name}")
            button.setToolTip(f"Use the shipped {name} demo teacher")
            button.clicked.connect(lambda _=False, n=name: self._use_builtin(n))
            demos.addWidget(button)
            self.demo_buttons.append(button)
        demos.addStretch(1)
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("only for a factory: a .pt/.pth state_dict or .safetensors")
        self.weights_edit.textChanged.connect(self._on_input_changed)
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("only when the file does not say: C,H,W[:mean:std], e.g. 1,8,8:0.5:0.5")
        self.input_edit.setToolTip("Channels, height, width of the teacher's input, optionally the normalization")
        self.input_edit.textChanged.connect(self._on_input_changed)
        self.load_button = QPushButton("Load teacher")
        self.load_button.setDefault(True)
        self.load_button.setToolTip("Load the teacher and show what it is")
        self.load_button.clicked.connect(self.load)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.error = _error_label()
        form = QFormLayout()
        form.addRow("Teacher", self.ref_picker)
        form.addRow("", demos)
        form.addRow("Weights", self.weights_edit)
        form.addRow("Input size", self.input_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.load_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.error)
        layout.addWidget(self.info, 1)

    def _use_builtin(self, name: str) -> None:
        self.ref_edit.setText(f"builtin:{name}")
        self.load()

    def _on_input_changed(self) -> None:
        if self.teacher is not None:
            self.teacher = None
            self.info.setText("")
            self.completeChanged.emit()

    def load(self) -> bool:
        """Load the teacher in a worker thread; the page says so and its controls wait meanwhile.
        False (nothing starts) while a load runs or the input size is not understood."""
        if self.loader.is_busy():
            return False
        self.teacher = None
        self.error.hide()
        ref, weights = self.ref_edit.text().strip(), self.weights_edit.text().strip() or None
        try:
            spec = InputSpec.parse(self.input_edit.text().strip()) if self.input_edit.text().strip() else None
        except KFError as exc:
            self.show_error(str(exc))
            self.completeChanged.emit()
            return False
        options = TeacherOptions(weights=weights, input_spec=spec)
        self.loader.start(f"Loading the teacher {ref}…",
                          lambda: load_teacher(ref, options, allow_code=True),  # typed by the user
                          self._on_teacher_loaded, self._on_teacher_failed)
        self._set_loading(True)
        self.info.setText(html.escape(self.loader.what))
        self.completeChanged.emit()
        return True

    def _set_loading(self, loading: bool) -> None:
        for widget in (self.ref_picker, self.weights_edit, self.input_edit, self.load_button, *self.demo_buttons):
            widget.setEnabled(not loading)

    def _on_teacher_loaded(self, teacher: Teacher) -> None:
        self._set_loading(False)
        self.teacher = teacher
        self.info.setText(describe_teacher(teacher))
        self.completeChanged.emit()

    def _on_teacher_failed(self, message: str) -> None:
        self._set_loading(False)
        self.show_error(message)
        self.completeChanged.emit()

    def show_error(self, message: str) -> None:
        self.info.setText("")
        self.error.setText(f"<span style='color:{theme_manager().theme.bad}'>{html.escape(message, quote=False)}</span>")
        self.error.show()

    def isComplete(self) -> bool:
        return self.teacher is not None and not self.loader.is_busy()


class DataPage(QWizardPage):
    """Step 2: data and tasks, with sample images and the teacher's predictions."""

    def __init__(self, teacher_page: TeacherPage, parent=None) -> None:
        super().__init__(parent)
        self.setTitle("Data and tasks")
        self.setSubTitle("The images to factorize on, and which tasks become bricks.")
        self.teacher_page = teacher_page
        self.choice: TeacherChoice | None = None
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("builtin:digits · a folder of images · a .npz file")
        self.data_edit.setToolTip("A folder (one subfolder per class), an .npz file (x, optional y), or builtin:NAME")
        self.data_edit.textChanged.connect(self._on_input_changed)
        folder = QToolButton(text="Folder…")
        folder.clicked.connect(self._on_folder_clicked)
        npz = QToolButton(text=".npz…")
        npz.clicked.connect(self._on_npz_clicked)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(folder)
        data_row.addWidget(npz)
        self.mode_combo = QComboBox()
        for text, key in TASK_MODES:
            self.mode_combo.addItem(text, key)
        self.mode_combo.currentIndexChanged.connect(self._on_input_changed)
        self.groups_edit = QLineEdit()
        self.groups_edit.setPlaceholderText("small=0,1,2,3,4; large=5,6,7,8,9  (classes by index or name)")
        self.groups_edit.setToolTip("Named groups of classes of a one-output teacher; each group becomes a brick")
        self.groups_edit.textChanged.connect(self._on_input_changed)
        self.preview_button = QPushButton("Load data and preview")
        self.preview_button.clicked.connect(self.preview)
        self.error = _error_label()
        self.tasks_label = QLabel("")
        self.tasks_label.setWordWrap(True)
        self.samples = QGridLayout()
        form = QFormLayout()
        form.addRow("Data", data_row)
        form.addRow("Tasks", self.mode_combo)
        form.addRow("Groups", self.groups_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.error)
        layout.addWidget(self.tasks_label)
        layout.addLayout(self.samples)
        layout.addStretch(1)

    def initializePage(self) -> None:
        ref = self.teacher_page.ref_edit.text().strip()
        if not self.data_edit.text().strip() and ref.startswith("builtin:"):
            self.data_edit.setText(ref)
        if self.data_edit.text().strip():
            self.preview()

    def tasks_spec(self) -> str | None:
        mode = self.mode_combo.currentData()
        if mode == "groups":
            return self.groups_edit.text().strip() or "groups"
        return None if mode == "auto" else mode

    def _on_folder_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A folder of images")
        if path:
            self.data_edit.setText(path)

    def _on_npz_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "An .npz file", "", "NumPy arrays (*.npz)")
        if path:
            self.data_edit.setText(path)

    def _on_input_changed(self) -> None:
        self.groups_edit.setEnabled(self.mode_combo.currentData() == "groups")
        if self.choice is not None:
            self.choice = None
            self.completeChanged.emit()

    @_busy
    def preview(self) -> bool:
        self.choice = None
        self.error.hide()
        self._clear_samples()
        teacher = self.teacher_page.teacher
        try:
            if teacher is None:
                raise KFError("Load a teacher first.")
            data_ref = self.data_edit.text().strip()
            if not data_ref:
                raise KFError("Say which data to train on: a folder of images, an .npz file or a built-in data set.")
            split = load_data(data_ref)
            spec = self.tasks_spec()
            if spec == "groups":
                raise KFError("Write the groups, e.g. small=0,1,2;large=7,8,9.")
            tasks = resolve_tasks(spec, teacher.class_names)
            page = self.teacher_page
            self.choice = TeacherChoice(teacher, page.ref_edit.text().strip(), data_ref, split, tasks, spec,
                                        page.weights_edit.text().strip() or None,
                                        page.input_edit.text().strip() or None)
            self._show_samples(self.choice)
        except KFError as exc:
            self.choice = None
            self.error.setText(f"<span style='color:{theme_manager().theme.bad}'>{html.escape(str(exc), quote=False)}</span>")
            self.error.show()
        self.completeChanged.emit()
        return self.choice is not None

    def _clear_samples(self) -> None:
        while self.samples.count():
            item = self.samples.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.tasks_label.setText("")

    def _show_samples(self, choice: TeacherChoice) -> None:
        import torch

        titles = ", ".join(t.title for t in choice.tasks)
        self.tasks_label.setText(f"{len(choice.split.train):,} training and {len(choice.split.test):,} test images. "
                                 f"{len(choice.tasks)} bricks: {html.escape(titles)}")
        test = choice.test_dataset()
        x = test.x[:SAMPLES]
        spec = choice.teacher.input_spec
        with torch.no_grad():
            outputs = choice.teacher.outputs(x)
        pixels = to_pixels(x, spec)
        scale = max(2, 64 // max(spec.height, spec.width))
        for i in range(len(x)):
            image = QLabel()
            image.setPixmap(QPixmap.fromImage(tensor_to_qimage(pixels[i], scale)))
            image.setAlignment(Qt.AlignmentFlag.AlignCenter)
            said = [f"{choice.teacher.class_names[k][int(v[i].argmax())]}" for k, v in outputs.items()]
            caption = QLabel("\n".join(said[:3]))
            caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
            caption.setToolTip("What the teacher predicts: " + ", ".join(
                f"{k}: {s}" for k, s in zip(outputs, said)))
            self.samples.addWidget(image, 0, i)
            self.samples.addWidget(caption, 1, i)

    def isComplete(self) -> bool:
        return self.choice is not None


class TeacherWizard(QWizard):
    """Two steps: teacher, then data and tasks. ``choice`` holds the result after accept."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New from teacher")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.teacher_page = TeacherPage()
        self.data_page = DataPage(self.teacher_page)
        self.addPage(self.teacher_page)
        self.addPage(self.data_page)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Factorize…")
        self.resize(int(760 * theme_manager().scale), int(560 * theme_manager().scale))

    @property
    def choice(self) -> TeacherChoice | None:
        return self.data_page.choice

    def done(self, result: int) -> None:
        self.teacher_page.loader.cancel()   # closed while a teacher loads: its result goes nowhere
        super().done(result)
