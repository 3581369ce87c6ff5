"""Does the IMB objective earn its place? Few-label digits, term by term, with paired seeds.

With only 5, 10 or 20 labelled images per class, the students see too little to learn digits
from labels alone; what the teacher passes on (distillation, InfoMax) should then matter. Each
seed draws one labelled subset that every variant trains on (paired), for the same number of
optimizer steps:

- ``1/B`` (the default), ``authors`` (the InfoMax joint term over B², as in the authors' code),
  ``no InfoMax`` (l_feat = 0), ``no KD`` (l_kd = 0), ``no InfoMin`` (beta = 0);
- ``KD student``: one network of the same parameter count trained with Hinton distillation only
  on the same images and steps (benchmarks/_kd.py).

Reported per labels-per-class: 10-way test accuracy (the 360 fixed test digits), linear CKA
between each common-module stage and the teacher feature the InfoMax term pairs it with, the
InfoMax health at the end of training (how many runs collapsed, kfstudio.core.imb), and every
variant's paired difference to the default with its spread.

    python -m benchmarks.imb            # 5 seeds x 3 label budgets, 160 steps a run (~15 min, 1 idle thread)
    python -m benchmarks.imb --quick    # 3 seeds, 80 steps a run: a few minutes
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from benchmarks import _common, _readings
from benchmarks._kd import matching_student, train_kd
from benchmarks.readings import write_readings
from kfstudio.core.data.sources import DataSplit, load_data, prepare
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.runs import batches
from kfstudio.core.imb import IMBWeights, infomax_collapsed, match_stages
from kfstudio.core.measures.metrics import evaluate_logits
from kfstudio.core.runs import drain
from kfstudio.core.students.backbones import global_pool
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.teachers.loaders import load_teacher

LABELS = (5, 10, 20)
DEFAULT = "1/B (default)"
VARIANTS = {
    DEFAULT: IMBWeights(),
    "authors": IMBWeights(infomax="authors"),
    "no InfoMax": IMBWeights(l_feat=0.0),
    "no KD": IMBWeights(l_kd=0.0),
    "no InfoMin": IMBWeights(beta=0.0),
}
KD = "KD student"
BATCH = 32
WIDTHS = {"common_width": 0.5, "task_width": 0.25}  # the studio's "Small & fast" students


def few_labels(split: DataSplit, per_class: int, seed: int) -> DataSplit:
    """``per_class`` training images of each digit, drawn with ``seed``; the test split as is."""
    y = split.train.labels["digit"]
    g = torch.Generator().manual_seed(10_000 + seed)
    picked = []
    for c in range(10):
        members = (y == c).nonzero().flatten()
        picked += members[torch.randperm(len(members), generator=g)[:per_class]].tolist()
    return DataSplit(split.train.subset(sorted(picked)), split.test, f"{per_class} labelled digits per class")


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al., 2019) between two feature batches with matching rows."""
    a, b = a.double() - a.double().mean(0), b.double() - b.double().mean(0)
    cross = (b.t() @ a).norm() ** 2
    return float(cross / ((a.t() @ a).norm() * (b.t() @ b).norm()))


def stage_ckas(stages: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> list[float]:
    pairs = match_stages(len(teacher_feats), len(stages))
    return [linear_cka(s, teacher_feats[t]) for s, t in zip(stages, pairs)]


def run_kf(config: FactorizeConfig, teacher, split: DataSplit):
    """(result, last step report) of one factorization. The loop evaluates after every epoch;
    here it gets two test images to keep that cheap, and the caller scores the whole test split."""
    cheap = DataSplit(split.train, split.test.subset([0, 1]), split.note)
    steps = []
    result = drain(iter_factorize(config, teacher=teacher, data=cheap),
                   lambda report: steps.append(report) if report.kind == "step" else None)
    return result, (steps[-1] if steps else None)


def one_budget(teacher, base: DataSplit, per_class: int, seed: int, steps: int, device: str) -> dict:
    """Every variant and the KD student on one labelled subset: {name: figures}."""
    split = few_labels(base, per_class, seed)
    epochs = math.ceil(steps / len(batches(len(split.train), BATCH, seed, 0)))
    test_x = prepare(split.test, teacher.input_spec).x.to(device)
    with torch.no_grad():
        teacher_logits, teacher_feats = teacher.outputs_and_features(test_x)
    teacher_logits = {k: v.cpu() for k, v in teacher_logits.items()}
    teacher_feats = [f.cpu() for f in teacher_feats]
    out = {}
    for name, weights in VARIANTS.items():
        config = FactorizeConfig(epochs=epochs, batch_size=BATCH, seed=seed, device=device, imb=weights,
                                 num_threads=torch.get_num_threads(), report_every=10, **WIDTHS)
        result, last = run_kf(config, teacher, split)
        network = result.network.to(device).eval()
        with torch.no_grad():
            logits = {k: v.cpu() for k, v in network(test_x).items()}
            stages = [s.cpu() for s in network.common(test_x)[1]]
        groups = evaluate_logits(result.tasks, logits, teacher_logits, {"digit": split.test.labels["digit"]})[1]
        out[name] = {"acc": groups["digit"].accuracy, "cka": stage_ckas(stages, teacher_feats),
                     # with l_feat = 0 nothing trains the projectors: their cosines mean nothing
                     "collapsed": infomax_collapsed(last.infomax_health) if weights.l_feat else None,
                     "separation": statistics.median(h.separation for h in last.infomax_health),
                     "params": count_parameters(result.network), "seconds": result.elapsed_s}
    out[KD] = kd_baseline(teacher, split, out[DEFAULT]["params"], epochs, seed, device, test_x, teacher_feats)
    return out


def kd_baseline(teacher, split, params, epochs, seed, device, test_x, teacher_feats) -> dict:
    train_x = prepare(split.train, teacher.input_spec).x.to(device)
    with torch.no_grad():
        logits = {k: v.cpu() for k, v in teacher.outputs(train_x).items()}
    student = matching_student(teacher.input_spec.channels, {"digit": 10}, params)
    config = FactorizeConfig(batch_size=BATCH, seed=seed, device=device)
    seconds = train_kd(student, train_x, logits, epochs=epochs, config=config, device=torch.device(device))
    with torch.no_grad():
        pred = student(test_x)["digit"].argmax(1).cpu()
        stages = [global_pool(f).cpu() for f in student.backbone(test_x)]
    acc = float((pred == split.test.labels["digit"]).float().mean())
    return {"acc": acc, "cka": stage_ckas(stages, teacher_feats), "collapsed": None, "separation": None,
            "params": count_parameters(student), "seconds": seconds}


# ---------------------------------------------------------------- tables

def _diff(values_a: list[float], values_b: list[float]) -> str:
    d = [100 * (a - b) for a, b in zip(values_a, values_b)]
    wins = sum(x > 0 for x in d)
    spread = f" ± {statistics.stdev(d):.2f}" if len(d) > 1 else ""
    return f"{statistics.mean(d):+.2f}{spread} ({wins}/{len(d)} seeds higher)"


def budget_table(runs: list[dict]) -> str:
    names = list(runs[0])
    rows = []
    for name in names:
        acc = [r[name]["acc"] for r in runs]
        cka = [[r[name]["cka"][i] for r in runs] for i in range(len(runs[0][name]["cka"]))]
        collapsed = [r[name]["collapsed"] for r in runs]
        health = "-" if collapsed[0] is None else f"{sum(collapsed)}/{len(collapsed)}"
        diff = "-" if name == DEFAULT else _diff(acc, [r[DEFAULT]["acc"] for r in runs])
        rows.append([name, _common.pct(acc), " / ".join(_common.mean_sd(c) for c in cka), health, diff])
    return _common.table(["student", "test accuracy %", "linear CKA with the teacher, stage 1 / 2 / 3",
                          "InfoMax collapsed", f"paired Δ accuracy vs {DEFAULT} (points)"], rows)


def report(args, seeds, steps: int, results: dict[int, list[dict]], elapsed: float) -> str:
    parts = ["## Does the IMB objective earn its place? (generated)", "",
             _common.machine_header(args, seeds, [
                 f"Digits teacher (builtin:digits), one-vs-rest bricks, the studio's \"Small & fast\" students "
                 f"(common width {WIDTHS['common_width']}, brick width {WIDTHS['task_width']}); batch {BATCH}, "
                 f"about {steps} optimizer steps per run whatever the budget; every variant and the KD student "
                 "train on the same labelled images per seed.",
                 f"Total time {elapsed / 60:.1f} min."])]
    for per_class, runs in results.items():
        parts += ["", f"### {per_class} labelled images per class ({10 * per_class} in all)", "", budget_table(runs)]
    parts += ["", f"![accuracy against labels per class](benchmarks/{_plot(results).name})"]
    return "\n".join(parts)


def _plot(results: dict[int, list[dict]]):
    names = list(next(iter(results.values()))[0])
    series = {n: (list(results), [100 * statistics.mean(r[n]["acc"] for r in runs) for runs in results.values()])
              for n in names}
    return _common.line_plot(_common.FIG_DIR / "imb_few_labels.png", "Few-label digits: test accuracy (mean of seeds)",
                             "labelled images per class", "accuracy %", series)


# ---------------------------------------------------------------- InfoMax health (--health)

HEALTH_RUNS = [("builtin:digits", None, 6), ("builtin:digits", "heads", 6), ("builtin:digits", "one-vs-rest:3,7", 6),
               ("builtin:shapes", None, 3)]


def health_runs(args, seeds) -> list[dict]:
    """Both InfoMax variants on the demos (default students, batch 128): every report's cosines."""
    out = []
    for teacher, tasks, epochs in HEALTH_RUNS[:2] if args.quick else HEALTH_RUNS:
        for variant in ("authors", "1/B"):
            for seed in seeds:
                config = FactorizeConfig(teacher=teacher, data=teacher, tasks=tasks, epochs=epochs, seed=seed,
                                         device=args.device, report_every=5, imb=IMBWeights(infomax=variant),
                                         num_threads=torch.get_num_threads())
                steps = [r for r in iter_factorize(config) if r.kind == "step"]
                per_epoch = steps[-1].total_steps / epochs
                out.append({"setting": f"{teacher.split(':')[1]} {tasks or 'auto'}", "variant": variant,
                            "final": steps[-1].infomax_health,
                            "after_epoch_1": [r.infomax_health for r in steps if r.step >= per_epoch]})
                print(f"  health {out[-1]['setting']} {variant} seed {seed}: "
                      f"collapsed {infomax_collapsed(out[-1]['final'])}", flush=True)
    return out


def health_report(args, seeds, runs: list[dict]) -> str:
    rows, spans = [], {}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        for variant in ("authors", "1/B"):
            mine = [r for r in runs if r["setting"] == setting and r["variant"] == variant]
            cells = [" / ".join(f"{statistics.mean(getattr(r['final'][i], f) for r in mine):+.2f}"
                                for f in ("diagonal", "off_diagonal", "self_similarity")) for i in range(3)]
            verdicts = [infomax_collapsed(h) for r in mine for h in r["after_epoch_1"]]
            rows.append([setting, variant, *cells, f"{sum(verdicts)}/{len(verdicts)}"])
            medians = [statistics.median(x.separation for x in h) for r in mine for h in r["after_epoch_1"]]
            spans.setdefault(variant, []).extend(medians)
    lines = ["## InfoMax health on the demos (generated)", "", _common.machine_header(args, seeds, [
        "Default students, batch 128, digits 6 epochs, shapes 3; cosines of the last report, mean over seeds."]), "",
        _common.table(["run", "InfoMax", "stage 1 own / other / self", "stage 2", "stage 3",
                       "reports judged collapsed after epoch 1"], rows), ""]
    for variant, medians in spans.items():
        lines.append(f"- {variant}: the median stage's own-minus-other cosine after epoch 1 spans "
                     f"{min(medians):+.3f} to {max(medians):+.3f} over {len(medians)} reports.")
    return "\n".join(lines)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--health", action="store_true", help="measure the InfoMax health figures of both variants on the demos"))
    _common.setup_torch(args)
    if args.health:
        seeds = (0,) if args.quick else (0, 1)
        _common.write_section(args, "imb-health", health_report(args, seeds, health_runs(args, seeds)))
        return
    seeds = (0, 1, 2) if args.quick else (0, 1, 2, 3, 4)
    steps = 80 if args.quick else 160
    started = time.perf_counter()
    teacher = load_teacher("builtin:digits").to(torch.device(args.device))
    base = load_data("builtin:digits")
    results: dict[int, list[dict]] = {per_class: [] for per_class in LABELS}
    # Seed by seed, so that every budget has as many seeds as any other at every moment.
    for seed in seeds:
        for per_class in LABELS:
            run = one_budget(teacher, base, per_class, seed, steps, args.device)
            results[per_class].append(run)
            print(f"  {per_class}/class seed {seed}: " + ", ".join(f"{k} {v['acc']:.3f}" for k, v in run.items()),
                  flush=True)
        _save_raw(args, steps, results, time.perf_counter() - started)
    _common.write_section(args, "imb", report(args, seeds, steps, results, time.perf_counter() - started))
    if not args.no_write:
        write_readings("imb-summary", "imb")


def _save_raw(args, steps: int, results: dict[int, list[dict]], elapsed: float) -> None:
    """Every figure so far, as JSON beside the plots (a cut-short run still leaves its numbers)."""
    _readings.save("imb_few_labels.json", {**_readings.run_meta(args), "steps": steps, "elapsed": elapsed,
                                           "results": results}, _common.FIG_DIR)


if __name__ == "__main__":
    main()
