"""Never lose work: autosave to a recovery file, and offer it back only after a crash.

At start the studio writes a "session running" marker into its data folder; a clean exit
removes it (and the recovery file). If the next start finds the marker still there, the
last session died (crash, kill, power cut) and its recovery file, if any, is offered back.
After a clean exit there is no marker, so no offer (Orange's users complained about offers
after clean exits). The recovery file is written atomically (temp file, fsync, rename), so
a crash during an autosave leaves the previous autosave intact, never a zero-byte file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from kfstudio.io.atomic import write_json, write_with

MARKER_NAME = "session.lock"
RECOVERY_NAME = "recovery.kfproj"
DEFAULT_AUTOSAVE_S = 60


def studio_home() -> Path:
    """Where the studio keeps runs, the recovery file and the session marker.

    ``KFSTUDIO_HOME`` overrides the platform's user data folder (tests point it at a temp dir).
    """
    override = os.environ.get("KFSTUDIO_HOME")
    if override:
        home = Path(override).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("KF Studio", "KF Studio"))
    home.mkdir(parents=True, exist_ok=True)
    return home


class RecoveryManager(QObject):
    """Session marker + periodic atomic autosave through ``writer(path)``."""

    autosaved = Signal(str)

    def __init__(self, home: Path, writer: Callable[[Path], None], interval_s: float = DEFAULT_AUTOSAVE_S,
                 should_save: Callable[[], bool] = lambda: True, parent=None) -> None:
        super().__init__(parent)
        self.home = Path(home)
        self.marker = self.home / MARKER_NAME
        self.recovery_file = self.home / RECOVERY_NAME
        self._writer = writer
        self._should_save = should_save
        self.crashed_before = False
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.set_interval(interval_s)

    def set_interval(self, seconds: float) -> None:
        self._timer.setInterval(max(1, int(seconds * 1000)))

    @property
    def interval_s(self) -> float:
        return self._timer.interval() / 1000

    def begin_session(self) -> Path | None:
        """Mark the session as running; return the recovery file to offer, if the last one crashed."""
        self.crashed_before = self.marker.exists()
        offer = self.recovery_file if self.crashed_before and self.recovery_file.is_file() else None
        if not self.crashed_before:
            self.recovery_file.unlink(missing_ok=True)  # left over from an old clean exit: not work to restore
        write_json(self.marker, {"pid": os.getpid()})
        self._timer.start()
        return offer

    def autosave(self) -> bool:
        """Write the recovery file now (if there is something to keep); True when written."""
        if not self._should_save():
            return False
        write_with(self.recovery_file, self._writer)
        self.autosaved.emit(str(self.recovery_file))
        return True

    def discard(self) -> None:
        """Forget the recovery file (declined, or restored and saved elsewhere)."""
        self.recovery_file.unlink(missing_ok=True)

    def end_session(self) -> None:
        """A clean exit: stop autosaving, remove the recovery file and the marker."""
        self._timer.stop()
        self.discard()
        self.marker.unlink(missing_ok=True)

    def _on_timer_timeout(self) -> None:
        try:
            self.autosave()
        except OSError:
            pass  # a full disk must not take the session down; the next tick tries again


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
