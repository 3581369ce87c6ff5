"""What the assembled network costs, live, next to the teacher, and what each brick adds.

The figures come from ``kfstudio.gui.build.cost_model``: totals are sums of per-part figures that
are each computed once (parameters on the GUI thread when a part is first seen, multiply-adds
and latency in a niced child process, ``kfstudio.gui.build.cost_child``; the teacher's in a worker
thread). An edit therefore updates the tables at once with what is known; what is not known yet
reads "measuring…" until the answer lands. An edit made while an answer is on its way is
measured right after it (the earlier answer is remembered: undo shows it at once).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from kfstudio.core.measures.cost import Cost
from kfstudio.gui.build import cost_child
from kfstudio.gui.build.cost_model import CostFigures, CostModel, runs_as, teacher_job
from kfstudio.gui.theme import theme_manager

MEASURING = "measuring…"   # a latency on its way
COUNTING = "…"             # a count on its way (short: a narrow panel at presentation scale keeps its labels)


def human(n: float | None, unit: str = "", unknown: str = COUNTING) -> str:
    if n is None:
        return unknown
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}{unit}"
    return f"{int(n)}{' ' + unit if unit else ''}"


class CostPanel(QWidget):
    """Parameters, multiply-adds and latency of the assembly against the teacher."""

    figures_changed = Signal()     # counts are ready (latency may still be measuring)
    latency_measured = Signal()    # the latency figures arrived
    child_answered = Signal(object, object)     # (plan, future), emitted in the executor's thread
    teacher_answered = Signal(object, object)   # ((teacher, shape), future), likewise
    heights_changed = Signal()     # the tables took new heights (new width or fonts): it needs new room

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._graph = None
        self._teacher = None
        self.model = CostModel()
        self.figures: CostFigures | None = None
        self._future = None          # the measuring child's answer on its way
        self._teacher_worker = None  # the teacher's figures on their way (a Future or a thread worker)
        self._pending = False        # an edit came while measuring: measure again after
        self.child_answered.connect(self._on_child_answered)
        self.teacher_answered.connect(self._on_teacher_answered)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.refresh)
        self.title = QLabel("Cost", self)
        self.note = QLabel("For one image on this computer's CPU.", self)
        self.note.setWordWrap(True)
        self.summary = self._table(["", "This network", "Teacher", "Of the teacher"])
        self.parts = self._table(["Part", "Parameters", "Multiply-adds", "Share"])
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        for w in (self.title, self.note, self.summary, self.hint, self.parts):
            layout.addWidget(w)
        layout.addStretch(1)
        theme_manager().changed.connect(self._on_theme_changed)
        self._on_theme_changed()

    def _table(self, headers: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(headers), self)
        table.setHorizontalHeaderLabels(headers)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return table

    # ------------------------------------------------------------------ inputs

    def set_graph(self, graph) -> None:
        self._graph = graph
        self.schedule_refresh()

    def set_teacher(self, teacher) -> None:
        self._teacher = teacher
        self.schedule_refresh()
        if teacher is not None:
            QTimer.singleShot(0, cost_child.warm)   # the measuring child starts before the first edit

    def schedule_refresh(self) -> None:
        self._timer.start()

    # ------------------------------------------------------------------ figures: sums now, measuring later

    def refresh(self) -> None:
        """Show the figures known now (sums of remembered per-part figures) and start a worker
        for what is missing; it never counts or times anything on the GUI thread."""
        self._timer.stop()
        graph = self._graph
        if graph is None or graph.common is None or not graph.attached_ids():
            self.figures = None
        else:
            ids = graph.attached_ids()
            bricks = [graph.brick(n) for n in ids]
            self.figures = self.model.figures(graph.common, bricks, [graph.title(n) for n in ids], self._teacher)
            self.note.setText(runs_as(bricks))
        self._show()
        self.figures_changed.emit()
        if self._timed():
            self.latency_measured.emit()   # (remembered: undo and redo show it at once)
        self._measure()

    def _current(self):
        """The common module and attached bricks the panel shows (None without any)."""
        graph = self._graph
        if graph is None or graph.common is None or not graph.attached_ids():
            return None
        return graph.common, graph.attached_bricks()

    def _measure(self) -> None:
        """Ask for the figures still unknown: the assembly's from the measuring child process, the
        teacher's from a worker thread. While an answer is on its way, a newer edit waits for it
        (its figures are remembered, for undo) and is measured next."""
        if self.is_measuring():
            self._pending = True
            return
        current = self._current()
        plan = self.model.plan(*current, self._teacher) if current is not None else None
        if plan is None:
            return
        if plan.count or plan.signature is not None:
            try:
                self._future = cost_child.submit(*self.model.child_request(plan))
            except Exception as exc:   # the child could not start or died: say so, try again on the next edit
                self.note.setText(f"Could not time the network: {exc}")
            else:
                self._future.add_done_callback(lambda future: self._relay(plan, future))
        if plan.teacher is not None:
            self._measure_teacher(plan.teacher, tuple(plan.common.input_spec.shape))

    def _measure_teacher(self, teacher, shape: tuple) -> None:
        """The teacher's figures, once per teacher: from the child when its module can be sent there."""
        fits = tuple(teacher.input_spec.shape) == shape
        try:
            self._teacher_worker = cost_child.submit_teacher(teacher, shape, fits)
        except Exception:   # no child: a worker thread does it
            self._teacher_in_thread(teacher, shape)
            return
        self._teacher_worker.add_done_callback(lambda future: self._relay((teacher, shape), future,
                                                                          self.teacher_answered))

    def _teacher_in_thread(self, teacher, shape: tuple) -> None:
        self._teacher_worker = create_worker(teacher_job, teacher, shape, _start_thread=True,
                                             _connect={"returned": self._on_answers,
                                                       "errored": self._on_worker_errored,
                                                       "finished": self._on_teacher_worker_finished})

    def _on_teacher_answered(self, asked: tuple, future) -> None:
        teacher, shape = asked
        try:
            macs, ms = future.result()
        except Exception:   # a module no process can be sent (TorchScript, an exported program): a thread
            self._teacher_in_thread(teacher, shape)
            return
        self._teacher_worker = None
        self._on_answers(("teacher", teacher, Cost(teacher.num_parameters, macs, ms)))
        self._measure_pending()

    def _relay(self, asked, future, signal=None) -> None:
        """(In the executor's thread) hand the child's answers to the GUI thread."""
        try:
            (signal or self.child_answered).emit(asked, future)
        except RuntimeError:   # the panel is gone (its window closed)
            pass

    def _on_child_answered(self, plan, future) -> None:
        self._future = None
        try:
            self.model.learn_from_child(plan, future.result())
        except Exception as exc:   # a child that died or could not count says so in the note
            self.note.setText(f"Could not time the network: {exc}")
        else:
            self._update_figures(plan.signature is not None)
        self._measure_pending()

    def _on_answers(self, answer: tuple) -> None:
        self.model.learn(answer)
        self._update_figures(True)

    def _update_figures(self, timed: bool) -> None:
        current = self._current()
        if current is None or self.figures is None:
            return
        ids = self._graph.attached_ids()
        self.figures = self.model.figures(*current, [self._graph.title(n) for n in ids], self._teacher)
        self._show()
        if timed and self._timed():
            self.latency_measured.emit()

    def _timed(self) -> bool:
        """The network's latency is known, and the teacher's too (where it can be timed)."""
        f = self.figures
        return f is not None and f.network.latency_ms is not None and not self.model.teacher_pending(self._teacher)

    def _on_worker_errored(self, exc: Exception) -> None:
        self.note.setText(f"Could not time the teacher: {exc}")

    def _on_teacher_worker_finished(self) -> None:
        self._teacher_worker = None
        self._measure_pending()

    def _measure_pending(self) -> None:
        if self._pending and not self.is_measuring():
            self._pending = False
            self._measure()

    def is_measuring(self) -> bool:
        return self._future is not None or self._teacher_worker is not None

    def is_stale(self) -> bool:
        """Some figure shown still reads "measuring…"."""
        f = self.figures
        if f is None:
            return False
        costs = [f.network, *f.parts.values()]
        return any(c.macs is None for c in costs) or f.network.latency_ms is None

    # ------------------------------------------------------------------ showing

    def _show(self) -> None:
        f = self.figures
        self.summary.setVisible(f is not None)
        self.parts.setVisible(f is not None)
        self.hint.setVisible(f is None)
        if f is None:
            self.hint.setText("Attach bricks to the base plate to see what the network costs.")
            return
        t = f.teacher or Cost(None, None, None)
        teacher_unknown = COUNTING if self.model.teacher_pending(self._teacher) else "—"
        latency = f"{f.network.latency_ms:.2f} ms" if f.network.latency_ms is not None else MEASURING
        rows = [
            ("Parameters", f"{f.network.parameters:,}", _num(t.parameters), _ratio(f.network.parameters, t.parameters)),
            ("Multiply-adds", human(f.network.macs), human(t.macs, unknown=teacher_unknown),
             _ratio(f.network.macs, t.macs)),
            ("Latency (fused)" if f.fused else "Latency", latency, teacher_unknown if t.latency_ms is None else f"{t.latency_ms:.2f} ms",
             _ratio(f.network.latency_ms, t.latency_ms)),
        ]
        _fill(self.summary, rows)
        total_macs = max(1, f.network.macs or 1)
        part_rows = []
        for name, cost in f.parts.items():
            label = name if name == "common module" else f"+ {name}"
            share = COUNTING if cost.macs is None or f.network.macs is None else f"{cost.macs / total_macs:.0%}"
            part_rows.append((label, f"{cost.parameters:,}", human(cost.macs), share))
        _fill(self.parts, part_rows)
        self.parts.setToolTip("What each part adds: the common module runs once; each brick adds its own network.")

    def _on_theme_changed(self) -> None:
        self.title.setFont(theme_manager().font(1.15, bold=True))
        self.note.setStyleSheet(f"color: {theme_manager().theme.muted};")
        for table in (self.summary, self.parts):
            table.setFont(theme_manager().font(0.95))
        if self.figures is not None:
            self._show()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():  # wrapped cells take new heights
            for table in (self.summary, self.parts):
                _fit_height(table)
            self.heights_changed.emit()


def _num(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "—"
    return f"{a / b:.0%}"


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    """Put ``rows`` in ``table``, touching only the cells whose text changed (an edit changes a few)."""
    changed = table.rowCount() != len(rows)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = table.item(r, c)
            if item is None:
                item = QTableWidgetItem()
                if c > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(r, c, item)
            if item.text() != str(text):
                item.setText(str(text))
                changed = True
    if changed:
        _fit_height(table)


def _fit_height(table: QTableWidget) -> None:
    """Rows as tall as their text at the table's width now, and the table as tall as its rows."""
    table.resizeRowsToContents()
    height = table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(table.rowCount())) + 4
    table.setFixedHeight(height)
