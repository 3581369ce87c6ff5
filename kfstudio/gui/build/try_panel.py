"""Try it: run the assembled network at once on a test image or on a drawing.

Each attached task shows what it predicts, how sure it is (softmax), and what the teacher
says. One-vs-rest bricks of one output are read together, as the paper assembles them:
their logits are concatenated and the network chooses among the attached classes. For
digit-like data (one channel) a draw pad turns a mouse drawing into the network's input the
way scikit-learn's digits were made: the drawing is cut into blocks, each block becomes one
pixel whose intensity is how much of it is inked, then normalized by the input spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kfstudio.core.spec import InputSpec
from kfstudio.core.measures.metrics import REST, group_logits, group_outcomes
from kfstudio.core.tasks import ONE_VS_REST, TaskGroup, group_tasks
from kfstudio.gui.build.assembly_view import LiveOutputs, answering_tasks, attached_tasks
from kfstudio.gui.theme import theme_manager
from kfstudio.gui.build.try_images import DrawPad, image_pixmap, image_side


@dataclass(frozen=True)
class Prediction:
    """What one attached task (or one-vs-rest group) says about the current input."""

    title: str
    class_index: int          # in the source output's classes
    class_name: str
    confidence: float         # softmax probability among the task's classes
    teacher_name: str | None  # the teacher's choice over its whole output, if a teacher is set
    teacher_confidence: float | None
    note: str = ""            # what the reader must know to read the answer honestly


def group_title(group: TaskGroup) -> str:
    if group.tasks[0].kind == ONE_VS_REST:
        names = ", ".join(group.class_names[:6]) + (" …" if len(group.class_names) > 6 else "")
        return f"{group.source} ({names})"
    return group.name


NONE_OF_THESE = "none of these"


def read_predictions(groups: list[TaskGroup], logits: dict[str, torch.Tensor],
                     teacher_logits: dict[str, torch.Tensor] | None,
                     labels: dict[str, str] | None = None,
                     thresholds: dict[str, float] | None = None) -> list[Prediction]:
    """Turn one image's task logits (batch of one) into readable predictions.

    A one-vs-rest group trained against the rest, or a subset of calibrated bricks (with their
    ``thresholds``), answers "none of these" (core.metrics). Other
    subsets choose among their own classes only, and ``labels`` ({source: the image's class
    name}) lets the note say when the image's class is not among them."""
    out = []
    for group in groups:
        stacked = group_logits(group, logits, thresholds)[0].float()
        probs = torch.softmax(stacked, dim=0)
        best = int(probs.argmax())
        outcome = int(group_outcomes(group)[best])
        name = NONE_OF_THESE if outcome == REST else group.class_names[best]
        t_name = t_conf = None
        if teacher_logits is not None and group.source in teacher_logits:
            t_probs = torch.softmax(teacher_logits[group.source][0].float(), dim=0)
            t_best = int(t_probs.argmax())
            all_names = _source_names(group, t_probs.numel())
            t_name, t_conf = all_names[t_best], float(t_probs[t_best])
            if t_best not in group.classes:
                t_name += " (not attached)"
        out.append(Prediction(group_title(group), outcome, name, float(probs[best]), t_name, t_conf,
                              _note(group, (labels or {}).get(group.source))))
    return out


def _note(group: TaskGroup, label: str | None) -> str:
    if group.rest:
        return ""
    if label is not None and label not in group.class_names:
        return (f"This image is a {label}, and no attached brick covers {label}: the network can only choose "
                f"among {', '.join(group.class_names)}.")
    if group.tasks[0].kind == ONE_VS_REST and len(group.tasks) == 1:
        return f"Only '{group.class_names[0]}' is attached, so it is the only possible answer."
    return ""


def _class_name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def _source_names(group: TaskGroup, size: int) -> list[str]:
    names = [str(i) for i in range(size)]
    for c, n in zip(group.classes, group.class_names):
        if c < size:
            names[c] = n
    return names


class TryPanel(QWidget):
    """Pick a test image (or draw one) and see every attached task's prediction at once."""

    predictions_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._graph = None
        self._teacher = None
        self._data = None
        self._predictions: list[Prediction] = []
        self._outputs = LiveOutputs()
        self._teacher_said: tuple = (None, None, None)   # (teacher, input, its logits): once per input
        self._image_shown: tuple | None = None           # what the image view shows now
        self._preview_shown: tuple | None = None         # what the draw preview shows now
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(60)
        self._timer.timeout.connect(self.refresh)
        self._build()
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()

    # ------------------------------------------------------------------ widgets

    def _build(self) -> None:
        self.title = QLabel("Try it", self)
        self.sources = QTabWidget(self)
        self.sources.addTab(self._build_images_tab(), "Test images")
        self.draw_pad = DrawPad(self)
        self.draw_pad.drawing_changed.connect(self.schedule_refresh)
        self.sources.addTab(self._build_draw_tab(), "Draw")
        self.sources.currentChanged.connect(self.schedule_refresh)
        self.results = QTableWidget(0, 3, self)
        self.results.setHorizontalHeaderLabels(["Task", "Network says", "Teacher says"])
        self.results.verticalHeader().setVisible(False)
        self.results.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.results.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        header = self.results.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)  # the task is never cut
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.result_stack = QStackedWidget(self)
        self.result_stack.addWidget(self.hint)
        self.result_stack.addWidget(self.results)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        self.note.setObjectName("tryNote")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.sources)
        layout.addWidget(self.result_stack, 1)
        layout.addWidget(self.note)

    def _build_images_tab(self) -> QWidget:
        tab = QWidget(self)
        self.image_view = QLabel(tab)
        self.image_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_view.setMinimumSize(128, 128)
        self.image_label = QLabel(tab)
        self.image_label.setWordWrap(True)
        self.prev_button = QToolButton(tab)
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("Previous test image")
        self.next_button = QToolButton(tab)
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("Next test image")
        self.index_spin = QSpinBox(tab)
        self.index_spin.setToolTip("Which test image")
        self.index_slider = QSlider(Qt.Orientation.Horizontal, tab)
        self.prev_button.clicked.connect(lambda: self.index_spin.stepBy(-1))
        self.next_button.clicked.connect(lambda: self.index_spin.stepBy(1))
        self.index_spin.valueChanged.connect(self.index_slider.setValue)
        self.index_slider.valueChanged.connect(self.index_spin.setValue)
        self.index_spin.valueChanged.connect(self._on_index_changed)
        row = QHBoxLayout()
        row.addWidget(self.prev_button)
        row.addWidget(self.index_slider, 1)
        row.addWidget(self.index_spin)
        row.addWidget(self.next_button)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.image_view, 1)
        layout.addWidget(self.image_label)
        layout.addLayout(row)
        return tab

    def _build_draw_tab(self) -> QWidget:
        tab = QWidget(self)
        self.draw_preview = QLabel(tab)
        self.draw_preview.setToolTip("What the network sees")
        self.draw_preview.setFixedSize(72, 72)
        clear = QPushButton("Clear", tab)
        clear.clicked.connect(self.draw_pad.clear)
        side = QVBoxLayout()
        side.addWidget(QLabel("The network sees:", tab))
        side.addWidget(self.draw_preview)
        side.addWidget(clear)
        side.addStretch(1)
        layout = QHBoxLayout(tab)
        layout.addWidget(self.draw_pad, 1)
        layout.addLayout(side)
        return tab

    # ------------------------------------------------------------------ inputs

    def set_graph(self, graph) -> None:
        self._graph = graph
        self.schedule_refresh()

    def set_teacher(self, teacher) -> None:
        self._teacher = teacher
        self.schedule_refresh()

    def set_test_data(self, dataset) -> None:
        self._data = dataset
        n = len(dataset) if dataset is not None else 0
        for w in (self.index_spin, self.index_slider):
            w.blockSignals(True)
            w.setRange(0, max(0, n - 1))
            w.setValue(0)
            w.blockSignals(False)
        for w in (self.index_spin, self.index_slider, self.prev_button, self.next_button):
            w.setEnabled(n > 0)
        self.schedule_refresh()

    def set_index(self, index: int) -> None:
        self.index_spin.setValue(index)

    def schedule_refresh(self, *_args) -> None:
        self._timer.start()

    def spec(self) -> InputSpec | None:
        if self._teacher is not None:
            return self._teacher.input_spec
        if self._graph is not None and self._graph.common is not None:
            return self._graph.common.input_spec
        return None

    def current_input(self) -> torch.Tensor | None:
        """The input the network runs on now: (1, C, H, W), normalized; None if there is none."""
        spec = self.spec()
        if self.sources.currentIndex() == 1:
            return None if spec is None or self.draw_pad.is_empty() else self.draw_pad.input_tensor(spec)
        if self._data is None or len(self._data) == 0:
            return None
        return self._data.x[self.index_spin.value()].unsqueeze(0).float()

    # ------------------------------------------------------------------ running

    def predictions(self) -> list[Prediction]:
        return list(self._predictions)

    def refresh(self) -> None:
        self._timer.stop()
        spec = self.spec()
        self._update_draw_tab(spec)
        self._update_image(spec)
        x = self.current_input()
        tasks = attached_tasks(self._graph) if self._graph is not None else []
        if not tasks:
            self._show_hint("Nothing is attached yet. Drag a brick onto the base plate and its prediction shows here.")
        elif x is None:
            self._show_hint("Draw a digit on the pad to try the network." if self.sources.currentIndex() == 1
                            else "There are no test images yet; load a teacher and its data, or draw one.")
        else:
            self._run(x, tasks)
        self.predictions_changed.emit()

    def _run(self, x: torch.Tensor, tasks) -> None:
        logits = self._outputs.task_logits(self._graph, x)
        answering, thresholds = answering_tasks(self._graph)  # which groups answer "none of these"
        self._predictions = read_predictions(group_tasks(answering), logits, self._teacher_logits(x),
                                             self._image_labels(), thresholds)
        self._show_table()

    @torch.no_grad()
    def _teacher_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """What the teacher says about ``x`` (run once per input, not once per edit)."""
        teacher = self._teacher
        if teacher is None:
            return None
        known_teacher, known_x, logits = self._teacher_said
        if known_teacher is not teacher or known_x is None or not torch.equal(known_x, x):
            logits = {k: v.detach().cpu() for k, v in teacher.outputs(x.to(teacher.device)).items()}
            self._teacher_said = (teacher, x.clone(), logits)
        return logits

    def _image_labels(self) -> dict[str, str]:
        """The current test image's class name per output (none for a drawing)."""
        if self.sources.currentIndex() == 1 or self._data is None or len(self._data) == 0:
            return {}
        i = self.index_spin.value()
        return {name: _class_name(self._data.class_names.get(name, []), int(y[i]))
                for name, y in self._data.labels.items()}

    def _show_hint(self, text: str) -> None:
        self._predictions = []
        self.note.setText("")
        self.hint.setText(text)
        self.result_stack.setCurrentWidget(self.hint)

    def _show_table(self) -> None:
        theme = theme_manager().theme
        self.results.setRowCount(len(self._predictions))
        for row, pred in enumerate(self._predictions):
            # the answer, then how sure, on its own line: a narrow panel (tabs on a projector) cuts nothing
            said = QTableWidgetItem(f"{pred.class_name}\n{pred.confidence:.0%} sure")
            said.setFont(theme_manager().font(1.1, bold=True))
            teacher = "—" if pred.teacher_name is None else f"{pred.teacher_name}\n{pred.teacher_confidence:.0%} sure"
            t_item = QTableWidgetItem(teacher)
            if pred.teacher_name is not None:
                agree = pred.teacher_name == pred.class_name or (
                    pred.class_name == NONE_OF_THESE and pred.teacher_name.endswith("(not attached)"))
                t_item.setForeground(QColor(theme.ok if agree else theme.bad))
                t_item.setToolTip("The network agrees with the teacher." if agree else "The network and the teacher differ.")
            for col, item in enumerate((QTableWidgetItem(pred.title), said, t_item)):
                self.results.setItem(row, col, item)
        self.results.resizeRowsToContents()
        self.result_stack.setCurrentWidget(self.results)
        self.note.setText("\n".join(p.note for p in self._predictions if p.note))

    def _update_image(self, spec: InputSpec | None) -> None:
        shown = (id(self._data), self.index_spin.value(), spec, image_side())
        if shown == self._image_shown:
            return   # an edit of the assembly leaves the image as it is
        self._image_shown = shown
        if self._data is None or len(self._data) == 0 or spec is None:
            self.image_view.setText("No test images")
            self.image_label.setText("")
            return
        i = self.index_spin.value()
        self.image_view.setPixmap(image_pixmap(self._data.x[i], spec, image_side()))
        labels = [f"{name}: {_class_name(self._data.class_names.get(name, []), int(y[i]))}"
                  for name, y in self._data.labels.items()]
        self.image_label.setText(f"Image {i + 1} of {len(self._data)}" + (" · " + ", ".join(labels) if labels else ""))

    def _update_draw_tab(self, spec: InputSpec | None) -> None:
        usable = spec is not None and spec.channels == 1
        self.sources.setTabEnabled(1, usable)
        self.sources.setTabToolTip(1, "" if usable else "The draw pad is for one-channel (digit-like) inputs.")
        if not usable:
            if self.sources.currentIndex() == 1:
                self.sources.setCurrentIndex(0)
            return
        if self.draw_pad._grid != (spec.height, spec.width):
            self.draw_pad.set_grid(spec.height, spec.width)
        x = self.draw_pad.input_tensor(spec)[0]
        shown = (spec, self.draw_preview.width(), x.numpy().tobytes())
        if shown != self._preview_shown:
            self._preview_shown = shown
            self.draw_preview.setPixmap(image_pixmap(x, spec, self.draw_preview.width()))

    def _on_index_changed(self, _value: int) -> None:
        self.schedule_refresh()

    def _on_theme_changed(self) -> None:
        side = image_side()
        self.image_view.setMinimumSize(side, side)  # the layout makes room: the image is never cropped
        self.title.setFont(theme_manager().font(1.15, bold=True))
        self.hint.setFont(theme_manager().font(1.0))
        self.schedule_refresh()
