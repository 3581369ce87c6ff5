"""Image data: built-in data sets, folders of images and ``.npz`` files, split and prepared.

A data reference is a string: ``builtin:digits``, ``builtin:shapes``, a folder of images
(one subfolder per class, or images directly in it) or a ``.npz`` file. ``load_data`` turns
it into a train/test ``DataSplit``; ``prepare`` brings a ``Dataset`` into a teacher's input
space. New sources are added with ``register_data_source``.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F

from kfstudio.core.errors import ConfigError, DataError
from kfstudio.core.data.npz_check import check_npz_sizes
from kfstudio.core.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

@dataclass
class Dataset:
    """Images ``x`` (N, C, H, W) float32 and any number of integer labels per image."""

    name: str
    x: torch.Tensor
    labels: dict[str, torch.Tensor]
    class_names: dict[str, list[str]]
    normalized: bool = False

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor | list[int]) -> "Dataset":
        """The rows ``index``, with the same name, class names and ``normalized`` flag."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return replace(self, x=self.x[idx], labels={k: v[idx] for k, v in self.labels.items()},
                       class_names=dict(self.class_names))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))


def concat(first: Dataset, *rest: Dataset) -> Dataset:
    """The images of ``first`` then of ``rest``, with the labels they all have and ``first``'s name
    and class names. All must be in the same space (all normalized, or all pixels): joining an
    ``.npz`` already in the teacher's input space with raw pixels would normalize one part twice."""
    parts = (first, *rest)
    if len({p.normalized for p in parts}) > 1:
        raise DataError(f"'{first.name}' mixes images already in the teacher's input space with raw pixels; "
                        "give data of one kind.")
    shared = [k for k in first.labels if all(k in p.labels for p in rest)]
    return replace(first, x=torch.cat([p.x for p in parts]), labels={k: torch.cat([p.labels[k] for p in parts])
                   for k in shared}, class_names={k: v for k, v in first.class_names.items() if k in shared})


@dataclass(frozen=True)
class DataSplit:
    """A training set, a test set and one sentence saying where the test set came from."""

    train: Dataset
    test: Dataset
    note: str

    def whole(self) -> Dataset:
        """Training and test images together (training first), as the source gave them."""
        return concat(self.train, self.test)


Loader = Callable[[str], Union[Dataset, DataSplit]]


@dataclass(frozen=True)
class _Source:
    name: str
    matches: Callable[[str], bool]
    loader: Loader
    description: str


_SOURCES: list[_Source] = []


def register_data_source(
    prefix_or_matcher: str | Callable[[str], bool],
    loader: Loader,
    *,
    name: str | None = None,
    description: str = "",
) -> None:
    """Add a data source; the newest registration wins when several match a reference.

    A string matches a reference equal to it, or starting with it when it ends in ``:``.
    A callable gets the reference and says whether it matches. ``loader`` gets the
    reference and returns a ``Dataset`` (split later) or a ``DataSplit`` (a fixed split).
    """
    if isinstance(prefix_or_matcher, str):
        key = source_name = prefix_or_matcher

        def matches(ref: str) -> bool:
            return ref == key or (key.endswith(":") and ref.startswith(key))

    else:
        matches, source_name = prefix_or_matcher, loader.__name__
    source_name = name or source_name
    _SOURCES[:] = [s for s in _SOURCES if s.name != source_name]
    _SOURCES.append(_Source(source_name, matches, loader, description))


def list_data_sources(*, describe: bool = False) -> list[str]:
    """The registered sources, e.g. ``builtin:digits``; with ``describe``, each followed by what it is."""
    return [f"{s.name} - {s.description}" if describe and s.description else s.name for s in _SOURCES]


def load_data(
    ref: str, *, test_ref: str | None = None, seed: int = 0, test_fraction: float = 0.2
) -> DataSplit:
    """Load ``ref`` and split it: the source's fixed split, ``test_ref``, or a seeded hold-out."""
    loaded = _load(ref)
    if test_ref is not None:
        train = loaded.train if isinstance(loaded, DataSplit) else loaded
        loaded_test = _load(test_ref)
        test = loaded_test.test if isinstance(loaded_test, DataSplit) else loaded_test
        _check_same_classes(train, test, test_ref)
        note = f"Evaluating on {test_ref} ({len(test)} images) instead of part of {ref}."
        return DataSplit(train, test, note)
    if isinstance(loaded, DataSplit):
        return loaded
    return _hold_out(loaded, seed, test_fraction)


def scoring_set(ref: str) -> tuple[Dataset, str]:
    """The images a trained network is scored on when ``ref`` is given to score it, and the words
    printed with every figure: a built-in set's fixed test split, all of a file or folder you give
    (taken to be a test set). ``kfstudio evaluate`` and ``kfstudio assemble`` share this rule;
    ``kfstudio factorize`` scores on --test-data (all of it) or the part it holds out of --data."""
    loaded = _load(ref)
    if isinstance(loaded, DataSplit):
        return loaded.test, f"{len(loaded.test):,} test images of {ref} (its fixed test split)"
    return loaded, f"{len(loaded):,} test images of {ref} (all of it)"


def _load(ref: str) -> Dataset | DataSplit:
    if not ref.strip():
        raise DataError("No data was given; give a folder of images, a .npz file or a built-in data set.")
    for source in reversed(_SOURCES):
        if source.matches(ref):
            return source.loader(ref)
    if ref.startswith("builtin:"):
        known = ", ".join(s.name for s in _SOURCES if s.name.startswith("builtin:"))
        raise DataError(f"There is no built-in data set '{ref}'; the built-in ones are {known}.")
    if not Path(ref).expanduser().exists():
        raise DataError(
            f"The data '{ref}' does not exist; give a folder of images, a .npz file or a built-in data set."
        )
    raise DataError(
        f"KF Studio cannot read '{ref}' as data; give a folder of images (one subfolder per class) "
        "or a .npz file with an array 'x'."
    )


def _check_same_classes(train: Dataset, test: Dataset, test_ref: str) -> None:
    for label, names in test.class_names.items():
        if label in train.class_names and train.class_names[label] != names:
            raise DataError(
                f"The test data '{test_ref}' has the {label} classes {names} but the training data has "
                f"{train.class_names[label]}; use the same classes in both."
            )


def _hold_out(ds: Dataset, seed: int, test_fraction: float) -> DataSplit:
    """Hold out a seeded ``test_fraction`` of ``ds``, stratified by its first label when possible."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"The test fraction must be between 0 and 1, not {test_fraction}.")
    n = len(ds)
    if n < 2:
        raise DataError(f"'{ds.name}' has only {n} image, too few to hold some out; give a test set too.")
    n_test = min(n - 1, max(1, math.ceil(test_fraction * n)))
    y = next(iter(ds.labels.values())).numpy() if ds.labels else None
    counts = np.bincount(y) if y is not None else np.zeros(0)
    n_classes = int((counts > 0).sum())
    stratify = y is not None and counts[counts > 0].min() >= 2 and n_classes <= min(n_test, n - n_test)
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, stratify=y if stratify else None
    )
    note = f"Held out {test_fraction:.0%} ({n_test} of {n} images, seed {seed}) of {ds.name} for evaluation."
    return DataSplit(ds.subset(np.sort(train_idx).tolist()), ds.subset(np.sort(test_idx).tolist()), note)


# --- built-in data sets -------------------------------------------------------------------


def _digits_arrays() -> dict[str, np.ndarray]:
    """The shipped digits file (packaging/make_digits_npz.py): scikit-learn's digits and the fixed test
    split, read without importing scikit-learn or SciPy (slow, and in the studio's loading thread they
    held the interpreter lock long enough to freeze the window)."""
    from importlib import resources

    with resources.files("kfstudio.resources").joinpath("data/digits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as npz:
        return {k: npz[k] for k in ("images", "target", "test")}


def _digits(arrays: dict[str, np.ndarray], rows: np.ndarray) -> Dataset:
    x = torch.from_numpy(arrays["images"][rows].astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(arrays["target"][rows].astype(np.int64))
    return Dataset("builtin:digits", x, {"digit": y}, {"digit": [str(i) for i in range(10)]})


def load_digits_dataset() -> Dataset:
    """All 1797 scikit-learn digits as (N, 1, 8, 8) images in [0, 1]."""
    arrays = _digits_arrays()
    return _digits(arrays, np.arange(len(arrays["target"])))


def _load_digits(ref: str) -> DataSplit:
    arrays = _digits_arrays()
    test = arrays["test"]
    return DataSplit(_digits(arrays, np.flatnonzero(~test)), _digits(arrays, np.flatnonzero(test)),
                     f"builtin:digits has a fixed test split of {int(test.sum())} images.")


# --- folders of images and .npz files ------------------------------------------------------


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _folder_files(ref: str) -> tuple[list[Path], dict, dict] | None:
    """The image files of a folder with their labels and class names (None if it has no images);
    kfstudio.core.data.streaming lists a folder too big for memory with this same function."""
    folder = Path(ref).expanduser()
    classes = [(d.name, _image_files(d)) for d in _visible(folder) if d.is_dir()]
    classes = [(name, files) for name, files in classes if files]
    if classes:
        files = [f for _, class_files in classes for f in class_files]
        y = [i for i, (_, class_files) in enumerate(classes) for _ in class_files]
        return files, {"label": torch.tensor(y, dtype=torch.int64)}, {"label": [name for name, _ in classes]}
    files = _image_files(folder)
    return (files, {}, {}) if files else None


def _load_folder(ref: str) -> Dataset:
    """One subfolder per class (label ``label``), or unlabeled images directly in the folder."""
    found = _folder_files(ref)
    if found is None:
        raise DataError(
            f"The folder '{ref}' has no images (.png, .jpg, .jpeg, .bmp, .gif); put the images in it "
            "or in one subfolder per class."
        )
    files, labels, class_names = found
    return Dataset(ref, _read_images(files), labels, class_names)


def _read_images(files: list[Path]) -> torch.Tensor:
    """Read, convert and resize the images to the first one's size; (N, C, H, W) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.copy())
        except (OSError, UnidentifiedImageError, ValueError):
            raise DataError(f"The image '{path}' is corrupt or unreadable; remove or replace it.") from None
    mode = "L" if all(img.mode == "L" for img in images) else "RGB"
    size = images[0].size
    resample = Image.Resampling.BILINEAR
    arrays = [np.asarray(img.convert(mode).resize(size, resample), dtype=np.float32) for img in images]
    x = torch.from_numpy(np.stack(arrays) / 255.0)
    return x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2).contiguous()


def _load_npz(ref: str) -> Dataset:
    """``x`` (N, C, H, W) float in the teacher's input space, optional ``y`` and ``class_names``."""
    path = Path(ref).expanduser()
    if not path.is_file():
        raise DataError(f"The data file '{ref}' does not exist; check the path.")
    check_npz_sizes(path)
    try:
        with open(path, "rb") as fh:  # our own handle: np.load leaks its own on a corrupt zip
            npz = np.load(fh, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with npz:
                arrays = {k: npz[k] for k in ("x", "y", "class_names") if k in npz.files}
    except MemoryError:
        raise DataError(f"The images in '{ref}' do not fit in this computer's memory; save smaller parts.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        raise DataError(
            f"The file '{ref}' is not a readable .npz file (corrupt, truncated or holding Python objects); "
            "save it again with numpy.savez."
        ) from None
    x, y, names = arrays.get("x"), arrays.get("y"), arrays.get("class_names")
    _check_npz(ref, x, y, names)
    labels, class_names = {}, {}
    if y is not None:
        labels = {"label": torch.from_numpy(y.astype(np.int64))}
        n_classes = int(y.max()) + 1
        listed = names if names is not None else range(n_classes)
        class_names = {"label": [str(s) for s in listed]}
    return Dataset(ref, torch.from_numpy(x.astype(np.float32)), labels, class_names, normalized=True)


MAX_CLASSES = 100_000  # labels above this without class names are a mistake, not a class count


def _check_npz(ref: str, x: np.ndarray | None, y: np.ndarray | None, names: np.ndarray | None) -> None:
    if x is None:
        raise DataError(f"The file '{ref}' has no array 'x'; save the images as x with shape (N, C, H, W).")
    if x.ndim != 4 or x.dtype.kind != "f":
        raise DataError(
            f"The array 'x' in '{ref}' is {x.dtype} with shape {x.shape}; "
            "it must be float with shape (N, C, H, W)."
        )
    if len(x) == 0:
        raise DataError(f"The file '{ref}' holds no images (x is empty); save at least one image.")
    if not np.isfinite(x).all():
        raise DataError(f"The array 'x' in '{ref}' contains NaN or infinite values; save finite numbers.")
    if y is None:
        return
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise DataError(
            f"The labels 'y' in '{ref}' are {y.dtype} with shape {y.shape}; they must be {len(x)} integers, "
            "one per image."
        )
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise DataError(f"The 'class_names' in '{ref}' must be a list of strings.")
    top = len(names) - 1 if names is not None else MAX_CLASSES - 1
    if y.min() < 0 or y.max() > top:
        allowed = f"0 to {top}, one per class name" if names is not None else f"0 to {top:,} (give class_names for more)"
        lo, hi = y.min(), y.max()
        raise DataError(f"The labels 'y' in '{ref}' run from {lo} to {hi}, out of range: use {allowed}.")


# --- bringing data to a teacher's input -------------------------------------------------------


def spec_of(ds: Dataset) -> InputSpec | None:
    """The input a data set's images imply: their size, and no normalization for an .npz whose
    images are already in the teacher's input space (pixels in [0, 1] for image folders)."""
    if ds.x.dim() != 4 or len(ds.x) == 0:
        return None
    return InputSpec(*(int(d) for d in ds.x.shape[1:]))


def prepare(ds: Dataset, spec: InputSpec) -> Dataset:
    """``ds`` in the teacher's input space: channels converted, resized and normalized."""
    if ds.normalized:
        if ds.image_shape != spec.shape:
            raise DataError(
                f"The data '{ds.name}' is {_chw(ds.image_shape)} but the teacher expects {_chw(spec.shape)}; "
                "normalized .npz data is not resized, so save it at the teacher's input size."
            )
        return replace(ds, labels=dict(ds.labels), class_names=dict(ds.class_names))
    x = _convert_channels(ds.x, spec.channels, ds.name)
    h, w = x.shape[-2:]
    if (h, w) != (spec.height, spec.width):
        down = spec.height < h or spec.width < w
        size = (spec.height, spec.width)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
    mean, std = _stats(spec, x)
    x = (x - mean) / std
    return Dataset(ds.name, x, dict(ds.labels), dict(ds.class_names), normalized=True)


def _convert_channels(x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1).to(x)
        return (x * weights).sum(dim=1, keepdim=True)
    raise DataError(f"The data '{name}' has {c} channels but the teacher expects {channels}; give 1 or 3.")


def to_pixels(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Undo the normalization of ``spec``, for showing images; values clamped to [0, 1]."""
    mean, std = _stats(spec, x)
    return (x * std + mean).clamp(0.0, 1.0)


def _stats(spec: InputSpec, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std shaped (C, 1, 1), on ``like``'s device and dtype."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1).to(like)
    std = torch.tensor(spec.std).view(-1, 1, 1).to(like)
    return mean, std


def _chw(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape)) + " (channels x height x width)"


register_data_source("builtin:digits", _load_digits, description="1797 handwritten digits, 8x8 grayscale")
register_data_source(
    lambda ref: Path(ref).expanduser().is_dir(),
    _load_folder,
    name="<folder>",
    description="a folder of images, one subfolder per class or unlabeled",
)
register_data_source(
    lambda ref: ref.lower().endswith(".npz"),
    _load_npz,
    name="<file.npz>",
    description="x (N, C, H, W) already normalized, optional y and class_names",
)


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The whole batch translated by up to one pixel (wrapping round): how the demo teachers were trained."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def random_shifts(x: torch.Tensor, generator: torch.Generator, reach: int = 1) -> torch.Tensor:
    """Each image translated on its own by up to ``reach`` pixels each way (wrapping round, as
    ``torch.roll``): what factorizing with augmentation trains on. The teacher labels the shifted images
    itself, so a student learns the teacher's answer on views the data set does not hold."""
    n, _, h, w = x.shape
    dy, dx = torch.randint(-reach, reach + 1, (2, n, 1), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device) - dy) % h          # (n, h): out[i] = x[(i - dy) % h]
    cols = (torch.arange(w, device=x.device) - dx) % w
    picked = x[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous()  # advanced indices come first: (n, h, w, c)

