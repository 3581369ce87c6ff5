"""One writer per folder: a lock file held while a command writes into a run folder.

Two commands writing one folder lost work silently: one ``factorize``'s start-up cleanup removed
the other's staging folder; two ``add-brick`` of one task both passed the "is the name free?"
check and one overwrote the other. Each writer now holds ``.kfstudio.lock`` in the folder (an OS
lock through ``filelock``: it is released when the process ends, however it ends). A second
writer waits a moment, then refuses in words that name the process holding the folder, read
from ``.kfstudio.lock.owner``.

Locks are re-entrant within a process: ``factorize`` holds its folder for the whole run and the
save inside it takes the same lock again without waiting on itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from kfstudio.core.errors import BusyError, ConfigError, WriteError

LOCK_NAME, OWNER_NAME = ".kfstudio.lock", ".kfstudio.lock.owner"
WAIT_S = 2.0  # long enough for a save in progress to end, short enough to answer at once

_held: set[Path] = set()  # folders this process holds
_guard = threading.Lock()
# A folder held by the process that started this one (the launcher of a many-process run).
PARENT_HOLDS = "KFSTUDIO_PARENT_HOLDS_FOLDER"


def lend_to_children(folder: str | Path) -> None:
    """Let the processes this one starts write ``folder``, which this one holds for them."""
    os.environ[PARENT_HOLDS] = str(Path(folder).expanduser().resolve())


def try_lock(path: Path) -> FileLock | None:
    """The lock of ``path`` if no other process (or other holder in this one) has it, else None."""
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def holder(folder: Path) -> str:
    """Who holds ``folder``, in words, as its owner file says."""
    try:
        owner = json.loads((folder / OWNER_NAME).read_text())
        return f"process {int(owner['pid'])}: {str(owner['command'])[:200]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another KF Studio process"


@contextlib.contextmanager
def writing(folder: str | Path, command: str, wait_s: float = WAIT_S) -> Iterator[Path]:
    """Hold ``folder`` for writing; raise BusyError (in words) when another process holds it."""
    folder = Path(folder).expanduser().resolve()
    with _guard:
        again = folder in _held or os.environ.get(PARENT_HOLDS) == str(folder)
    if again:  # held already, by an outer writer of this process or by its launcher
        yield folder
        return
    lock = _acquire(folder, command, wait_s)
    with _guard:
        _held.add(folder)
    try:
        yield folder
    finally:
        with _guard:
            _held.discard(folder)
        (folder / OWNER_NAME).unlink(missing_ok=True)
        lock.release()


def _acquire(folder: Path, command: str, wait_s: float) -> FileLock:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"'{folder}' is a file, not a folder; give a folder to write into.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK_NAME), thread_local=False)
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise BusyError(f"'{folder}' is being written by {holder(folder)}; wait until it has finished, "
                        "or write somewhere else.") from None
    except OSError as exc:
        raise WriteError.of(folder, exc) from None
    with contextlib.suppress(OSError):  # who holds it, for a second writer's message (a full disk may refuse)
        (folder / OWNER_NAME).write_text(json.dumps({"pid": os.getpid(), "command": command}))
    return lock
