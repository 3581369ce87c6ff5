"""``kfstudio add-brick``: train one new brick for a new task on a run's frozen common module."""

from __future__ import annotations

import argparse
import signal
import sys

from kfstudio.cli import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "add-brick", help="train a new brick for a new task on a run's frozen common module",
        description="Train one new task brick (its own small backbone, projection and head, like the run's "
        "bricks) from labeled data of the new task, against the frozen common module of RUN. The common "
        "module does not change, so the new brick attaches beside the old ones.")
    p.add_argument("run_folder", metavar="RUN", help="a folder written by kfstudio factorize")
    p.add_argument("--data", required=True, help="labeled data: builtin:digits, builtin:shapes, an image folder or an .npz")
    p.add_argument("--task", required=True, metavar="NAME[=classes]",
                   help="NAME: a whole label of the data (e.g. y); NAME=a,b: a group of its classes; "
                   "NAME=a: one-vs-rest for class a against the rest of the data")
    p.add_argument("--label", default=None, help="which label of the data the task reads (default: NAME, or the only one)")
    p.add_argument("--teacher", default=None, help="a teacher that knows the task, to distil from (loss_kd)")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory "
                   "teacher (default: those the run records for the same teacher)")
    p.add_argument("--test-data", default=None, help="separate test data (otherwise a seeded part is held out)")
    p.add_argument("--epochs", type=argtypes.epochs, default=None)
    p.add_argument("--batch-size", type=argtypes.batch_size, default=None)
    p.add_argument("--lr", type=argtypes.learning_rate, default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=argtypes.seed, default=None)
    p.add_argument("--threads", type=argtypes.threads, default=None, help="CPU threads for training")
    p.add_argument("--out", default=None, help="run folder to write bricks/NAME.* into (default: RUN)")
    p.add_argument("--replace", action="store_true", help="overwrite a brick of the same task name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace):
    from kfstudio.core.grow import GrowConfig

    fields = {"data": args.data, "task": args.task, "label": args.label, "test_data": args.test_data,
              "teacher": args.teacher, "teacher_weights": args.weights, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "device": args.device, "seed": args.seed, "num_threads": args.threads}
    return GrowConfig(**{k: v for k, v in fields.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from kfstudio.core.runs import RunControl
    from kfstudio.io.grow_run import iter_add_brick

    config = config_from_args(args)
    control = RunControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.cancel())
    try:
        added = drive(iter_add_brick(args.run_folder, config, out=args.out, replace=args.replace, control=control),
                      quiet=args.quiet)
    finally:
        signal.signal(signal.SIGINT, previous)
    result = added.result
    metrics = result.final.tasks[result.task.name]
    print(f"\n{result.task.title} ({result.task.kind}): test accuracy {_pct(metrics.accuracy)} on {metrics.samples} images"
          + (f", teacher {_pct(result.teacher_metrics.accuracy)}" if result.teacher_metrics else ""))
    state = "Cancelled" if result.cancelled else "Finished"
    print(f"{state} after {result.epochs_done} epoch(s) in {result.elapsed_s:.1f} s. Wrote {added.written[0]}; "
          f"the common module is unchanged (fingerprint {added.common_fingerprint}).")
    return 130 if result.cancelled else 0


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{value:.2%}"


def drive(gen, quiet: bool = False):
    """Consume a training generator's reports with a progress bar; return its result."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            report = next(gen)
            if report.kind == "setup":
                for message in report.messages:
                    print(message)
                bar = tqdm(total=report.total_steps, unit="step", disable=quiet, dynamic_ncols=True, file=sys.stderr)
            elif report.kind == "step" and bar is not None:
                bar.update(report.step - bar.n)
                bar.set_postfix(loss=f"{report.losses['loss']:.3f}", cls=f"{report.losses['loss_cls']:.3f}")
            elif report.kind == "eval" and bar is not None:
                text = ", ".join(f"{k} {_pct(m.accuracy)}" for k, m in report.tasks.items())
                bar.write(f"epoch {report.epoch}: {text}")
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()
