"""Growing the set: a new brick for a task the teacher never had, on the frozen common module.

Tasks: shapes ``y`` (the factor the shapes teacher holds back), shapes ``cell`` (the 3x3 grid
cell, x and y together: the teacher knows x only) and digits ``parity`` (even/odd, a new
attribute of the digits teacher's classes). For each, at 50 / 200 / all training labels:

- **new brick**: ``kfstudio.core.grow`` on the frozen common module of a factorization;
- **(a) linear probe** on the frozen z_c (logistic regression);
- **(b) brick alone**: the same brick architecture, same loop, steps and seed, with z_c = 0
  (no common module at all);
- **(c) brick on KD features**: the same brick on a frozen plain distillation student as
  large as the common module (benchmarks/_kd.py) in place of the common module.

Then DEPARA's layer selection: for every conv block of the shapes teacher (the tapped ones
marked), rank the layers by DEPARA against a reference network for the held-back task (the
brick trained alone on all labels) and by an actual linear probe, and report Spearman's rank
correlation between the two rankings.

    python -m benchmarks.grow [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks import _common as C
from benchmarks._kd import matching_student, train_kd
from kfstudio.core.data.sources import Dataset, DataSplit, load_data, prepare
from kfstudio.core.measures.depara import (
    attribution_graph,
    brick_layer,
    linear_probe,
    module_layer,
    pooled_features,
    probe_set,
    similarity,
    spearman,
    teacher_taps,
)
from kfstudio.core.factorize import FactorizeConfig, factorize
from kfstudio.core.runs import batches
from kfstudio.core.grow import GrowConfig, grow
from kfstudio.core.students.networks import ArchSpec, Encoded, count_parameters
from kfstudio.core.teachers.loaders import load_teacher

SEEDS = (0, 1)
BUDGETS = (50, 200, None)  # None: every training label
STEPS = 300  # optimizer steps for every brick, whatever the number of labels
METHODS = ("new brick (frozen KF common)", "(a) linear probe on z_c", "(b) brick alone, no common",
           "(c) brick on KD student features")


def with_label(ds: Dataset, name: str, y: torch.Tensor, names: list[str]) -> Dataset:
    return Dataset(ds.name, ds.x, {**ds.labels, name: y}, {**ds.class_names, name: names}, ds.normalized)


def tasks() -> dict[str, dict]:
    shapes, digits = load_data("builtin:shapes"), load_data("builtin:digits")
    cell = lambda d: d.labels["x"] * 3 + d.labels["y"]  # noqa: E731
    cells = [f"{x}-{y}" for x in ("left", "centre", "right") for y in ("top", "middle", "bottom")]
    parity = lambda d: d.labels["digit"] % 2  # noqa: E731
    return {
        "shapes y": {"teacher": "builtin:shapes", "label": "y", "split": shapes},
        "shapes cell (x and y)": {"teacher": "builtin:shapes", "label": "cell", "split": DataSplit(
            with_label(shapes.train, "cell", cell(shapes.train), cells),
            with_label(shapes.test, "cell", cell(shapes.test), cells), shapes.note)},
        "digits parity": {"teacher": "builtin:digits", "label": "parity", "split": DataSplit(
            with_label(digits.train, "parity", parity(digits.train), ["even", "odd"]),
            with_label(digits.test, "parity", parity(digits.test), ["even", "odd"]), digits.note)},
    }


class NoCommon(nn.Module):
    """Stands in for a common module that gives nothing: z_c = 0, so a brick learns alone."""

    offered_stages: list[int] = []   # no stage a light brick could read: the bricks here read the image

    def __init__(self, spec: ArchSpec, z_dim: int) -> None:
        super().__init__()
        self.spec, self.z_dim = spec, z_dim

    def forward(self, x):
        return x.new_zeros(len(x), self.z_dim), []

    def encode(self, x) -> Encoded:
        return _encoded(self, x)


class FrozenFeatures(nn.Module):
    """A KD student's pooled features in the place of z_c."""

    offered_stages: list[int] = []

    def __init__(self, student, in_channels: int) -> None:
        super().__init__()
        self.student = student
        self.spec = ArchSpec("tiny", student.width, in_channels)
        self.z_dim = student.backbone.stage_channels[-1]

    def forward(self, x):
        return self.student.features(x), []

    def encode(self, x) -> Encoded:
        return _encoded(self, x)


def _encoded(base: nn.Module, x) -> Encoded:
    """What a stand-in gives a brick that reads the image: its z_c, no stage maps."""
    z_c, pooled = base(x)
    return Encoded(x, z_c, pooled, [])


def subset(split: DataSplit, n: int | None, seed: int) -> DataSplit:
    if n is None or n >= len(split.train):
        return split
    index = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))[:n]
    return DataSplit(split.train.subset(index.sort().values.tolist()), split.test, split.note)


def train_brick(base, spec, net, split, label, seed, args, steps) -> tuple[float, float, object]:
    per_epoch = len(batches(len(split.train), 128, seed, 0))
    config = GrowConfig(data="-", task=label, epochs=max(1, math.ceil(steps / per_epoch)), device=args.device,
                        seed=seed, report_every=50)
    started = time.perf_counter()
    result = grow(config, base, spec, net, data=split)
    return result.final.tasks[label].accuracy, time.perf_counter() - started, result.brick


def probe(common, split, label, device) -> tuple[float, float]:
    started = time.perf_counter()
    layer = lambda x: common(x.to(device))[0].cpu()  # noqa: E731
    train, test = split.train, split.test
    acc = linear_probe(pooled_features(layer, train.x), train.labels[label], pooled_features(layer, test.x),
                       test.labels[label])
    return acc, time.perf_counter() - started


def factorized(teacher_ref: str, args, seed: int):
    config = FactorizeConfig(teacher=teacher_ref, data=teacher_ref, epochs=1 if args.quick else None, device=args.device,
                             seed=seed)
    started = time.perf_counter()
    result = factorize(config)
    return result, time.perf_counter() - started


def kd_student(teacher, result, split, args, seed):
    spec = teacher.input_spec
    heads = {k: len(v) for k, v in teacher.class_names.items()}
    student = matching_student(spec.channels, heads, count_parameters(result.network.common))
    x = prepare(split.train, spec).x
    with torch.no_grad():
        logits = {k: torch.cat([teacher.outputs(c.to(args.device))[k].cpu() for c in x.split(512)]) for k in heads}
    config = replace(result.config, seed=seed)
    seconds = train_kd(student, x, logits, epochs=result.epochs_done, config=config, device=torch.device(args.device))
    return student.eval(), seconds


_RUNS: dict[tuple[str, int], tuple] = {}  # (teacher, seed) -> (result, seconds, KD student, seconds)


def teacher_run(teacher, ref: str, split, args, seed: int) -> tuple:
    """One factorization and one KD student per teacher and seed, shared by that teacher's tasks."""
    if (ref, seed) not in _RUNS:
        result, f_s = factorized(ref, args, seed)
        student, kd_s = kd_student(teacher, result, split, args, seed)
        _RUNS[(ref, seed)] = (result, f_s, student, kd_s)
    return _RUNS[(ref, seed)]


def run_task(name: str, task: dict, args, seeds, steps, budgets) -> tuple[dict, dict]:
    acc, secs, extras = {}, {}, {}
    teacher = load_teacher(task["teacher"]).to(torch.device(args.device))
    label, split, spec = task["label"], task["split"], teacher.input_spec
    prepared = DataSplit(prepare(split.train, spec), prepare(split.test, spec), split.note)
    for seed in seeds:
        result, f_s, student, kd_s = teacher_run(teacher, task["teacher"], split, args, seed)
        common = result.network.common.to(args.device).eval()
        net = result.network.brick(result.tasks[0].name).spec.net
        extras.setdefault("setup_s", []).append((f_s, kd_s))
        for n in budgets:
            part = subset(prepared, n, seed)
            bases = {METHODS[0]: common, METHODS[2]: NoCommon(common.spec, common.z_dim),
                     METHODS[3]: FrozenFeatures(student.to(args.device), spec.channels)}
            for method, base in bases.items():
                a, s, brick = train_brick(base, spec, net, part, label, seed, args, steps)
                acc.setdefault((method, n), []).append(a)
                secs.setdefault((method, n), []).append(s)
                if method == METHODS[2] and n is None:
                    extras.setdefault("reference", []).append(brick)
            a, s = probe(common, part, label, args.device)
            acc.setdefault((METHODS[1], n), []).append(a)
            secs.setdefault((METHODS[1], n), []).append(s)
    extras["teacher"], extras["split"], extras["label"] = teacher, prepared, label
    return {"acc": acc, "secs": secs}, extras


# ---------------------------------------------------------------- DEPARA layer selection

def conv_blocks(module: nn.Module) -> list[str]:
    """Every conv-bn-relu block of a demo teacher, shallow to deep."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Sequential) and len(m) == 3
            and isinstance(m[0], nn.Conv2d)]


def map_probe(layer, split, label, labels: int, seed: int) -> float:
    """Linear probe on a layer's map pooled to at most 4x4 (keeps where things are)."""
    def feats(x):
        with torch.no_grad():
            out = torch.cat([layer(c) for c in x.split(256)])
        return F.adaptive_avg_pool2d(out, min(4, out.shape[-1])).flatten(1)

    index = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(seed))[:labels]
    return linear_probe(feats(split.train.x[index]), split.train.labels[label][index], feats(split.test.x),
                        split.test.labels[label])


def layer_selection(extras: dict, n_probes: int, labels: int, seeds) -> dict:
    teacher, split, label = extras["teacher"], extras["split"], extras["label"]
    layers = conv_blocks(teacher.module)
    rows, correlations = [], []
    for seed, reference in zip(seeds, extras["reference"]):
        probes = probe_set(split.test.x, n_probes, seed)
        ref = attribution_graph(brick_layer(reference.eval(), NoCommon(reference.spec.net, reference.spec.z_dim)), probes)
        depara = [similarity(attribution_graph(module_layer(teacher.module, l), probes), ref) for l in layers]
        probe_acc = [map_probe(module_layer(teacher.module, l), split, label, labels, seed) for l in layers]
        correlations.append(spearman(torch.tensor(depara), torch.tensor(probe_acc)))
        rows.append((depara, probe_acc))
    return {"layers": layers, "taps": teacher_taps(teacher), "rows": rows, "rho": correlations}


# ---------------------------------------------------------------- report

def _label_count(n, split) -> str:
    return f"all ({len(split.train)})" if n is None else str(n)


def _tap_mark(layer: str, layers: list[str], taps: list[str]) -> str:
    """' (tapped)', or ' (tapped as stageN)' for the last block of a tapped container."""
    if layer in taps:
        return " (tapped)"
    for tap in taps:
        inside = [l for l in layers if l.startswith(tap + ".")]
        if inside and inside[-1] == layer:
            return f" (tapped as {tap})"
    return ""


def report(args, results: dict, selections: dict, seeds, steps, budgets) -> str:
    parts = ["## Growing the set", C.machine_header(args, seeds, [
        f"Every brick: {steps} SGD steps (batch 128 or all labels if fewer; lr 0.1 cosine; same seed per row), "
        "tiny backbone at the run's task width; test accuracy on the task's full test split.",
        "The KF run and the KD student: the demo defaults (about 480 steps)" + (" (--quick: 1 epoch)" if args.quick else "")
        + "; the KD student has as many parameters as the common module."])]
    for name, r in results.items():
        split = r["split"]
        headers = ["method"] + [f"{_label_count(n, split)} labels: acc %" for n in budgets] + ["train s (all labels)"]
        rows = [[m] + [C.pct(r["acc"][(m, n)]) for n in budgets] + [C.mean_sd(r["secs"][(m, budgets[-1])], 1, 1)]
                for m in METHODS]
        parts.append(f"#### {name}\n\n" + C.table(headers, rows))
    for name, s in selections.items():
        rows = [[f"{l}{_tap_mark(l, s['layers'], s['taps'])}", C.mean_sd([r[0][i] for r in s["rows"]], 1, 3),
                 C.pct([r[1][i] for r in s["rows"]])] for i, l in enumerate(s["layers"])]
        parts.append(f"#### DEPARA layer selection: {name}\n\nDEPARA S of each teacher layer against the brick "
                     f"trained alone on all labels ({args.probes} probes), and a linear probe on the layer's map "
                     f"(pooled to at most 4x4, {args.probe_labels} labels).\n\n"
                     + C.table(["teacher layer", "DEPARA S", "probe acc %"], rows)
                     + f"\n\nSpearman rank correlation of the two rankings: {C.mean_sd(s['rho'], 1, 2)} "
                     f"(per seed: {', '.join(f'{v:.2f}' for v in s['rho'])}).")
    return "\n\n".join(parts)


def main() -> None:
    def extra(p):
        p.add_argument("--probes", type=int, default=64, help="DEPARA probe images")
        p.add_argument("--probe-labels", type=int, default=50, help="labels for the layer probes (few, so the probes do not all reach 100%%)")

    args = C.parse_args("Growing the set: a new brick on a frozen common module vs baselines; DEPARA layer selection.",
                        extra)
    C.setup_torch(args)
    seeds, steps, budgets = ((0,), 12, (50, None)) if args.quick else (SEEDS, STEPS, BUDGETS)
    chosen = tasks()
    if args.quick:
        chosen = {k: v for k, v in chosen.items() if k != "shapes cell (x and y)"}
    results, selections = {}, {}
    for name, task in chosen.items():
        r, extras = run_task(name, task, args, seeds, steps, budgets)
        results[name] = {**r, "split": extras["split"]}
        print(f"{name}: done", flush=True)
        if task["teacher"] == "builtin:shapes":
            selections[name] = layer_selection(extras, args.probes, args.probe_labels, seeds)
    C.write_section(args, "grow", report(args, results, selections, seeds, steps, budgets))


if __name__ == "__main__":
    main()
