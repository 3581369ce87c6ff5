"""What an ``.npz`` file claims, checked against what it holds, before anything is allocated.

An ``.npy`` header states an array's shape and type, and numpy allocates that much memory before
it reads a byte of data: a 4 KB file whose header claims 3.5 TiB stops any loader with a
MemoryError. Every ``.npz`` reader (in memory, streamed, sharded) calls ``check_npz_sizes`` first.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from kfstudio.core.errors import DataError

# Deflate cannot shrink data by more than about 1032:1; a member claiming more is lying.
MAX_DEFLATE_RATIO = 1100


def human_size(n_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _claimed(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, int]:
    """The bytes an array's header claims, and the length of that header."""
    fmt = np.lib.format
    with zf.open(info) as member:
        version = fmt.read_magic(member)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read_header(member)
        return math.prod(int(d) for d in shape) * dtype.itemsize, member.tell()


def check_npz_sizes(path: str | Path) -> None:
    """Refuse, in words, an ``.npz`` whose arrays claim more bytes than the file can hold."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                claimed, header = _claimed(zf, info)
                holds = info.file_size - header
                compressed = info.compress_type != zipfile.ZIP_STORED
                if claimed > holds or (compressed and info.file_size > info.compress_size * MAX_DEFLATE_RATIO):
                    name = info.filename[:-4]
                    raise DataError(f"The file '{path}' is corrupt or crafted: its array '{name}' claims "
                                    f"{human_size(claimed)} but the file is {human_size(Path(path).stat().st_size)}; "
                                    "save it again with numpy.savez.")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, TypeError):
        raise DataError(f"The file '{path}' is not a readable .npz file (corrupt, truncated or holding Python "
                        "objects); save it again with numpy.savez.") from None
