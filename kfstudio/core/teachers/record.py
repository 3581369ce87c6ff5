"""What a run's files record about its teacher, and loading that teacher again from them.

``teacher_entry`` is the ``teacher`` table of common.json, run.json, brick and export
manifests: name, ref and sha256, and for a factory with weights the weights file (absolute
path and sha256), so that the same trained network, not a randomly initialised one, is loaded
again. ``load_recorded_teacher`` loads it: code named only inside a file still runs only when
the user names it (``UntrustedCodeError`` says the flags that would), while the recorded
weights, plain data, are used again for the reference the user names.
"""

from __future__ import annotations

from pathlib import Path

from kfstudio.core.spec import InputSpec
from kfstudio.core.teachers.loaders import Teacher, TeacherOptions, file_sha256, load_teacher_fitting


def teacher_entry(teacher) -> dict:
    """The manifests' ``teacher`` table for a loaded ``Teacher`` (or a run's ``TeacherInfo``)."""
    entry = {"name": teacher.name, "ref": teacher.ref, "sha256": teacher.sha256}
    if getattr(teacher, "weights", None):
        entry.update(weights=teacher.weights, weights_sha256=teacher.sha256)
    return entry


def recorded_weights(entry: dict | None, ref: str, weights: str | None) -> tuple[str | None, str | None]:
    """The weights to load with ``ref``: those given, else those ``entry`` records for the same
    reference; and a line that says which were taken (None when nothing needs saying)."""
    entry = entry or {}
    if weights or entry.get("ref") != ref or not entry.get("weights"):
        return weights, None
    path = str(entry["weights"])
    note = f"Using the weights the run records for {ref}: {path}."
    if Path(path).is_file() and entry.get("weights_sha256") and file_sha256(Path(path)) != entry["weights_sha256"]:
        note += " The file has changed since the run (its sha256 differs), so the teacher may not be the same."
    return path, note


def load_recorded_teacher(entry: dict | None, *, ref: str | None = None, weights: str | None = None,
                          input_spec: InputSpec | None = None, fallback: InputSpec | None = None,
                          source: str = "") -> tuple[Teacher, list[str]]:
    """The teacher the user named (``ref``, may run code), else the one ``entry`` records (never
    runs code); with the recorded weights unless others are given. Returns it and lines to show."""
    named = ref is not None
    ref = ref if named else (entry or {}).get("ref") or ""
    weights, weights_note = recorded_weights(entry, ref, weights)
    options = TeacherOptions(weights=weights, input_spec=input_spec)
    teacher, fit_note = load_teacher_fitting(ref, options, fallback, source, allow_code=named)
    return teacher, [n for n in (weights_note, fit_note, teacher.weights_note) if n]
