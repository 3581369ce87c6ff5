"""``kfstudio factorize``: the engine with a terminal progress bar and a final table."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "factorize", help="factorize a teacher into a common module and task bricks",
        description="Train a common-knowledge module and one brick per task from a teacher with the "
        "InfoMax-Bottleneck objective, and write them to --out.")
    p.add_argument("--teacher", default="builtin:digits",
                   help="builtin:digits, builtin:shapes, package.module:function, or a .pt/.ts/.pt2/.onnx file")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory teacher")
    p.add_argument("--input", default=None, help="teacher input C,H,W[:mean:std] when the file does not say")
    p.add_argument("--tap", action="append", default=[], help="teacher layer to read features from (repeatable)")
    p.add_argument("--data", default=None, help="builtin:digits, builtin:shapes, an image folder or an .npz "
                   "(default: the teacher's built-in data)")
    p.add_argument("--test-data", default=None, help="separate test data (otherwise a seeded part is held out)")
    p.add_argument("--tasks", default=None, help="auto (default), heads, one-vs-rest[:a,b], out1,out2, "
                   "or groups 'small=0,1,2;large=7,8,9'")
    p.add_argument("--out", required=True, help="folder for common.safetensors, bricks/ and the checkpoint")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--common", default=None, help="common-module architecture (tiny, resnet, mobilenetv2)")
    p.add_argument("--common-width", type=float, default=None)
    p.add_argument("--task-net", default=None, help="task-net architecture (tiny, resnet, mobilenetv2)")
    p.add_argument("--task-width", type=float, default=None)
    p.add_argument("--infomax", choices=["authors", "1/B"], default=None, help="InfoMax joint-term variant")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training")
    p.add_argument("--resume", default=None, help="a checkpoint.pt to continue from")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from kfstudio.core.factorize import FactorizeConfig
    from kfstudio.core.imb import IMBWeights

    data = args.data or (args.teacher if args.teacher.startswith("builtin:") else None)
    if data is None:
        from kfstudio.core.errors import ConfigError
        raise ConfigError("Say which data to train on with --data (an image folder, an .npz file or builtin:NAME).")
    fields = {
        "teacher": args.teacher, "data": data, "test_data": args.test_data, "tasks": args.tasks,
        "teacher_weights": args.weights, "teacher_input": args.input, "teacher_taps": tuple(args.tap),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
        "common": args.common, "common_width": args.common_width, "task_net": args.task_net,
        "task_width": args.task_width, "seed": args.seed, "num_threads": args.threads, "resume": args.resume,
        "checkpoint": str(Path(args.out) / "checkpoint.pt"),
    }
    config = FactorizeConfig(**{k: v for k, v in fields.items() if v is not None})
    if args.infomax:
        config = replace(config, imb=replace(IMBWeights(), infomax=args.infomax))
    return config


def run(args: argparse.Namespace) -> int:
    from kfstudio.core.factorize import RunControl

    config = config_from_args(args)
    control = RunControl()
    previous = signal.signal(signal.SIGINT, _cancel_once(control))
    try:
        result = drive(config, control, quiet=args.quiet)
    finally:
        signal.signal(signal.SIGINT, previous)
    from kfstudio.io.bricks import save_factorization
    written = save_factorization(result, args.out)
    print_table(result)
    state = "Cancelled" if result.cancelled else "Finished"
    print(f"{state} after {result.epochs_done} epoch(s) in {result.elapsed_s:.1f} s. "
          f"Wrote the common module and {len(result.tasks)} bricks to {args.out}/ ({len(written)} files).")
    if result.cancelled and result.checkpoint:
        print(f"Continue with: kfstudio factorize ... --out {args.out} --resume {result.checkpoint}")
    return 130 if result.cancelled else 0


def _cancel_once(control):
    def handler(_signum, _frame):
        if control.cancelled:
            raise KeyboardInterrupt
        print("\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort)...",
              file=sys.stderr, flush=True)
        control.cancel()
    return handler


def drive(config, control, quiet: bool = False):
    """Consume the factorization generator with a tqdm progress bar; return the result."""
    from tqdm import tqdm

    from kfstudio.core.factorize import iter_factorize

    gen = iter_factorize(config, control=control)
    bar = None
    try:
        while True:
            report = next(gen)
            if report.kind == "setup":
                for message in report.messages:
                    print(message)
                print(f"Factorizing into {len(report.task_names)} tasks on {report.device}: "
                      f"{', '.join(report.task_titles)}")
                bar = tqdm(total=report.total_steps, initial=report.start_step, unit="step",
                           disable=quiet, dynamic_ncols=True, file=sys.stderr)
            elif report.kind == "step" and bar is not None:
                bar.update(report.step - bar.n)
                bar.set_postfix(loss=f"{report.losses['loss']:.3f}", cls=f"{report.losses['loss_cls']:.3f}",
                                kd=f"{report.losses['loss_kd']:.3f}", img_s=f"{report.samples_per_s:.0f}")
            elif report.kind == "eval" and bar is not None:
                groups = report.groups or report.tasks
                text = ", ".join(f"{k} {m.accuracy if m.accuracy is not None else m.agreement:.2%}"
                                 for k, m in list(groups.items())[:6])
                bar.write(f"epoch {report.epoch}: {text}")
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()


def _pct(value) -> str:
    return "   -   " if value is None else f"{value:7.2%}"


def print_table(result) -> None:
    """Per task (and per one-vs-rest group): brick accuracy and agreement against the teacher."""
    rows = [(t.title, result.final.tasks[t.name], result.teacher_metrics.get(t.name)) for t in result.tasks]
    rows += [(f"all {name} (together)", m, result.teacher_metrics.get(name)) for name, m in result.final.groups.items()]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'task':<{width}}  teacher acc   brick acc   agrees with teacher")
    for title, m, t in rows:
        print(f"{title:<{width}}  {_pct(t.accuracy if t else None):>11}   {_pct(m.accuracy):>9}   {_pct(m.agreement):>9}")
