"""``kfstudio evaluate``: accuracy (and agreement with a teacher) of a network on data.

FILE is an exported network (.onnx, .pt2, .ts.pt or a .safetensors bundle, with its
``<file>.json`` manifest, which gives the input spec), a folder written by
``kfstudio factorize`` (all its bricks, assembled in memory), or a teacher reference.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kfstudio.cli import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="per-task accuracy of an exported network, a factorization or a teacher",
        description="Run a network on data and print each task's accuracy, and its agreement with "
        "the teacher when --teacher is given.")
    p.add_argument("file", help="an exported .onnx/.pt2/.ts.pt/.safetensors file, a factorization folder, "
                   "or a teacher (builtin:digits, package.module:function, a model file)")
    p.add_argument("--data", required=True, help="builtin:digits, builtin:shapes, an image folder or an .npz")
    p.add_argument("--split", choices=["auto", "test", "train", "all"], default="auto",
                   help="which part of the data: auto (default) scores a built-in set's fixed test split and all "
                   "of a file or folder you give, which is taken to be a test set (as assemble --data does)")
    p.add_argument("--teacher", default=None, help="a teacher to measure agreement with")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory "
                   "teacher: FILE when it is one, else --teacher (default for a folder's or an export's own "
                   "teacher: the weights it records)")
    p.add_argument("--input", type=argtypes.input_spec, default=None, help="teacher input C,H,W[:mean:std] when nothing records it "
                   "(default: the input the bricks or the export record)")
    p.set_defaults(run=run)


def _is_export(path: Path) -> bool:
    """A file with a KF Studio export manifest beside it (a teacher's own input manifest is not one)."""
    manifest = Path(str(path) + ".json")
    if not (path.is_file() and manifest.is_file()):
        return False
    import json

    try:
        doc = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return True  # a broken export manifest: load_exported says what is wrong with it
    from kfstudio.io.export_manifest import EXPORT_KIND

    return not isinstance(doc, dict) or doc.get("kind") == EXPORT_KIND


@dataclass
class _Opened:
    tasks: list
    input_spec: object
    task_logits: Callable
    what: str
    teacher_entry: dict | None = None  # the teacher the folder or export records
    is_teacher: bool = False
    thresholds: dict = field(default_factory=dict)  # the calibrated bricks' thresholds, by task


def open_network(ref: str, input_text: str | None = None, weights: str | None = None) -> _Opened:
    """The tasks, input spec and task-logits function of an export, a folder or a teacher."""
    path = Path(ref)
    if path.is_dir():
        from kfstudio.assembly.build import build_from_files
        from kfstudio.io.bricks import list_bricks, load_brick, load_common

        common = load_common(path / "common.safetensors")
        net = build_from_files(common, [load_brick(p) for p in list_bricks(path)])
        return _Opened(net.tasks, net.input_spec, net.task_logits, f"the bricks of {path}",
                       common.manifest.get("teacher"), thresholds=net.thresholds)
    if _is_export(path) or path.suffix == ".safetensors":
        from kfstudio.io.export import load_exported

        exported = load_exported(path)
        return _Opened(exported.tasks, exported.input_spec, exported.task_logits,
                       f"{path.name} ({exported.manifest['format']})", exported.manifest.get("teacher"),
                       thresholds=exported.thresholds)
    from kfstudio.core.tasks import resolve_tasks

    teacher = _named_teacher(ref, input_text, None, "", weights)  # the file the user named
    return _Opened(resolve_tasks("heads", teacher.class_names), teacher.input_spec, teacher.outputs, teacher.name,
                   is_teacher=True)


def _named_teacher(ref: str, input_text: str | None, recorded, source: str, weights: str | None = None,
                   entry: dict | None = None):
    """A teacher the user named: its own input spec, else --input, else the one ``source`` records;
    with ``weights``, else those ``entry`` records for the same reference."""
    from kfstudio.core.spec import InputSpec
    from kfstudio.core.teachers.record import load_recorded_teacher

    spec = InputSpec.parse(input_text) if input_text else None
    teacher, notes = load_recorded_teacher(entry, ref=ref, weights=weights, input_spec=spec, fallback=recorded,
                                           source=source)
    for note in notes:
        print(note)
    return teacher


def _split(ref: str, which: str):
    """The images to score on and the words that say which (printed with every figure)."""
    from kfstudio.core.data.sources import load_data, scoring_set

    if which == "auto":
        return scoring_set(ref)
    split = load_data(ref)
    data = split.whole() if which == "all" else split.test if which == "test" else split.train
    return data, f"{len(data):,} images of {ref} ({which} split: {split.note.rstrip('.')})"


def run(args: argparse.Namespace) -> int:
    from kfstudio.assembly.measure import evaluate_tasks

    opened = open_network(args.file, args.input, args.weights)
    teacher = None
    if args.teacher:
        weights = None if opened.is_teacher else args.weights
        teacher = _named_teacher(args.teacher, args.input, opened.input_spec, opened.what, weights,
                                 opened.teacher_entry)
        from kfstudio.core.teachers.outputs import match_outputs

        teacher, note = match_outputs(opened.tasks, teacher)
        if note:
            print(note)
    data, words = _split(args.data, args.split)
    evaluation = evaluate_tasks(opened.tasks, opened.task_logits, data, opened.input_spec, teacher,
                                opened.thresholds)
    print(f"Evaluated {opened.what} on {words}.")
    print_evaluation(opened.tasks, evaluation)
    return 0


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def _auc(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def print_evaluation(tasks, evaluation) -> None:
    """One row per task and per one-vs-rest group: the images it is scored on (a subset of a one-vs-rest
    group is scored on the images of its classes), accuracy, and agreement with the teacher. A
    one-vs-rest brick also shows its AUC and its balanced accuracy as a detector of its class
    (at its calibrated threshold; 0 for an uncalibrated brick); a group that can answer "none
    of these" says how often images of other classes got it."""
    rows = [(t.title, evaluation.tasks[t.name]) for t in tasks]
    rows += [(f"all {name} (together)", m) for name, m in evaluation.groups.items()]
    width = max(len(r[0]) for r in rows)
    detectors = any(m.auc is not None for _, m in rows)
    header = f"\n{'task':<{width}}  {'images':>7}  {'accuracy':>9}"
    if detectors:
        header += f"  {'AUC':>5}  {'detector':>8}"
    if evaluation.with_teacher:  # last, so the teacher's accuracy always ends the line
        header += f"  {'agrees with teacher':>19}  {'teacher accuracy':>16}"
    print(header)
    for title, m in rows:
        line = f"{title:<{width}}  {m.samples:>7,}  {_pct(m.accuracy):>9}"
        if detectors:
            line += f"  {_auc(m.auc):>5}  {_pct(m.detection_accuracy):>8}"
        if evaluation.with_teacher:
            line += f"  {_pct(m.agreement):>19}  {_pct(m.teacher_accuracy):>16}"
        print(line)
    for name, m in evaluation.groups.items():
        if m.rest_accuracy is not None:
            print(f"{name}: images of other classes rightly called \"none of these\": {_pct(m.rest_accuracy)}")
