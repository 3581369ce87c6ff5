"""Fidelity: how close factor networks and assembled networks stay to the teacher.

On builtin:digits (one-vs-rest, ten bricks) and builtin:shapes (one brick per teacher head),
over three seeds: the teacher; a plain distillation student as large as the common module
plus all bricks; the factor networks run one by one; the network of all bricks; an assembled
subset. Then an ablation of the IMB terms, disentanglement (MIG, DCI) of the brick latents
on shapes, and a linear probe of the frozen common module for the held-back factor "y".

    python -m benchmarks.fidelity [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks import _common as C
from benchmarks import _readings as R
from benchmarks._kd import matching_student, train_kd
from benchmarks.readings import write_readings
from kfstudio.core.data.sources import DataSplit, load_data, prepare
from kfstudio.core.measures.disentanglement import dci, mig
from kfstudio.core.factorize import FactorizeConfig, auto_epochs, iter_factorize
from kfstudio.core.runs import batches
from kfstudio.core.imb import IMBWeights
from kfstudio.core.measures.metrics import evaluate_logits
from kfstudio.core.runs import drain
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import count_parameters
from kfstudio.core.tasks import ONE_VS_REST, resolve_tasks
from kfstudio.core.teachers.loaders import load_teacher

SEEDS = (0, 1, 2)
DATASETS = {
    # epochs None: the demo default (auto_epochs, about 480 steps: digits 40 epochs, shapes 10).
    # The ablation is cut (digits 10 epochs, shapes 2) to fit the CPU budget.
    "digits": {"ref": "builtin:digits", "subset": ("0", "1", "7"), "epochs": None, "ablation_epochs": 10},
    "shapes": {"ref": "builtin:shapes", "subset": ("shape", "colour"), "epochs": None, "ablation_epochs": 2},
}
ABLATIONS = {
    "KF (all five terms, 1/B InfoMax)": IMBWeights(),
    "no InfoMax (l_feat = 0)": IMBWeights(l_feat=0.0),
    "no InfoMin (beta = 0)": IMBWeights(beta=0.0),
    "InfoMax as in the authors' code (B²)": IMBWeights(infomax="authors"),
}
SHAPES_FACTORS = ("shape", "colour", "size", "x")  # the ones the teacher (and the bricks) know
HELD_BACK = "y"


@dataclass
class Bench:
    name: str
    ref: str
    teacher: object
    split: DataSplit
    train: object
    test: object
    tasks: list
    teacher_test: dict
    teacher_train: dict
    labels: dict


def load_bench(name: str, device, quick: bool) -> Bench:
    ref = DATASETS[name]["ref"]
    teacher = load_teacher(ref)
    split = load_data(ref)
    if quick:
        split = DataSplit(split.train.subset(list(range(384))), split.test.subset(list(range(256))), split.note)
    train, test = prepare(split.train, teacher.input_spec), prepare(split.test, teacher.input_spec)
    teacher.to(device)
    teacher.set_batchnorm_train(False)
    tasks = resolve_tasks(None, teacher.class_names)
    labels = {s: test.labels.get(s) for s in teacher.class_names}
    labels = {s: (y.to(device) if y is not None else None) for s, y in labels.items()}
    return Bench(name, ref, teacher, split, train, test, tasks, _run(teacher.outputs, test.x, device),
                 _run(teacher.outputs, train.x, device), labels)


@torch.no_grad()
def _run(fn, x: torch.Tensor, device, batch: int = 512):
    parts = [fn(chunk.to(device)) for chunk in x.split(batch)]
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k].float() for p in parts]) for k in parts[0]}
    return torch.cat([p.float() for p in parts])


def task_logits_from_outputs(tasks, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A teacher-shaped output (one logit vector per source) cut into each task's logits."""
    return {t.name: outputs[t.source][:, list(t.classes)] for t in tasks}


def summarize(b: Bench, tasks, logits: dict[str, torch.Tensor]) -> dict[str, float]:
    per_task, groups = evaluate_logits(tasks, logits, b.teacher_test, b.labels)
    if tasks[0].kind == ONE_VS_REST:
        g = groups[tasks[0].source]
        binary = [per_task[t.name].accuracy for t in tasks]
        return {"acc": g.accuracy, "agree": g.agreement, "binary_mean": float(np.mean(binary)),
                "binary_min": float(np.min(binary))}
    out = {f"acc_{t.name}": per_task[t.name].accuracy for t in tasks}
    out["acc"] = float(np.mean([per_task[t.name].accuracy for t in tasks]))
    out["agree"] = float(np.mean([per_task[t.name].agreement for t in tasks]))
    return out


def headline(report) -> float:
    """One number per evaluation: 10-way accuracy (digits) or the mean head accuracy (shapes)."""
    if report.groups:
        return float(np.mean([m.accuracy for m in report.groups.values()]))
    return float(np.mean([m.accuracy for m in report.tasks.values()]))


def run_kf(b: Bench, config: FactorizeConfig):
    curve = []
    result = drain(iter_factorize(config, teacher=b.teacher, data=b.split),
                   lambda report: curve.append((report.epoch, headline(report))) if report.kind == "eval" else None)
    return result, curve


def config_for(b: Bench, args, seed: int, epochs: int, imb: IMBWeights = IMBWeights()) -> FactorizeConfig:
    return FactorizeConfig(teacher=b.ref, data=b.ref, epochs=epochs, seed=seed, device=args.device, imb=imb,
                           report_every=50)


# ---------------------------------------------------------------- the main comparison

def evaluate_kf(b: Bench, network: FactorNetwork, device) -> tuple[dict, dict, dict, float]:
    network = network.to(device).eval()
    assembled = _run(network, b.test.x, device)
    alone = {}
    for t in b.tasks:
        single = FactorNetwork(network.common, {t.name: network.brick(t.name)}).eval()
        alone.update(_run(single, b.test.x, device))
    subset_names = DATASETS[b.name]["subset"]
    subset_tasks = [t for t in b.tasks if t.name in subset_names]
    subset_net = FactorNetwork(network.common, {t.name: network.brick(t.name) for t in subset_tasks}).eval()
    subset = _run(subset_net, b.test.x, device)
    gap = max(float((alone[k] - assembled[k]).abs().max()) for k in assembled)
    gap = max(gap, max(float((subset[k] - assembled[k]).abs().max()) for k in subset))
    return (summarize(b, b.tasks, alone), summarize(b, b.tasks, assembled), summarize(b, subset_tasks, subset), gap)


def main_comparison(b: Bench, args, seeds, epochs: int, rows: dict, extras: dict) -> None:
    heads = {s: len(c) for s, c in b.teacher.class_names.items()}
    subset_tasks = [t for t in b.tasks if t.name in DATASETS[b.name]["subset"]]
    rows.setdefault("teacher", []).append(summarize(b, b.tasks, task_logits_from_outputs(b.tasks, b.teacher_test)))
    rows.setdefault("teacher, subset", []).append(
        summarize(b, subset_tasks, task_logits_from_outputs(subset_tasks, b.teacher_test)))
    for seed in seeds:
        config = config_for(b, args, seed, epochs)
        result, curve = run_kf(b, config)
        extras.setdefault("kf_seconds", []).append(result.elapsed_s)
        extras.setdefault("curves", []).append(curve)
        kf_params = count_parameters(result.network)
        alone, assembled, subset, gap = evaluate_kf(b, result.network, args.device)
        student = matching_student(b.teacher.input_spec.channels, heads, kf_params)
        extras.setdefault("kd_seconds", []).append(
            train_kd(student, b.train.x, b.teacher_train, epochs=epochs, config=config, device=torch.device(args.device)))
        kd_out = _run(student, b.test.x, args.device)
        rows.setdefault("KD student", []).append(summarize(b, b.tasks, task_logits_from_outputs(b.tasks, kd_out)))
        rows.setdefault("KD student, subset", []).append(
            summarize(b, subset_tasks, task_logits_from_outputs(subset_tasks, kd_out)))
        rows.setdefault("KF factor networks, each run alone", []).append(alone)
        rows.setdefault("KF assembled, all bricks", []).append(assembled)
        rows.setdefault("KF assembled, subset", []).append(subset)
        extras.setdefault("logit_gap", []).append(gap)
        extras["params"] = {"teacher": b.teacher.num_parameters, "KF (common + bricks)": kf_params,
                            "KD student": count_parameters(student), "KD width": student.width}
        if b.name == "shapes":
            representation_study(b, result.network, student, args, extras)
        print(f"  {b.name} seed {seed}: KF {result.elapsed_s:.1f} s, KD {extras['kd_seconds'][-1]:.1f} s, "
              f"KF acc {assembled['acc']:.4f}, KD acc {rows['KD student'][-1]['acc']:.4f}", flush=True)


# ---------------------------------------------------------------- disentanglement and transfer

def factors(ds, names) -> np.ndarray:
    return np.stack([ds.labels[n].numpy() for n in names], axis=1)


@torch.no_grad()
def teacher_head_input(b: Bench, x: torch.Tensor) -> torch.Tensor:
    """What the shapes teacher's heads read: the last stage pooled to 2x2, flattened (512)."""
    m = b.teacher.module
    h = m.stage3(m.stage2(m.stage1(x)))
    return torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)


def representation_study(b: Bench, network: FactorNetwork, student, args, extras: dict) -> None:
    dev = args.device
    n_fit = min(3000, len(b.train))
    x_fit, x_test = b.train.x[:n_fit], b.test.x
    bricks = [network.brick(t.name) for t in b.tasks]
    reps = {
        "KF task latents (z_k of all bricks)": lambda x: torch.cat([br.represent(x)[0] for br in bricks], 1),
        "KD student features": student.features,
    }
    if "teacher_reps" not in extras:
        reps["teacher features (pooled last stage)"] = lambda x: b.teacher.features(x)[-1]
    for name, fn in reps.items():
        z_fit, z_test = _run(fn, x_fit, dev).cpu().numpy(), _run(fn, x_test, dev).cpu().numpy()
        v_fit, v_test = factors(b.split.train, SHAPES_FACTORS)[:n_fit], factors(b.split.test, SHAPES_FACTORS)
        scores = dci(z_fit, v_fit, z_test, v_test)
        extras.setdefault("disent", {}).setdefault(name, []).append(
            {"dims": z_test.shape[1], "mig": mig(z_test, v_test), "D": scores.disentanglement,
             "C": scores.completeness, "I": scores.informativeness})
    extras["teacher_reps"] = True
    probes = {
        "KF common module z_c (frozen)": lambda x: network.common(x)[0],
        "KF z_c + all z_k (frozen)": lambda x: torch.cat([network.common(x)[0]] + [br.represent(x)[0] for br in bricks], 1),
        "KD student features": student.features,
    }
    if "probe_once" not in extras:
        probes["teacher features (pooled last stage)"] = lambda x: b.teacher.features(x)[-1]
        probes["teacher head input (2x2 pooled, 512)"] = lambda x: teacher_head_input(b, x)
        probes["raw pixels"] = lambda x: x.flatten(1)
    for name, fn in probes.items():
        extras.setdefault("probe", {}).setdefault(name, []).append(
            {"dims": 0, **linear_probe(_run(fn, b.train.x, dev), _run(fn, b.test.x, dev), b)})
    extras["probe_once"] = True


def linear_probe(f_train: torch.Tensor, f_test: torch.Tensor, b: Bench) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train.cpu().numpy())
    a, t = scaler.transform(f_train.cpu().numpy()), scaler.transform(f_test.cpu().numpy())
    y_train, y_test = b.split.train.labels[HELD_BACK].numpy(), b.split.test.labels[HELD_BACK].numpy()
    model = LogisticRegression(max_iter=2000).fit(a, y_train)
    return {"acc": model.score(t, y_test), "dims": a.shape[1]}


# ---------------------------------------------------------------- ablation

def ablation(b: Bench, args, seeds, epochs: int) -> dict:
    out = {}
    for name, imb in ABLATIONS.items():
        for seed in seeds:
            result, curve = run_kf(b, config_for(b, args, seed, epochs, imb))
            net = result.network.to(args.device).eval()
            summary = summarize(b, b.tasks, _run(net, b.test.x, args.device))
            if b.name == "shapes":
                bricks = [net.brick(t.name) for t in b.tasks]
                z = _run(lambda x, bricks=bricks: torch.cat([br.represent(x)[0] for br in bricks], 1), b.test.x,
                         args.device)
                summary["mig"] = mig(z.cpu().numpy(), factors(b.split.test, SHAPES_FACTORS))
            summary["losses"] = result.last_losses
            summary["curve"] = curve
            out.setdefault(name, []).append(summary)
            print(f"  ablation {b.name} / {name} / seed {seed}: acc {summary['acc']:.4f} "
                  f"({result.elapsed_s:.1f} s)", flush=True)
    return out


# ---------------------------------------------------------------- report

def main_table(b: Bench, rows: dict) -> str:
    if b.name == "digits":
        headers = ["model", "10-way accuracy %", "agreement with teacher %", "one-vs-rest accuracy, mean %",
                   "one-vs-rest accuracy, worst task %"]
        keys = ["acc", "agree", "binary_mean", "binary_min"]
        subset_headers = "3-way accuracy % (digits 0, 1, 7)", "3-way agreement %"
    else:
        heads = [t.name for t in b.tasks]
        headers = ["model"] + [f"{h} acc %" for h in heads] + ["mean acc %", "mean agreement %"]
        keys = [f"acc_{h}" for h in heads] + ["acc", "agree"]
        subset_headers = "shape acc %", "colour acc %"
    body = []
    for model in ("teacher", "KD student", "KF factor networks, each run alone", "KF assembled, all bricks"):
        body.append([model] + [C.pct([r.get(k) for r in rows[model]]) for k in keys])
    sub_keys = ["acc", "agree"] if b.name == "digits" else ["acc_shape", "acc_colour"]
    sub_rows = [[m] + [C.pct([r.get(k) for r in rows[m]]) for k in sub_keys]
                for m in ("teacher, subset", "KD student, subset", "KF assembled, subset")]
    return (C.table(headers, body) + "\n\nAssembled subset " + repr(DATASETS[b.name]["subset"]) + ":\n\n"
            + C.table(["model", *subset_headers], sub_rows))


def report(args, seeds, results: dict, ablations: dict, started: float) -> str:
    parts = [C.machine_header(args, seeds, notes=[
        "Epochs: " + ", ".join(f"{n} {DATASETS[n]['epochs']}" for n in results)
        + " (the demo defaults, about 480 steps); ablation cut to "
        + ", ".join(f"{n} {DATASETS[n]['ablation_epochs']}" for n in ablations) + " epochs for the CPU budget.",
        "Values are mean ± standard deviation over the seeds (the teacher is fixed, so it has no spread). "
        "Test sets: digits 360 images (fixed split), shapes 1500 images (seed 1).",
        f"Total wall time {time.perf_counter() - started:.0f} s.",
    ])]
    for name, (b, rows, extras) in results.items():
        p = extras["params"]
        parts.append(f"\n### {name}\n\nParameters: teacher {p['teacher']:,}; KF common module + all bricks "
                     f"{p['KF (common + bricks)']:,}; KD student {p['KD student']:,} (tiny backbone at width "
                     f"{p['KD width']:.2f} + one head per teacher output, Hinton KD only, T = 10). "
                     f"KF training {C.mean_sd(extras['kf_seconds'], digits=1)} s, KD training "
                     f"{C.mean_sd(extras['kd_seconds'], digits=1)} s per seed.\n")
        parts.append(main_table(b, rows))
        parts.append(f"\nLargest difference between a brick's logits run alone and inside an assembled network: "
                     f"{max(extras['logit_gap']):.2e} (the bricks need no fine-tuning to be combined).")
        if "disent" in extras:
            parts.append("\n#### Disentanglement on shapes (test set; factors shape, colour, size, x)\n\n"
                         "MIG with 20 bins; DCI with an L1 (lasso) logistic predictor per factor fitted on 3000 "
                         "training images; informativeness is that predictor's test accuracy.\n")
            drows = [[n, r[0]["dims"], C.mean_sd([x["mig"] for x in r], digits=3),
                      C.mean_sd([x["D"] for x in r], digits=3), C.mean_sd([x["C"] for x in r], digits=3),
                      C.pct([x["I"] for x in r])] for n, r in extras["disent"].items()]
            parts.append(C.table(["representation", "dims", "MIG", "DCI disentanglement", "DCI completeness",
                                  "DCI informativeness %"], drows))
            parts.append("\n#### Transfer to the held-back factor \"y\" (the teacher never saw it)\n\n"
                         "Logistic regression on frozen, standardized features: fitted on the 6000 training "
                         "images, scored on the 1500 test images (3 classes; chance 33%).\n")
            prows = [[n, r[0]["dims"], C.pct([x["acc"] for x in r])] for n, r in extras["probe"].items()]
            parts.append(C.table(["features", "dims", "y accuracy %"], prows))
    if ablations:
        parts.append("\n### Ablation of the IMB terms\n")
        for name, ab in ablations.items():
            rows = [[v, C.pct([r["acc"] for r in runs]), C.pct([r["agree"] for r in runs])]
                    + ([C.mean_sd([r["mig"] for r in runs], digits=3)] if name == "shapes" else [])
                    for v, runs in ab.items()]
            metric = "10-way accuracy %" if name == "digits" else "mean head accuracy %"
            parts.append(f"\n{name}, {DATASETS[name]['ablation_epochs']} epochs:\n\n" + C.table(
                ["variant", metric, "agreement with teacher %"] + (["MIG"] if name == "shapes" else []), rows))
        if "digits" in ablations:
            parts.append(_ablation_plot(ablations["digits"]))
    return "\n".join(parts)


def _ablation_plot(ab: dict) -> str:
    series = {}
    for variant, runs in ab.items():
        epochs = [e for e, _ in runs[0]["curve"]]
        mean = [float(np.mean([r["curve"][i][1] for r in runs])) * 100 for i in range(len(epochs))]
        series[variant] = (epochs, mean)
    path = C.FIG_DIR / "fidelity_ablation_digits.png"
    C.line_plot(path, "digits: 10-way test accuracy during factorization (mean over seeds)", "epoch", "accuracy %",
                series)
    return f"\n![digits ablation curves](benchmarks/{path.name})\n"


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    C.setup_torch(args)
    started = time.perf_counter()
    seeds = SEEDS[:1] if args.quick else SEEDS
    if args.quick:
        for d in DATASETS.values():
            d.update(epochs=1, ablation_epochs=1)
    results, ablations = {}, {}
    for name in DATASETS:
        b = load_bench(name, args.device, args.quick)
        rows, extras = {}, {}
        if DATASETS[name]["epochs"] is None:
            DATASETS[name]["epochs"] = auto_epochs(len(batches(len(b.train), 128, 0, 0)))
        main_comparison(b, args, seeds, DATASETS[name]["epochs"], rows, extras)
        results[name] = (b, rows, extras)
        ablations[name] = ablation(b, args, seeds, DATASETS[name]["ablation_epochs"])
    C.write_section(args, "fidelity", "## Fidelity\n\n" + report(args, seeds, results, ablations, started))
    _save_json(args, seeds, results)
    if not args.no_write:
        write_readings("fidelity")


def _save_json(args, seeds, results: dict) -> None:
    """The main tables' figures: per seed, and as the tables print them (percent, mean and spread)."""
    summary, per_seed = {}, {}
    for name, (b, rows, extras) in results.items():
        per_seed[name] = {m: {k: [r[k] for r in runs] for k in runs[0]} for m, runs in rows.items()}
        summary[name] = {m: {k: _mean_sd_pct(v) for k, v in keys.items()} for m, keys in per_seed[name].items()}
        summary[name]["logit_gap"] = max(extras["logit_gap"])
    R.save("fidelity.json", {**R.run_meta(args), "seeds": list(seeds), "summary": summary, "per_seed": per_seed,
                             "test_images": {name: len(b.test) for name, (b, _, _) in results.items()}}, C.FIG_DIR)


def _mean_sd_pct(values: list[float]) -> list:
    """[mean, standard deviation] in percent, rounded as the table prints them; no spread for one value."""
    mean_pct = round(100 * float(np.mean(values)), 2)
    return [mean_pct, round(100 * float(np.std(values, ddof=1)), 2) if len(values) > 1 else None]


if __name__ == "__main__":
    main()
