"""``kfstudio factorize --nproc-per-node N``: the same run as ``torchrun --nproc-per-node N -m
kfstudio factorize ...``, started through ``torch.distributed.run`` for people who do not know
torchrun. torchrun's own agent watches the processes: when one fails it stops the others, and
this prints one line saying which failed and what is kept. Ctrl-C reaches every process through
the agent; they stop together after the same step, as a one-process run does. ``resume_command``
writes the command line that continues a stopped run, for this launcher and for one process alike."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def torchrun_arguments(args: argparse.Namespace) -> list[str]:
    """torchrun's command line for this run: one machine, a free port, this very command."""
    return ["--standalone", "--nnodes", "1", "--nproc-per-node", str(args.nproc_per_node),
            "--module", "kfstudio", *args.argv]


def launch(args: argparse.Namespace) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    n = args.nproc_per_node
    _check_gpus(args.device, n)  # once, here, rather than once in every process
    # torchrun sets one thread per process and warns that it does; set it ourselves instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
    from kfstudio.io.locks import lend_to_children
    lend_to_children(args.out)  # this process holds --out for the whole run; process 0 writes it
    try:
        torchrun(get_args_parser().parse_args(torchrun_arguments(args)))
    except SignalException:
        # Ctrl-C: torchrun's agent passed it on to every process; they stopped at the same step and
        # process 0 wrote the bricks, the checkpoint and the command that continues (the agent
        # waits up to 30 s for them, then kills them; the last checkpoint written stays whole).
        return 130
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        checkpoint = Path(args.out) / "checkpoint.pt"
        kept = (f"The last good checkpoint is kept ({checkpoint}); continue with: "
                f"{resume_command(args.argv, str(checkpoint))}" if checkpoint.is_file()
                else "No checkpoint had been written yet (one is written after each epoch).")
        print(f"kfstudio factorize: process {rank} of {n} failed (exit code {failure.exitcode}; its message is "
              f"above), so the run was stopped. {kept}", file=sys.stderr, flush=True)
        return 130 if failure.exitcode == 130 else 1
    return 0


def _check_gpus(device: str, n: int) -> None:
    import torch

    from kfstudio.core.errors import ConfigError

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and n > torch.cuda.device_count():
        raise ConfigError(f"--nproc-per-node {n} needs {n} GPUs, one per process, but this machine has "
                          f"{torch.cuda.device_count()}; use fewer processes or --device cpu.")

def resume_command(argv: list[str] | None, checkpoint: str) -> str:
    """The command that continues this run, runnable as printed: the same flags plus --resume."""
    kept, skip = [], False
    for arg in argv or ["factorize", "..."]:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["kfstudio", *kept, "--resume", checkpoint])
