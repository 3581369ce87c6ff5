"""Never lose work: autosave to a recovery file, and offer it back only after a crash.

Each running studio owns one marker and one recovery file in ``sessions/`` of its data folder,
named after its process id, and holds the marker's OS lock (``filelock``) while it runs; a clean
exit removes just those two. The lock, not the process id, says whether a session is alive: the
OS releases it when the process ends however it ends, and a process id can be reused by any
program. At start, a studio claims every marker whose lock it can take (their studios ended) and
offers the newest recovery file back, holding that claim until it is restored or declined, so a
second studio started at the same time is not offered the same work. After a clean exit there is
no marker, so no offer. The recovery file is written atomically (temp file, fsync, rename), so a
crash during an autosave leaves the previous autosave intact.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock
from PySide6.QtCore import QObject, QTimer, Signal

from kfstudio.core import safe_json
from kfstudio.core.errors import KFError
from kfstudio.io.atomic import write_with
from kfstudio.io.locks import try_lock

SESSIONS = "sessions"
MARKER_SUFFIX, RECOVERY_SUFFIX = ".session", ".kfproj"
DEFAULT_AUTOSAVE_S = 60


def session_files(home: Path, name: int | str) -> tuple[Path, Path]:
    """The marker and the recovery file of the studio session ``name`` (its process id)."""
    folder = Path(home) / SESSIONS
    return folder / f"{name}{MARKER_SUFFIX}", folder / f"{name}{RECOVERY_SUFFIX}"


@dataclass
class Session:
    """A session's files and its lock, held by this process."""

    marker: Path
    recovery: Path
    lock: FileLock

    def end(self, remove: bool) -> None:
        if remove:
            self.recovery.unlink(missing_ok=True)
            self.marker.unlink(missing_ok=True)
        self.lock.release()


def own_session(home: Path) -> Session:
    """This studio's session, its marker locked. A marker left with this process id by an earlier
    process (ids are reused) is not taken: that one is a crashed session to offer."""
    for k in itertools.count():
        marker, recovery = session_files(home, os.getpid() if k == 0 else f"{os.getpid()}-{k}")
        if marker.exists():
            continue
        marker.parent.mkdir(parents=True, exist_ok=True)
        lock = try_lock(marker)
        if lock is not None:
            return Session(marker, recovery, lock)
    raise AssertionError("unreachable")


def claim_crashed_sessions(home: Path) -> list[Session]:
    """Every other session whose studio has ended (its marker's lock is free), claimed by this
    process so that no other studio offers it too; newest autosave first."""
    found = []
    for marker in (Path(home) / SESSIONS).glob(f"*{MARKER_SUFFIX}"):
        lock = try_lock(marker)  # fails for live studios, for this one, and for claims of others
        if lock is not None:
            found.append(Session(marker, marker.with_suffix(RECOVERY_SUFFIX), lock))
    return sorted(found, key=lambda f: f.recovery.stat().st_mtime if f.recovery.is_file() else 0, reverse=True)


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
        self._session: Session | None = None
        self._writer = writer
        self._should_save = should_save
        self.crashed_before = False
        self._offered: Session | None = None
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
        self._session = own_session(self.home)  # first: a studio starting now sees this one alive
        self.marker, self.recovery_file = self._session.marker, self._session.recovery
        crashed = claim_crashed_sessions(self.home)
        self.crashed_before = bool(crashed)
        for session in crashed:
            if session.recovery.is_file() and self._offered is None:
                self._offered = session  # held until restored or declined
            else:  # nothing to restore (removed), or older than the one offered (offered next time)
                session.end(remove=not session.recovery.is_file())
        self._timer.start()
        return self._offered.recovery if self._offered else None

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
        self._end_offer()

    def discard(self) -> None:
        """Forget the offered autosave of a dead session (declined, or restored) and this one's."""
        self._end_offer()
        self.recovery_file.unlink(missing_ok=True)

    def _end_offer(self) -> None:
        if self._offered is not None:
            self._offered.end(remove=True)
            self._offered = None

    def end_session(self) -> None:
        """A clean exit: stop autosaving, remove this session's recovery file and marker only."""
        self._timer.stop()
        if self._offered is not None:  # never answered: offered again next time
            self._offered.end(remove=False)
            self._offered = None
        if self._session is not None:
            self._session.end(remove=True)
            self._session = None
        else:
            self.recovery_file.unlink(missing_ok=True)
            self.marker.unlink(missing_ok=True)

    def _on_timer_timeout(self) -> None:
        try:
            self.autosave()
        except (OSError, KFError):
            pass  # a full disk must not take the session down; the next tick tries again


def read_json(path: Path) -> dict:
    return safe_json.loads(Path(path).read_text())
