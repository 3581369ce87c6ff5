"""``kfstudio evaluate``: accuracy (and agreement with a teacher) of a network on data.

FILE is an exported network (.onnx, .pt2, .ts.pt or a .safetensors bundle, with its
``<file>.json`` manifest, which gives the input spec), a folder written by
``kfstudio factorize`` (all its bricks, assembled in memory), or a teacher reference.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="per-task accuracy of an exported network, a factorization or a teacher",
        description="Run a network on data and print each task's accuracy, and its agreement with "
        "the teacher when --teacher is given.")
    p.add_argument("file", help="an exported .onnx/.pt2/.ts.pt/.safetensors file, a factorization folder, "
                   "or a teacher (builtin:digits, a model file)")
    p.add_argument("--data", required=True, help="builtin:digits, builtin:shapes, an image folder or an .npz")
    p.add_argument("--split", choices=["auto", "test", "train", "all"], default="auto",
                   help="which part of the data: auto (default) scores a built-in set's fixed test split and all "
                   "of a file or folder you give, which is taken to be a test set")
    p.add_argument("--teacher", default=None, help="a teacher to measure agreement with")
    p.add_argument("--input", default=None, help="teacher input C,H,W[:mean:std] when nothing records it "
                   "(default: the input the bricks or the export record)")
    p.set_defaults(run=run)


def _is_export(path: Path) -> bool:
    return path.is_file() and Path(str(path) + ".json").is_file()


def open_network(ref: str, input_text: str | None = None):
    """(tasks, input spec, task-logits function, description, calibrated thresholds by task) for an
    export, a folder or a teacher."""
    path = Path(ref)
    if path.is_dir():
        from kfstudio.assembly.build import build_from_files
        from kfstudio.io.bricks import list_bricks, load_brick, load_common

        net = build_from_files(load_common(path / "common.safetensors"), [load_brick(p) for p in list_bricks(path)])
        return net.tasks, net.input_spec, net.task_logits, f"the bricks of {path}", net.thresholds
    if _is_export(path) or path.suffix == ".safetensors":
        from kfstudio.io.export import load_exported

        exported = load_exported(path)
        return (exported.tasks, exported.input_spec, exported.task_logits,
                f"{path.name} ({exported.manifest['format']})", exported.thresholds)
    from kfstudio.core.tasks import resolve_tasks

    teacher = _named_teacher(ref, input_text, None, "")  # the file the user named
    return resolve_tasks("heads", teacher.class_names), teacher.input_spec, teacher.outputs, teacher.name, {}


def _named_teacher(ref: str, input_text: str | None, recorded, source: str):
    """A teacher the user named: its own input spec, else --input, else the one ``source`` records."""
    from kfstudio.core.spec import InputSpec
    from kfstudio.core.teachers.loaders import TeacherOptions, load_teacher_fitting

    options = TeacherOptions(input_spec=InputSpec.parse(input_text) if input_text else None)
    teacher, note = load_teacher_fitting(ref, options, recorded, source, allow_code=True)
    if note:
        print(note)
    return teacher


def _split(ref: str, which: str):
    import torch

    from kfstudio.core.data.sources import Dataset, load_data

    split = load_data(ref)
    if which == "all":
        t, s = split.train, split.test
        labels = {k: torch.cat([v, s.labels[k]]) for k, v in t.labels.items() if k in s.labels}
        return Dataset(t.name, torch.cat([t.x, s.x]), labels, t.class_names)
    return split.test if which == "test" else split.train


def run(args: argparse.Namespace) -> int:
    from kfstudio.assembly.measure import evaluate_tasks

    tasks, spec, run_fn, what, thresholds = open_network(args.file, args.input)
    teacher = _named_teacher(args.teacher, args.input, spec, what) if args.teacher else None
    which = args.split if args.split != "auto" else ("test" if args.data.startswith("builtin:") else "all")
    data = _split(args.data, which)
    evaluation = evaluate_tasks(tasks, run_fn, data, spec, teacher, thresholds)
    print(f"Evaluated {what} on {len(data)} images ({which} split of {args.data}).")
    print_evaluation(tasks, evaluation)
    return 0


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def _auc(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def print_evaluation(tasks, evaluation) -> None:
    """One row per task and per one-vs-rest group: accuracy, and agreement with the teacher. A
    one-vs-rest brick also shows its AUC and its balanced accuracy as a detector of its class
    (at its calibrated threshold; 0 for an uncalibrated brick); a group that can answer "none
    of these" says how often images of other classes got it."""
    rows = [(t.title, evaluation.tasks[t.name]) for t in tasks]
    rows += [(f"all {name} (together)", m) for name, m in evaluation.groups.items()]
    width = max(len(r[0]) for r in rows)
    detectors = any(m.auc is not None for _, m in rows)
    header = f"\n{'task':<{width}}  {'accuracy':>9}"
    if evaluation.with_teacher:
        header += f"  {'agrees with teacher':>19}  {'teacher accuracy':>16}"
    if detectors:
        header += f"  {'AUC':>5}  {'detector':>8}"
    print(header)
    for title, m in rows:
        line = f"{title:<{width}}  {_pct(m.accuracy):>9}"
        if evaluation.with_teacher:
            line += f"  {_pct(m.agreement):>19}  {_pct(m.teacher_accuracy):>16}"
        if detectors:
            line += f"  {_auc(m.auc):>5}  {_pct(m.detection_accuracy):>8}"
        print(line)
    for name, m in evaluation.groups.items():
        if m.rest_accuracy is not None:
            print(f"{name}: images of other classes rightly called \"none of these\": {_pct(m.rest_accuracy)}")
