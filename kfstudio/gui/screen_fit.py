"""The main window laid out for the screen it is on: presentation mode and the normal window.

Presentation mode used to set the UI scale to 150 % whatever the screen: on a 1280x720
projector the window then needed 1195 px and grew 40 % past the bottom of the screen. Now the
scale is chosen for the screen (150 % from about 900 lines up, 125 % below) and lowered
further while the window's minimum size (every page's, the tallest panel included) does not
fit the screen's available area. The panels help: the Build page's cost and try-it panels
become tabs and the Factorize page's settings scroll when the height is short
(``kfstudio.gui.panel_stack``).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRect, QSize
from PySide6.QtWidgets import QApplication

from kfstudio.gui.theme import theme_manager

PRESENTATION_SCALES = (1.5, 1.25, 1.0)   # largest first
TALL_SCREEN = 900           # available lines from which 150 % still leaves the canvas room


def available_geometry(window) -> QRect:
    """The part of the window's screen that windows may use (the panels and docks left out)."""
    screen = window.screen() or QApplication.primaryScreen()
    return screen.availableGeometry()


def preferred_scale(available: QSize) -> float:
    """The presentation scale for a screen this size, before checking that the window fits."""
    return PRESENTATION_SCALES[0] if available.height() >= TALL_SCREEN else PRESENTATION_SCALES[1]


def frame_margins(window) -> QSize:
    """How much the window manager's frame adds (nothing in fullscreen or offscreen)."""
    if window.isFullScreen():
        return QSize(0, 0)
    frame, inner = window.frameGeometry(), window.geometry()
    return QSize(max(0, frame.width() - inner.width()), max(0, frame.height() - inner.height()))


def minimum_size(window) -> QSize:
    """The smallest the window can be at the current scale, its frame included."""
    QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)  # layouts follow the new fonts first
    hint = window.minimumSizeHint().expandedTo(window.minimumSize())
    return hint + frame_margins(window)


def fits(window, available: QRect) -> bool:
    need = minimum_size(window)
    return need.width() <= available.width() and need.height() <= available.height()


def choose_presentation_scale(window, available: QRect) -> float:
    """Set the largest presentation scale at which ``window`` fits ``available``; returns it."""
    preferred = preferred_scale(available.size())
    candidates = [s for s in PRESENTATION_SCALES if s <= preferred]
    for scale in candidates:
        theme_manager().set_scale(scale)
        if fits(window, available):
            return scale
    return candidates[-1]


def fit_normal_window(window, available: QRect | None = None) -> None:
    """Shrink and move a normal window so that it lies inside the screen's available area."""
    available = available or available_geometry(window)
    margins = frame_margins(window)
    width = min(window.width(), available.width() - margins.width())
    height = min(window.height(), available.height() - margins.height())
    if (width, height) != (window.width(), window.height()):
        window.resize(width, height)
    frame = window.frameGeometry()
    x = min(max(frame.x(), available.x()), available.right() + 1 - frame.width())
    y = min(max(frame.y(), available.y()), available.bottom() + 1 - frame.height())
    if (x, y) != (frame.x(), frame.y()):
        window.move(x, y)


def fit_build_page(page, presenting: bool) -> None:
    """Give the canvas its share of the new width and fit the bricks to it (they grow with it). In
    presentation mode the page does so again whenever it gets a new size: a window manager makes
    a window fullscreen after the request, and a page on a hidden tab is resized when shown."""
    if page is not None and hasattr(page, "fit_layout"):
        page.refit_on_resize = presenting
        page.fit_layout()
