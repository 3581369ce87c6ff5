"""The child-process side of a studio run (no Qt here: the child never opens a window).

``child_main`` runs in a process started with multiprocessing's ``spawn``. It drives the
same ``iter_factorize`` generator as the CLI and sends messages up one pipe:

    ("report", frozen report)   every Setup/Step/Eval/CheckpointReport, as yielded
    ("paused",) / ("resumed",)   the training loop really is blocked / runs again
    ("saved", folder, cancelled, epochs_done)
    ("failed", plain sentence)

and reads "pause" / "resume" / "cancel" from a second pipe. If the studio goes away (the
control pipe closes) the run is cancelled, so its bricks and checkpoint are still written.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback

from kfstudio.core.errors import KFError
from kfstudio.core.runs import RunControl

UNEXPECTED = "stopped unexpectedly"  # in the sentence a bug (not a KFError) becomes
# The training process yields the CPU to the window. On 2 cores shared with other jobs (load 4-6),
# two interleaved pairs of 1 000-step live runs (benchmarks/gui_responsiveness.py's probe): longest
# GUI-thread stall 299 -> 104 ms and 266 -> 146 ms, p99 115 -> 57 ms and 162 -> 73 ms at nice 10;
# training speed 9.7 -> 11.2 and 8.7 -> 7.0 steps/s (within the noise of the other jobs).
TRAINING_NICENESS = 10


def lower_priority() -> None:
    """Run this process at TRAINING_NICENESS (never raising its priority; not on Windows)."""
    if not hasattr(os, "setpriority"):
        return
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(now, TRAINING_NICENESS))
    except OSError:
        pass


def describe_exit(exitcode: int | None) -> str:
    """Why a child process ended, in words."""
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return f"it was killed ({name}; the system does this when memory runs out)"
        if -exitcode == signal.SIGSEGV:
            return f"it crashed ({name}, a fault in native code)"
        return f"it was ended by {name}"
    return f"it exited with status {exitcode}"


class _ChildControl(RunControl):
    """A RunControl that tells the studio when the loop is really blocked in a pause."""

    def __init__(self, send) -> None:
        super().__init__()
        self._send = send

    def wait_while_paused(self) -> None:
        if not self.paused:
            return
        self._send(("paused",))
        super().wait_while_paused()
        self._send(("resumed",))


def _listen(conn, control: RunControl) -> None:
    """Apply the studio's messages until it closes the pipe (then cancel: keep what was learned)."""
    actions = {"pause": control.pause, "resume": control.resume, "cancel": control.cancel}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            control.cancel()
            return
        action = actions.get(message)
        if action is not None:
            action()


def start_control(config, reports, commands) -> RunControl:
    """What every training child does first: its threads, and a listener for the studio's messages."""
    import torch

    lower_priority()
    torch.set_num_threads(max(1, config.num_threads or 1))
    control = _ChildControl(reports.send)
    threading.Thread(target=_listen, args=(commands, control), daemon=True, name="kf-control").start()
    return control


def drive(reports, gen, finish, what: str, on_report=lambda report: None, before_close=lambda: None) -> None:
    """Send every report of ``gen`` up the pipe, then ``finish(result)``'s message; any failure
    becomes one ("failed", sentence) message (a bug's detail stays on stderr). Then
    ``before_close()`` and the pipe is closed: the studio sees the end only after it."""
    try:
        while True:
            try:
                report = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            on_report(report)
            reports.send(("report", report))
        reports.send(finish(result))
    except KFError as exc:
        reports.send(("failed", str(exc)))
    except Exception as exc:  # a bug: say what happened in words, keep the detail on stderr
        traceback.print_exc()
        reports.send(("failed", f"{what} {UNEXPECTED}: {type(exc).__name__}: {exc}"))
    finally:
        before_close()
        reports.close()


def child_main(config, folder: str, reports, commands) -> None:
    """Entry point of the training process (see module docstring)."""
    from kfstudio.core.factorize import iter_factorize
    from kfstudio.io.bricks import save_factorization
    from kfstudio.io.reports import ReportLog

    # The first optimizer imports torch._dynamo (about a second); here it costs the studio nothing.
    control = start_control(config, reports, commands)
    log = ReportLog(folder, keep_existing=bool(config.resume))

    def finish(result):
        save_factorization(result, folder)
        log.close()
        return ("saved", folder, bool(result.cancelled), int(result.epochs_done))

    drive(reports, iter_factorize(config, control=control), finish, "The factorization", log.append, log.close)
