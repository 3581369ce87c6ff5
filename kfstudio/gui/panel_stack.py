"""Panels stacked one above the other while they fit, tabs when the window is too short.

The Build page's cost and try-it panels need about 800 px stacked at the presentation scale:
on a 720-line projector the window grew past the screen to make room (1280x1195, the bottom
40 % unreachable). A ``PanelStack`` asks only for its tallest panel's height; when it is
given less than the stacked panels need, it shows them as tabs instead, and goes back to
stacking when there is room again. The panels are the same widgets either way (moved, not
rebuilt), so what they show and their connections are kept. A ``VerticalScroll`` does the
same for one tall column (the Factorize page's settings): it scrolls instead.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, QTimer
from PySide6.QtWidgets import (
    QScrollArea,
    QSplitter,
    QStackedLayout,
    QTabWidget,
    QWidget,
)


class PanelStack(QWidget):
    """Two or more panels in a vertical splitter, or as tabs when the height is too small."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setChildrenCollapsible(False)
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self._layout = QStackedLayout(self)
        self._layout.addWidget(self.splitter)
        self._layout.addWidget(self.tabs)
        self._panels: list[tuple[QWidget, str]] = []
        self._stretch: list[int] = []
        self._tabbed = False
        self._relayout = QTimer(self)
        self._relayout.setSingleShot(True)
        self._relayout.timeout.connect(self._fit)

    def add_panel(self, panel: QWidget, title: str, stretch: int = 0) -> None:
        self._panels.append((panel, title))
        self._stretch.append(stretch)
        self.splitter.addWidget(panel)
        self.splitter.setStretchFactor(self.splitter.count() - 1, stretch)
        panel.installEventFilter(self)  # a panel that grows (a new row, bigger fonts) may no longer fit

    @property
    def tabbed(self) -> bool:
        return self._tabbed

    def stacked_height(self) -> int:
        """The height the panels need one above the other: half-way between their bare minimum
        (where the try-it panel's image covered its caption and its table showed half a row) and
        what they ask for (which counts a default-sized empty table)."""
        handles = self.splitter.handleWidth() * max(0, len(self._panels) - 1)
        return sum((panel.minimumSizeHint().height() + panel.sizeHint().height()) // 2
                   for panel, _title in self._panels) + handles

    def set_tabbed(self, tabbed: bool) -> None:
        if tabbed == self._tabbed:
            return
        self._tabbed = tabbed
        if tabbed:
            for panel, title in self._panels:
                self.tabs.addTab(panel, title)
            self._layout.setCurrentWidget(self.tabs)
        else:
            self.tabs.clear()  # the panels stay alive: they go back into the splitter
            for panel, _title in self._panels:
                self.splitter.addWidget(panel)
                panel.show()
            self._layout.setCurrentWidget(self.splitter)
            # the panels that do not stretch get what they ask for, the stretching one the rest
            self.splitter.setSizes([10_000 if stretch else panel.sizeHint().height()
                                    for (panel, _title), stretch in zip(self._panels, self._stretch)])
        self.updateGeometry()

    def minimumSizeHint(self) -> QSize:
        """The tallest panel with a tab bar: what the tabs need, never the stacked height."""
        width = max((panel.minimumSizeHint().width() for panel, _title in self._panels), default=0)
        height = max((panel.minimumSizeHint().height() for panel, _title in self._panels), default=0)
        return QSize(width, height + self.tabs.tabBar().sizeHint().height())

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            self._relayout.start(0)
        return False

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._relayout.start(0)  # after this resize: moving panels now would resize them inside it

    def _fit(self) -> None:
        self.set_tabbed(self.height() < self.stacked_height())


class VerticalScroll(QScrollArea):
    """One column that scrolls up and down when the window is shorter than it, never sideways:
    it asks for the column's whole width and a small height."""

    MIN_HEIGHT = 120

    def __init__(self, column: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidget(column)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def minimumSizeHint(self) -> QSize:
        width = self.widget().minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(width, self.MIN_HEIGHT)
