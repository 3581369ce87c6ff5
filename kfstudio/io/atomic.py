"""Atomic file writes: a crash mid-save never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from kfstudio.core import safe_json
from kfstudio.core.errors import KFError, WriteError
from kfstudio.core.tempfiles import claim, remove_stale_temps


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent)  # left by writers killed mid-write
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError.of(target, exc) from None
    if not claim(fd):  # held while it is written (POSIX); elsewhere an open file could not be renamed
        os.close(fd)
        fd = None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:  # a full disk, a lost permission: words, and the old file stays as it was
        raise WriteError.of(target, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def write_json(target: str | Path, obj) -> None:
    write_bytes(target, json_bytes(obj))


def write_all(files: Sequence[tuple[str | Path, bytes]]) -> None:
    """Write several files as one step (weights and their manifest): every temp file is written
    first, so a full disk leaves all the old files as they were; then they are renamed in order."""
    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(atomic_path(target)), data) for target, data in reversed(files)]
        for tmp, data in staged:
            tmp.write_bytes(data)


def write_with(target: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary path, then move it into place."""
    with atomic_path(target) as tmp:
        writer(tmp)


def read_json(path: Path, *, missing: KFError, corrupt: KFError):
    """Parse a JSON file we wrote, raising ``missing`` or ``corrupt`` (errors in words) instead."""
    if not path.is_file():
        raise missing
    try:
        return safe_json.loads(path.read_text())
    except safe_json.JsonTooDeep as exc:
        raise type(corrupt)(f"'{path}' is corrupt or crafted: {exc}.") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise corrupt from None


def check_writable_file(target: str | Path, what: str = "the output") -> Path:
    """Refuse, before any work, a file path that is a folder, lies under a file, or cannot be written."""
    target = Path(target).expanduser()
    if target.is_dir():
        raise KFError(f"'{target}' is a folder; give {what} a file name, e.g. {target / 'network.onnx'}.")
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise KFError(f"'{target}' cannot be created: '{parent}' is a file, not a folder.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as exc:
        raise KFError(f"KF Studio cannot write '{target}' ({exc.strerror or exc}); choose another place.") from None
    return target
