"""User gestures on the Build page's canvas, shared by the GUI tests.

Palette drops are synthetic QDragEnter/QDragMove/QDrop events on the view's viewport: a real
QDrag returns at once on the offscreen platform.
"""

from __future__ import annotations

import warnings

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QTransform
from PySide6.QtWidgets import QApplication


def frame(page) -> None:
    """A zoom that shows the plate and room below it for loose bricks."""
    view, plate = page.view, page.scene.plate
    view.setTransform(QTransform.fromScale(0.8, 0.8))
    centre = plate.sceneBoundingRect().center()
    view.centerOn(centre + QPointF(0, 140))


def key_of(page, title: str) -> str:
    return next(e.key for e in page.palette.entries() if e.title == title)


def view_point(page, scene_pos: QPointF) -> QPointF:
    point = page.view.mapFromScene(scene_pos)
    assert page.view.viewport().rect().contains(point), "the test point must be visible"
    return QPointF(point)


def plate_point(page) -> QPointF:
    return page.scene.plate.mapToScene(page.scene.plate.slot_rect(4).center())


def below_plate(page, dx: float = 0.0) -> QPointF:
    rect = page.scene.plate.sceneBoundingRect()
    return QPointF(rect.left() + 120 + dx, rect.bottom() + 110)


def drag(page, key: str, scene_pos: QPointF, drop: bool = True) -> bool:
    """Enter, move and (optionally) drop a palette brick at ``scene_pos``; returns whether the drop was accepted."""
    viewport = page.view.viewport()
    mime = page.palette.mime_data(key)
    pos = view_point(page, scene_pos)
    actions, buttons, mods = Qt.DropAction.CopyAction, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    with warnings.catch_warnings():   # PySide6 6.12 offers only the (deprecated) QPoint constructors
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(pos.toPoint(), actions, mime, buttons, mods)
        move = QDragMoveEvent(pos.toPoint(), actions, mime, buttons, mods)
    QApplication.sendEvent(viewport, enter)
    QApplication.sendEvent(viewport, move)
    if not drop:
        return move.isAccepted()
    event = QDropEvent(pos, actions, mime, buttons, mods)
    QApplication.sendEvent(viewport, event)
    return event.isAccepted()
