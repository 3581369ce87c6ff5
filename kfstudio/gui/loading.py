"""Slow loads off the GUI thread: a demo's teacher and data, a project's files, a teacher.

``BackgroundLoad.start(job, apply, fail)`` runs ``job()`` in a worker thread (superqt's
``create_worker``) while the application shows the wait cursor; back on the GUI thread,
``apply(result)`` puts what was loaded into the window (quick: no file is read there), or
``fail(message)`` says in words why it could not. One load runs at a time; ``finished(ok)``
is emitted once the result is in place, for whoever waits on it (tests, benchmarks).
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from superqt.utils import create_worker

from kfstudio.core.errors import KFError
from kfstudio.gui.gc_pauses import freeze_long_lived


class BackgroundLoad(QObject):
    """One load at a time in a worker thread, with the wait cursor while it runs."""

    started = Signal(str)     # what is loading, in words
    finished = Signal(bool)   # the result was applied (True) or the failure said (False)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker = None
        self._apply: Callable = lambda _result: None
        self._fail: Callable[[str], None] = lambda _message: None
        self.what = ""

    def is_busy(self) -> bool:
        return self._worker is not None

    def start(self, what: str, job: Callable[[], object], apply: Callable[[object], None],
              fail: Callable[[str], None]) -> bool:
        """Run ``job`` in the background; False (and nothing starts) while another load runs."""
        if self._worker is not None:
            return False
        self.what, self._apply, self._fail = what, apply, fail
        QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        self._worker = create_worker(job, _start_thread=True,
                                     _connect={"returned": self._on_returned, "errored": self._on_errored})
        self.started.emit(what)
        return True

    def cancel(self) -> None:
        """Drop the running load's result (the window is closing); the worker ends on its own."""
        if self._worker is not None:
            self._worker.returned.disconnect(self._on_returned)
            self._worker.errored.disconnect(self._on_errored)
            self._end()

    def _end(self) -> None:
        self._worker = None
        QGuiApplication.restoreOverrideCursor()

    def _on_returned(self, result: object) -> None:
        self._end()
        try:
            self._apply(result)
        except KFError as exc:
            self._fail(str(exc))
            self.finished.emit(False)
            return
        freeze_long_lived()   # the loaded teacher, data and bricks stay: keep full collections short
        self.finished.emit(True)

    def _on_errored(self, exc: BaseException) -> None:
        self._end()
        self._fail(in_words(exc))
        self.finished.emit(False)


def in_words(exc: BaseException) -> str:
    if isinstance(exc, (KFError, OSError, ValueError)):
        return str(exc)
    return f"Something went wrong while loading ({type(exc).__name__}: {exc})."
