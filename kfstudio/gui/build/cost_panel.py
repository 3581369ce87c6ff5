"""What the assembled network costs, live, next to the teacher, and what each brick adds.

Parameters and multiply-adds come from ``kfstudio.core.measures.cost`` (hooks on every conv and
linear layer during one forward pass) and are computed as soon as the graph settles (a
short debounce, so a burst of edits costs one recount). Latency is measured on the CPU in
a worker thread with a small number of runs, so the canvas never waits for it; the figures
say "measuring…" until it arrives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
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

from kfstudio.assembly.measure import eager_form, inference_form
from kfstudio.core.measures.cost import Cost, count_macs, count_parameters, measure_latencies
from kfstudio.core.students import module_key
from kfstudio.gui.build.assembly_view import assembled_network
from kfstudio.gui.theme import theme_manager

CPU = torch.device("cpu")
LATENCY_RUNS = {"warmup": 2, "repeats": 12, "budget_s": 0.25}


@dataclass
class CostFigures:
    """The panel's numbers: the network's cost, the teacher's, and each part's share."""

    network: Cost
    teacher: Cost | None
    parts: dict[str, Cost] = field(default_factory=dict)   # "common module", then each brick title
    fused: bool = True                                       # the latency is of the fused network


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "—"
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}{unit}"
    return f"{int(n)}{' ' + unit if unit else ''}"


def _latency_job(network: torch.nn.Module, teacher_module, spec_shape: tuple) -> tuple[float, float | None]:
    """Runs in a worker thread: median CPU latency of the network and of the teacher, one image, timed in turns."""
    torch.set_num_threads(1)
    x = torch.randn(1, *spec_shape, generator=torch.Generator().manual_seed(0))
    runs = {"network": lambda: network(x)} | ({"teacher": lambda: teacher_module(x)} if teacher_module is not None else {})
    ms = measure_latencies(runs, CPU, **LATENCY_RUNS)
    return ms["network"], ms.get("teacher")


class CostPanel(QWidget):
    """Parameters, multiply-adds and latency of the assembly against the teacher."""

    figures_changed = Signal()     # counts are ready (latency may still be measuring)
    latency_measured = Signal()    # the latency figures arrived
    heights_changed = Signal()     # the tables took new heights (new width or fonts): it needs new room

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._graph = None
        self._teacher = None
        self._teacher_cost: Cost | None = None
        self.figures: CostFigures | None = None
        self._generation = 0
        self._worker = None
        self._worker_generation = -1
        self._timed_teacher: tuple = (None, None, None)
        self._pending_latency = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.refresh)
        self.title = QLabel("Cost", self)
        self.note = QLabel("For one image on this computer's CPU.", self)
        self.note.setWordWrap(True)
        self.summary = self._table(["", "This network", "Teacher", "Network / teacher"])
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
        self._teacher_cost = None
        self._timed_teacher = (None, None, None)
        self.schedule_refresh()

    def schedule_refresh(self) -> None:
        self._timer.start()

    # ------------------------------------------------------------------ counting

    def refresh(self) -> None:
        """Count parameters and multiply-adds now; start a latency measurement in the background."""
        self._timer.stop()
        self._generation += 1
        graph = self._graph
        if graph is None or graph.common is None or not graph.attached_ids():
            self.figures = None
            self._show()
            self.figures_changed.emit()
            return
        network = assembled_network(graph)
        x = network.example_input(1)
        # brick by brick: the fused runner calls no conv/linear layer of a brick for the hooks to count
        run = lambda: network.forward_unfused(x)
        with torch.no_grad():
            parts = {"common module": Cost(count_parameters(network.common), count_macs(run, network.common), None)}
            for node_id, task in zip(graph.attached_ids(), network.tasks):
                brick = network.bricks[module_key(task.name)]
                parts[graph.title(node_id)] = Cost(count_parameters(brick), count_macs(run, brick), None)
            total = Cost(count_parameters(network), count_macs(run, network), None)
        self.figures = CostFigures(total, self._teacher_counts(x), parts, network.fused)
        self.note.setText(_runs_as(network, self._teacher_folded()))
        self._show()
        self.figures_changed.emit()
        self._start_latency(network)

    def _teacher_counts(self, x: torch.Tensor) -> Cost | None:
        teacher = self._teacher
        if teacher is None:
            return None
        if self._teacher_cost is None:
            module = teacher.module
            if module is None or tuple(teacher.input_spec.shape) != tuple(x.shape[1:]):
                self._teacher_cost = Cost(teacher.num_parameters, teacher.counts[1] if teacher.counts else None, None)
            else:
                xt = x.to(teacher.device)
                self._teacher_cost = Cost(count_parameters(module), count_macs(lambda: module(xt), module), None)
        return self._teacher_cost

    # ------------------------------------------------------------------ latency, off the GUI thread

    def _start_latency(self, network) -> None:
        if self._worker is not None:
            self._pending_latency = True   # measure again once the running one ends
            return
        teacher_module = None
        if self.figures.teacher is not None and self.figures.teacher.latency_ms is None:
            teacher_module = self._teacher_copy()
        shape = tuple(network.input_spec.shape)
        generation = self._generation
        # The worker times private copies: counting multiply-adds puts hooks on the shared
        # modules, and those hooks must never see the worker's forward passes.
        self._worker_generation = generation
        self._worker = create_worker(_latency_job, copy.deepcopy(network), teacher_module, shape, _start_thread=True,
                                     _connect={"returned": self._on_worker_returned,
                                               "errored": self._on_worker_errored,
                                               "finished": self._on_worker_finished})

    def _teacher_copy(self):
        """A hook-free CPU copy of the teacher's module for timing, BatchNorm folded and channels_last
        as in the fused network (made once per teacher)."""
        teacher = self._teacher
        if teacher is None or teacher.module is None:
            return None
        if self._timed_teacher[0] is not teacher:
            module, folded = inference_form(teacher.module)   # the fused network's form: like with like
            self._timed_teacher = (teacher, module, folded)
        return self._timed_teacher[1]

    def _teacher_folded(self) -> bool | None:
        """Whether the timed teacher's BatchNorm is folded (None: no teacher module to time)."""
        if self._teacher is None or self._teacher.module is None or self._teacher_copy() is None:
            return None
        return self._timed_teacher[2]

    def _on_worker_returned(self, result: tuple) -> None:
        net_ms, teacher_ms = result
        if self.figures is None or self._worker_generation != self._generation:
            return
        f = self.figures
        f.network = Cost(f.network.parameters, f.network.macs, net_ms)
        if f.teacher is not None and teacher_ms is not None:
            self._teacher_cost = Cost(f.teacher.parameters, f.teacher.macs, teacher_ms)
            f.teacher = self._teacher_cost
        self._show()
        self.latency_measured.emit()

    def _on_worker_errored(self, exc: Exception) -> None:
        self.note.setText(f"Could not time the network: {exc}")

    def _on_worker_finished(self) -> None:
        self._worker = None
        if self._pending_latency:
            self._pending_latency = False
            if self.figures is not None and self._graph is not None and self._graph.attached_ids():
                self._start_latency(assembled_network(self._graph))

    def is_measuring(self) -> bool:
        return self._worker is not None

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
        latency = (f"{f.network.latency_ms:.2f} ms" if f.network.latency_ms is not None else "measuring…")
        rows = [
            ("Parameters", f"{f.network.parameters:,}", _num(t.parameters), _ratio(f.network.parameters, t.parameters)),
            ("Multiply-adds", human(f.network.macs), human(t.macs), _ratio(f.network.macs, t.macs)),
            ("Latency, eager (fused)" if f.fused else "Latency, eager", latency, "—" if t.latency_ms is None else f"{t.latency_ms:.2f} ms",
             _ratio(f.network.latency_ms, t.latency_ms)),
        ]
        _fill(self.summary, rows)
        total_macs = max(1, f.network.macs or 1)
        part_rows = []
        for name, cost in f.parts.items():
            label = name if name == "common module" else f"+ {name}"
            part_rows.append((label, f"{cost.parameters:,}", human(cost.macs), f"{(cost.macs or 0) / total_macs:.0%}"))
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


def _runs_as(network, teacher_folded: bool | None) -> str:
    """Which runtime and form the latency is of: the fused network (as it runs and exports) or brick by
    brick, next to the teacher in the same form; the export dialog times the exported file."""
    where = (f"Latency vs teacher: both in eager torch ({eager_form(network.fused, teacher_folded)}), one image, "
             "1 thread, on this computer's CPU, timed in turns.")
    if not network.fused:
        return where
    groups = len(network.fused_runner.groups)
    how = "as one network" if groups == 1 else f"as {groups} networks, one per architecture"
    return (f"{where} Fused: the bricks run {how} of stacked weights, as they do when exported; "
            "Export… times the exported file in its own runtime.")


def _num(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "—"
    return f"{a / b:.0%}"


def _fill(table: QTableWidget, rows: list[tuple]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(str(text))
            if c > 0:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            table.setItem(r, c, item)
    _fit_height(table)


def _fit_height(table: QTableWidget) -> None:
    """Rows as tall as their text at the table's width now, and the table as tall as its rows."""
    table.resizeRowsToContents()
    height = table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(table.rowCount())) + 4
    table.setFixedHeight(height)
