"""``kfstudio factorize``: the engine with a terminal progress bar and a final table."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from pathlib import Path

from kfstudio.cli import argtypes
from kfstudio.cli.launch import launch, resume_command

# Keep in step with kfstudio.core.imb.INFOMAX_VARIANTS and kfstudio.core.students.brick_input.BRICK_INPUTS
# (not imported: the CLI starts without torch).
INFOMAX_CHOICES = ("1/B", "authors")
BRICK_INPUT_CHOICES = ("image", "stage1", "stage2")
LOST_A_PARTNER = 3  # the exit code of a process whose partner in a run of many failed


def _add_objective_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("objective", "weights of the InfoMax-Bottleneck terms (defaults: the authors' CIFAR-10 "
                             "configuration, with the 1/B InfoMax variant)")
    g.add_argument("--infomax", choices=INFOMAX_CHOICES, default=None,
                   help="InfoMax joint-term variant: 1/B (default) or authors (as in the authors' code: the joint term "
                   "over B², which collapses)")
    g.add_argument("--l-feat", type=argtypes.number(0), default=None, help="weight of the InfoMax term (default 1)")
    g.add_argument("--l-kd", type=argtypes.number(0), default=None, help="weight of the distillation term (default 0.1)")
    g.add_argument("--temperature", type=argtypes.number(0, above=True), default=None,
                   help="distillation temperature (default 10)")
    g.add_argument("--w-task", type=argtypes.number(0), default=None,
                   help="weight of the cross-entropy on the brick's own features alone (default 1)")
    g.add_argument("--beta", type=argtypes.number(0), default=None,
                   help="weight of the InfoMin term that keeps each brick small (default 0.001)")
    g.add_argument("--gaussian-bricks", action="store_true",
                   help="bricks predict a mean and a variance and sample their features in training (a VAE-style "
                   "InfoMin)")
    g.add_argument("--z-dim", type=argtypes.z_dim, default=None, metavar="N",
                   help="size of the shared latent (z_c and each brick's z_k): the common module learns a linear "
                   "projection to N (default: no projection, the common module's last stage width)")


def _add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many processes", "the same run on several GPUs or machines, through torchrun "
                             "(torchrun --nproc-per-node N -m kfstudio factorize ...) or --nproc-per-node; "
                             "--batch-size is the batch of all processes together")
    g.add_argument("--nproc-per-node", type=argtypes.whole(1, 64, "a number of processes"), default=None, metavar="N",
                   help="start this many processes on this machine (one per GPU; on the CPU, gloo) through "
                   "torch.distributed.run")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the batch of every process (SyncBatchNorm), not per process")
    g.add_argument("--infomax-stats", choices=("local", "global"), default=None,
                   help="local (default, as the authors' code): the objective's batch statistics per process; "
                   "global: over the whole batch (InfoMax and InfoMin see every process's samples)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "factorize", help="factorize a teacher into a common module and task bricks",
        description="Train a common-knowledge module and one brick per task from a teacher with the "
        "InfoMax-Bottleneck objective, and write them to --out.")
    p.add_argument("--teacher", default="builtin:digits",
                   help="builtin:digits, builtin:shapes, package.module:function, or a .pt/.ts/.pt2/.onnx file")
    p.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory teacher")
    p.add_argument("--input", type=argtypes.input_spec, default=None, help="teacher input C,H,W[:mean:std] when the file does not say")
    p.add_argument("--tap", action="append", default=[], help="teacher layer to read features from (repeatable)")
    p.add_argument("--data", default=None, help="builtin:digits, builtin:shapes, an image folder or an .npz "
                   "(default: the teacher's built-in data)")
    p.add_argument("--test-data", default=None, help="separate test data (otherwise a seeded part is held out)")
    p.add_argument("--tasks", default=None, help="auto (default), heads, one-vs-rest[:a,b], out1,out2, "
                   "or groups 'small=0,1,2;large=7,8,9'")
    p.add_argument("--out", required=True, help="folder for common.safetensors, bricks/ and the checkpoint")
    p.add_argument("--epochs", type=argtypes.epochs, default=None)
    p.add_argument("--batch-size", type=argtypes.batch_size, default=None)
    p.add_argument("--lr", type=argtypes.learning_rate, default=None)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--common", default=None, help="common-module architecture (tiny, tiny-mid, resnet, mobilenetv2)")
    p.add_argument("--common-width", type=argtypes.width, default=None)
    p.add_argument("--task-net", default=None, help="task-net architecture (tiny, tiny-mid, resnet, mobilenetv2, or "
                   "auto: the default, tiny-mid for bricks that read stage1 when the budget affords its wider middle "
                   "stage at the widths it chose, else tiny)")
    p.add_argument("--task-width", type=argtypes.width, default=None)
    p.add_argument("--budget", default=None, metavar="SHARE",
                   help="size the students so that the assembly of all tasks does at most this share of the "
                   "teacher's multiply-adds on its input: 1x (default), 1/2, 1/4, 50%%, ...; of the sizes that fit it "
                   "prefers channel counts in multiples of 16, which run fastest. Explicit --common-width or "
                   "--task-width win over it (the budget is then not applied)")
    p.add_argument("--brick-input", choices=BRICK_INPUT_CHOICES, default=None,
                   help="what each brick reads: stage1 (default) or stage2 of the common module (light bricks: a "
                   "shared trunk with small per-task tails, cheaper to assemble), or image (the paper's task "
                   "networks, each a whole backbone beside the common module)")
    p.add_argument("--stem-stride", choices=("auto", "1", "2"), default=None,
                   help="the students' first convolution: auto (default) halves the resolution for images of 32 px or "
                   "more, as many teachers of such images do, so a budget buys wider, faster layers; 1 keeps the "
                   "image's resolution in the first stage (the paper's CIFAR stem: finer detail, slower); 2 halves it")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="train on copies of the images shifted by up to a pixel, each labelled by the teacher "
                   "(default; the teacher then runs on every batch); --no-augment: the data's own images only")
    p.add_argument("--seed", type=argtypes.seed, default=None)
    p.add_argument("--threads", type=argtypes.threads, default=None, help="CPU threads for training")
    p.add_argument("--teacher-cache-mb", type=argtypes.number(0), default=None,
                   help="keep the teacher's outputs for the training images only within this many MB (default "
                   "2048); above it the teacher runs on every batch")
    p.add_argument("--stream-above-mb", type=argtypes.number(0), default=None, metavar="MB",
                   help="an image folder or .npz whose decoded images take more than this streams from disk, batch "
                   "by batch, instead of being held in memory (default 256; 0: always stream)")
    p.add_argument("--workers", type=argtypes.whole(0, 64, "a number of worker processes"), default=None, metavar="N",
                   help="processes that read streamed data from disk (default: half the free cores, 1 to 4; 0: read "
                   "in the training process)")
    p.add_argument("--calibration-fraction", type=argtypes.number(0, 0.5), default=None, metavar="F",
                   help="part of the training images held out to calibrate each one-vs-rest brick as a detector "
                   "of its class (default 0.1, at most 5 000 images; 0: none, and subsets cannot say 'none of these')")
    p.add_argument("--resume", default=None, help="a checkpoint.pt to continue from")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_objective_arguments(p)
    _add_distributed_arguments(p)
    p.set_defaults(run=run)


def _free_threads() -> int:
    from kfstudio.core.devices import default_threads
    return default_threads()  # on a busy shared machine, 1: spinning OpenMP threads made runs 3-24x slower


def _stem_stride(text: str) -> int | str:
    return text if text == "auto" else int(text)


def config_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from kfstudio.core.factorize import FactorizeConfig
    from kfstudio.core.imb import IMBWeights
    from kfstudio.core.students.budget import (RECOMMENDED_AUGMENT, RECOMMENDED_BRICK_INPUT, RECOMMENDED_BUDGET,
                                               RECOMMENDED_STEM_STRIDE, AUTO_TASK_NET)

    data = args.data or (args.teacher if args.teacher.startswith("builtin:") else None)
    if data is None:
        from kfstudio.core.errors import ConfigError
        raise ConfigError("Say which data to train on with --data (an image folder, an .npz file or builtin:NAME).")
    fields = {
        "teacher": args.teacher, "data": data, "test_data": args.test_data, "tasks": args.tasks,
        "teacher_weights": args.weights, "teacher_input": args.input, "teacher_taps": tuple(args.tap),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
        "common": args.common, "common_width": args.common_width, "task_width": args.task_width,
        "brick_input": args.brick_input or RECOMMENDED_BRICK_INPUT, "task_net": args.task_net or AUTO_TASK_NET, "seed": args.seed,
        "stem_stride": _stem_stride(args.stem_stride) if args.stem_stride else RECOMMENDED_STEM_STRIDE,
        "augment": RECOMMENDED_AUGMENT if args.augment is None else args.augment,
        "num_threads": args.threads or _free_threads(), "resume": args.resume,
        "teacher_cache_mb": args.teacher_cache_mb, "stream_above_mb": args.stream_above_mb, "workers": args.workers,
        "calibration_fraction": args.calibration_fraction, "checkpoint": str(Path(args.out) / "checkpoint.pt"),
    }
    explicit = args.common_width is not None or args.task_width is not None   # explicit sizes win over a budget
    fields["budget"] = None if explicit else (args.budget or RECOMMENDED_BUDGET)
    config = FactorizeConfig(**{k: v for k, v in fields.items() if v is not None})
    weights = {"infomax": args.infomax, "l_feat": args.l_feat, "l_kd": args.l_kd, "temperature": args.temperature,
               "w_task": args.w_task, "beta": args.beta}
    imb = replace(IMBWeights(), **{k: v for k, v in weights.items() if v is not None})
    return replace(config, imb=imb, gaussian_bricks=args.gaussian_bricks, z_dim=args.z_dim, sync_bn=args.sync_bn,
                   infomax_stats=args.infomax_stats or "local")


def run(args: argparse.Namespace) -> int:
    from kfstudio.core import distributed
    from kfstudio.io.run_folder import check_folder_writable, check_output_folder

    config = config_from_args(args)
    if distributed.launched():  # a process of a run of many: the launcher holds the folder
        return _run_launched(args, config)
    from kfstudio.io.locks import writing
    check_folder_writable(args.out)  # a file, /proc, ...: said in its own words before any lock file is made
    with writing(args.out, "kfstudio factorize"):  # one writer per folder, from the first cleanup to the last file
        check_output_folder(args.out)  # before training: a run never fails at the end for a bad --out
        return _run_here(args, config)


def _run_here(args: argparse.Namespace, config) -> int:
    if (args.nproc_per_node or 1) > 1:
        return launch(args)
    return _run_launched(args, config)


def _run_launched(args: argparse.Namespace, config) -> int:
    from kfstudio.core import distributed

    ctx = distributed.setup(args.device)
    if not ctx.distributed:
        return _train_and_write(args, config)
    if args.threads is None:  # this machine's free cores, shared by its processes
        from dataclasses import replace
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        config = replace(config, num_threads=max(1, (config.num_threads or 1) // local))
    code = _run_process(args, config, ctx)
    if code != LOST_A_PARTNER:
        distributed.teardown()  # only when every process got here: a failed run is torchrun's to stop
    return code


def _run_process(args: argparse.Namespace, config, ctx) -> int:
    """One process of a run of many: process 0 prints and writes, the others stay quiet. A
    process whose partner failed stops with exit code LOST_A_PARTNER and no message of its own (the
    failing process says what went wrong; torchrun stops the rest)."""

    from kfstudio.core.distributed import lost_a_partner

    try:
        if ctx.is_main:
            return _train_and_write(args, config)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            args.quiet = True
            result = _train(args, config, log=None)
        return 130 if result.cancelled else 0
    except RuntimeError as exc:
        if not lost_a_partner(exc):
            raise
        return LOST_A_PARTNER


def _train(args: argparse.Namespace, config, log):
    from kfstudio.core.runs import RunControl

    control = RunControl()
    previous = signal.signal(signal.SIGINT, _cancel_once(control))
    try:
        return drive(config, control, quiet=args.quiet, log=log)
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_and_write(args: argparse.Namespace, config) -> int:
    from kfstudio.io.reports import ReportLog
    log = ReportLog(args.out, keep_existing=bool(config.resume))  # reports.jsonl: the studio draws it again
    result = _train(args, config, log)
    from kfstudio.io.bricks import save_factorization
    written = save_factorization(result, args.out)
    log.close()
    print_table(result)
    state = "Cancelled" if result.cancelled else "Finished"
    print(f"{state} after {result.epochs_done} epoch(s) in {result.elapsed_s:.1f} s. "
          f"Wrote the common module and {len(result.tasks)} bricks to {args.out}/ ({len(written)} files).")
    if result.cancelled and result.checkpoint:
        print(f"Continue with: {resume_command(getattr(args, 'argv', None), result.checkpoint)}")
    return 130 if result.cancelled else 0



def _cancel_once(control):
    def handler(_signum, _frame):
        if control.cancelled:  # the second Ctrl-C: stop now; every file on disk is whole (atomic writes)
            print("\nAborted. The last checkpoint written is kept.", file=sys.stderr, flush=True)
            os._exit(130)
        print("\nStopping after this step and saving a checkpoint (press Ctrl-C again to abort)...",
              file=sys.stderr, flush=True)
        control.cancel()
    return handler


def drive(config, control, quiet: bool = False, log=None):
    """Consume the factorization generator with a tqdm progress bar; return the result."""
    from tqdm import tqdm

    from kfstudio.core.factorize import iter_factorize

    gen = iter_factorize(config, control=control, progress=True)
    bar = None
    last_step, warned = None, False
    setting_up = SetupProgress(quiet)
    try:
        while True:
            report = next(gen)
            if log is not None:
                log.append(report)
            if report.kind == "progress":
                setting_up.show(report)
            elif report.kind == "setup":
                setting_up.close()
                for message in report.messages:
                    print(message)
                print(f"Factorizing into {len(report.task_names)} tasks on {report.device}: "
                      f"{', '.join(report.task_titles)}")
                bar = tqdm(total=report.total_steps, initial=report.start_step, unit="step",
                           disable=quiet, dynamic_ncols=True, file=sys.stderr)
            elif report.kind == "step" and bar is not None:
                last_step = report
                bar.update(report.step - bar.n)
                bar.set_postfix(loss=f"{report.losses['loss']:.3f}", cls=f"{report.losses['loss_cls']:.3f}",
                                kd=f"{report.losses['loss_kd']:.3f}", img_s=f"{report.samples_per_s:.0f}")
            elif report.kind == "eval" and bar is not None:
                groups = report.groups or report.tasks
                text = ", ".join(f"{k} {m.accuracy if m.accuracy is not None else m.agreement:.2%}"
                                 for k, m in list(groups.items())[:6])
                bar.write(f"epoch {report.epoch}: {text}")
                warned = warned or _warn_if_collapsed(last_step, config.imb)
    except StopIteration as stop:
        return stop.value
    finally:
        setting_up.close()
        if bar is not None:
            bar.close()


class SetupProgress:
    """The set-up before the first step: a line per stage, and on stderr a bar for the teacher's passes."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.stage = quiet, None, None

    def show(self, report) -> None:
        from tqdm import tqdm

        if report.stage != self.stage:
            self.close()
            self.stage = report.stage
            if not report.total:
                print(report.text, flush=True)
            else:
                self.bar = tqdm(total=report.total, desc=report.stage, unit="img", disable=self.quiet,
                                dynamic_ncols=True, file=sys.stderr)
        if self.bar is not None:
            self.bar.update(report.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


def _warn_if_collapsed(step_report, weights) -> bool:
    """Print the collapse warning (one line, stderr), judged at the end of an epoch; True if printed."""
    from tqdm import tqdm

    from kfstudio.core.imb import collapse_warning

    if step_report is None:
        return False
    message = collapse_warning(step_report.infomax_health, weights, step_report.step)
    if message:
        tqdm.write(message, file=sys.stderr)
    return message is not None


def _pct(value) -> str:
    return "   -   " if value is None or math.isnan(value) else f"{value:7.2%}"


def _auc(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def print_table(result) -> None:
    """Per task (and per one-vs-rest group): brick accuracy and agreement against the teacher.

    A one-vs-rest brick also shows its balanced accuracy (the mean of its hit rates on its class
    and on the rest): answering "no" every time scores 90 % plain but 50 % balanced. These are
    the group's argmax; a calibrated brick used alone, as a detector of its class, shows its AUC
    and its balanced accuracy at its calibrated threshold (``result.detectors``)."""
    rows = [(t.title, result.final.tasks[t.name], result.teacher_metrics.get(t.name), result.detectors.get(t.name))
            for t in result.tasks]
    rows += [(f"all {name} (together)", m, result.teacher_metrics.get(name), None)
             for name, m in result.final.groups.items()]
    width = max(len(r[0]) for r in rows)
    scored = max((m.samples for _, m, _, _ in rows), default=0)
    print(f"\nScored on {scored:,} test images: {result.data_note}")
    alone = " alone: AUC  detector" if result.detectors else ""
    print(f"{'task':<{width}}  teacher acc   brick acc   balanced   agrees with teacher{alone}")
    for title, m, t, d in rows:
        detector = f"   {_auc(d.auc):>10}  {_pct(d.accuracy):>8}" if d else ""
        print(f"{title:<{width}}  {_pct(t.accuracy if t else None):>11}   {_pct(m.accuracy):>9}   "
              f"{_pct(m.balanced_accuracy):>8}   {_pct(m.agreement):>19}{detector}")
    rest = [(name, m.rest_accuracy) for name, m in result.final.groups.items() if m.rest_accuracy is not None]
    for name, value in rest:
        print(f"{name}: images of the classes left out that were rightly called \"none of these\": {_pct(value).strip()}")
