"""A studio run over several processes (all the GPUs of this machine), started by torchrun's agent.

The studio's child process (``launcher_main``, started by ``FactorizeProcess`` with spawn as a
one-process run is) does what ``kfstudio factorize --nproc-per-node N`` does: it runs
torchrun's own elastic agent in-process (``torch.distributed.run``'s standalone rendezvous, one
machine, no restarts), which starts N processes running ``rank_main``. Every process trains
its shard (``kfstudio.core.distributed``: NCCL on CUDA, gloo on the CPU).

Process 0 alone reports, as in the CLI: it connects back to this launcher over an
authenticated local socket (``multiprocessing.connection``) and runs the same ``child_main``
as a one-process run, so the studio's pipe carries exactly the messages it always did. The
launcher relays them, and relays pause / resume / cancel down to process 0; a cancel there
stops every process at the same step (``distributed.any_process``) and process 0 saves.

When a process fails (an exception, SIGKILL, out of memory) torchrun's agent stops the others
and the launcher sends one ("failed", sentence) naming the process; the studio keeps running.
No Qt here: the launcher and the processes never open a window.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import uuid
from dataclasses import replace
from multiprocessing.connection import Client, Listener
from pathlib import Path

from kfstudio.runner.training_child import UNEXPECTED, child_main, describe_exit, lower_priority


# Linux: the processes are forked from the launcher, which has torch and kfstudio imported already
# (measured on 2 busy cores: 33 s instead of 51 s from Start to the first report of a 2-process run).
# No thread of the launcher runs torch before the fork. Elsewhere fork is unsafe: spawn.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def launcher_main(config, folder: str, processes: int, reports, commands) -> None:
    """Entry point of the studio's child for a run of ``processes`` processes (see module docstring)."""
    # One training thread per process: the machine's free cores are shared among them.
    lower_priority()  # the processes it starts inherit it
    threads = max(1, (config.num_threads or 1) // processes)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    config = replace(config, num_threads=threads)
    authkey = secrets.token_bytes(16)
    listener = Listener(authkey=authkey)
    relay = _Relay(reports, commands, listener)
    relay.start()
    try:
        _launch(config, folder, processes, listener.address, authkey)
    except Exception as exc:  # ChildFailedError: one process failed and the agent stopped the rest
        relay.finish(_failure_sentence(exc, processes, config))
    else:
        relay.finish(None)
    finally:
        listener.close()
        reports.close()


def _launch(config, folder: str, processes: int, address, authkey: bytes) -> None:
    """torchrun --standalone --nproc-per-node N, run in this process; rank_main in each process."""
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    args = get_args_parser().parse_args([
        "--nnodes", "1", "--nproc-per-node", str(processes), "--max-restarts", "0",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", str(uuid.uuid4()),
        "--start-method", START_METHOD,
        "kfstudio-rank"])  # the script name is unused: the entry point is a function
    launch_config, _cmd, _cmd_args = config_from_args(args)
    elastic_launch(launch_config, rank_main)(config, folder, address, authkey)


def rank_main(config, folder: str, address, authkey: bytes) -> None:
    """One process of the run: process 0 reports to the launcher, the others only train."""
    import torch

    from kfstudio.core import distributed
    from kfstudio.core.factorize import iter_factorize
    from kfstudio.core.runs import RunControl

    _end_with_the_launcher()
    ctx = distributed.setup(config.device)
    if ctx.is_main:
        conn = Client(address, authkey=authkey)
        child_main(config, folder, conn, conn)  # the messages of a one-process run, up one socket
    else:
        torch.set_num_threads(max(1, config.num_threads or 1))
        for _report in iter_factorize(config, control=RunControl()):
            pass
    distributed.teardown()


def _end_with_the_launcher() -> None:
    """Linux: SIGTERM this process if the launcher dies (killed with the studio), rather than
    leave it waiting in a collective for the process-group timeout."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _failure_sentence(exc: Exception, processes: int, config) -> str:
    failures = getattr(exc, "failures", None)
    if not failures:
        return f"The run on {processes} processes could not start: {type(exc).__name__}: {exc}"
    rank, failure = _root_failure(failures)
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    kept = (f" The last checkpoint is kept ({checkpoint}): press Resume run to continue from it."
            if checkpoint is not None and checkpoint.is_file()
            else " No epoch had finished, so there is no checkpoint yet; start the run again.")
    return (f"Process {rank} of {processes} stopped ({describe_exit(failure.exitcode)}), so the run on "
            f"{processes} processes was stopped. The studio is fine.{kept}")


def _root_failure(failures: dict) -> tuple:
    """The process that caused the stop: one killed by a signal (its peers then exit with 1 when
    their connection closes, sometimes before the agent notices the killed one), else the first."""
    return min(failures.items(), key=lambda item: (item[1].exitcode >= 0, item[1].timestamp))


class _Relay:
    """Process 0's messages up to the studio, the studio's down to process 0.

    Process 0's own ("failed", ...) is held back: when a partner died, process 0 only sees a
    broken connection, and the agent's account (which process, why) is the one to show."""

    def __init__(self, reports, commands, listener: Listener) -> None:
        self._reports, self._commands, self._listener = reports, commands, listener
        self._rank0 = None
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._outcome: tuple | None = None  # ("saved", ...) or process 0's ("failed", ...)
        self._up = threading.Thread(target=self._relay_up, daemon=True, name="kf-relay-up")

    def start(self) -> None:
        self._up.start()
        threading.Thread(target=self._relay_down, daemon=True, name="kf-relay-down").start()

    def _relay_up(self) -> None:
        try:
            conn = self._listener.accept()
        except OSError:  # closed before process 0 connected (it never started)
            return
        with self._lock:
            self._rank0 = conn
            for message in self._pending:
                conn.send(message)
            self._pending.clear()
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] in ("saved", "failed"):
                self._outcome = message
                if message[0] == "failed":
                    continue
            self._reports.send(message)

    def _relay_down(self) -> None:
        while True:
            try:
                message = self._commands.recv()
            except (EOFError, OSError):  # the studio went away: cancel, keep what was learned
                message = None
            with self._lock:
                if self._rank0 is None:
                    self._pending.append(message or "cancel")
                else:
                    try:
                        self._rank0.send(message or "cancel")
                    except OSError:
                        pass
            if message is None:
                return

    def finish(self, failure: str | None) -> None:
        """After the agent returned: the run's last word to the studio. Process 0's own failure
        is shown when it says what was wrong (bad settings); when it only lost a partner, the
        agent's account of the process that failed is."""
        self._up.join(timeout=10)
        own = self._outcome if self._outcome is not None and self._outcome[0] == "failed" else None
        if own is not None and (failure is None or UNEXPECTED not in own[1]):
            self._reports.send(own)
        elif failure is not None and (self._outcome is None or self._outcome[0] != "saved"):
            self._reports.send(("failed", failure))
