"""How a run's bricks relate (DEPARA), and how well its common module suits new data.

``compute_relatedness(folder)`` loads a factorization folder's common module and bricks,
draws a seeded probe set from the run's own data, and scores every pair of bricks on their
task logits; with ``data`` it also says how well the common module suits
that labeled data set (DEPARA between the common module and the teacher on those inputs,
and a linear probe on the frozen ``z_c``). The result is a plain dict, written atomically to
``relatedness.json`` in the run folder; ``cached_relatedness`` reads it back only when it
still describes the same common module, bricks, probes and lambda.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kfstudio.core.data.sources import load_data, prepare
from kfstudio.core.measures.depara import (
    DEFAULT_LAMBDA,
    DEFAULT_PROBES,
    brick_layer,
    common_layer,
    graphs_of,
    linear_probe,
    pooled_features,
    probe_set,
    relatedness,
    similarity,
    teacher_layer,
    teacher_taps,
)
from kfstudio.core.errors import DataError, FileFormatError, KFError, TaskError
from kfstudio.core.teachers.record import recorded_weights
from kfstudio.core.teachers.loaders import Teacher, TeacherOptions, load_teacher
from kfstudio.io.atomic import read_json, write_json
from kfstudio.io.bricks import BrickFile, CommonFile, list_bricks, load_brick, load_common

RELATEDNESS_FILE = "relatedness.json"
SCHEMA_VERSION = 1
PROBE_TRAIN_LIMIT = 3000  # a quick probe: enough images to read a linear task, few enough to take seconds


def load_run(folder: str | Path) -> tuple[CommonFile, list[BrickFile]]:
    folder = Path(folder)
    return load_common(folder / "common.safetensors"), [load_brick(p) for p in list_bricks(folder)]


def _run_doc(folder: Path) -> dict:
    return read_json(folder / "run.json", missing=FileFormatError(f"'{folder}' has no run.json saying which data it "
                     "was factorized on; give the probe data with --data."),
                     corrupt=FileFormatError(f"'{folder / 'run.json'}' is corrupt."))


def run_config(folder: Path) -> dict:
    return _run_doc(folder).get("config") or {}


def _probe_data(folder: Path, common: CommonFile, seed: int) -> tuple[str, torch.Tensor]:
    ref = run_config(folder).get("data")
    if not ref:
        raise DataError("The run does not say which data it was factorized on; give the probe data with --data.")
    return ref, prepare(load_data(ref, seed=seed).test, common.input_spec).x


def brick_matrix(common: CommonFile, bricks: list[BrickFile], probes: torch.Tensor, lam: float) -> dict:
    if len(bricks) < 2:
        raise KFError("The run has fewer than two bricks; relatedness compares bricks with each other.")
    graphs = graphs_of({b.task.name: brick_layer(b.module, common.module) for b in bricks}, probes)
    return relatedness(graphs, lam).to_dict()


def run_teacher(folder: Path, teacher: str | None, weights: str | None = None) -> Teacher:
    """The teacher named by the user (may run code), else the one run.json names (never runs code);
    with the weights given, else those the run records for that teacher."""
    doc = _run_doc(folder)
    config = doc.get("config") or {}
    entry = doc.get("teacher") or {"ref": config.get("teacher"), "weights": config.get("teacher_weights")}
    ref = teacher or entry.get("ref") or ""
    weights = recorded_weights(entry, ref, weights)[0]
    taps = () if teacher else tuple(config.get("teacher_taps") or ())
    return load_teacher(ref, TeacherOptions(weights=weights, taps=taps), allow_code=bool(teacher))


def _label(ds, label: str | None) -> str:
    if label is not None and label not in ds.labels:
        raise TaskError(f"The data has no label '{label}'; its labels are: {', '.join(ds.labels) or 'none'}.")
    if label is None and len(ds.labels) != 1:
        raise TaskError("Say which label of the data the new task is (--label); it has "
                        + (f"several: {', '.join(ds.labels)}." if ds.labels else "none."))
    return label or next(iter(ds.labels))


def data_fit(common: CommonFile, teacher: Teacher | None, data_ref: str, *, label: str | None = None,
             n_probes: int = DEFAULT_PROBES, seed: int = 0, lam: float = DEFAULT_LAMBDA) -> dict:
    """How well the common module suits a labeled data set, before training anything on it."""
    split = load_data(data_ref, seed=seed)
    train, test = prepare(split.train, common.input_spec), prepare(split.test, common.input_spec)
    name = _label(train, label)
    limit = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:PROBE_TRAIN_LIMIT]
    y_train, y_test = train.labels[name][limit], test.labels[name]
    z_c = common_layer(common.module)
    fit = {"data": data_ref, "label": name, "probe_train_images": len(limit), "test_images": len(test),
           "chance": float(torch.bincount(y_test).max()) / len(y_test),
           "probe_accuracy_common": linear_probe(pooled_features(z_c, train.x[limit]), y_train,
                                                 pooled_features(z_c, test.x), y_test, seed)}
    try:
        t_layer = teacher_layer(teacher) if teacher is not None else None
    except KFError as exc:
        t_layer, fit["note"] = None, str(exc)
    if t_layer is not None:
        probes = probe_set(test.x, min(n_probes, len(test)), seed)
        graphs = graphs_of({"common": z_c, "teacher": t_layer}, probes)
        fit.update(teacher_layer=teacher_taps(teacher)[-1], depara_common_vs_teacher=similarity(
            graphs["common"], graphs["teacher"], lam), probe_accuracy_teacher=linear_probe(
            pooled_features(t_layer, train.x[limit]), y_train, pooled_features(t_layer, test.x), y_test, seed))
    return fit


def compute_relatedness(folder: str | Path, *, data: str | None = None, label: str | None = None,
                        teacher: str | None = None, weights: str | None = None, n_probes: int = DEFAULT_PROBES, seed: int = 0,
                        lam: float = DEFAULT_LAMBDA) -> dict:
    """The relatedness document of a run folder (see the module docstring); nothing is written."""
    folder = Path(folder)
    common, bricks = load_run(folder)
    probe_ref, x = _probe_data(folder, common, seed)
    probes = probe_set(x, min(n_probes, len(x)), seed)
    doc = {
        "schema_version": SCHEMA_VERSION, "kind": "relatedness", "common_fingerprint": common.fingerprint,
        "probes": {"data": probe_ref, "n": len(probes), "requested": n_probes, "seed": seed}, "lambda": lam,
        "layer": "each brick's task logits on the common feature",
        "bricks": [{"task": b.task.name, "title": str(b.manifest.get("title") or b.task.title), "file": b.path.name,
                    "fingerprint": b.manifest.get("fingerprint")} for b in bricks],
        "matrix": brick_matrix(common, bricks, probes, lam),
        "data_fit": {},
    }
    if data:
        try:
            t = run_teacher(folder, teacher, weights)
        except KFError as exc:  # e.g. a teacher file that moved: the probe still answers
            t, note = None, f"No teacher to compare with: {exc}"
        else:
            note = None
        fit = data_fit(common, t, data, label=label, n_probes=n_probes, seed=seed, lam=lam)
        if note:
            fit["note"] = note
        doc["data_fit"][data] = fit
    return doc


def save_relatedness(folder: str | Path, doc: dict) -> Path:
    """Write ``doc`` to relatedness.json, keeping earlier data-fit answers of the same common module."""
    path = Path(folder) / RELATEDNESS_FILE
    old = _read(path)
    if old and old.get("common_fingerprint") == doc["common_fingerprint"]:
        doc = {**doc, "data_fit": {**(old.get("data_fit") or {}), **doc["data_fit"]}}
    write_json(path, doc)
    return path


def _read(path: Path) -> dict | None:
    try:
        doc = read_json(path, missing=FileFormatError("missing"), corrupt=FileFormatError("corrupt"))
    except FileFormatError:
        return None
    ok = isinstance(doc, dict) and doc.get("kind") == "relatedness" and doc.get("schema_version") == SCHEMA_VERSION
    return doc if ok else None


def cached_relatedness(folder: str | Path, *, n_probes: int = DEFAULT_PROBES, seed: int = 0,
                       lam: float = DEFAULT_LAMBDA) -> dict | None:
    """relatedness.json when it still matches the folder's common module and bricks, else None."""
    folder = Path(folder)
    doc = _read(folder / RELATEDNESS_FILE)
    if doc is None:
        return None
    common, bricks = load_run(folder)
    same = (doc.get("common_fingerprint") == common.fingerprint and doc.get("lambda") == lam
            and (doc.get("probes") or {}).get("seed") == seed and (doc.get("probes") or {}).get("requested") == n_probes
            and [b.get("fingerprint") for b in doc.get("bricks", [])] == [b.manifest.get("fingerprint") for b in bricks])
    return doc if same else None
