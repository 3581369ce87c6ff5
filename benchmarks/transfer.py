"""Transfer of a held-back factor: does the common module carry what the teacher never named?

On builtin:shapes-hard the shipped teacher has heads for rotation, colour, size, x and y, and
none for the target's shape, which a linear probe on raw pixels cannot read either. Each
representation below is frozen and a logistic probe for shape is fitted on 200 labelled
training images (drawn per seed) and on all 2 000, and scored on the 1 000 fixed test images:

- ``KF z_c``: the common module of a factorization on the teacher's five heads, today's
  default objective (``IMBWeights()``); variants tried to close the gap to distillation are
  listed in ``VARIANTS``;
- ``KD student``: one network of the same parameter count as the common module plus all
  bricks, Hinton distillation on the teacher's logits only (benchmarks/_kd.py);
- ``CE student``: the same architecture trained on the five heads' true labels with no
  teacher (the lower bound: what the labels alone give);
- the teacher's penultimate features (its heads' input, 512) and the raw pixels.

Every student of a seed trains on the same images, batches and steps; the differences KF minus
each other representation are paired by seed.

    python -m benchmarks.transfer            # 5 seeds, 6 epochs (about 45 min on 1 busy thread)
    python -m benchmarks.transfer --quick    # 2 seeds, 2 epochs: checks that it works
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks import _common as C
from benchmarks import _readings as R
from benchmarks._kd import KDStudent, matching_student, train_kd, train_student
from benchmarks.readings import write_readings
from kfstudio.core.data.sources import DataSplit, load_data, prepare
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.imb import IMBWeights
from kfstudio.core.runs import drain
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.teachers.loaders import load_teacher

REF = "builtin:shapes-hard"
HELD_BACK = "shape"
BUDGETS = (200, None)
WIDTHS = {"common_width": 0.5, "task_width": 0.25}  # the studio's "Small & fast" students: the CPU budget
EPOCHS = 6  # 96 steps of batch 128, a fifth of the demo default (30): 5 seeds fit an hour of a shared 2-core CPU  # labelled images for the probe; None: all training images
KF = "KF z_c (default objective)"
VARIANTS = {  # what was tried to bring z_c closer to the KD student
    KF: IMBWeights(),
    "KF z_c, l_feat 10 (InfoMax x10)": IMBWeights(l_feat=10.0),
    "KF z_c, InfoMax as in the authors' code": IMBWeights(infomax="authors"),
}
KF_ALL = "KF z_c + all brick z_k (default objective)"
KD, CE, TEACHER, PIXELS = "KD student", "CE student (labels, no teacher)", "teacher penultimate (512)", "raw pixels"


def probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of a standardized logistic regression fitted on ``f_train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    model = LogisticRegression(max_iter=3000).fit(scaler.transform(f_train), y_train)
    return float(model.score(scaler.transform(f_test), y_test))


def labelled(n_train: int, budget: int | None, seed: int) -> np.ndarray:
    """The training rows the probe may use: ``budget`` of them drawn with ``seed``, or all."""
    if budget is None:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(20_000 + seed).permutation(n_train)[:budget])


@torch.no_grad()
def run_all(fn, x: torch.Tensor, device: str, batch: int = 500) -> np.ndarray:
    return torch.cat([fn(c.to(device)).float().cpu() for c in x.split(batch)]).numpy()


def run_kf(config: FactorizeConfig, teacher, split: DataSplit):
    """The trained network; the loop's per-epoch evaluation gets two images (we probe afterwards)."""
    cheap = DataSplit(split.train, split.test.subset([0, 1]), split.note)
    return drain(iter_factorize(config, teacher=teacher, data=cheap))


@torch.no_grad()
def head_accuracy(model, test, device: str) -> dict[str, float]:
    """A student's test accuracy on each of the teacher's heads: did it learn them at all?"""
    out = {}
    for chunk in test.x.split(500):
        for k, v in model(chunk.to(device)).items():
            out.setdefault(k, []).append(v.argmax(1).cpu())
    return {k: float((torch.cat(v) == test.labels[k]).float().mean()) for k, v in out.items()}


def _all_latents(network, bricks, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([network.common(x)[0]] + [brick.represent(x)[0] for brick in bricks], 1)


def train_ce(student: KDStudent, train_x: torch.Tensor, labels: dict[str, torch.Tensor], *, epochs: int,
             config: FactorizeConfig, device: torch.device) -> float:
    """The KD student's loop with the true labels instead of the teacher (label smoothing as KF's)."""
    def loss(out, target):
        return F.cross_entropy(out, target, label_smoothing=config.imb.label_smoothing)

    return train_student(student, train_x, labels, loss, epochs=epochs, config=config, device=device)


def one_seed(teacher, split: DataSplit, train, test, teacher_logits, seed: int, epochs: int, device: str,
             variants: dict = VARIANTS) -> dict:
    """Every representation of one seed: {name: {"features": (train, test), "seconds", "params", "dims"}}."""
    reps = {}
    for name, weights in variants.items():
        config = FactorizeConfig(teacher=REF, data=REF, epochs=epochs, seed=seed, device=device, imb=weights,
                                 num_threads=torch.get_num_threads(), report_every=50, **WIDTHS)
        result = run_kf(config, teacher, split)
        network = result.network.to(device).eval()
        reps[name] = {"fn": lambda x, m=network.common: m(x)[0], "seconds": result.elapsed_s,
                      "params": count_parameters(result.network), "heads": head_accuracy(network, test, device)}
        if name == KF:  # the whole factorized representation, at no extra training
            bricks = [network.brick(t.name) for t in result.tasks]
            reps[KF_ALL] = {"fn": lambda x, n=network, b=bricks: _all_latents(n, b, x), "seconds": None,
                            "params": reps[KF]["params"]}
        print(f"    seed {seed}: {name} trained in {result.elapsed_s:.0f} s", flush=True)
    params = reps[KF]["params"]
    heads = {s: len(c) for s, c in teacher.class_names.items()}
    config = FactorizeConfig(seed=seed, device=device)
    kd = matching_student(teacher.input_spec.channels, heads, params)
    seconds = train_kd(kd, train.x, teacher_logits, epochs=epochs, config=config, device=torch.device(device))
    reps[KD] = {"fn": kd.features, "seconds": seconds, "params": count_parameters(kd),
                "heads": head_accuracy(kd, test, device)}
    ce = matching_student(teacher.input_spec.channels, heads, params)
    seconds = train_ce(ce, train.x, {k: train.labels[k] for k in heads}, epochs=epochs, config=config,
                       device=torch.device(device))
    reps[CE] = {"fn": ce.features, "seconds": seconds, "params": count_parameters(ce),
                "heads": head_accuracy(ce, test, device)}
    print(f"    seed {seed}: {KD} {reps[KD]['seconds']:.0f} s, {CE} {seconds:.0f} s", flush=True)
    reps[TEACHER] = {"fn": teacher.module.head_input, "seconds": None, "params": teacher.num_parameters}
    reps[PIXELS] = {"fn": lambda x: x.flatten(1), "seconds": None, "params": 0}
    y_train, y_test = split.train.labels[HELD_BACK].numpy(), split.test.labels[HELD_BACK].numpy()
    out = {}
    for name, rep in reps.items():
        f_train, f_test = run_all(rep["fn"], train.x, device), run_all(rep["fn"], test.x, device)
        row = {"dims": int(f_train.shape[1]), "params": rep["params"], "seconds": rep["seconds"],
               "heads": rep.get("heads")}
        for budget in BUDGETS:
            rows = labelled(len(f_train), budget, seed)
            row[str(budget or "all")] = probe(f_train[rows], y_train[rows], f_test, y_test)
        out[name] = row
    return out


# ---------------------------------------------------------------- tables

def _diff(a: list[float], b: list[float]) -> str:
    d = [100 * (x - y) for x, y in zip(a, b)]
    spread = f" ± {statistics.stdev(d):.2f}" if len(d) > 1 else ""
    return f"{statistics.mean(d):+.2f}{spread} ({sum(x > 0 for x in d)}/{len(d)} seeds KF higher)"


def budget_table(runs: list[dict], key: str) -> str:
    rows = []
    for name in runs[0]:
        acc = [r[name][key] for r in runs]
        diff = "-" if name == KF else _diff([r[KF][key] for r in runs], acc)
        rows.append([name, runs[0][name]["dims"], C.pct(acc), diff])
    return C.table(["frozen features", "dims", f"probe accuracy for {HELD_BACK} %", "paired Δ KF z_c minus this (points)"],
                   rows)


def report(args, seeds, epochs: int, runs: list[dict], teacher, elapsed: float) -> str:
    first = runs[0]
    params = ", ".join(f"{n} {first[n]['params']:,}" for n in (KF, KD, CE))
    times = ", ".join(f"{n} {C.mean_sd([r[n]['seconds'] for r in runs], digits=0)} s" for n in (KF, KD, CE))
    heads = ", ".join(teacher.class_names)
    parts = ["## Transfer of a held-back factor (generated)", "", C.machine_header(args, seeds, [
        f"Data {REF}: 2 000 training images, 1 000 test images (fixed). Teacher heads: {heads}; held back: "
        f"{HELD_BACK} (4 classes, chance 25 %).",
        f"Every student trains {epochs} epochs ({epochs * 16} steps of batch 128"
        + ("; the demo default is 30 epochs, cut to fit 5 seeds on the shared CPU" if epochs < 30 else "")
        + ") on the 2 000 training images; "
        f"the studio's \"Small & fast\" students (common width {WIDTHS['common_width']}, brick width "
        f"{WIDTHS['task_width']}); the default objective unless the row says. The KD and CE students are "
        "parameter-matched to the common module plus all five bricks.",
        f"Parameters: {params}. Training time per seed: {times}.",
        "Probe: StandardScaler + logistic regression (C = 1) on frozen features; 200 labels drawn per seed.",
        f"Total time {elapsed / 60:.1f} min."])]
    for budget in BUDGETS:
        key = str(budget or "all")
        title = f"{budget} labelled images" if budget else "all 2 000 labelled images"
        parts += ["", f"### Probe fitted on {title}", "", budget_table(runs, key)]
    parts += ["", f"![probe accuracy for {HELD_BACK}](benchmarks/{_plot(runs).name})"]
    return "\n".join(parts)


def _plot(runs: list[dict]):
    xs = [200, 2000]
    series = {n: (xs, [100 * statistics.mean(r[n][str(b or "all")] for r in runs) for b in BUDGETS]) for n in runs[0]}
    return C.line_plot(C.FIG_DIR / "transfer_shapes_hard.png", f"shapes-hard: probe for the held-back {HELD_BACK}",
                       "labelled images for the probe", "test accuracy %", series, hline=25.0)


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], _options)
    C.setup_torch(args)
    if args.report_from:
        saved = json.loads(open(args.report_from).read())
        args.command = saved["command"] + f"  (section written from its saved figures: {args.report_from})"
        args.started_at, args.load_at_start = saved["started"], saved["load_at_start"]
        args.quick = args.quick or "--quick" in saved["command"].split()
        seeds = [r["seed"] for r in saved["runs"]]
        runs = [{k: v for k, v in r.items() if k != "seed"} for r in saved["runs"]]
        C.write_section(args, "transfer", report(args, seeds, saved["epochs"], runs, load_teacher(REF), saved["elapsed"]))
        if not args.no_write:
            write_readings("transfer")
        return
    seeds = args.seeds or ((0, 1) if args.quick else (0, 1, 2, 3, 4))
    variants = {KF: VARIANTS[KF]} if args.default_only else VARIANTS
    started = time.perf_counter()
    teacher = load_teacher(REF).to(torch.device(args.device))
    teacher.set_batchnorm_train(False)
    split = load_data(REF)
    train, test = prepare(split.train, teacher.input_spec), prepare(split.test, teacher.input_spec)
    epochs = 2 if args.quick else (args.epochs or EPOCHS)
    with torch.no_grad():
        teacher_logits = {k: torch.cat([teacher.outputs(c.to(args.device))[k].float().cpu() for c in train.x.split(500)])
                          for k in teacher.class_names}
    runs = []
    for seed in seeds:
        runs.append(one_seed(teacher, split, train, test, teacher_logits, seed, epochs, args.device, variants))
        print(f"  seed {seed}: " + ", ".join(f"{k} {v['200']:.3f}/{v['all']:.3f}" for k, v in runs[-1].items()),
              flush=True)
        print(f"  seed {seed} heads: " + ", ".join(f"{k} {v['heads']}" for k, v in runs[-1].items() if v["heads"]),
              flush=True)
        _save_raw(args, seeds, epochs, runs, time.perf_counter() - started)
    C.write_section(args, "transfer", report(args, seeds, epochs, runs, teacher, time.perf_counter() - started))
    if not args.no_write:
        write_readings("transfer")


def _options(parser) -> None:
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs per student (default {EPOCHS}; the demo default is 30)")
    parser.add_argument("--seeds", type=lambda v: tuple(int(s) for s in v.split(",")), default=None,
                        help="comma-separated seeds (default 0-4)")
    parser.add_argument("--default-only", action="store_true", help="only the default objective of KF (no variants)")
    parser.add_argument("--report-from", default=None, metavar="JSON",
                        help="write the section from the figures a run saved (docs/benchmarks/transfer_shapes_hard.json)")


def _save_raw(args, seeds, epochs: int, runs: list[dict], elapsed: float) -> None:
    """Every figure so far, as JSON beside the plots (a cut-short run still leaves its numbers)."""
    R.save("transfer_shapes_hard.json", {**R.run_meta(args), "epochs": epochs, "elapsed": elapsed,
                                         "runs": [{"seed": s, **r} for s, r in zip(seeds, runs)]}, C.FIG_DIR)


if __name__ == "__main__":
    main()
