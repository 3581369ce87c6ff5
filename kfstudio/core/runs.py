"""What every run of the engine shares.

Training, growing a brick and training a demo teacher are generators: they yield small frozen
reports while they work and return their result. ``drain`` is the one loop that runs such a
generator to its end, for the CLI, the studio's child processes, the benchmarks and the tests.
"""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

Report = TypeVar("Report")
Result = TypeVar("Result")


def drain(run: Generator[Report, None, Result], on_report: Callable[[Report], None] | None = None) -> Result:
    """Run ``run`` to its end, handing every report to ``on_report``; return what it returns."""
    while True:
        try:
            report = next(run)
        except StopIteration as stop:
            return stop.value
        if on_report is not None:
            on_report(report)
