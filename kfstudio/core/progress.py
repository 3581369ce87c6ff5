"""Progress of a run's set-up, before its first step: reading the data, loading the teacher, the
teacher's passes over the images. On large data that takes a minute or more, and a run that
says nothing for that long looks hung; ``iter_factorize(progress=True)`` yields these reports
before its ``SetupReport``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generator


@dataclass(frozen=True)
class ProgressReport:
    """Set-up before the first step (reading the data, the teacher's passes over it), which takes
    long on large data: ``done`` of ``total`` (0 of 0: a stage that cannot count its work)."""

    kind = "progress"
    stage: str
    done: int = 0
    total: int = 0

    @property
    def text(self) -> str:
        return f"{self.stage}: {self.done:,} of {self.total:,} images" if self.total else f"{self.stage}…"


PROGRESS_EVERY_S = 1.0  # at most one progress report a second per stage (and its last)


def relay(reports, keep: bool):
    """``yield from reports``, passing its reports on only when ``keep``; its return value either way."""
    while True:
        try:
            report = next(reports)
        except StopIteration as done:
            return done.value
        if keep:
            yield report


def with_progress(stage: str, passing) -> Generator[ProgressReport, None, object]:
    """Relay an ``iter_teacher_pass`` as progress reports, at most one a second and the last."""
    last = 0.0
    while True:
        try:
            done, total = next(passing)
        except StopIteration as finished:
            return finished.value
        if done == total or time.perf_counter() - last >= PROGRESS_EVERY_S:
            last = time.perf_counter()
            yield ProgressReport(stage, done, total)
