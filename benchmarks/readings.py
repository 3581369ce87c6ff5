"""Render the readings of docs/benchmarks.md from the saved JSON, without rerunning a benchmark.

    python -m benchmarks.readings            # rewrite every reading between its markers
    python -m benchmarks.readings --check    # exit 1 when a reading differs from its JSON

One template per reading: each takes the JSON its command saved and returns the sentences that
quote its numbers. The benchmarks call ``write_readings`` after writing their tables, so table and
reading always come from the same figures.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import _readings as R

DIGITS_TEST = 360  # builtin:digits' fixed test split
SHAPES_HARD_TEST = 1000  # builtin:shapes-hard's test split
TIES = ("A tie: the two differ by less than half a test image on that seed; \"within noise\": the mean "
        "difference is no larger than its seed-to-seed spread.")


# ---------------------------------------------------------------- fidelity (benchmarks.fidelity)

def fidelity(data: dict) -> str:
    s = data["summary"]
    d, h = s["digits"], s["shapes"]

    def f(rows: dict, model: str, key: str = "acc") -> str:
        m, sd = rows[model][key]
        return f"{m:.2f}" if sd is None else f"{m:.2f} ± {sd:.2f}"

    kf, kd = "KF assembled, all bricks", "KD student"
    seeds = len(data["seeds"])
    text = (f"**Fidelity: {_verdict(s, kf, kd)} on both demos.** Over {seeds} seed{'s' if seeds != 1 else ''}, "
            f"digits' ten bricks together reach {f(d, kf)} % 10-way accuracy (teacher {f(d, 'teacher')} %) and "
            f"shapes' four bricks {f(h, kf)} % mean head accuracy (teacher {f(h, 'teacher')} %). A distillation student of the same size with Hinton KD "
            f"only reaches {f(d, kd)} % on digits and {f(h, kd)} % on shapes ({f(h, kd, 'acc_shape')} % against "
            f"the bricks' {f(h, kf, 'acc_shape')} % on the hardest head, shape). ")
    text += _fidelity_per_seed(data, kf, kd)
    text += (f" What KF gives and KD does not is the assembly: a subset (digits 0, 1, 7; shapes shape + colour) "
             f"is built from the bricks without any training (digits subset {f(d, 'KF assembled, subset')} %, "
             f"teacher {f(d, 'teacher, subset')} %), and a brick's logits alone and inside an assembled network "
             f"differ by at most {d['logit_gap']:.1e} on digits and {h['logit_gap']:.1e} on shapes (float "
             f"rounding). That holds by construction (each logit only depends on the common module and its own "
             f"brick); it is a check, not a discovery. Figures from {R.where(data)}.")
    return text


def _within_a_point(summary: dict, model: str) -> bool:
    """``model`` within 1 point of the teacher on both demos (digits 10-way, shapes mean head accuracy)."""
    return all(abs(summary[n][model]["acc"][0] - summary[n]["teacher"]["acc"][0]) <= 1.0 for n in ("digits", "shapes"))


def _verdict(summary: dict, kf: str, kd: str) -> str:
    bricks, student = _within_a_point(summary, kf), _within_a_point(summary, kd)
    if bricks and student:
        return "the bricks and a same-size distillation student both stay within 1 point of the teacher"
    if bricks or student:
        return (f"the bricks {'stay' if bricks else 'do not stay'} within 1 point of the teacher; a same-size "
                f"distillation student {'does' if student else 'does not'}")
    return "neither the bricks nor a same-size distillation student stay within 1 point of the teacher"


def _fidelity_per_seed(data: dict, kf: str, kd: str) -> str:
    per_seed = data.get("per_seed")
    if per_seed:
        images = data["test_images"]
        d = R.paired(per_seed["digits"][kf]["acc"], per_seed["digits"][kd]["acc"], images["digits"])
        h = R.paired(per_seed["shapes"][kf]["acc"], per_seed["shapes"][kd]["acc"], images["shapes"])
        return (f"KF minus KD, seed by seed: digits {d.phrase()}, shapes {h.phrase()}. {TIES}")
    d = data["summary"]["digits"]
    same = all(d[kf][k] == d[kd][k] for k in d[kf] if k in d[kd])
    return ("The run behind this table saved no per-seed figures, so wins and ties cannot be counted for it"
            + ("; on digits KF and KD have the same mean and spread in every column." if same else "."))


# ---------------------------------------------------------------- few labels (benchmarks.imb)

DEFAULT, AUTHORS, KD = "1/B (default)", "authors", "KD student"


def _budgets(data: dict) -> dict[str, list[dict]]:
    return data["results"]


def _pair(runs: list[dict], a: str, b: str) -> R.Paired:
    return R.paired([r[a]["acc"] for r in runs], [r[b]["acc"] for r in runs], DIGITS_TEST)


def _middle_cka(runs: list[dict], name: str) -> str:
    return R.mean([r[name]["cka"][1] for r in runs], scale=1.0, digits=2)


def imb_summary(data: dict) -> str:
    budgets = _budgets(data)
    gaps = {b: _pair(runs, DEFAULT, AUTHORS) for b, runs in budgets.items()}
    outside = [b for b, p in gaps.items() if not p.within_noise]
    first, runs0 = next(iter(budgets.items()))
    kd = " / ".join(f"{_pair(runs, KD, DEFAULT).mean:+.1f}" for runs in budgets.values())
    return (f"With few labels (digits, {' / '.join(budgets)} per class, {len(runs0)} paired seeds; section "
            f"\"Does the IMB objective earn its place?\") 1/B minus the authors' variant is "
            + "; ".join(f"{p.phrase()} at {b} labels" for b, p in gaps.items())
            + f". Outside the seed spread: {_labels(outside)}. {TIES} 1/B's middle-stage CKA with the teacher: "
            f"{_middle_cka(runs0, DEFAULT)} against {_middle_cka(runs0, AUTHORS)} at {first} labels. Test "
            "accuracy: " + "; ".join(f"{name} {_accs(budgets, name)} %" for name in (DEFAULT, AUTHORS, KD)) + ". "
            f"**Against plain distillation:** a distillation student of the same size, on the same images and "
            f"steps, minus the 1/B bricks: {kd} points on average.")


def _accs(budgets: dict[str, list[dict]], name: str) -> str:
    return " / ".join(R.mean([r[name]["acc"] for r in runs]) for runs in budgets.values())


def _labels(budgets: list[str]) -> str:
    return " and ".join(f"the {b}-label gap" for b in budgets) if budgets else "none of the gaps"


def imb(data: dict) -> str:
    budgets = _budgets(data)
    runs0 = next(iter(budgets.values()))
    n = len(runs0)
    lines = [f"**Few labels, seed by seed.** With {', '.join(budgets)} labelled digits per class (the same "
             f"images for every student of a seed, {data['steps']} steps, {n} paired seeds), the default 1/B "
             "against the authors' variant: "
             + "; ".join(f"{b} labels {_pair(runs, DEFAULT, AUTHORS).phrase()}" for b, runs in budgets.items())
             + f". {TIES} Linear CKA of the middle stage with the teacher, 1/B against the authors' variant: "
             + " / ".join(_middle_cka(r, DEFAULT) for r in budgets.values()) + " against "
             + " / ".join(_middle_cka(r, AUTHORS) for r in budgets.values()) + "."]
    for name, what in (("no InfoMax", "Turning InfoMax off"), ("no KD", "Removing distillation (`l_kd = 0`)"),
                       ("no InfoMin", "Removing InfoMin")):
        lines.append(f"{what}, minus 1/B: " + "; ".join(
            f"{b} labels {_pair(runs, name, DEFAULT).phrase()}" for b, runs in budgets.items())
            + ("; its middle-stage CKA " + " / ".join(_middle_cka(r, name) for r in budgets.values())
               if name == "no InfoMax" else "") + ".")
    lines.append(f"**Against plain distillation.** A single student with the same parameter "
                 f"count ({runs0[0][KD]['params']:,} against {runs0[0][DEFAULT]['params']:,}), trained only to copy "
                 "the teacher's logits on the same images and steps, minus the 1/B bricks: "
                 + "; ".join(f"{b} labels {_pair(runs, KD, DEFAULT).phrase()}" for b, runs in budgets.items())
                 + "; linear CKA of its last stage with the teacher "
                 + " / ".join(R.mean([x[KD]["cka"][2] for x in r], 1.0, 2) for r in budgets.values()) + " against "
                 + " / ".join(R.mean([x[DEFAULT]["cka"][2] for x in r], 1.0, 2) for r in budgets.values())
                 + " for the 1/B bricks.")
    lines.append(f"Figures from {R.where(data)}.")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- transfer (benchmarks.transfer)

T_KF, T_ALL, T_KD, T_CE = ("KF z_c (default objective)", "KF z_c + all brick z_k (default objective)",
                           "KD student", "CE student (labels, no teacher)")
T_X10, T_AUTH, T_TEACHER, T_PIXELS = ("KF z_c, l_feat 10 (InfoMax x10)", "KF z_c, InfoMax as in the authors' code",
                                      "teacher penultimate (512)", "raw pixels")


def transfer(data: dict) -> str:
    runs = data["runs"]

    def acc(name: str) -> str:
        return " / ".join(R.mean([r[name][k] for r in runs]) for k in ("200", "all"))

    def vs(other: str) -> str:
        return " and ".join(R.paired([r[T_KF][k] for r in runs], [r[other][k] for r in runs],
                                     SHAPES_HARD_TEST).phrase() for k in ("200", "all"))

    return (f"Over {len(runs)} paired seeds a logistic probe for shape, fitted on 200 / all labels, reaches on "
            f"frozen KF z_c {acc(T_KF)} %; on a parameter-matched KD student's features {acc(T_KD)} %; on a "
            f"student trained with cross-entropy on the five heads' labels and no teacher {acc(T_CE)} %; on raw "
            f"pixels {acc(T_PIXELS)} % and on the teacher's penultimate features {acc(T_TEACHER)} % (chance 25 %). "
            f"KF z_c minus KD: {vs(T_KD)}; minus the no-teacher student: {vs(T_CE)}; minus raw pixels: "
            f"{vs(T_PIXELS)}. {TIES} What we tried to close the gap: ten times the InfoMax weight (l_feat 10) "
            f"gives {acc(T_X10)} % (KF default minus it: {vs(T_X10)}); the authors' InfoMax (the variant that "
            f"collapses) gives {acc(T_AUTH)} % (KF default minus it: {vs(T_AUTH)}). z_c and all five "
            f"brick latents together ({runs[0][T_ALL]['dims']} dimensions against the KD student's "
            f"{runs[0][T_KD]['dims']}) reach {acc(T_ALL)} %. Figures from {R.where(data)}.")


# ---------------------------------------------------------------- start-up (benchmarks.startup)

def startup(data: dict) -> str:
    rows = data["rows"]
    window = rows["window"]
    return (f"**Start-up:** `kfstudio --help` takes {rows['help']['median_ms']:.0f} ms (median of "
            f"{data['runs']} fresh processes; the interpreter alone {rows['python']['median_ms']:.0f} ms) and loads "
            f"{', '.join(data['help_loaded']) or 'neither Qt nor torch'} (asserted). The studio window appears "
            f"{window['median_ms']:.0f} ms after launch (median; best {window['best_ms']:.0f} ms; offscreen; "
            f"target ≤ {data['window_target_ms']} ms); torch was {'' if data['torch_before_window'] else 'not '}"
            f"imported before it showed and pyqtgraph {'was' if data['pyqtgraph_before_window'] else 'was not'}: "
            f"the Factorize and Build pages, and with them torch and pyqtgraph, are built just after the Welcome "
            f"page is on screen (a test asserts neither is imported when the window shows). Figures from "
            f"{R.where(data)}.")


# ---------------------------------------------------------------- fused bricks (benchmarks.assembly)

RUNTIMES = ("eager", "TorchScript", ".pt2 module", "onnxruntime")
GOALS = {10: 1.5, 3: 0.8}  # fused / teacher latency at batch 1 that the fused assembly aims for


def _latency(data: dict, k: int, batch: int) -> dict[str, dict]:
    return {r["runtime"]: r for r in data["fused"]["latency"] if r["k"] == k and r["batch"] == batch}


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _fused_ratios(data: dict, k: int, batch: int = 1, key: str = "fused_ms") -> dict[str, float]:
    return {rt: row[key] / row["teacher_ms"] for rt, row in _latency(data, k, batch).items()}


def _goal(ratios: dict[str, float], goal: float) -> str:
    """Met where the ratio as printed is at most the goal; a ratio above it by any margin misses."""
    met = [rt for rt, v in ratios.items() if round(v, 2) <= goal]
    if not met:
        return "**missed** in every runtime"
    if len(met) == len(ratios):
        return "**met** in every runtime"
    return f"met in {', '.join(met)} only, **missed** in " + ", ".join(rt for rt in ratios if rt not in met)


def _span(values) -> str:
    values = sorted(values)
    return _x(values[0]) if f"{values[0]:.2f}" == f"{values[-1]:.2f}" else f"{values[0]:.2f}–{values[-1]:.2f}x"


def _fused_where(data: dict) -> str:
    f = data["fused"]
    return (f"{R.where(data)}; the fused section ran at 1-minute load {f['load_start']:.2f}–{f['load_end']:.2f} "
            f"on 2 cores")


def fused(data: dict) -> str:
    f = data["fused"]
    top = max(GOALS)
    ten, three = _fused_ratios(data, top), _fused_ratios(data, 3)
    before = _fused_ratios(data, top, key="before_ms")
    best = {rt: r["fused_best_ms"] / r["teacher_best_ms"] for rt, r in _latency(data, top, 1).items()}
    big = max(r["batch"] for r in f["latency"])
    torch_gain = [r["before_ms"] / r["fused_ms"] for r in f["latency"]
                  if r["batch"] == big and r["runtime"] != "onnxruntime"]
    eager_big = _latency(data, top, big)["eager"]
    macs = next(m for m in f["macs"] if m["k"] == top)
    macs_ratio = macs["assembled"] / macs["teacher"]
    big_ratios = _fused_ratios(data, top, big)
    reached = "reached" if min(big_ratios.values()) <= macs_ratio else "not reached"
    return (f"**Brick by brick → fused, k = {top} bricks, batch 1, latency / the teacher's in the same runtime, "
            f"like with like** ({data['cpu']}, {data['threads']} torch thread): "
            + "; ".join(f"{'`.pt2` module' if rt == '.pt2 module' else rt} {_x(before[rt])} → **{_x(ten[rt])}**"
                        for rt in ten)
            + " (the fastest blocks, closest to an unshared CPU: " + " / ".join(_x(v) for v in best.values())
            + f"). The goal (≤ {GOALS[top]}x) is {_goal(ten, GOALS[top])}. At k = 3 the goal (≤ {GOALS[3]}x) is "
            f"{_goal(three, GOALS[3])}: " + ", ".join(f"{rt} {_x(v)}" for rt, v in three.items())
            + f". With one brick the assembly is {_span(_fused_ratios(data, 1).values())} the teacher's latency. "
            f"At batch {big} brick by brick / fused is {_span(torch_gain)} in torch (k = {top}: eager "
            f"{_x(eager_big['before_ms'] / eager_big['teacher_ms'])} → {_x(eager_big['fused_ms'] / eager_big['teacher_ms'])} "
            f"the teacher) and the multiply-add limit ({_x(macs_ratio)} at k = {top}) is {reached} "
            f"({_span(big_ratios.values())} across runtimes). Figures from {_fused_where(data)}.")


def assembly_summary(data: dict) -> str:
    f = data["fused"]
    top = max(GOALS)
    ten, three, one = _fused_ratios(data, top), _fused_ratios(data, 3), _fused_ratios(data, 1)
    ops = list(f["aten_ops_per_forward"].values())
    verdict = ("still slower than the teacher" if min(ten.values()) > 1.0
               else "as fast as the teacher or faster in some runtime")
    return (f"**Assembly on {data['cpu']}, {data['threads']} thread, like with like: a full fused assembly of "
            f"{top} bricks is {_span(ten.values())} the teacher's latency at batch 1, {verdict}.** Bricks of one "
            f"architecture run as one grouped network (section \"Fused bricks\"), and the teacher is timed with "
            f"the same treatment (BatchNorm folded, `channels_last`, TorchScript frozen). At k = {top}: "
            + ", ".join(f"{rt} {_x(v)}" for rt, v in ten.items())
            + f" (goal ≤ {GOALS[top]}x: {_goal(ten, GOALS[top])}); at k = 3 {_span(three.values())} (goal ≤ "
            f"{GOALS[3]}x: {_goal(three, GOALS[3])}); one brick {_span(one.values())}. A {top}-brick forward runs "
            f"{ops[1]:,} aten ops fused against {ops[2]:,} brick by brick (the teacher {ops[0]:,}). Figures from "
            f"{_fused_where(data)}.")


# ---------------------------------------------------------------- all of them

READINGS = {  # reading name: (JSON file under docs/benchmarks/, template)
    "fidelity": ("fidelity.json", fidelity),
    "imb-summary": ("imb_few_labels.json", imb_summary),
    "imb": ("imb_few_labels.json", imb),
    "transfer": ("transfer_shapes_hard.json", transfer),
    "startup": ("startup.json", startup),
    "assembly-summary": ("assembly_cpu.json", assembly_summary),
    "fused": ("assembly_cpu.json", fused),
}


def render(name: str) -> str:
    file_name, template = READINGS[name]
    return R.wrap(template(R.load(file_name)))


def write_readings(*names: str) -> None:
    """Render the readings ``names`` (all when none) into docs/benchmarks.md."""
    text = R.DOC.read_text()
    for name in names or READINGS:
        text = R.replace_block(text, name, render(name))
    R.DOC.write_text(text)


def stale_readings() -> list[str]:
    text = R.DOC.read_text()
    return [name for name in READINGS if R.block(text, name) != render(name).strip("\n")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which readings differ from their JSON")
    args = parser.parse_args()
    if args.check:
        stale = stale_readings()
        print("stale: " + ", ".join(stale) if stale else "every reading matches its JSON")
        sys.exit(1 if stale else 0)
    write_readings()
    print("Rendered " + ", ".join(READINGS) + f" into {R.DOC.relative_to(R.ROOT)}")


if __name__ == "__main__":
    main()
