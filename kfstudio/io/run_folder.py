"""A factorization folder is replaced as a whole, and checked before any work is done.

A run's files (common module, bricks, run.json) are written into ``.staging/`` inside the
folder, then swapped in under a journal file, ``.swap-in-progress``: the old manifest goes
first and the new one last, so a kill at any moment leaves either the old run, or a journal
that the next access rolls forward to the new run — never a new common module beside old
bricks. Temp files left by a killed write are removed on the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from kfstudio.core.errors import BusyError, ConfigError, WriteError
from kfstudio.core.tempfiles import TEMP_NAME, remove_stale_temps
from kfstudio.io.atomic import fsync_dir, write_json
from kfstudio.io.locks import writing

STAGING, JOURNAL, TRASH = ".staging", ".swap-in-progress", ".trash"
# Moved in this order; the common module's manifest last: without it the folder is no run yet.
_FILES = ("common.safetensors", "run.json", "common.json")


def check_output_folder(out: str | Path) -> Path:
    """Refuse, before training, an output folder that cannot be created or written; finish an
    interrupted save there."""
    out = check_folder_writable(out)
    finish_interrupted_save(out)
    return out


def check_folder_writable(out: str | Path) -> Path:
    """Refuse, in words, an output folder that cannot be created or written (no cleanup)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"'{out}' is a file, not a folder; give --out a folder for the common module and bricks.")
    parent = next((p for p in (out, *out.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"'{out}' cannot be created: '{parent}' is a file, not a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"KF Studio cannot write into '{out}' ({exc.strerror or exc}); choose another folder.") from None
    return out


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder inside ``out``; on success swap its contents in as a whole."""
    out = check_output_folder(out)
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(stage)
    write_json(out / JOURNAL, {"staging": STAGING})
    _swap_in(out)


def _swap_in(out: Path) -> None:
    """Move the staged run into place. Idempotent: a second call after a kill finishes the job."""
    stage = out / STAGING
    if (stage / "common.json").exists():
        (out / "common.json").unlink(missing_ok=True)
    if (stage / "bricks").is_dir():
        shutil.rmtree(out / TRASH, ignore_errors=True)
        if (out / "bricks").exists():
            os.replace(out / "bricks", out / TRASH)
        os.replace(stage / "bricks", out / "bricks")
    for name in _FILES:
        if (stage / name).exists():
            os.replace(stage / name, out / name)
    fsync_dir(out)
    (out / JOURNAL).unlink(missing_ok=True)
    shutil.rmtree(out / TRASH, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def finish_interrupted_save(out: str | Path) -> None:
    """Roll an interrupted swap forward, drop an unfinished staging folder and temp files that
    no living writer holds. A folder another process is writing is left alone: its staging
    folder and journal are that writer's work in progress, not leftovers."""
    out = Path(out)
    if not ((out / JOURNAL).is_file() or (out / STAGING).exists()
            or any(TEMP_NAME.match(p.name) for f in (out, out / "bricks") if f.is_dir() for p in f.iterdir())):
        return  # nothing to finish: reading a run needs no lock (and works in a read-only folder)
    try:
        with writing(out, "a KF Studio run being finished", wait_s=0):
            if (out / JOURNAL).is_file():
                _swap_in(out)
            elif (out / STAGING).exists():
                shutil.rmtree(out / STAGING, ignore_errors=True)
            for folder in (out, out / "bricks"):
                remove_stale_temps(folder)
    except BusyError:
        return  # its writer is alive and finishes its own save
    except OSError as exc:  # e.g. a read-only copy of a folder whose save was interrupted
        raise WriteError(f"'{out}' holds a run whose saving was interrupted, and it cannot be finished here "
                         f"({exc.strerror or exc}); copy the folder somewhere writable and open it again.") from None
