"""Light and dark themes and the UI scale, shared by every widget and plot.

``theme_manager()`` is the one ``ThemeManager``; widgets read ``theme_manager().theme``
when they paint and redraw on its ``changed`` signal, so plots and the canvas follow a
theme switch or a new UI scale at once (presentation mode enlarges everything together).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication



@dataclass(frozen=True)
class Theme:
    name: str
    window: str
    base: str
    text: str
    muted: str
    accent: str
    ok: str          # "fits here"
    bad: str         # "does not fit"
    plate: str       # the common module's base plate
    grid: str
    curves: tuple[str, ...]   # one colour per loss term / task, in order: the text colour, then 11
                              # qualitative ones (Kelly's contrast set) that stay apart on a projector

    def color(self, field: str) -> QColor:
        return QColor(getattr(self, field))

    def curve(self, index: int) -> QColor:
        return QColor(self.curves[index % len(self.curves)])


LIGHT = Theme(
    name="light", window="#f4f5f7", base="#ffffff", text="#1d2330", muted="#667085", accent="#2f6fdd",
    ok="#1f9d55", bad="#d64545", plate="#c9d3e3", grid="#d9dde5",
    curves=("#1d2330", "#0067a5", "#f38400", "#008856", "#be0032", "#875692", "#17becf", "#882d17", "#d35fb7",
            "#6b8e00", "#848482", "#a67c00"),
)
DARK = Theme(
    name="dark", window="#1e2129", base="#262a33", text="#e6e8ee", muted="#98a2b3", accent="#6ea8fe",
    ok="#51cf66", bad="#ff6b6b", plate="#3b4352", grid="#3a3f4b",
    curves=("#f1f3f5", "#5aa9e6", "#ff9d3c", "#3cc98a", "#ff5c7a", "#b98fd9", "#66d9e8", "#d2875f", "#f0a6c3",
            "#b5e04a", "#c8c8c6", "#f6c343"),
)
THEMES = {"light": LIGHT, "dark": DARK}


class ThemeManager(QObject):
    """Holds the current theme and UI scale; ``changed`` fires when either changes."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._theme = LIGHT
        self._scale = 1.0
        self._base_point_size: float | None = None

    @property
    def theme(self) -> Theme:
        return self._theme

    @property
    def scale(self) -> float:
        return self._scale

    def set_theme(self, name: str) -> None:
        self._theme = THEMES[name]
        self.apply()

    def set_scale(self, scale: float) -> None:
        self._scale = max(0.75, min(3.0, float(scale)))
        self.apply()

    def restore(self, name: str, scale: float) -> None:
        """Set theme and scale together (one ``changed``), e.g. from saved settings."""
        self._theme = THEMES.get(name, LIGHT)
        self._scale = max(0.75, min(3.0, float(scale)))
        self.apply()

    def font(self, relative: float = 1.0, bold: bool = False) -> QFont:
        """The application font at the current scale, times ``relative``."""
        font = QFont(QApplication.font())
        font.setPointSizeF(self.base_point_size() * self._scale * relative)
        font.setBold(bold)
        return font

    def base_point_size(self) -> float:
        if self._base_point_size is None:
            size = QApplication.font().pointSizeF()
            self._base_point_size = size if size > 0 else 10.0
        return self._base_point_size

    def apply(self) -> None:
        """Push the palette and font size into the running application, then tell everyone."""
        app = QApplication.instance()
        if app is not None:
            base = self.base_point_size()
            app.setPalette(self._palette())
            font = QFont(app.font())
            font.setPointSizeF(base * self._scale)
            app.setFont(font)
        self.changed.emit()

    def _palette(self) -> QPalette:
        t = self._theme
        palette = QPalette()
        roles = {
            QPalette.ColorRole.Window: t.window, QPalette.ColorRole.Base: t.base,
            QPalette.ColorRole.AlternateBase: t.window, QPalette.ColorRole.Text: t.text,
            QPalette.ColorRole.WindowText: t.text, QPalette.ColorRole.Button: t.base,
            QPalette.ColorRole.ButtonText: t.text, QPalette.ColorRole.Highlight: t.accent,
            QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: t.base,
            QPalette.ColorRole.ToolTipText: t.text, QPalette.ColorRole.PlaceholderText: t.muted,
        }
        for role, colour in roles.items():
            palette.setColor(role, QColor(colour))
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(t.muted))
        palette.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(t.muted))
        return palette


def contrast_ratio(a: QColor, b: QColor) -> float:
    """The WCAG contrast ratio of two colours: 1 (the same) to 21 (black on white); text wants 4.5+."""
    def luminance(c: QColor) -> float:
        def linear(v: float) -> float:
            return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * linear(c.redF()) + 0.7152 * linear(c.greenF()) + 0.0722 * linear(c.blueF())
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


_MANAGER: ThemeManager | None = None


def theme_manager() -> ThemeManager:
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = ThemeManager()
    return _MANAGER


def scale_splitter(splitter, base_sizes: tuple[int, ...], grow_index: int, max_side_share: float = 1.0,
                   shrink_first: int | None = None) -> None:
    """Side panes at their base width times the UI scale; the ``grow_index`` pane takes the rest.

    In presentation mode the fonts grow 1.5x: side panels that kept their width would elide
    their tables and crop their images. Together the side panes take at most ``max_side_share``
    of the width, so the middle pane still grows on a bigger screen: the ``shrink_first`` pane
    gives up its growth first (down to its base width), then all side panes in proportion."""
    scale = theme_manager().scale
    total = max(sum(splitter.sizes()), sum(base_sizes))
    sizes = [int(size * scale) for size in base_sizes]
    excess = sum(sizes) - sizes[grow_index] - int(total * max_side_share)
    if excess > 0 and shrink_first is not None:
        give = min(excess, sizes[shrink_first] - base_sizes[shrink_first])
        sizes[shrink_first] -= max(0, give)
        excess -= max(0, give)
    others = sum(sizes) - sizes[grow_index]
    if excess > 0:
        sizes = [size if i == grow_index else size * (others - excess) // others for i, size in enumerate(sizes)]
        others = sum(sizes) - sizes[grow_index]
    sizes[grow_index] = max(base_sizes[grow_index] // 2, total - others)
    splitter.setSizes(sizes)


def configure_pyqtgraph() -> None:
    """pyqtgraph's global options as the studio uses them (MainWindow.build_pages and the benchmarks
    call this before any plot exists; pyqtgraph is not imported before the window shows).

    Global antialiasing off: the loss curves are long and redrawn at 20 Hz (one redraw of
    10 000 antialiased points per curve took ~400 ms). The accuracy plot's few points ask
    for antialiasing per curve, where it costs nothing."""
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=False)
