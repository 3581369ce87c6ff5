"""The Build page: snap task bricks onto the common module and try the network at once.

Left, the brick palette; in the middle, the canvas (the common module as a base plate,
bricks as Lego-like blocks); right, the cost of the assembly and a panel that runs it on
test images or a drawing. Every change goes through an edit on the shared undo stack; the
canvas and the panels redraw from the graph's events.

Contract used by the main window: ``BuildPage(undo_stack)``, ``load_run(folder)``,
``set_teacher(teacher)``, ``set_test_data(dataset)``, ``graph``, ``load_graph(graph)``,
``actions()``, ``open_export_dialog()`` and the ``graph_changed`` signal.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QStatusTipEvent, QUndoStack
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from kfstudio.assembly import edits
from kfstudio.assembly.graph import BrickGraph
from kfstudio.core.errors import KFError
from kfstudio.core.students.networks import count_parameters
from kfstudio.gui.build.brick_library import BrickLibrary
from kfstudio.gui.build.brick_text import attached_line, brick_summary, plural, teacher_name
from kfstudio.gui.build.actions import create_actions
from kfstudio.gui.build.canvas.scene import BrickScene
from kfstudio.gui.build.canvas.view import BrickView
from kfstudio.gui.build.canvas.items import PlateItem
from kfstudio.gui.build.cost_panel import CostPanel
from kfstudio.gui.train.new_brick_dialog import open_new_brick_dialog
from kfstudio.gui.build.palette import BrickPalette
from kfstudio.gui.panel_stack import PanelStack
from kfstudio.gui.build.relations_view import RelationsView
from kfstudio.gui.theme import scale_splitter, theme_manager
from kfstudio.gui.build.try_panel import TryPanel
from kfstudio.gui.build.commands import BrickCommands
from kfstudio.io.bricks import CommonFile


SPLITTER_SIZES = (250, 640, 360)  # palette, canvas, cost + try-it at 100 %; the side panes follow the UI scale


class BuildPage(BrickCommands, QWidget):
    """Palette, canvas, cost and try-it panels around one ``BrickGraph``."""

    graph_changed = Signal()

    def __init__(self, undo_stack: QUndoStack, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = undo_stack
        self._graph = BrickGraph()
        self.library = BrickLibrary()
        self._teacher = None
        self.export_dialog = None
        self.refit_on_resize = False  # presentation mode sets it: side panes and bricks follow the size
        self._build_widgets()
        self._build_actions()
        self._graph_connections: list = []
        self._attach_graph(self._graph)
        self.undo_stack.indexChanged.connect(self._on_undo_stack_index_changed)
        theme_manager().changed.connect(self._on_theme_changed)

    # ------------------------------------------------------------------ construction

    def _build_widgets(self) -> None:
        self.palette = BrickPalette(self)
        self.palette.add_requested.connect(self._on_palette_add_requested)
        self.palette.new_brick_requested.connect(self._on_palette_new_brick_requested)
        self.scene = BrickScene(self)
        self.scene.colour_index = self._colour_index
        self.scene.describe_common = self._describe_common
        self.scene.describe_brick = self._describe_brick
        self.scene.expected_slots = self._expected_slots
        self.scene.check_node = self._check_node
        self.scene.move_finished.connect(self._on_scene_move_finished)
        self.scene.status_message.connect(self._on_scene_status_message)
        self.scene.selectionChanged.connect(self._update_actions)
        self.view = BrickView(self.scene, self)
        self.view.setObjectName("brickCanvas")
        self.view.check_palette = self._check_palette
        self.view.palette_title = self.library.title
        self.view.brick_dropped.connect(self._on_view_brick_dropped)
        self.message = QLabel(self)
        self.message.setObjectName("buildMessage")
        self.message.setWordWrap(True)
        self.cost_panel = CostPanel(self)
        self.try_panel = TryPanel(self)
        centre = QWidget(self)
        centre_layout = QVBoxLayout(centre)
        centre_layout.setContentsMargins(0, 0, 0, 0)
        self.relations = RelationsView(self.plate_folder, self)
        self.centre_tabs = QTabWidget(self)
        self.centre_tabs.addTab(self.view, "Canvas")
        self.centre_tabs.addTab(self.relations, "Relations")
        centre_layout.addWidget(self.centre_tabs, 1)
        centre_layout.addWidget(self.message)
        right = self.right_stack = PanelStack(self)  # tabs when the window is too short for both
        right.add_panel(self.cost_panel, "Cost")
        right.add_panel(self.try_panel, "Try it", stretch=1)
        self.right_splitter = right.splitter
        self.cost_panel.figures_changed.connect(self._fit_cost_panel)
        self.cost_panel.heights_changed.connect(self._fit_cost_panel, Qt.ConnectionType.QueuedConnection)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.palette)
        self.splitter.addWidget(centre)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes(list(SPLITTER_SIZES))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)
        self._on_theme_changed()
        self._show_message("Load a factorization run to get its common module and bricks.")

    def _build_actions(self) -> None:
        create_actions(self)

    def actions(self) -> list[QAction]:
        """Actions for the Edit and View menus, each with a shortcut."""
        return [self.delete_action, self.detach_action, self.attach_action, self.rename_action,
                self.select_all_action, self.zoom_in_action, self.zoom_out_action, self.fit_action,
                self.actual_size_action, self.export_action]

    # ------------------------------------------------------------------ the graph

    @property
    def graph(self) -> BrickGraph:
        return self._graph

    def load_graph(self, graph: BrickGraph) -> None:
        """Show ``graph`` (e.g. from a project file); the undo history starts afresh."""
        self._detach_graph()
        self._graph = graph
        loaded_run = False
        if graph.common is not None:
            self.library.remember_common(graph.common)
            run_folder = Path(graph.common.path).parent
            if (run_folder / "bricks").is_dir() and not self.library.knows_run(run_folder):
                try:
                    self.load_run(run_folder, as_plate=False)   # its other bricks, ready to drag
                    loaded_run = True
                except KFError:
                    pass
        for node_id in graph.brick_ids():
            self.library.remember(graph.brick(node_id))
        self.undo_stack.clear()
        self._attach_graph(graph)
        self.view.fit_to_view()
        self.sync_views()
        if not loaded_run:  # (loading its run said what is attached; an emptied undo history says nothing)
            self._show_message(self._attached_line())
        self.graph_changed.emit()

    def save_project(self, path: Path | str) -> Path:
        """Write the canvas as a ``.kfproj`` project (``kfstudio.io.project``, atomic); returns the path."""
        from kfstudio.io.project import project_from_graph, save_project

        common = self._graph.common
        run_folder = Path(common.path).parent if common is not None else None
        saved = save_project(project_from_graph(self._graph, run_folder), path)
        self.undo_stack.setClean()
        return saved

    def open_project(self, path: Path | str) -> list[str]:
        """Open a ``.kfproj`` project onto the canvas; returns its warnings (one sentence each)."""
        from kfstudio.io.project import load_project

        project = load_project(path)
        self.load_graph(project.graph)
        for warning in project.warnings[:1]:
            self._show_message(warning, error=True)
        return project.warnings

    def _attach_graph(self, graph: BrickGraph) -> None:
        graph.changed.connect(self._on_graph_changed)
        self._graph_connections = [(graph.changed, self._on_graph_changed)]
        self.scene.set_graph(graph)
        self.cost_panel.set_graph(graph)
        self.try_panel.set_graph(graph)
        self._update_actions()

    def _detach_graph(self) -> None:
        for signal, slot in self._graph_connections:
            signal.disconnect(slot)
        self._graph_connections = []

    def _on_graph_changed(self) -> None:
        self._update_actions()
        self._mark_attached()
        self.cost_panel.schedule_refresh()
        self.try_panel.schedule_refresh()
        self.graph_changed.emit()

    def _on_undo_stack_index_changed(self, _index: int) -> None:
        # Every edit, undo and redo ends here: the panels follow it now, not a timer later, so
        # fast undo/redo on a busy machine never leaves them an edit behind the Edit menu.
        self.sync_views()
        self._show_message(self._attached_line())

    def sync_views(self) -> None:
        """Bring the palette, cost and try-it panels up to the graph now (latency still runs later)."""
        self._mark_attached()
        self.cost_panel.refresh()
        self.try_panel.refresh()

    def _mark_attached(self) -> None:
        keys = {str(self._graph.brick(n).path) for n in self._graph.attached_ids()}
        self.palette.set_attached(keys)
        self.palette.hint.setText("✓ marks the bricks on the plate. Drag another one on to add its task." if keys
                                  else "Drag a brick onto the base plate to add its task.")

    def _attached_line(self) -> str:
        return attached_line([self._graph.title(n) for n in self._graph.attached_ids()])

    # ------------------------------------------------------------------ loading runs

    def load_run(self, folder: Path | str, *, as_plate: bool = True, preloaded: tuple | None = None) -> None:
        """Add a factorization folder's bricks to the palette and (``as_plate``) its common module
        as the base plate; ``preloaded``: its (common, bricks) as ``brick_library.read_run`` read
        them in the background. Raises a ``KFError`` in words if the folder cannot be read."""
        folder = Path(folder)
        common, entries = self.library.load_run(folder, preloaded)
        self.palette.add_entries(entries)
        if as_plate:
            self.use_common(common)
        self._show_message(f"Loaded {plural(len(entries), 'brick')} from '{folder.name}'. {self._attached_line()}")

    def use_common(self, common: CommonFile) -> None:
        """Make ``common`` the base plate: directly on an empty canvas, else as an undoable edit."""
        current = self._graph.common
        if current is not None and current.fingerprint == common.fingerprint:
            return
        if not self._graph.brick_ids():
            self._graph.set_common(common, (0.0, 0.0))
            self.undo_stack.clear()   # older steps refer to bricks of another common module
            self.view.fit_to_view()
            self.sync_views()
        else:
            self._push(edits.SetCommonModule(self._graph, common, self._graph.common_position or (0.0, 0.0)))

    # ------------------------------------------------------------------ teacher and test data

    def set_teacher(self, teacher) -> None:
        self._teacher = teacher
        self.cost_panel.set_teacher(teacher)
        self.try_panel.set_teacher(teacher)

    def set_test_data(self, dataset) -> None:
        self.try_panel.set_test_data(dataset)

    # ------------------------------------------------------------------ facts for the canvas

    def _colour_index(self, node_id: str) -> int:
        return self.library.colour_of(self._graph.brick(node_id))

    def _describe_common(self) -> tuple[str, str]:
        common = self._graph.common
        if common is None:
            return "Common module", ""
        arch = common.manifest.get("architecture", {})
        spec = common.input_spec
        detail = (f"{teacher_name(common.manifest)} · {arch.get('arch', '?')} ×{arch.get('width', '?')} · "
                  f"{count_parameters(common.module):,} parameters · input {spec.channels}×{spec.height}×{spec.width}")
        return "Common module", detail

    def _describe_brick(self, node_id: str) -> str:
        return brick_summary(self._graph.brick(node_id))

    def _expected_slots(self) -> int:
        common = self._graph.common
        return self.library.task_count(common) if common is not None else PlateItem.MIN_SLOTS

    # ------------------------------------------------------------------ rules, in words

    def plate_folder(self) -> Path | None:
        """The run folder of the base plate's common module (None without a plate)."""
        return Path(self._graph.common.path).parent if self._graph.common is not None else None

    def _on_palette_new_brick_requested(self) -> None:
        self.new_brick_dialog = open_new_brick_dialog(self)

    def open_export_dialog(self):
        """Open the export dialog (window-modal, not blocking); returns it, or None if nothing is attached."""
        from kfstudio.gui.build.export_dialog import ExportDialog

        if not self._graph.attached_ids():
            self._show_message("Attach at least one brick to the common module, then export the network.", error=True)
            return None
        self.export_dialog = ExportDialog(self._graph, self, teacher=self._teacher)
        self.export_dialog.open()
        return self.export_dialog

    def _update_actions(self) -> None:
        selected = self._selected() if self.scene.graph is self._graph else []
        attached = [n for n in selected if self._graph.has_node(n) and self._graph.is_attached(n)]
        self.delete_action.setEnabled(bool(selected))
        self.detach_action.setEnabled(bool(attached))
        self.attach_action.setEnabled(len(attached) < len(selected))
        self.rename_action.setEnabled(len(selected) == 1)
        self.select_all_action.setEnabled(bool(self._graph.brick_ids()))
        self.export_action.setEnabled(bool(self._graph.attached_ids()))

    # ------------------------------------------------------------------ messages and theme

    def _show_message(self, text: str, error: bool = False) -> None:
        theme = theme_manager().theme
        self.message.setText(text)
        self.message.setStyleSheet(f"color: {theme.bad if error else theme.muted};")
        self.message.setProperty("error", error)
        if text:
            QApplication.sendEvent(self, QStatusTipEvent(text))

    def _on_scene_status_message(self, text: str) -> None:
        self.view.setStatusTip(text)
        if text:
            self._show_message(text, error=not self.scene.bubble.ok)

    def _fit_cost_panel(self) -> None:
        """Give the cost panel the height its tables need, from the try-it panel's spare room: the
        splitter keeps the sizes it was given, and a third brick's row was cut off under it."""
        sizes = self.right_splitter.sizes()
        if len(sizes) != 2 or not sum(sizes):
            return
        spare = sizes[1] - self.try_panel.minimumSizeHint().height()
        grow = min(self.cost_panel.sizeHint().height() - sizes[0], spare)
        if grow > 0:
            self.right_splitter.setSizes([sizes[0] + grow, sizes[1] - grow])

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.refit_on_resize:  # presentation mode: also when the page is shown at a new size later
            QTimer.singleShot(0, self.fit_layout)

    def fit_layout(self) -> None:
        """Side panes for the current scale and width (the canvas keeps half), the bricks fitted to
        the canvas: after presentation mode changes the window, the bricks grow with it."""
        scale_splitter(self.splitter, SPLITTER_SIZES, 1, max_side_share=0.5, shrink_first=0)
        self.view.fit_to_view()

    def _on_theme_changed(self) -> None:
        scale_splitter(self.splitter, SPLITTER_SIZES, 1, max_side_share=0.5, shrink_first=0)
        self.message.setFont(theme_manager().font(0.95))
        self._show_message(self.message.text(), bool(self.message.property("error")))
