"""Light bricks against image bricks at the default cost budget: which brick input should be the default?

For each demo teacher (digits, shapes-hard) and each brick input (image: the paper's task
networks; stage1 / stage2: light bricks that read a stage of the common module) a run is
factorized with the CLI's default budget (the assembly of all bricks costs at most the teacher's
multiply-adds; ``kfstudio.core.students.budget``), plus today's image bricks at the fixed widths 1.0 / 0.5
as the reference. Each run reports: task accuracy minus the teacher's (mean over tasks, points),
multiply-adds of all bricks and of one brick, and latency of all bricks and of one brick (the
common module + the first brick) against the teacher, at batch 1 and 64 on one thread, in
onnxruntime (assembly and teacher both exported to ONNX) and in eager torch (assembly fused with
BatchNorm folded; teacher with BatchNorm folded by torch.fx). Calls are interleaved (see
``benchmarks._runtimes._interleaved_ms``).

    python -m benchmarks.light_bricks [--seeds 1] [--steps N] [--teachers shapes-hard] [--stem-strides|--defaults] [--quick]

``--stem-strides`` runs the students' stem stride variants instead (section light-bricks-stride):
stride 1 (full resolution in the first stage, the paper's CIFAR stems) against 2 (half).
``--defaults`` runs the command line's defaults (section light-bricks-defaults) against the paper's image
bricks at fixed widths, and the same defaults without the shifted images, paired by seed.
``--channels`` times untrained shapes-hard assemblies of several widths against the teacher in
onnxruntime (section light-bricks-channels; no training: latency does not depend on the weights),
to show how the students' channel counts, not only their multiply-adds, set their speed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import _common as C
from benchmarks._runtimes import _interleaved_ms, _ort_session
from kfstudio.assembly.build import build_from_files
from kfstudio.core import factorize as F
from kfstudio.core.measures.cost import count_macs
from kfstudio.core.factorize import FactorizeConfig, factorize
from kfstudio.io import export as X
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization

TEACHERS = ("shapes-hard", "digits")
RGB = "rgb-shape"   # a 32x32 RGB teacher of our own with a full-resolution stem (benchmarks._rgb_teacher)
# (name, brick input, budget (None: the fixed widths 1.0 / 0.5), stem stride, shifted images, task net (None: the
# command line's "auto", which the budget resolves))
VARIANTS = (("image, fixed widths (before)", "image", None, 1, False, "tiny"), ("image", "image", "1x", 1, False, "tiny"),
            ("stage1", "stage1", "1x", 1, False, "tiny"), ("stage2", "stage2", "1x", 1, False, "tiny"))
BEFORE = "image, fixed widths, stride 1 (before)"
STRIDE_VARIANTS = ((BEFORE, "image", None, 1, False, "tiny"),
                   ("stage1, 1x, stride 1", "stage1", "1x", 1, False, "tiny"),
                   ("stage1, 1x, stride 2", "stage1", "1x", 2, False, "tiny"),
                   ("stage1, 1/2, stride 2", "stage1", "1/2", 2, False, "tiny"),
                   ("stage2, 1x, stride 2", "stage2", "1x", 2, False, "tiny"),
                   ("stage1, widths 1 / 0.5, stride 2", "stage1", None, 2, False, "tiny"))
DEFAULT_VARIANTS = ((BEFORE, "image", None, 1, False, "tiny"),
                    ("the defaults with tiny bricks (before tiny-mid)", "stage1", "1x", "auto", True, "tiny"),
                    ("the defaults: stage1, task net auto, 1x, stride auto, shifted images", "stage1", "1x", "auto",
                     True, None))
BATCHES = (1, 64)
# (brick input, stem stride, common width, brick width) for --channels
CHANNEL_VARIANTS = (("stage1", 1, 0.625, 0.3125), ("stage1", 2, 0.875, 0.4375), ("stage1", 2, 1.0, 0.5),
                    ("stage1", 2, 1.25, 0.625), ("stage1", 2, 1.5, 0.5), ("stage1", 2, 2.0, 0.5),
                    ("stage2", 2, 1.0, 1.0), ("stage2", 2, 1.5, 0.75))


@dataclass
class Row:
    teacher: str
    variant: str
    seed: int
    widths: str
    task_gap: float          # mean over tasks of (brick accuracy - teacher accuracy), points
    task_gaps: dict          # task -> brick accuracy - teacher accuracy, points
    test_images: int         # how many test images each task was scored on
    group_gap: float | None  # the same for the combined one-vs-rest prediction (digits), points
    macs_all: int
    macs_one: int
    teacher_macs: int
    latency: dict            # (what, runtime, batch) -> (ms, teacher ms)
    train_s: float


def _folded_teacher(module: torch.nn.Module) -> torch.nn.Module:
    """The teacher with BatchNorm folded into its convolutions (torch.fx), as the assembly runs."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module.eval())
    except Exception:  # a teacher fx cannot trace runs as it is (said in the table's notes)
        return module.eval()


def _teacher_onnx(module: torch.nn.Module, shape, path: Path):
    example = torch.randn(2, *shape)
    with X._quiet():
        torch.onnx.export(module.eval(), (example,), str(path), dynamic_shapes=({0: X._batch_dim()},),
                          external_data=False, dynamo=True, verbose=False)
    return _ort_session(path)


def _train(source: dict, variant: tuple, seed: int, epochs: int | None, out: Path):
    """Factorize the teacher and data of ``source`` (FactorizeConfig fields) with one variant's settings."""
    from kfstudio.core.students.budget import AUTO_TASK_NET

    _, reads, budget, stride, augment, task_net = variant
    config = FactorizeConfig(**source, brick_input=reads, budget=budget, stem_stride=stride, augment=augment,
                             task_net=task_net or AUTO_TASK_NET, seed=seed, epochs=epochs, device="cpu", num_threads=1)
    started = time.perf_counter()
    result = factorize(config)
    save_factorization(result, out)
    return result, time.perf_counter() - started


def _source(name: str, scratch: Path, quick: bool) -> dict:
    """The FactorizeConfig fields that name teacher ``name`` and its data (the RGB teacher is trained first)."""
    if name == RGB:
        from benchmarks import _rgb_teacher
        return _rgb_teacher.prepare(scratch / RGB, quick)
    return {"teacher": f"builtin:{name}", "data": f"builtin:{name}"}


def _load(source: dict):
    from kfstudio.core.teachers.loaders import load_teacher

    return load_teacher(source["teacher"], FactorizeConfig(**source).teacher_options(), allow_code=True)


def _test_images(source: dict) -> int:
    from kfstudio.core.data.sources import load_data

    return len(load_data(source["data"], test_ref=source.get("test_data")).test)


def _gaps(result) -> tuple[float, float | None, dict]:
    per_task = {n: (m.accuracy - m.teacher_accuracy) * 100 for n, m in result.final.tasks.items()}
    groups = [m for m in result.final.groups.values() if m.accuracy is not None]
    group_gap = statistics.mean(m.accuracy - m.teacher_accuracy for m in groups) * 100 if len(groups) == 1 else None
    return statistics.mean(per_task.values()), group_gap, per_task


def _teachers(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r.teacher for r in rows))


def _worst_task(rows: list[Row]) -> str:
    """The task furthest below the teacher, mean over the rows' seeds."""
    means = {t: statistics.mean(r.task_gaps[t] for r in rows) for t in rows[0].task_gaps}
    task = min(means, key=means.get)
    return f"{task} {means[task]:+.2f}"


def _paired_rows(rows: list[Row], variants) -> list[list]:
    """Each variant against the first (the paper's image bricks), paired by seed: per-seed differences of
    the mean task gap and wins / ties / losses (a tie: less than one test image of one task apart)."""
    from benchmarks._readings import Paired

    out = []
    for teacher in _teachers(rows):
        base = {r.seed: r for r in rows if r.teacher == teacher and r.variant == variants[0][0]}
        if not base:
            continue
        first = next(iter(base.values()))
        image = 100 / (first.test_images * len(first.task_gaps))
        for name, *_ in variants[1:]:
            mine = sorted((r for r in rows if r.teacher == teacher and r.variant == name), key=lambda r: r.seed)
            pair = Paired(tuple(r.task_gap - base[r.seed].task_gap for r in mine), image)
            out.append([teacher, name, " / ".join(f"{d:+.2f}" for d in pair.diffs), pair.phrase()])
    return out


def _measure(teacher_module, shape, folder: Path, iters: int) -> tuple[dict, int, int, int]:
    common = load_common(folder / "common.safetensors")
    bricks = [load_brick(p) for p in list_bricks(folder)]
    nets = {"all": build_from_files(common, bricks), "one": build_from_files(common, bricks[:1])}
    x1 = torch.zeros(1, *shape)
    macs = {k: count_macs(lambda n=n: n.forward_unfused(x1), n) for k, n in nets.items()}
    folded = _folded_teacher(teacher_module)
    t_macs = count_macs(lambda: teacher_module(x1), teacher_module)
    runs = {("teacher", "eager"): folded, ("teacher", "onnxruntime"): _teacher_onnx(teacher_module, shape,
                                                                                     folder / "teacher.onnx")}
    for k, net in nets.items():
        runs[k, "eager"] = net
        runs[k, "onnxruntime"] = _ort_session(X.export_network(net, folder / f"{k}.onnx", "onnx").path)
    latency = {}
    for batch in BATCHES:
        x = torch.randn(batch, *shape)
        for runtime in ("eager", "onnxruntime"):
            m = _interleaved_ms({k: v for (k, rt), v in runs.items() if rt == runtime}, x,
                                iters if batch == 1 else max(15, iters // 4), "cpu")
            for k in nets:
                latency[k, runtime, batch] = (m[k][0], m["teacher"][0])
    return latency, macs["all"], macs["one"], t_macs


def _rows_table(rows: list[Row], variants, worst: bool = False) -> list[list]:
    out = []
    for teacher in _teachers(rows):
        for name, *_ in variants:
            mine = [r for r in rows if r.teacher == teacher and r.variant == name]
            if not mine:
                continue
            r0 = mine[0]
            lat = lambda what, rt, b: statistics.median(r.latency[what, rt, b][0] / r.latency[what, rt, b][1]
                                                        for r in mine)
            out.append([teacher, name, r0.widths, C.mean_sd([r.task_gap for r in mine]),
                        *([_worst_task(mine)] if worst else []),
                        C.mean_sd([r.group_gap for r in mine]) if r0.group_gap is not None else "-",
                        f"{r0.macs_all / 1e6:.2f} M ({r0.macs_all / r0.teacher_macs:.2f}x)",
                        f"{r0.macs_one / 1e6:.2f} M ({r0.macs_one / r0.teacher_macs:.2f}x)",
                        *(f"{lat(w, rt, b):.2f}x" for rt in ("onnxruntime", "eager") for w in ("all", "one")
                          for b in BATCHES),
                        f"{statistics.mean(r.train_s for r in mine):.0f}"])
    return out


def _ms_table(rows: list[Row]) -> list[list]:
    """The raw milliseconds behind the ratios (first seed)."""
    out = []
    for r in rows:
        if r.seed != min(x.seed for x in rows):
            continue
        for rt in ("onnxruntime", "eager"):
            for b in BATCHES:
                out.append([r.teacher, r.variant, rt, b, f"{r.latency['all', rt, b][1]:.3f}",
                            f"{r.latency['all', rt, b][0]:.3f}", f"{r.latency['one', rt, b][0]:.3f}"])
    return out


def _channel_rows(iters: int) -> list[list]:
    """For each width in CHANNEL_VARIANTS: the channels, multiply-adds and onnxruntime latency of the
    untrained assembly (all bricks; one brick + common) against the teacher, and the time per
    multiply-add against the teacher's (latency ratio / multiply-add ratio)."""
    from kfstudio.assembly.build import AssembledNetwork
    from kfstudio.core.factorize import build_students
    from kfstudio.core.tasks import resolve_tasks
    from kfstudio.core.teachers.loaders import load_teacher

    teacher = load_teacher("builtin:shapes-hard", allow_code=True)
    spec, module = teacher.input_spec, teacher.module.cpu().eval()
    tasks = resolve_tasks(None, teacher.class_names)
    x1 = torch.zeros(1, *spec.shape)
    t_macs = count_macs(lambda: module(x1), module)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kf-channels-") as tmp:
        t_run = _teacher_onnx(module, spec.shape, Path(tmp) / "teacher.onnx")
        for reads, stride, common_width, task_width in CHANNEL_VARIANTS:
            config = FactorizeConfig(teacher="builtin:shapes-hard", data="builtin:shapes-hard", brick_input=reads,
                                     stem_stride=stride, common_width=common_width, task_width=task_width)
            common, bricks = build_students(config, tasks, spec)
            cells = []
            for what, chosen in (("all", tasks), ("one", tasks[:1])):
                net = AssembledNetwork(common.eval(), {t.name: bricks[t.name].eval() for t in chosen}, chosen, spec).eval()
                macs = count_macs(lambda: net.forward_unfused(x1), net) / t_macs
                run = _ort_session(X.export_network(net, Path(tmp) / f"{what}.onnx", "onnx").path)
                ratios = []
                for batch in BATCHES:
                    ms = _interleaved_ms({"teacher": t_run, "net": run}, torch.randn(batch, *spec.shape),
                                         iters if batch == 1 else max(15, iters // 4), "cpu")
                    ratios.append(ms["net"][0] / ms["teacher"][0])
                cells.append((macs, ratios))
            (macs_all, all_r), (macs_one, one_r) = cells
            brick_channels = next(iter(bricks.values())).backbone.stage_channels
            rows.append([reads, stride, f"{common_width:g} / {task_width:g}", " / ".join(map(str, common.backbone.stage_channels)),
                         " / ".join(map(str, brick_channels)), f"{macs_all:.2f}x", f"{macs_one:.2f}x",
                         *(f"{r:.2f}x" for r in all_r), *(f"{r:.2f}x" for r in one_r),
                         f"{all_r[-1] / macs_all:.2f}x"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    return rows


def channels_main(args) -> None:
    started = time.perf_counter()
    iters = 20 if args.quick else 100
    rows = _channel_rows(iters)
    notes = [
        "Untrained students of the shapes-hard demo's five tasks at the widths listed (no budget), built and exported "
        "as a run would be; latency does not depend on the weights. Channels: the common module's stages and a "
        "brick's own stages (a stage-k brick starts after stage k).",
        "onnxruntime, CPUExecutionProvider, 1 thread, default graph optimizations; the teacher exported by torch.onnx "
        f"dynamo. Interleaved blocks of 5 calls, median of block medians; {iters} calls at batch 1, "
        f"{max(15, iters // 4)} at batch 64. 'time per multiply-add' = (all bricks' latency / the teacher's at batch "
        "64) / (their multiply-adds / the teacher's): 1.00x runs as efficiently as the teacher.",
        f"Whole benchmark wall time {time.perf_counter() - started:.0f} s."]
    headers = ["bricks read", "stem stride", "widths (common / brick)", "common channels", "brick channels",
               "multiply-adds, all", "one brick + common", "ORT all b1", "ORT all b64", "ORT one b1", "ORT one b64",
               "time per multiply-add (all, b64)"]
    body = [C.machine_header(args, notes=notes), "", C.table(headers, rows)]
    C.write_section(args, "light-bricks-channels",
                    "## Channel counts and onnxruntime speed (generated)\n\n" + "\n".join(body))


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--seeds", type=int, default=1),
        p.add_argument("--steps", type=int, default=None, help="train for about this many steps (default: the "
                       "demo's, factorize.AUTO_STEPS = 480)"),
        p.add_argument("--teachers", nargs="+", choices=(*TEACHERS, RGB), default=list(TEACHERS)),
        p.add_argument("--stem-strides", action="store_true", help="the stem stride variants instead"),
        p.add_argument("--defaults", action="store_true", help="the command line's defaults against the paper's bricks"),
        p.add_argument("--channels", action="store_true", help="untrained assemblies of several widths, timed only")))
    if args.channels:
        C.setup_torch(args).set_num_threads(1)
        return channels_main(args)
    variants = STRIDE_VARIANTS if args.stem_strides else DEFAULT_VARIANTS if args.defaults else VARIANTS
    torch = C.setup_torch(args)
    torch.set_num_threads(1)
    epochs = 1 if args.quick else None
    if args.steps:
        F.AUTO_STEPS = args.steps   # the auto epoch count (3 to 40 epochs) aims at this many steps
    iters = 20 if args.quick else 100
    rows: list[Row] = []
    sizes: dict[str, tuple[int, int]] = {}   # teacher -> (parameters, multiply-adds), for the notes
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kf-light-") as tmp:
        for teacher_name in args.teachers:
            source = _source(teacher_name, Path(tmp), args.quick)
            teacher = _load(source)
            shape, test_images = teacher.input_spec.shape, _test_images(source)
            for seed in range(args.seeds):
                for number, variant in enumerate(variants):
                    name = variant[0]
                    folder = Path(tmp) / f"{teacher_name}-{number}-{seed}"
                    result, train_s = _train(source, variant, seed, epochs, folder)
                    latency, macs_all, macs_one, t_macs = _measure(teacher.module.cpu(), shape, folder, iters)
                    gap, group_gap, per_task = _gaps(result)
                    sizes[teacher_name] = (sum(p.numel() for p in teacher.module.parameters()), t_macs)
                    cfg = result.config
                    rows.append(Row(teacher_name, name, seed, f"{cfg.common_width:g} / {cfg.task_width:g} ({cfg.task_net})", gap,
                                    per_task, test_images, group_gap, macs_all, macs_one, t_macs, latency, train_s))
                    print(f"{teacher_name} {name} seed {seed}: gap {gap:+.2f} pt "
                          f"({', '.join(f'{t} {g:+.1f}' for t, g in per_task.items())}), {macs_all / t_macs:.2f}x MACs, "
                          f"onnx all b1 {latency['all', 'onnxruntime', 1][0] / latency['all', 'onnxruntime', 1][1]:.2f}x"
                          f", {train_s:.0f} s", flush=True)
    notes = [
        "Each variant is a factorization of the demo with the CLI's defaults except the brick input, the bricks' "
        "architecture and the sizing: "
        "'1x' = widths chosen by the default cost budget (all bricks at most the teacher's multiply-adds); "
        "'before' = today's fixed widths 1.0 / 0.5 with image bricks. "
        + ("'1/2' = half the teacher's multiply-adds; 'widths 1 / 0.5' = the fixed widths without a budget (channels "
           "16 / 32 / 64 in the common module, multiples of 16); 'stride 2' = the students' stem halves the image's "
           "resolution before their first stage (--stem-stride 2), 'stride 1' keeps it (the paper's CIFAR stems). "
           if args.stem_strides else "") +
        ("'the defaults' = what `kfstudio factorize` does with no options: bricks read stage 1; task net auto gives "
         "them a wide middle stage ('tiny-mid', 16 / 64 / 32 channels at width 1) where the budget affords it at the "
         "widths it chose for 'tiny' (16 / 32 / 64; the row 'with tiny bricks' pins them); the budget 1x picks "
         "the widest students that fit with channel counts in multiples of 16, the stem halves the resolution of "
         "images of 32 px or more (stride auto: shapes-hard 2, digits 1), and training sees copies of the images "
         "shifted by up to a pixel, labelled by the teacher (--augment). 'worst task' = the task furthest below the "
         "teacher, mean over seeds. " if args.defaults else "") +
        f"Training: {'1 epoch (quick)' if args.quick else f'about {F.AUTO_STEPS} steps (the demo: 480)'}, "
        "on the CPU, one thread.",
        "Accuracy: brick task accuracy minus the teacher's on the same test images, mean over tasks (points); "
        "digits also gives the combined 10-way prediction of the ten one-vs-rest bricks.",
        "Latency: ratios to the teacher in the same runtime and form, median over seeds; 'all' = every brick, "
        "'one' = the common module + one brick. onnxruntime: both exported to ONNX (the assembly by KF Studio's "
        "exporter, the teacher by torch.onnx dynamo), CPUExecutionProvider, 1 thread. eager: the fused assembly "
        "(BatchNorm folded) against the teacher with BatchNorm folded by torch.fx. Interleaved blocks of 5 calls, "
        f"median of block medians; {iters} calls at batch 1, {max(15, iters // 4)} at batch 64.",
        "Teachers: " + "; ".join(f"{t}: {n:,} parameters, {m / 1e6:.2f} M multiply-adds per input"
                                 for t, (n, m) in sizes.items()) + ".",
        f"Whole benchmark wall time {time.perf_counter() - started:.0f} s."]
    headers = ["teacher", "bricks read", "widths (common / brick) (brick net)", "task acc. − teacher (pt)",
               *(["worst task − teacher (pt)"] if args.defaults else []), "10-way − teacher (pt)",
               "multiply-adds, all bricks", "one brick + common",
               *(f"{rt} {w} b{b}" for rt in ("ORT", "eager") for w in ("all", "one") for b in BATCHES), "train s"]
    body = [C.machine_header(args, list(range(args.seeds)), notes=notes), "",
            "### Accuracy, multiply-adds and latency against the teacher", "",
            C.table(headers, _rows_table(rows, variants, worst=args.defaults)),
            *(["", "### Task accuracy against the paper's image bricks, paired by seed (points)", "",
               C.table(["teacher", "bricks read", "difference per seed", "mean ± sd (wins / ties / losses)"],
                       _paired_rows(rows, variants))] if args.defaults and args.seeds > 1 else []),
            "", "### Milliseconds per call (first seed)", "",
            C.table(["teacher", "bricks read", "runtime", "batch", "teacher", "all bricks", "one brick + common"],
                    _ms_table(rows))]
    key, title = (("light-bricks-stride", "## Half-resolution students: the stem stride (generated)") if args.stem_strides
                  else ("light-bricks-rgb", "## A second RGB teacher: the defaults against the paper's bricks (generated)")
                  if args.defaults and args.teachers == [RGB]
                  else ("light-bricks-defaults", "## The defaults against the paper's bricks (generated)") if args.defaults
                  else ("light-bricks", "## Light bricks and the cost budget (generated)"))
    C.write_section(args, key, title + "\n\n" + "\n".join(body))


if __name__ == "__main__":
    main()
