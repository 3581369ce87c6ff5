"""The factorization runs in a background QThread; only plain-number reports cross threads.

``FactorizeThread`` drives ``iter_factorize`` (the same generator as the CLI) and writes the
result with ``save_factorization`` in the worker thread, so the GUI thread never touches a
torch module of the run. Its signals are declared on the QThread object, which lives in
the GUI thread, so connections to GUI-object methods are queued onto the GUI thread.

``GuiRunControl`` is a ``RunControl`` that also says when the training loop is actually
blocked by a pause (``blocked``): the GUI, and the tests, can tell "asked to pause" from
"paused".
"""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from kfstudio.core.errors import KFError
from kfstudio.core.factorize import FactorizeConfig, RunControl, iter_factorize


class GuiRunControl(RunControl):
    """A RunControl that records whether the worker is blocked inside a pause."""

    def __init__(self) -> None:
        super().__init__()
        self._blocked = threading.Event()

    @property
    def blocked(self) -> bool:
        """True while the training thread is waiting in ``wait_while_paused``."""
        return self._blocked.is_set()

    def wait_while_paused(self) -> None:
        self._blocked.set()
        try:
            super().wait_while_paused()
        finally:
            self._blocked.clear()


class FactorizeThread(QThread):
    """Runs one factorization; emits each report, then where its files went (or why it failed)."""

    report = Signal(object)          # a frozen SetupReport / StepReport / EvalReport / CheckpointReport
    saved = Signal(str, bool, int)   # run folder, cancelled, epochs done
    failed = Signal(str)             # a plain sentence

    def __init__(self, config: FactorizeConfig, folder: Path, control: GuiRunControl | None = None,
                 parent=None) -> None:
        super().__init__(parent)
        self.config = config
        self.folder = Path(folder)
        self.control = control or GuiRunControl()
        self.setObjectName("kfstudio-factorize")

    def run(self) -> None:  # runs in the worker thread
        import torch

        from kfstudio.io.bricks import save_factorization

        torch.set_num_threads(max(1, self.config.num_threads or 1))
        try:
            gen = iter_factorize(self.config, control=self.control)
            while True:
                try:
                    self.report.emit(next(gen))
                except StopIteration as stop:
                    result = stop.value
                    break
            save_factorization(result, self.folder)
            self.saved.emit(str(self.folder), bool(result.cancelled), int(result.epochs_done))
        except KFError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug: say what happened in words, keep the detail for the log
            traceback.print_exc()
            self.failed.emit(f"The factorization stopped unexpectedly: {type(exc).__name__}: {exc}")

    def stop(self, timeout_ms: int = 60_000) -> bool:
        """Cancel the run and wait for the thread to end (the result is still saved)."""
        self.control.cancel()
        return self.wait(timeout_ms)
