"""``kfstudio relate``: how a run's bricks relate (DEPARA), and how well its common module suits new data."""

from __future__ import annotations

import argparse

from kfstudio.cli import argtypes
import math


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "relate", help="brick x brick relatedness (DEPARA) of a run, and how well its common module suits new data",
        description="Score every pair of a run's bricks with DEPARA on a seeded probe set of the run's data, and "
        "with --data, how well the common module suits that labeled data set (DEPARA between the common "
        "module and the teacher on those inputs, plus a linear probe on the frozen common feature). "
        "Writes relatedness.json in the run folder.")
    p.add_argument("run_folder", metavar="RUN", help="a folder written by kfstudio factorize")
    p.add_argument("--data", default=None, help="a labeled data set to check the common module against")
    p.add_argument("--label", default=None, help="which label of --data (when it has several, e.g. y of builtin:shapes)")
    p.add_argument("--teacher", default=None, help="the teacher to compare with (default: the one run.json names)")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory "
                   "teacher (default: those the run records for the same teacher)")
    p.add_argument("--probes", type=argtypes.whole(2, 4096, "a number of probe images"), default=None, help="how many probe images (default 64)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the probe set")
    p.add_argument("--lambda", dest="lam", type=argtypes.number(0, 100), default=None, help="weight of the edge term (default 0.1)")
    p.add_argument("--threads", type=argtypes.threads, default=1, help="CPU threads")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from kfstudio.core.measures.depara import DEFAULT_LAMBDA, DEFAULT_PROBES
    from kfstudio.io.relatedness import compute_relatedness, save_relatedness

    torch.set_num_threads(max(1, args.threads))
    lam = DEFAULT_LAMBDA if args.lam is None else args.lam
    doc = compute_relatedness(args.run_folder, data=args.data, label=args.label, teacher=args.teacher,
                              weights=args.weights, n_probes=args.probes or DEFAULT_PROBES, seed=args.seed, lam=lam)
    print_matrix(doc)
    for fit in doc["data_fit"].values():
        print_fit(fit)
    path = save_relatedness(args.run_folder, doc)
    print(f"\nWrote {path}")
    return 0


def _short(title: str, width: int = 8) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def print_matrix(doc: dict) -> None:
    titles = [b["title"] for b in doc["bricks"]]
    score = doc["matrix"]["score"]
    probes = doc["probes"]
    print(f"Brick relatedness (DEPARA: attribution cosine + {doc['lambda']} x edge rank correlation, on the bricks' "
          f"task logits; {probes['n']} probes of {probes['data']}, seed {probes['seed']}; 1 + lambda = identical)")
    width = max(len(t) for t in titles)
    print(" " * width + "".join(f" {_short(t):>8}" for t in titles))
    for title, row in zip(titles, score):
        print(f"{title:<{width}}" + "".join(f" {v:8.3f}" for v in row))
    pairs = [(score[i][j], titles[i], titles[j]) for i in range(len(titles)) for j in range(i + 1, len(titles))]
    pairs.sort(reverse=True)
    print(f"Most related: {pairs[0][1]} & {pairs[0][2]} ({pairs[0][0]:.3f}); "
          f"least related: {pairs[-1][1]} & {pairs[-1][2]} ({pairs[-1][0]:.3f}).")


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def print_fit(fit: dict) -> None:
    print(f"\nHow well the common module suits {fit['data']} (label '{fit['label']}'):")
    print(f"  linear probe on the frozen z_c: {_pct(fit['probe_accuracy_common'])} test accuracy "
          f"({fit['probe_train_images']} training images; chance {_pct(fit['chance'])})")
    if "depara_common_vs_teacher" in fit:
        print(f"  linear probe on the teacher's layer {fit['teacher_layer']}: {_pct(fit['probe_accuracy_teacher'])}")
        print(f"  DEPARA common module vs teacher on these inputs: {fit['depara_common_vs_teacher']:.3f}")
    if fit.get("note"):
        print(f"  {fit['note']}")
