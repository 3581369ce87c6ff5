"""Never lose work: autosave to a recovery file, and offer it back only after a crash.

Each running studio owns one marker and one recovery file, named after its process id, in
``sessions/`` of its data folder; a clean exit removes just those two. At start, a marker
whose process is no longer alive means that session died (crash, kill, power cut): its
recovery file, if any, is offered back. Two studios open at once therefore never touch each
other's autosave, and after a clean exit there is no marker, so no offer (Orange's users
complained about offers after clean exits). The recovery file is written atomically (temp
file, fsync, rename), so a crash during an autosave leaves the previous autosave intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from kfstudio.core import safe_json
from kfstudio.io.atomic import write_json, write_with

SESSIONS = "sessions"
MARKER_SUFFIX, RECOVERY_SUFFIX = ".session", ".kfproj"
DEFAULT_AUTOSAVE_S = 60


def session_files(home: Path, pid: int) -> tuple[Path, Path]:
    """The marker and the recovery file of the studio process ``pid``."""
    folder = Path(home) / SESSIONS
    return folder / f"{pid}{MARKER_SUFFIX}", folder / f"{pid}{RECOVERY_SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process: not ours to judge dead
    return True


def crashed_sessions(home: Path) -> list[tuple[Path, Path]]:
    """(marker, recovery file) of every earlier session whose process died, newest autosave first."""
    found = []
    for marker in (Path(home) / SESSIONS).glob(f"*{MARKER_SUFFIX}"):
        pid = int(marker.stem) if marker.stem.isdigit() else -1
        if pid != os.getpid() and not _alive(pid):
            found.append((marker, marker.with_suffix(RECOVERY_SUFFIX)))
    return sorted(found, key=lambda f: f[1].stat().st_mtime if f[1].is_file() else 0, reverse=True)


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
        self.marker, self.recovery_file = session_files(self.home, os.getpid())
        self._writer = writer
        self._should_save = should_save
        self.crashed_before = False
        self._offered: tuple[Path, Path] | None = None
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.set_interval(interval_s)

    def set_interval(self, seconds: float) -> None:
        self._timer.setInterval(max(1, int(seconds * 1000)))

    @property
    def interval_s(self) -> float:
        return self._timer.interval() / 1000

    def begin_session(self) -> Path | None:
        """Mark this session as running; return a dead session's recovery file to offer, if any."""
        crashed = crashed_sessions(self.home)
        self.crashed_before = bool(crashed)
        for marker, recovery in crashed:
            if recovery.is_file() and self._offered is None:
                self._offered = (marker, recovery)
            elif not recovery.is_file():
                marker.unlink(missing_ok=True)  # it died with nothing to restore
        write_json(self.marker, {"pid": os.getpid()})
        self._timer.start()
        return self._offered[1] if self._offered else None

    def autosave(self) -> bool:
        """Write this session's recovery file now (if there is something to keep); True when written."""
        if not self._should_save():
            return False
        write_with(self.recovery_file, self._writer)
        self.autosaved.emit(str(self.recovery_file))
        return True

    def adopt(self) -> None:
        """The offered work was restored into this session: keep it in this session's autosave."""
        write_with(self.recovery_file, self._writer)
        if self._offered is not None:
            for path in self._offered:
                path.unlink(missing_ok=True)
            self._offered = None

    def discard(self) -> None:
        """Forget the offered autosave of a dead session (declined, or restored) and this one's."""
        if self._offered is not None:
            for path in self._offered:
                path.unlink(missing_ok=True)
            self._offered = None
        self.recovery_file.unlink(missing_ok=True)

    def end_session(self) -> None:
        """A clean exit: stop autosaving, remove this session's recovery file and marker only."""
        self._timer.stop()
        self.recovery_file.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)

    def _on_timer_timeout(self) -> None:
        try:
            self.autosave()
        except OSError:
            pass  # a full disk must not take the session down; the next tick tries again


def read_json(path: Path) -> dict:
    return safe_json.loads(Path(path).read_text())
