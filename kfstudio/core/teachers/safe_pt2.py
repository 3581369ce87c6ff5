"""Load a torch.export ``.pt2`` archive without ever running code from it.

``torch.export.load`` unpickles several archive members with ``weights_only=False``: weights
or constants marked ``use_pickle``, custom and opaque objects, and — when the safe load of
``sample_inputs`` fails — the sample inputs too. It also turns text in the program JSON into
Python: shape expressions go through ``sympy.sympify`` (an eval), guards code is executed by
``ExportedProgram.module()``, node targets name any callable reachable from ``torch``, and
names end up in generated source. A crafted archive therefore runs arbitrary code.

Before torch sees the file we read it once into memory (what we check is what torch loads),
check every member against the layout that ``torch.export.save`` writes for plain tensors
(raw tensor bytes plus JSON configs), read the members through torch's own zip reader, check
the program JSON against an allow-list (``kfstudio.core.teachers.pt2_program``) and the sample inputs
for plain containers, refuse anything else, and run the load with every ``torch.load`` forced
to ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import torch

from kfstudio.core.errors import FileFormatError, KFError, first_line
from kfstudio.core.teachers.pt2_program import ProgramRefused, check_program, check_sample_inputs


class UnsafeFileError(FileFormatError):
    """A file holds code (pickled objects, compiled kernels, Python text torch would run) that
    KF Studio never runs."""


# Members torch.export.save writes for a program of plain tensors, below the archive's one
# top-level folder. Anything else (compiled AOTInductor kernels, executorch blobs, legacy
# pickled weights, custom/opaque objects) is refused.
_ALLOWED = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json|extra/[\w.-]+\.json"
    r"|data/weights/(weight_\d+|[\w.-]+_weights_config\.json)"
    r"|data/constants/(tensor_\w+|[\w.-]+_constants_config\.json)"
    r"|data/sample_inputs/[\w.-]+\.pt)"
)

_load_lock = threading.Lock()


def _refuse(path: Path, why: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"'{path.name}' is not a plain torch.export program: {why}. KF Studio never runs code "
        "from a file, so it does not open it."
    )


def check_pt2_archive(path: Path, data: bytes | None = None) -> None:
    """Raise ``UnsafeFileError`` unless the archive (``data``, else the file's bytes) is plain
    tensor data and JSON, and its program holds no code (``pt2_program``)."""
    path = Path(path)
    if data is None:
        data = Path(path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise _refuse(path, "its files are not inside one folder as torch.export.save writes them")
    if len(set(names)) != len(names):
        raise _refuse(path, "it lists the same file twice, so what we check might not be what torch reads")
    inner_names = [n.split("/", 1)[1] for n in names]
    for inner in inner_names:
        if not _ALLOWED.fullmatch(inner):
            raise _refuse(path, f"it holds '{inner}', which may be pickled Python or compiled code")
    # From here on, read every member through torch's own zip reader: the bytes checked are the
    # bytes torch.export.load will use.
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = reader.get_all_records()
    except RuntimeError as exc:
        raise FileFormatError(f"'{path.name}' is a damaged .pt2 archive ({first_line(exc)}).") from None
    if sorted(records) != sorted(inner_names):
        raise _refuse(path, "torch's zip reader sees other files in it than Python's does")
    for inner in inner_names:
        if inner.endswith("_config.json"):
            _check_payload_config(path, inner, reader.get_record(inner))
    for inner in inner_names:
        if inner.startswith("models/"):
            _check_program(path, inner, reader.get_record(inner))
            samples = "data/sample_inputs/" + inner[len("models/"):-len(".json")] + ".pt"
            if samples in records:
                _check_samples(path, reader.get_record(samples))


def _check_program(path: Path, inner: str, raw: bytes) -> None:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse(path, f"its program '{inner}' is not valid JSON") from None
    try:
        check_program(doc)
    except ProgramRefused as exc:
        raise _refuse(path, str(exc)) from None


def _check_samples(path: Path, raw: bytes) -> None:
    if not raw:
        return
    try:
        samples = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _refuse(path, "it holds pickled Python objects") from None
    except Exception as exc:  # a damaged member failing inside torch.load
        raise _refuse(path, f"its sample inputs could not be read as plain tensors ({first_line(exc)})") from None
    try:
        check_sample_inputs(samples)
    except ProgramRefused as exc:
        raise _refuse(path, str(exc)) from None


def _check_payload_config(path: Path, inner: str, raw: bytes) -> None:
    try:
        config = json.loads(raw).get("config", {})
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise _refuse(path, f"its '{inner}' is not valid JSON") from None
    if not isinstance(config, dict):
        raise _refuse(path, f"its '{inner}' is not a table of tensors")
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle", False) is not False:
            raise _refuse(path, f"the tensor '{fqn}' is stored as a pickle")
        name = str(meta.get("path_name", ""))
        if not name.startswith(("weight_", "tensor_")):
            raise _refuse(path, f"the entry '{fqn}' is a Python object, not a tensor")


@contextlib.contextmanager
def _weights_only_everywhere() -> Iterator[None]:
    """Make every ``torch.load`` inside the block refuse pickled code (defence in depth)."""
    original = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    with _load_lock:
        torch.load = safe_load
        try:
            yield
        finally:
            torch.load = original


def load_exported_program(path: str | Path) -> torch.export.ExportedProgram:
    """``torch.export.load`` for files we did not write: checked first, never running code from them."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise FileFormatError(f"'{path.name}' is not a torch.export program (a .pt2 archive written by "
                      "torch.export.save); it may be truncated or corrupt.")
    try:
        data = path.read_bytes()  # read once: torch loads these very bytes, not the file again
        check_pt2_archive(path, data)
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError) as exc:
        raise FileFormatError(f"'{path.name}' is a damaged .pt2 archive ({first_line(exc)}).") from None
    with _weights_only_everywhere(), _quiet_torch_export():
        try:
            return torch.export.load(io.BytesIO(data))
        except KFError:
            raise
        except pickle.UnpicklingError:  # our weights_only guard stopped a pickled object
            raise _refuse(path, "it holds pickled Python objects") from None
        except Exception as exc:  # a damaged or foreign archive failing deep inside torch
            raise FileFormatError(f"'{path.name}' could not be read as a torch.export program: "
                                  f"{first_line(exc)}") from None


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs a traceback before re-raising; the user gets our one sentence instead."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export.serde.serialize")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
