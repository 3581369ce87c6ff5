"""The Factorize page's estimates (what the students cost against the teacher, the memory a run
needs) worked out off the GUI thread: sizing students for a budget builds and counts several
candidate networks, a few hundred milliseconds that froze the window on every settings change.

``LatestEstimate.start(job, show, fail)`` runs ``job()`` in a worker thread; only the newest job's
result reaches ``show`` (or its error, in words, ``fail``) on the GUI thread, so a quick series of
changes never shows an older answer last. ``settled`` is emitted when the newest one is shown.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal
from superqt.utils import create_worker

from kfstudio.gui.loading import in_words


class LatestEstimate(QObject):
    settled = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._newest = 0
        self._shown = 0
        self._show: Callable[[object], None] = lambda _result: None
        self._fail: Callable[[str], None] = lambda _message: None
        self._workers: set = set()   # kept referenced until each ends

    def is_busy(self) -> bool:
        """The newest estimate is not on screen yet."""
        return self._shown != self._newest

    def start(self, job: Callable[[], object], show: Callable[[object], None], fail: Callable[[str], None]) -> None:
        self._newest += 1
        self._show, self._fail = show, fail
        worker = create_worker(_numbered(self._newest, job), _start_thread=False,
                               _connect={"returned": self._on_returned})
        worker.finished.connect(lambda w=worker: self._workers.discard(w))
        self._workers.add(worker)
        worker.start()

    def cancel(self) -> None:
        """Nothing to estimate any more: any answer still on its way is dropped."""
        self._newest += 1
        self._shown = self._newest

    def _on_returned(self, numbered: tuple[int, object, BaseException | None]) -> None:
        number, result, error = numbered
        if number != self._newest:
            return   # an older estimate: a newer one is on its way
        self._shown = number
        if error is None:
            self._show(result)
        else:
            self._fail(in_words(error))
        self.settled.emit()


def _numbered(number: int, job: Callable[[], object]) -> Callable[[], tuple]:
    def run() -> tuple:
        try:
            return number, job(), None
        except Exception as exc:  # said in words on the GUI thread
            return number, None, exc
    return run
