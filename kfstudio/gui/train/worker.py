"""The factorization runs in a child process; only the frozen reports cross over.

``FactorizeProcess`` starts ``kfstudio.runner.training_child.child_main`` with multiprocessing's
``spawn`` (a fresh interpreter: no Qt, no inherited threads). The child drives the same
``iter_factorize`` generator as the CLI and sends its reports up a pipe; pause, resume and
cancel go down another pipe as messages. The GUI thread never waits on the child: a 20 ms
timer drains whatever has arrived (for at most a few milliseconds per tick) and checks,
without blocking, whether the child is still alive. A child that dies without saying why
(a crash, a segfault, SIGKILL, the out-of-memory killer) becomes one plain sentence in
``failed``, naming the last checkpoint so the run can be resumed.

Training in a child also keeps the child's GIL out of the window's way: measured with the
studio's real plot settings in benchmarks/gui_responsiveness.py (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
import types
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from kfstudio.runner.training_child import describe_exit

DRAIN_MS = 20        # how often the pipe is drained
DRAIN_BUDGET_S = 0.008  # at most this long per drain: the window stays responsive under a flood of reports
EXIT_GRACE_S = 20    # after its pipe closed, how long a child may take to exit before it is killed


class ChildRunControl:
    """Pause / resume / cancel as messages to the child; ``blocked`` when it says it is paused."""

    def __init__(self) -> None:
        self._conn = None
        self.paused = False
        self.cancelled = False
        self.blocked = False

    def attach(self, conn) -> None:
        self._conn = conn

    def _send(self, message: str) -> None:
        if self._conn is None:
            return
        try:
            self._conn.send(message)
        except (OSError, ValueError):  # the child is gone; the drain timer says so
            pass

    def pause(self) -> None:
        self.paused = True
        self._send("pause")

    def resume(self) -> None:
        self.paused = False
        self._send("resume")

    def cancel(self) -> None:
        self.cancelled = True
        self.paused = False
        self._send("cancel")


_MAIN_SWAP = threading.RLock()


@contextlib.contextmanager
def main_hidden():
    """Spawn children started inside this block do not re-run the caller's ``__main__``.

    The children need nothing from ``__main__`` (their targets live in kfstudio); by default spawn
    would import the launching script again, and a script without an ``if __name__ ==
    "__main__"`` guard (a benchmark, a user's own launcher) would then start its work twice.
    One block at a time: the cost panel's child may start from a side thread."""
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def _start_without_main(process) -> None:
    """Start a spawn child without re-running the caller's ``__main__`` in it (``main_hidden``)."""
    with main_hidden():
        process.start()


class FactorizeProcess(QObject):
    """Runs one factorization in a child process; the same signals the page used with a thread."""

    report = Signal(object)          # a frozen SetupReport / StepReport / EvalReport / CheckpointReport
    saved = Signal(str, bool, int)   # run folder, cancelled, epochs done
    failed = Signal(str)             # a plain sentence
    finished = Signal()
    blocked_changed = Signal(bool)   # the training loop is (no longer) blocked in a pause

    def __init__(self, config, folder: Path, control: ChildRunControl | None = None, parent=None,
                 processes: int = 1) -> None:
        super().__init__(parent)
        self.config = config
        self.processes = processes  # > 1: torchrun's agent in the child starts that many (training_ranks)
        self.folder = Path(folder)
        self.control = control or ChildRunControl()
        self.process = None
        self.last_checkpoint: str | None = None
        self._reports = None
        self._outcome: str | None = None  # "saved" or "failed" once the child said so
        self._eof_at: float | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_MS)
        self._timer.timeout.connect(self._on_timer_timeout)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        from kfstudio.runner.training_child import child_main
        from kfstudio.runner.ranks import launcher_main

        ctx = multiprocessing.get_context("spawn")
        self._reports, child_reports = ctx.Pipe(duplex=False)
        child_commands, commands = ctx.Pipe(duplex=False)
        if self.processes > 1:
            target, args = launcher_main, (self.config, str(self.folder), self.processes, child_reports, child_commands)
        else:
            target, args = child_main, (self.config, str(self.folder), child_reports, child_commands)
        # not a daemon when it starts processes of its own (torchrun's agent); it ends them itself
        self.process = ctx.Process(target=target, name="kfstudio-factorize", daemon=self.processes == 1, args=args)
        _start_without_main(self.process)
        child_reports.close()  # only the child writes: its death is an end-of-file here
        child_commands.close()
        self.control.attach(commands)
        self._timer.start()

    def is_running(self) -> bool:
        return self.process is not None and self._timer.isActive()

    # ---- GUI thread: never blocks
    def _on_timer_timeout(self) -> None:
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        if self._eof_at is None:
            try:
                while self._reports.poll():
                    self._handle(self._reports.recv())
                    if time.perf_counter() > deadline:
                        return
            except (EOFError, OSError):
                self._eof_at = time.perf_counter()
        if self.process.is_alive():
            if self._eof_at is not None and time.perf_counter() - self._eof_at > EXIT_GRACE_S:
                self.process.kill()  # it closed its pipe but hangs on exit
            return
        if self._eof_at is None:
            return  # dead, but its last messages are still in the pipe: read them next tick
        self._finish()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "report":
            report = message[1]
            if report.kind == "checkpoint":
                self.last_checkpoint = report.path
            self.report.emit(report)
        elif kind in ("paused", "resumed"):
            self.control.blocked = kind == "paused"
            self.blocked_changed.emit(self.control.blocked)
        elif kind == "saved":
            self._outcome = "saved"
            self.saved.emit(message[1], bool(message[2]), int(message[3]))
        elif kind == "failed":
            self._outcome = "failed"
            self.failed.emit(message[1])

    def _finish(self) -> None:
        self._timer.stop()
        if self._outcome is None:
            self.failed.emit(self.crash_message(self.process.exitcode))
        self._reports.close()
        self.control.attach(None)
        self.process.close()
        self.finished.emit()

    def crash_message(self, exitcode: int | None) -> str:
        text = (f"The training process ended unexpectedly: {describe_exit(exitcode)}. "
                "The studio is fine and nothing else was lost.")
        if self.last_checkpoint:
            text += f" The last checkpoint is kept ({self.last_checkpoint}): press Resume run to continue from it."
        else:
            text += " No epoch had finished, so there is no checkpoint yet; start the run again."
        return text

    def kill(self) -> None:
        """End the child at once (used when the studio must close and the child does not stop)."""
        if self.process is not None and self._timer.isActive() and self.process.is_alive():
            self.process.kill()

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel and wait for the child to save and exit (only when the studio closes)."""
        if not self._timer.isActive():
            return True
        self.control.cancel()
        end = time.perf_counter() + timeout_ms / 1000
        while self._timer.isActive() and time.perf_counter() < end:
            self._on_timer_timeout()
            if self._timer.isActive():
                self.process.join(0.05)
        return not self._timer.isActive()
