"""``kfstudio assemble``: snap bricks onto their common module and export the network.

Either a folder written by ``kfstudio factorize`` (all its tasks, or ``--tasks``) or a
common module and bricks from anywhere (``--common C --brick B ...``). Prints what the
network costs next to its teacher, per brick, and the export's self-test. Latency is timed
against the teacher in the same runtime and form: in eager torch (both BatchNorm folded), and
as the exported file in its own runtime next to the teacher exported the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kfstudio.cli import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "assemble", help="combine bricks into one network and export it (.onnx, .pt2, .ts.pt, .safetensors)",
        description="Attach task bricks to their common module and write the network in a format anyone can run. "
        "The format follows the extension of --out (or --format). The file is reloaded and checked before "
        "it is kept.")
    p.add_argument("folder", nargs="?", default=None, help="a folder written by 'kfstudio factorize'")
    p.add_argument("--tasks", default=None, help="tasks to take from the folder, e.g. 0,1,7 (default: all)")
    p.add_argument("--common", default=None, help="a common module file (common.safetensors), instead of a folder")
    p.add_argument("--brick", action="append", default=[], help="a brick file (repeatable), with --common")
    p.add_argument("--out", required=True, help="the file to write: .onnx, .pt2, .ts.pt or .safetensors")
    p.add_argument("--format", default=None, help="onnx, pt2, torchscript or safetensors (default: from --out)")
    p.add_argument("--device", default="cpu", help="where to measure latency: cpu (default), auto, cuda, mps")
    p.add_argument("--teacher", default=None, help="the teacher to compare with (default: the one the bricks record)")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory "
                   "teacher (default: those the common module records for the same teacher)")
    p.add_argument("--no-teacher", action="store_true", help="do not load the teacher for comparison")
    p.add_argument("--input", type=argtypes.input_spec, default=None, help="teacher input C,H,W[:mean:std] when nothing records it "
                   "(default: the input the common module records)")
    p.add_argument("--data", default=None, help="data to measure accuracy and agreement with the teacher on "
                   "(and, with --int8, to calibrate on and check with; default then: the run's data)")
    p.add_argument("--int8", action="store_true", help="ONNX only: quantize to int8 (static, calibrated on a few "
                   "hundred training images), checked against the float network on the test images")
    p.set_defaults(run=run)


def _select(bricks: list[Path], wanted: str) -> list[Path]:
    """The brick files whose task name, title or file name is in ``wanted`` (in that order)."""
    from kfstudio.core.errors import ConfigError
    from kfstudio.io.bricks import read_manifest

    index: dict[str, Path] = {}
    for path in bricks:
        manifest = read_manifest(path.with_suffix(".json"), "task-brick")
        for key in (manifest["task"]["name"], manifest.get("title"), path.stem):
            if key:
                index.setdefault(str(key), path)
    picked = []
    for name in (n.strip() for n in wanted.split(",") if n.strip()):
        if name not in index:
            known = ", ".join(dict.fromkeys(p.stem for p in bricks))
            raise ConfigError(f"The folder has no brick for the task '{name}'; it has: {known}.")
        picked.append(index[name])
    return picked


def source_files(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """The common module file and brick files the user asked for."""
    from kfstudio.core.errors import ConfigError
    from kfstudio.io.bricks import list_bricks

    if args.folder and (args.common or args.brick):
        raise ConfigError("Give either a factorization folder or --common with --brick, not both.")
    if args.folder:
        folder = Path(args.folder)
        if not (folder / "common.safetensors").is_file():
            raise ConfigError(f"'{folder}' is not a folder written by 'kfstudio factorize' (no common.safetensors).")
        bricks = list_bricks(folder)
        return folder / "common.safetensors", _select(bricks, args.tasks) if args.tasks else bricks
    if not args.common or not args.brick:
        raise ConfigError("Say what to assemble: a factorization folder, or --common FILE with one --brick FILE or more.")
    if args.tasks:
        raise ConfigError("--tasks picks bricks from a folder; with --common, list the bricks with --brick.")
    return Path(args.common), [Path(b) for b in args.brick]


def _teacher(args: argparse.Namespace, common, tasks):
    """The teacher to compare with, or None (with a note) when it cannot be loaded."""
    if args.no_teacher:
        return None
    from kfstudio.core.errors import KFError
    from kfstudio.core.spec import InputSpec
    from kfstudio.core.teachers.record import load_recorded_teacher

    entry = common.manifest.get("teacher")
    if not args.teacher and not (entry or {}).get("ref"):
        print("The bricks do not say which teacher they came from; give --teacher to compare with it.")
        return None
    try:
        teacher, notes = load_recorded_teacher(entry, ref=args.teacher, weights=args.weights,
                                               input_spec=InputSpec.parse(args.input) if args.input else None,
                                               fallback=common.input_spec, source="the common module's manifest")
    except KFError as exc:
        print(f"Not comparing with the teacher: {exc}")
        return None
    from kfstudio.core.teachers.outputs import match_outputs

    teacher, matched = match_outputs(tasks, teacher)
    for note in notes + [matched]:
        if note:
            print(note)
    return teacher


def run(args: argparse.Namespace) -> int:
    from kfstudio.assembly.build import build_from_files
    from kfstudio.assembly.measure import measure_costs, teacher_parity
    from kfstudio.core.data.sources import scoring_set
    from kfstudio.core.devices import pick_device
    from kfstudio.io.atomic import check_writable_file
    from kfstudio.io.bricks import load_brick, load_common
    from kfstudio.io.export import export_format_for
    from kfstudio.io.runtime_costs import export_and_time

    fmt = export_format_for(args.out, args.format)
    check_writable_file(args.out, "--out")  # before any work: a folder or an unwritable place is refused now
    if args.int8 and fmt.name != "onnx":
        from kfstudio.core.errors import ConfigError
        raise ConfigError(f"--int8 writes an ONNX file, not {fmt.name}; end --out with .onnx or give --format onnx.")
    common_path, brick_paths = source_files(args)
    common = load_common(common_path)
    network = build_from_files(common, [load_brick(p) for p in brick_paths])
    int8 = _int8_data(args, common_path, network) if args.int8 else None
    teacher = _teacher(args, common, network.tasks)
    costs = measure_costs(network, pick_device(args.device), teacher)
    metrics = None
    if args.data and teacher is not None:
        data, words = scoring_set(args.data)  # the rule kfstudio evaluate follows too
        evaluation = teacher_parity(network, teacher.to(pick_device("cpu")), data)
        metrics = {**evaluation.to_dict(), "scored_on": words}
    n = len(network.tasks)
    print(f"Assembled {n} brick{'' if n == 1 else 's'} on the common module of "
          f"'{(common.manifest.get('teacher') or {}).get('name') or 'unknown teacher'}': "
          f"{', '.join(t.title for t in network.tasks)}.")
    if args.data and args.no_teacher and not args.int8:
        print("--data is not scored with --no-teacher: the accuracy is measured against the teacher's answers.")
    report, runtime = export_and_time(network, args.out, fmt.name, teacher, int8, metrics=metrics)
    print_costs(costs, network, runtime)
    if metrics is not None:
        from kfstudio.cli.evaluate_cmd import print_evaluation
        print(f"\nScored on {words}.")
        print_evaluation(network.tasks, evaluation)
    print(f"\nWrote {report.path} ({report.format}) and its manifest {report.manifest_path.name}.")
    print(report.describe())
    return 0


def _int8_data(args: argparse.Namespace, common_path: Path, network):
    """Training images to calibrate int8 on and test images to check it with: --data, else the run's data."""
    from kfstudio.core.data.sources import load_data
    from kfstudio.core.errors import ConfigError
    from kfstudio.io.int8 import int8_data, run_data_ref

    ref = args.data or run_data_ref(common_path)
    if not ref:
        raise ConfigError("--int8 needs images to calibrate on: give --data (the data the bricks were trained on).")
    return int8_data(load_data(ref), network)


def _num(value) -> str:
    return "-" if value is None else f"{value:,}"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.0%}"


def print_costs(costs, network, runtime=None) -> None:
    """The assembled network next to its teacher, then what each part adds. Every latency row says
    where and in what form both were timed; ``runtime``: the exported file's own runtime."""
    net, teacher = costs.network, costs.teacher
    t = teacher or type(net)(None, None, None)
    rows = [("parameters", _num(net.parameters), _num(t.parameters), _ratio(net.parameters, t.parameters)),
            ("multiply-adds / input", _num(net.macs), _num(t.macs), _ratio(net.macs, t.macs)),
            (f"latency, eager torch on {costs.device}, batch 1", _ms(net.latency_ms),
             _ms(t.latency_ms), _ratio(net.latency_ms, t.latency_ms))]
    if costs.fused and costs.unfused_latency_ms is not None:
        rows.append(("latency brick by brick (not used)", _ms(costs.unfused_latency_ms), "",
                     _ratio(costs.unfused_latency_ms, t.latency_ms)))
    if runtime is not None:
        rows += _runtime_rows(runtime)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':<{width}}  {'assembled':>12}  {'teacher':>12}  {'assembled/teacher':>17}")
    for name, a, b, r in rows:
        print(f"{name:<{width}}  {a:>12}  {b:>12}  {r:>17}")
    print(f"Latency: median ms per call, one thread, the network and the teacher timed in turns, each pair in "
          f"the same runtime and form. Eager torch: {costs.latency_form}."
          + (f" {runtime.runtime[0].upper() + runtime.runtime[1:]}: {runtime.form}." if runtime is not None else ""))
    if runtime is not None and runtime.note:
        print(f"Not timed against the teacher in {runtime.runtime}: {runtime.note}.")
    if runtime is not None and "float network" in runtime.ms:
        from kfstudio.io.int8 import describe_int8_speed
        print(describe_int8_speed(runtime))
    if costs.fused:
        print(f"The network runs fused: bricks of one architecture run as one network of stacked weights "
              f"({costs.fused_groups} fused group{'s' if costs.fused_groups != 1 else ''}); "
              "exported files run the fused form too.")
    parts = [("common module", costs.common)] + [(f"brick '{task.title}'", costs.bricks[task.name])
                                                 for task in network.tasks]
    width = max(len(p[0]) for p in parts)
    print(f"\n{'part':<{width}}  {'parameters':>12}  {'multiply-adds':>13}  {'latency':>10}")
    for name, c in parts:
        print(f"{name:<{width}}  {_num(c.parameters):>12}  {_num(c.macs):>13}  {_ms(c.latency_ms):>10}")


def _runtime_rows(runtime) -> list[tuple]:
    """One row per batch size: the exported file in its runtime, next to the teacher written the same way."""
    teacher = runtime.ms.get("teacher", {})
    return [(f"latency, {runtime.runtime}, batch {b}", _ms(ms), _ms(teacher.get(b)),
             _ratio(ms, teacher.get(b))) for b, ms in runtime.ms.get("network", {}).items()]
