"""The pictures of Try it: the pad a digit is drawn on, and a test image shown enlarged.

The pad turns a mouse drawing into the network's input the way scikit-learn's digits were
made: the drawing is cut into blocks, each block becomes one pixel whose intensity is how much
of it is inked, then normalized by the input spec.
"""

from __future__ import annotations

import numpy as np
import torch
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from kfstudio.core.data.sources import to_pixels
from kfstudio.core.spec import InputSpec
from kfstudio.gui.theme import theme_manager

PAD_HINT = "#c8ccd4"  # 13:1 on the black pad


class DrawPad(QWidget):
    """A square pad the user draws on with the mouse; ``drawing_changed`` fires after each stroke."""

    drawing_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = (8, 8)
        self._block = 24
        self._image = QImage()
        self._last: QPointF | None = None
        self.setMinimumSize(160, 160)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setToolTip("Draw with the mouse; the network sees the drawing as the small image beside it.")
        self.set_grid(8, 8)

    def set_grid(self, height: int, width: int) -> None:
        """The network's input size; the pad keeps ``block`` pixels of ink per input pixel."""
        self._grid = (height, width)
        self._block = max(4, 192 // max(height, width))
        self.clear()

    def sizeHint(self) -> QSize:
        return QSize(200, 200)

    def clear(self) -> None:
        h, w = self._grid
        self._image = QImage(w * self._block, h * self._block, QImage.Format.Format_Grayscale8)
        self._image.fill(0)
        self.update()
        self.drawing_changed.emit()

    def is_empty(self) -> bool:
        return not self.ink().any()

    def ink(self) -> np.ndarray:
        """The drawing as (H*block, W*block) floats in [0, 1]."""
        img = self._image
        ptr = img.constBits()
        arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
        return arr[:, : img.width()].astype(np.float32) / 255.0

    def pixels(self) -> np.ndarray:
        """The drawing at the input size: each block's mean ink, (H, W) in [0, 1]."""
        h, w = self._grid
        b = self._block
        return self.ink().reshape(h, b, w, b).mean(axis=(1, 3))

    def input_tensor(self, spec: InputSpec) -> torch.Tensor:
        """A (1, C, H, W) input normalized by ``spec`` (the drawing repeated over channels)."""
        x = torch.from_numpy(self.pixels()).view(1, 1, *self._grid).repeat(1, spec.channels, 1, 1)
        mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(spec.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def draw_stroke(self, points: list[tuple[float, float]]) -> None:
        """Ink a stroke through ``points`` given in 0..1 pad coordinates (for scripts and tests)."""
        size = self._image.size()
        scaled = [QPointF(x * size.width(), y * size.height()) for x, y in points]
        for a, b in zip(scaled, scaled[1:] or scaled):
            self._ink_line(a, b)
        self.drawing_changed.emit()

    def _pen(self) -> QPen:
        pen = QPen(QColor(255, 255, 255), self._block * 0.95)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        return pen

    def _ink_line(self, a: QPointF, b: QPointF) -> None:
        p = QPainter(self._image)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(self._pen())
        p.drawLine(a, b)
        p.end()
        self.update()

    def _target(self) -> QRectF:
        side = min(self.width(), self.height())
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _to_image(self, pos: QPointF) -> QPointF:
        t = self._target()
        return QPointF((pos.x() - t.left()) / t.width() * self._image.width(),
                       (pos.y() - t.top()) / t.height() * self._image.height())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._last = self._to_image(event.position())
            self._ink_line(self._last, self._last)
        elif event.button() == Qt.MouseButton.RightButton:
            self.clear()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._last is not None:
            point = self._to_image(event.position())
            self._ink_line(self._last, point)
            self._last = point

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._last is not None and event.button() == Qt.MouseButton.LeftButton:
            self._last = None
            self.drawing_changed.emit()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        theme = theme_manager().theme
        target = self._target()
        p.drawImage(target, self._image)
        p.setPen(QPen(QColor(theme.grid), 1, Qt.PenStyle.DotLine))
        h, w = self._grid
        for i in range(1, w):
            x = target.left() + target.width() * i / w
            p.drawLine(QPointF(x, target.top()), QPointF(x, target.bottom()))
        for j in range(1, h):
            y = target.top() + target.height() * j / h
            p.drawLine(QPointF(target.left(), y), QPointF(target.right(), y))
        p.setPen(QPen(QColor(theme.accent), 2))
        p.drawRect(target)
        if self.is_empty():
            p.setPen(hint_colour())
            p.setFont(theme_manager().font(0.95))
            p.drawText(target, Qt.AlignmentFlag.AlignCenter, "Draw here\n(right-click clears)")


def hint_colour() -> QColor:
    """The pad's "Draw here" in light grey in either theme: the pad is black (no ink) in both, and
    the theme's muted grey on it read 4:1 in the light theme, too faint on a projector."""
    return QColor(PAD_HINT)


def image_side() -> int:
    """The test image's side in pixels at the current UI scale."""
    return int(128 * theme_manager().scale)


def image_pixmap(x: torch.Tensor, spec: InputSpec, side: int) -> QPixmap:
    """One normalized image (C, H, W) as a crisp, enlarged pixmap."""
    pixels = to_pixels(x.detach().float().cpu(), spec)
    arr = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = np.ascontiguousarray(arr[:, :, :3])
    h, w, _ = arr.shape
    image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.FastTransformation)
