"""Temp files and folders of our own naming, and whether their writer is still alive.

Every temp file or folder KF Studio writes beside its target is named
``.<target name>.<8 random characters>.tmp`` and is held under an OS lock (``flock``) by its
writer for as long as it writes. A process killed mid-write leaves it behind; the next write
into that folder removes those whose lock is free (their writer is gone, whatever process now
has its id) and that are older than a few seconds (a file just created is locked an instant
later). Where the OS has no ``flock`` (Windows), nothing is removed: an open file cannot be
deleted there anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
MIN_AGE_S = 5.0


def claim(fd: int) -> bool:
    """Hold ``fd``'s file under this process's lock until it is closed; False where locks do not exist."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def claimed_folder(path: Path) -> Iterator[Path]:
    """Hold a temp folder this process made, so that no other process takes it for a leftover."""
    fd = os.open(path, os.O_RDONLY)
    try:
        claim(fd)
        yield path
    finally:
        os.close(fd)


def _abandoned(path: Path) -> bool:
    try:
        if time.time() - path.lstat().st_mtime < MIN_AGE_S:
            return False
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        return claim(fd)  # taken: nobody holds it; closing the probe lets it go again
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Remove the temp files and folders in ``folder`` that no living writer holds; their names."""
    if fcntl is None:
        return []
    removed = []
    try:
        entries = [Path(e.path) for e in os.scandir(folder) if TEMP_NAME.match(e.name)]
    except OSError:
        return []
    for path in entries:
        if _abandoned(path):
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed.append(path.name)
    return removed
