"""Data that streams: image folders and ``.npz`` shards too big to hold in memory, read from disk
batch by batch through a ``torch.utils.data.DataLoader`` with worker processes.

``load_split`` lists the files of a data reference (no image is decoded) and decides: data whose
decoded images take at most ``STREAM_ABOVE_MB`` goes through ``load_data`` into memory, as always;
above it the split holds ``FileImages``, which are what a ``Dataset`` is without its ``x``. Both
paths give the same batches: the training loop draws the same seeded global batches
(``runs.batches``) and the same shard per process, and each worker decodes, resizes and
normalizes exactly as ``data.prepare`` does, one batch at a time. The augmentation stays in the
training loop, on its seeded generator, for both paths.

A worker that meets a corrupt image hands the loop the in-memory path's own ``DataError`` words;
workers ignore Ctrl-C (the training loop stops them, after the step in progress, as it stops).
"""

from __future__ import annotations

import contextlib
import glob
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kfstudio.core.data import sources as D
from kfstudio.core.data.sources import Dataset, DataSplit
from kfstudio.core.errors import DataError, KFError
from kfstudio.core.data.npz_check import check_npz_sizes
from kfstudio.core.spec import InputSpec

# Decoded size (float32 pixels at the images' own size) above which data streams from disk:
# 256 MB is ~20 000 RGB images of 32x32 or ~1 300 of 224x224. --stream-above-mb changes it.
STREAM_ABOVE_MB = 256.0
CHUNK = 512  # images per batch of a teacher pass or an evaluation


def default_workers() -> int:
    """Loader processes for a streamed run: half the free cores, 1 to 4 (training keeps the rest)."""
    from kfstudio.core.devices import default_threads

    return max(1, min(4, default_threads() // 2))


def _in_daemon() -> bool:
    import multiprocessing

    return multiprocessing.current_process().daemon


def resolve_workers(workers: int | None) -> int:
    """The loader processes a streamed run really uses: ``workers``, or ``default_workers()`` for
    None; none in a daemonic process (the studio's training process), which may not start any."""
    if _in_daemon():
        return 0
    return default_workers() if workers is None else workers


# ---------------------------------------------------------------- what is on disk

@dataclass(frozen=True)
class _ImageFiles:
    """Image files; each is read as ``data._read_images`` reads a folder: L stays one channel,
    every other mode becomes RGB, and each is resized (bilinear) to the first image's size."""

    paths: np.ndarray  # file names as bytes: one array, not 50 000 objects copied into every worker
    size: tuple[int, int]  # (width, height) of the first image
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size[1], self.size[0])

    def pixels(self, rows: np.ndarray, channels: int, name: str) -> torch.Tensor:
        return torch.cat([D._convert_channels(self._one(int(r)), channels, name) for r in rows])

    def _one(self, row: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = os.fsdecode(self.paths[row])
        try:
            with Image.open(path) as img:
                img.load()
                img = img.copy()
        except (OSError, UnidentifiedImageError, ValueError):
            raise DataError(f"The image '{path}' is corrupt or unreadable; remove or replace it.") from None
        mode = "L" if img.mode == "L" else "RGB"
        a = np.asarray(img.convert(mode).resize(self.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        x = torch.from_numpy(a)
        return x[None, None] if mode == "L" else x.permute(2, 0, 1)[None].contiguous()


@dataclass(frozen=True)
class _Shard:
    path: str
    offset: int  # where the rows of its x start in the file; -1: compressed
    rows: int
    dtype: str


@dataclass(frozen=True)
class _NpzShards:
    """The ``x`` of uncompressed ``.npz`` files, read row by row at their offset in the file
    (no memory map: mapped pages would count against the run's memory)."""

    shards: tuple[_Shard, ...]
    shape: tuple[int, int, int]

    def pixels(self, rows: np.ndarray, channels: int, name: str) -> torch.Tensor:
        starts = np.cumsum([0] + [s.rows for s in self.shards])
        out = np.empty((len(rows), *self.shape), dtype=np.float32)
        with contextlib.ExitStack() as files:
            opened: dict[int, object] = {}
            for i, row in enumerate(rows):
                k = int(np.searchsorted(starts, row, side="right")) - 1
                shard, dtype = self.shards[k], np.dtype(self.shards[k].dtype)
                if k not in opened:
                    opened[k] = files.enter_context(open(shard.path, "rb"))
                size = int(np.prod(self.shape)) * dtype.itemsize
                opened[k].seek(shard.offset + (int(row) - int(starts[k])) * size)
                out[i] = np.frombuffer(opened[k].read(size), dtype=dtype).reshape(self.shape)
        if not np.isfinite(out).all():
            raise DataError(f"The array 'x' in '{name}' contains NaN or infinite values; save finite numbers.")
        return torch.from_numpy(out)


@dataclass
class FileImages:
    """Images still on disk with their labels: a ``Dataset`` without ``x``. ``rows`` picks this
    set's images out of ``source``; ``spec`` is the teacher's input once ``prepare``d."""

    name: str
    source: _ImageFiles | _NpzShards
    rows: np.ndarray
    labels: dict[str, torch.Tensor]
    class_names: dict[str, list[str]]
    normalized: bool = False
    spec: InputSpec | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index) -> "FileImages":
        idx = torch.as_tensor(index, dtype=torch.long)
        return replace(self, rows=self.rows[idx.numpy()], labels={k: v[idx] for k, v in self.labels.items()},
                       class_names=dict(self.class_names))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def decoded_mb(self) -> float:
        return len(self) * int(np.prod(self.image_shape)) * 4 / 2**20

    def read(self, positions) -> torch.Tensor:
        """The images at ``positions`` of this set, as ``prepare`` makes them for the teacher."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        channels = self.spec.channels if self.spec and not self.normalized else self.image_shape[0]
        x = self.source.pixels(rows, channels, self.name)
        if self.spec is None:
            return x
        return D.prepare(Dataset(self.name, x, {}, {}, self.normalized), self.spec).x


def _scan(folder: str, dirs: bool) -> list[str]:
    """The visible subfolders, or image files, of ``folder`` by name, sorted as ``data._visible``
    sorts them; names, not ``Path`` objects (a tenth of the memory for a million files)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and (
            e.is_dir() if dirs else e.is_file() and os.path.splitext(e.name)[1].lower() in D.IMAGE_SUFFIXES))


def _folder_paths(ref: str) -> tuple[np.ndarray, dict, dict] | None:
    """What ``data._folder_files`` finds (the same files, order, labels and class names), as one
    array of file names in bytes; None when the folder has no images."""
    root = os.path.expanduser(ref)
    classes = [(d, _scan(os.path.join(root, d), dirs=False)) for d in _scan(root, dirs=True)]
    classes = [(d, names) for d, names in classes if names]
    if not classes:
        names = _scan(root, dirs=False)
        return (np.array([os.fsencode(os.path.join(root, n)) for n in names]), {}, {}) if names else None
    paths = np.concatenate([np.array([os.fsencode(os.path.join(root, d, n)) for n in names]) for d, names in classes])
    y = np.repeat(np.arange(len(classes)), [len(names) for _, names in classes])
    return paths, {"label": torch.from_numpy(y.astype(np.int64))}, {"label": [d for d, _ in classes]}


def _list_folder(ref: str) -> FileImages | None:
    """An image folder as ``data._load_folder`` sees it (same files, order and labels), undecoded."""
    from PIL import Image, UnidentifiedImageError

    found = _folder_paths(ref)
    if found is None:
        return None
    paths, labels, class_names = found
    first_path = os.fsdecode(paths[0])
    try:
        with Image.open(first_path) as first:
            size, channels = first.size, 1 if first.mode == "L" else 3
    except (OSError, UnidentifiedImageError, ValueError):
        raise DataError(f"The image '{first_path}' is corrupt or unreadable; remove or replace it.") from None
    return FileImages(ref, _ImageFiles(paths, size, channels), np.arange(len(paths)), labels, class_names)


# ---------------------------------------------------------------- .npz shards

def npz_shard_files(ref: str) -> list[Path] | None:
    """The shards of a folder of ``.npz`` files (and no images) or of a pattern like ``parts/*.npz``."""
    if any(c in ref for c in "*?[") and ref.lower().endswith(".npz"):
        return [Path(p) for p in sorted(glob.glob(os.path.expanduser(ref)))] or None
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        return None
    shards = [p for p in D._visible(folder) if p.is_file() and p.suffix.lower() == ".npz"]
    return shards if shards and _folder_paths(ref) is None else None  # images first, as before


def _npz_header(path: Path) -> tuple[_Shard, tuple[int, ...], np.ndarray | None, np.ndarray | None]:
    """Where ``x`` starts in an uncompressed ``.npz``, its shape, and the small ``y``/``class_names``."""
    fmt = np.lib.format
    check_npz_sizes(path)
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            members = set(zf.namelist())
            if "x.npy" not in members:
                raise DataError(f"The file '{path}' has no array 'x'; save the images as x with shape (N, C, H, W).")
            info = zf.getinfo("x.npy")
            with zf.open(info) as member:
                version = fmt.read_magic(member)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = read_header(member)
                header_len = member.tell()
            offset = -1  # a compressed member cannot be read row by row
            if info.compress_type == zipfile.ZIP_STORED:
                fh.seek(info.header_offset)  # the member's local header, then its .npy header, then the rows
                name_len, extra_len = struct.unpack("<26xHH", fh.read(30))
                offset = info.header_offset + 30 + name_len + extra_len + header_len
            small = {k: fmt.read_array(zf.open(f"{k}.npy"), allow_pickle=False)
                     for k in ("y", "class_names") if f"{k}.npy" in members}
            shard = _Shard(str(path), offset, int(shape[0]) if shape else 0, dtype.str)
    except KFError:
        raise
    except (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile, zlib.error):
        raise DataError(f"The file '{path}' is not a readable .npz file (corrupt, truncated or holding Python "
                        "objects); save it again with numpy.savez.") from None
    if fortran and len(shape) > 1:
        raise DataError(f"The array 'x' in '{path}' is stored column-major; save it with numpy.savez from a "
                        "C-ordered array (numpy.ascontiguousarray).")
    return shard, tuple(shape), small.get("y"), small.get("class_names")


def _list_npz(ref: str, paths: list[Path]) -> FileImages:
    """Shards with the same image shape and classes, one after the other, undecoded."""
    shards, ys, names_seen, shape = [], [], None, None
    for path in paths:
        shard, x_shape, y, names = _npz_header(path)
        if len(x_shape) != 4 or np.dtype(shard.dtype).kind != "f":
            raise DataError(f"The array 'x' in '{path}' is {np.dtype(shard.dtype)} with shape {x_shape}; "
                            "it must be float with shape (N, C, H, W).")
        if shape is not None and tuple(x_shape[1:]) != shape:
            raise DataError(f"The images in '{path}' are {D._chw(tuple(x_shape[1:]))} but those of '{paths[0]}' "
                            f"are {D._chw(shape)}; every shard must hold images of one size.")
        shape = tuple(int(d) for d in x_shape[1:])
        if y is not None:
            # the in-memory path's checks and words, on a stand-in x of one value per image
            D._check_npz(str(path), np.zeros((shard.rows, 1, 1, 1), np.float32), y, names)
        if names is not None and names_seen is not None and list(names) != list(names_seen):
            raise DataError(f"The class names in '{path}' differ from those in '{paths[0]}'; use the same in every "
                            "shard.")
        names_seen = names if names is not None else names_seen
        shards.append(shard)
        ys.append(y)
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise DataError(f"Some shards of '{ref}' have labels 'y' and some do not; give every shard its labels.")
    total = sum(s.rows for s in shards)
    if total == 0:
        raise DataError(f"The data '{ref}' holds no images (x is empty); save at least one image.")
    labels, class_names = {}, {}
    if ys[0] is not None:
        y = np.concatenate(ys)
        labels = {"label": torch.from_numpy(y.astype(np.int64))}
        listed = names_seen if names_seen is not None else range(int(y.max()) + 1)
        class_names = {"label": [str(s) for s in listed]}
    return FileImages(ref, _NpzShards(tuple(shards), shape), np.arange(total), labels, class_names, normalized=True)


def _list(ref: str) -> FileImages | None:
    """The undecoded images of a folder, an ``.npz`` or ``.npz`` shards; None for other sources."""
    if ref.startswith("builtin:"):
        return None
    shards = npz_shard_files(ref)
    if shards:
        return _list_npz(ref, shards)
    if ref.lower().endswith(".npz") and Path(ref).expanduser().is_file():
        return _list_npz(ref, [Path(ref).expanduser()])
    return _list_folder(ref) if Path(ref).expanduser().is_dir() else None


def _load_npz_shards(ref: str) -> Dataset:
    """Small shards in memory: each read as one ``.npz`` is, joined in order."""
    paths = npz_shard_files(ref) or []
    listed = _list_npz(ref, paths)
    x = torch.cat([D._load_npz(str(p)).x for p in paths])
    return Dataset(ref, x, listed.labels, listed.class_names, normalized=True)


def _check_streamable(images: FileImages) -> None:
    if isinstance(images.source, _NpzShards):
        for shard in images.source.shards:
            if shard.offset < 0:
                raise DataError(f"The file '{shard.path}' is compressed, so its images cannot be read one by one "
                                "from disk; save it with numpy.savez (not savez_compressed), or in smaller shards.")


D.register_data_source(lambda ref: bool(npz_shard_files(ref)), _load_npz_shards, name="<.npz shards>",
                       description="a folder of .npz files (or a pattern such as parts/*.npz), joined in order")


# ---------------------------------------------------------------- choosing the path

def load_split(ref: str, *, test_ref: str | None, seed: int, stream_above_mb: float,
               workers: int | None) -> tuple[DataSplit, str | None]:
    """The train/test split of ``ref`` in memory, or streaming from disk when its decoded images
    take more than ``stream_above_mb``; and one sentence saying which and why (None for built-ins)."""
    listed = _list(ref)
    if listed is None or listed.decoded_mb <= stream_above_mb:
        split = D.load_data(ref, test_ref=test_ref, seed=seed)
        if listed is None:
            return split, None
        return split, (f"The data's {len(listed):,} images take {_mb(listed.decoded_mb)} decoded: they are held "
                       f"in memory (data above {_mb(stream_above_mb)} streams from disk).")
    _check_streamable(listed)
    if test_ref is None:
        split = D._hold_out(listed, seed, 0.2)
    else:
        test = _list(test_ref)
        if test is None or test.decoded_mb <= stream_above_mb:
            loaded = D._load(test_ref)
            test = loaded.test if isinstance(loaded, DataSplit) else loaded
        else:
            _check_streamable(test)
        D._check_same_classes(listed, test, test_ref)
        split = DataSplit(listed, test, f"Evaluating on {test_ref} ({len(test)} images) instead of part of {ref}.")
    n = resolve_workers(workers)
    how = f"through {n} worker process{'es' if n != 1 else ''} (--workers)" if n else "in the main process (--workers 0)"
    if _in_daemon():
        how = "in the training process (a background process may not start worker processes)"
    test_how = "and so does the test split" if isinstance(split.test, FileImages) else \
        f"while the test data ({len(split.test):,} images) is held in memory"
    return split, (f"The data's {len(listed):,} images take {_mb(listed.decoded_mb)} decoded, more than "
                   f"{_mb(stream_above_mb)} (--stream-above-mb): they stream from disk {how}, batch by batch, "
                   f"{test_how}.")


def _mb(value: float) -> str:
    return f"{value:,.{2 if value < 1 else 1 if value < 10 else 0}f} MB"


def prepare(ds, spec: InputSpec):
    """``data.prepare`` for images in memory; for files on disk, the same checks now and the same
    conversion on every batch read."""
    if isinstance(ds, Dataset):
        return D.prepare(ds, spec)
    if ds.normalized and ds.image_shape != spec.shape:
        raise DataError(f"The data '{ds.name}' is {D._chw(ds.image_shape)} but the teacher expects "
                        f"{D._chw(spec.shape)}; normalized .npz data is not resized, so save it at the teacher's "
                        "input size.")
    if not ds.normalized and ds.image_shape[0] != spec.channels and spec.channels not in (1, 3):
        raise DataError(f"The data '{ds.name}' has {ds.image_shape[0]} channels but the teacher expects "
                        f"{spec.channels}; give 1 or 3.")
    return replace(ds, spec=spec)


def spec_of(ds) -> InputSpec | None:
    return D.spec_of(ds) if isinstance(ds, Dataset) else InputSpec(*ds.image_shape)


def head(ds, n: int) -> torch.Tensor:
    """The first ``n`` images (to measure the teacher's outputs, or the students' stages)."""
    return ds.x[:n] if isinstance(ds, Dataset) else ds.read(np.arange(min(n, len(ds))))
