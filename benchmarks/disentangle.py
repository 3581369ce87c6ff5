"""Disentanglement at the authors' latent size: KF Gaussian bricks against two distillation controls.

On builtin:shapes with the shipped shapes teacher (heads shape, colour, size, x), per seed:

- ``KF β=…``: a factorization with Gaussian bricks and a small shared latent (``z_dim`` = Z, the
  paper's 8-12 d), one run per InfoMin weight β in {0, 1e-3, 1e-2, 1e-1}; the representation is
  every brick's mean latent mu_k, concatenated (4 x Z);
- ``KD student``: one network distilled on all four heads, its pooled last stage projected to the
  same total latent size (4 x Z), parameter-matched to the factorization;
- ``4 single-head students``: one network per factor, each distilled on its own head alone with a
  Z-d latent (a quarter of the parameters each), concatenated: the control that shows whether
  brick-level disentanglement is more than "one network per factor".

Every model trains on the same images, batches and number of epochs with the same optimizer and
schedule (seeds paired across methods). Scored on the test split against the true factors: MIG
(Chen et al., 2018) and DCI with gradient-boosted trees (Eastwood & Williams, 2018, as Locatello
et al., 2019 compute it; ``kfstudio.core.measures.disentanglement``), plus the heads' test accuracy.

    python -m benchmarks.disentangle              # 5 seeds x 4 betas, 10 epochs a run
    python -m benchmarks.disentangle --epochs 1   # what fits a busy machine (the output says so)
    python -m benchmarks.disentangle --quick      # 1 seed, a small subset, 2 epochs: a few minutes
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from benchmarks import _common
from benchmarks._kd import matching_student, train_kd
from benchmarks.imb import run_kf
from kfstudio.core.data.sources import DataSplit, load_data, prepare
from kfstudio.core.measures.disentanglement import dci, mig
from kfstudio.core.factorize import FactorizeConfig
from kfstudio.core.imb import IMBWeights
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.teachers.loaders import load_teacher

FACTORS = ("shape", "colour", "size", "x")   # the shipped teacher's heads
Z = 10                                        # per brick: inside the paper's 8-12 d
BETAS = (0.0, 1e-3, 1e-2, 1e-1)
WIDTHS = {"common_width": 0.5, "task_width": 0.25}   # the studio's "Small & fast" students
KD, SINGLE = "KD student", "4 single-head students"
N_FIT = 2000      # training images the DCI trees are fitted on
TREES = 100       # boosting rounds per factor (depth-3 trees)


def kf_name(beta: float) -> str:
    return f"KF β={beta:g}"


def scores(z_fit: np.ndarray, v_fit: np.ndarray, z_test: np.ndarray, v_test: np.ndarray, trees: int, seed: int) -> dict:
    d = dci(z_fit, v_fit, z_test, v_test, regressor="gbt", trees=trees, seed=seed)
    return {"dims": int(z_test.shape[1]), "mig": mig(z_test, v_test), "D": d.disentanglement, "C": d.completeness,
            "I": d.informativeness}


@torch.no_grad()
def _latents(fn, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    return torch.cat([fn(chunk) for chunk in x.split(batch)]).cpu().double().numpy()


@torch.no_grad()
def _accuracy(logits_fn, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> float:
    out = logits_fn(x)
    return statistics.mean(float((out[f].argmax(1).cpu() == labels[f]).float().mean()) for f in FACTORS)


class Setting:
    """The data, the teacher and its outputs, shared by every model of a run."""

    def __init__(self, args) -> None:
        self.device = torch.device(args.device)
        self.teacher = load_teacher("builtin:shapes").to(self.device)
        self.teacher.set_batchnorm_train(False)
        split = load_data("builtin:shapes")
        if args.quick:
            split = DataSplit(split.train.subset(list(range(1200))), split.test.subset(list(range(500))), split.note)
        self.split = split
        self.train_x = prepare(split.train, self.teacher.input_spec).x.to(self.device)
        self.test_x = prepare(split.test, self.teacher.input_spec).x.to(self.device)
        self.teacher_train = {k: v.cpu() for k, v in _run_teacher(self.teacher, self.train_x).items()}
        self.n_fit = min(N_FIT, len(self.train_x))
        self.v_fit = np.stack([split.train.labels[f][: self.n_fit].numpy() for f in FACTORS], axis=1)
        self.v_test = np.stack([split.test.labels[f].numpy() for f in FACTORS], axis=1)
        self.labels = {f: split.test.labels[f] for f in FACTORS}
        self.heads = {f: len(self.teacher.class_names[f]) for f in FACTORS}

    def score(self, represent, logits_fn, trees: int, seed: int) -> dict:
        z_fit, z_test = _latents(represent, self.train_x[: self.n_fit]), _latents(represent, self.test_x)
        return {**scores(z_fit, self.v_fit, z_test, self.v_test, trees, seed),
                "acc": _accuracy(logits_fn, self.test_x, self.labels)}


@torch.no_grad()
def _run_teacher(teacher, x: torch.Tensor) -> dict[str, torch.Tensor]:
    parts = [teacher.outputs(chunk) for chunk in x.split(512)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def kf_config(args, seed: int, beta: float) -> FactorizeConfig:
    return FactorizeConfig(teacher="builtin:shapes", data="builtin:shapes", epochs=args.epochs, seed=seed,
                           device=args.device, gaussian_bricks=True, z_dim=Z, imb=IMBWeights(beta=beta),
                           num_threads=torch.get_num_threads(), report_every=50, **WIDTHS)


def one_seed(s: Setting, args, seed: int) -> dict:
    """Every method on one seed: {name: figures}."""
    out, kf_params = {}, None
    for beta in BETAS:
        result, _ = run_kf(kf_config(args, seed, beta), s.teacher, s.split)
        network = result.network.to(s.device).eval()
        bricks = [network.brick(f) for f in FACTORS]
        kf_params = count_parameters(network)
        out[kf_name(beta)] = {**s.score(lambda x: torch.cat([b.represent(x)[1] for b in bricks], 1), network,
                                        args.trees, seed), "params": kf_params, "seconds": result.elapsed_s}
        print(f"    {kf_name(beta)}: {_line(out[kf_name(beta)])}", flush=True)
    config = kf_config(args, seed, BETAS[0])
    student = matching_student(s.teacher.input_spec.channels, s.heads, kf_params, z_dim=len(FACTORS) * Z)
    seconds = train_kd(student, s.train_x, {f: s.teacher_train[f] for f in FACTORS}, epochs=args.epochs,
                       config=config, device=s.device)
    out[KD] = {**s.score(student.features, student, args.trees, seed), "params": count_parameters(student),
               "seconds": seconds}
    print(f"    {KD}: {_line(out[KD])}", flush=True)
    singles, seconds = [], 0.0
    for f in FACTORS:
        one = matching_student(s.teacher.input_spec.channels, {f: s.heads[f]}, kf_params // len(FACTORS), z_dim=Z)
        seconds += train_kd(one, s.train_x, {f: s.teacher_train[f]}, epochs=args.epochs, config=config,
                            device=s.device)
        singles.append(one)
    joined = lambda x: {k: v for one in singles for k, v in one(x).items()}  # noqa: E731
    out[SINGLE] = {**s.score(lambda x: torch.cat([one.features(x) for one in singles], 1), joined, args.trees, seed),
                   "params": sum(count_parameters(one) for one in singles), "seconds": seconds}
    print(f"    {SINGLE}: {_line(out[SINGLE])}", flush=True)
    return out


def _line(r: dict) -> str:
    return f"MIG {r['mig']:.3f}, D {r['D']:.3f}, C {r['C']:.3f}, I {r['I']:.3f}, acc {r['acc']:.3f}"


# ---------------------------------------------------------------- tables and plot

def _paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b)]
    spread = f" ± {statistics.stdev(d):.3f}" if len(d) > 1 else ""
    return f"{statistics.mean(d):+.3f}{spread} ({sum(x > 0 for x in d)}/{len(d)})"


def scores_table(runs: list[dict]) -> str:
    rows = []
    for name in runs[0]:
        col = lambda key: [r[name][key] for r in runs]  # noqa: E731
        rows.append([name, runs[0][name]["dims"], f"{statistics.mean(col('params')):,.0f}",
                     *(_common.mean_sd(col(k), digits=3) for k in ("mig", "D", "C", "I")), _common.pct(col("acc"))])
    return _common.table(["representation", "dims", "parameters", "MIG", "DCI disentanglement", "DCI completeness",
                          "DCI informativeness (tree accuracy)", "heads' test accuracy %"], rows)


def diff_table(runs: list[dict]) -> str:
    rows = []
    for beta in BETAS:
        kf = kf_name(beta)
        for control in (KD, SINGLE):
            pairs = [_paired([r[kf][k] for r in runs], [r[control][k] for r in runs]) for k in ("mig", "D", "C")]
            rows.append([f"{kf} − {control}", *pairs])
    return _common.table(["paired difference", "Δ MIG", "Δ DCI disentanglement", "Δ DCI completeness"], rows)


def _plot(runs: list[dict], section: str):
    xs = list(range(len(BETAS)))
    mean = lambda name, key: statistics.mean(r[name][key] for r in runs)  # noqa: E731
    series = {}
    for key, label in (("mig", "MIG"), ("D", "DCI D")):
        series[f"KF {label}"] = (xs, [mean(kf_name(b), key) for b in BETAS])
        series[f"KD student {label}"] = (xs, [mean(KD, key)] * len(xs))
        series[f"single-head students {label}"] = (xs, [mean(SINGLE, key)] * len(xs))
    return _common.line_plot(_common.FIG_DIR / f"{section}.png",
                             f"Shapes, {Z}-d Gaussian bricks: MIG and DCI disentanglement (mean of seeds)",
                             "InfoMin β: 0, 1e-3, 1e-2, 1e-1", "score (0 to 1)", series)


def report(args, seeds, runs: list[dict], elapsed: float, sizes: tuple[int, int]) -> str:
    notes = [f"builtin:shapes ({sizes[0]:,} training, {sizes[1]:,} test images), "
             f"the shipped shapes teacher, factors {', '.join(FACTORS)}; Gaussian bricks with z_dim {Z} "
             f"(--z-dim {Z} --gaussian-bricks), students common width {WIDTHS['common_width']}, brick width "
             f"{WIDTHS['task_width']}; {args.epochs} epoch{'s' if args.epochs != 1 else ''} of batch 128 for every model (the KD students reuse "
             "the factorization's optimizer, schedule and batches, benchmarks/_kd.py).",
             f"DCI: gradient-boosted trees ({args.trees} rounds of depth 3 per factor) fitted on the latents of "
             f"{min(N_FIT, sizes[0]):,} training images, scored on the test split; MIG on the test split (20 bins).",
             "Paired differences: per seed, then mean ± std over seeds, and (in brackets) on how many seeds the "
             "first is higher.",
             f"Total time {elapsed / 60:.1f} min."]
    if args.epochs != FULL_EPOCHS and not args.quick:
        notes.insert(0, f"**Shortened run: {args.epochs} epoch{'s' if args.epochs != 1 else ''} a model instead of "
                        f"{FULL_EPOCHS}, to fit a shared "
                        "machine.**")
    if len(seeds) < 5 and not args.quick:
        why = "the time limit stopped it" if args.stopped_early else "as asked with --seeds"
        notes.insert(0, f"**Only {len(seeds)} seeds (the full run has 5): {why}.**")
    title = "Disentanglement at the authors' latent size"
    title += f", {args.epochs} epochs" if args.section != SECTION else ""
    return "\n".join([f"## {title} (generated)", "",
                      _common.machine_header(args, seeds, notes), "", scores_table(runs), "",
                      "### Paired differences, KF minus each control", "", diff_table(runs), "",
                      f"![MIG and DCI disentanglement against beta](benchmarks/{_plot(runs, args.section).name})"])


SECTION = "disentangle"
FULL_EPOCHS = 10   # what the factorization picks by itself on shapes at batch 128 (about 480 steps)


def main() -> None:
    def extra(p):
        p.add_argument("--epochs", type=int, default=None, help=f"epochs per model (default {FULL_EPOCHS}; --quick 2)")
        p.add_argument("--seeds", type=int, default=None, help="how many paired seeds (default 5; --quick 1)")
        p.add_argument("--trees", type=int, default=None, help=f"boosting rounds per factor (default {TREES})")
        p.add_argument("--section", default=SECTION,
                       help=f"the docs/benchmarks.md section (and plot/JSON names) to write (default {SECTION}): "
                       "a second run, e.g. with more epochs, can stand beside the main one")
        p.add_argument("--stop-after-minutes", type=float, default=None,
                       help="start no new seed after this many minutes (the output says how many seeds ran)")

    args = _common.parse_args(__doc__.splitlines()[0], extra)
    args.epochs = args.epochs or (2 if args.quick else FULL_EPOCHS)
    args.trees = args.trees or (20 if args.quick else TREES)
    seeds = tuple(range(args.seeds or (1 if args.quick else 5)))
    _common.setup_torch(args)
    started = time.perf_counter()
    setting = Setting(args)
    runs, args.stopped_early = [], False
    for seed in seeds:
        if runs and args.stop_after_minutes and time.perf_counter() - started > 60 * args.stop_after_minutes:
            print(f"  time limit: stopping after {len(runs)} of {len(seeds)} seeds", flush=True)
            args.stopped_early = True
            break
        print(f"  seed {seed}", flush=True)
        runs.append(one_seed(setting, args, seed))
        _save_raw(runs, args.section)
    seeds = seeds[: len(runs)]
    _common.write_section(args, args.section, report(args, seeds, runs, time.perf_counter() - started,
                                                            (len(setting.train_x), len(setting.test_x))))


def _save_raw(runs: list[dict], section: str) -> None:
    """Every figure so far, as JSON beside the plots (a cut-short run still leaves its numbers)."""
    _common.FIG_DIR.mkdir(parents=True, exist_ok=True)
    (_common.FIG_DIR / f"{section}.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
