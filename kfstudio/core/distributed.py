"""One run over many processes: torchrun's process group, rank helpers and batch statistics
taken across processes.

A run launched by ``torchrun`` (or ``kfstudio factorize --nproc-per-node N``, which calls
``torch.distributed.run``) finds RANK / WORLD_SIZE / LOCAL_RANK in its environment;
``setup`` joins the process group (NCCL on CUDA, gloo on the CPU) and the training loop asks
``context()`` who it is. Without those variables nothing here does anything and a run is
one process, exactly as before.

- Every process draws the same seeded global batch and trains on its ``shard`` (a contiguous
  slice in rank order, so the shards joined are the global batch).
- ``gather`` joins a tensor's rows from every process with gradients flowing back to each
  (``torch.distributed.nn.functional.all_gather``); ``--infomax-stats global`` computes the
  whole objective on the gathered batch.
- ``sync_batchnorm`` swaps every BatchNorm for one whose batch statistics cover all
  processes: ``torch.nn.SyncBatchNorm`` on CUDA; on the CPU, where torch's SyncBatchNorm
  refuses to run, ``GlobalBatchNorm`` below. ``restore`` puts the plain BatchNorms back so the
  trained network, its checkpoints and its exports are those of a one-process run.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError, TrainingError

# Test hook, read only by the training loop: "RANK:STEP" makes that process's loss NaN at that
# (1-based) step, so tests can watch a run lose one process for real. Never set it otherwise.
NAN_HOOK_ENV = "KFSTUDIO_TEST_NAN_AT"
INFOMAX_STATS = ("local", "global")


@dataclass(frozen=True)
class Context:
    """Who this process is in its run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, run files and reports, and prints."""
        return self.rank == 0


def launched() -> bool:
    """True in a process started by torchrun for a run of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def context() -> Context:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    rank = dist.get_rank()
    return Context(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))


def setup(device: str = "auto") -> Context:
    """Join torchrun's process group when launched by it; the backend follows the device."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return context()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but this machine has no usable CUDA GPU.")
        per_node, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if per_node > gpus:  # NCCL cannot put two processes of one run on one GPU
            raise ConfigError(f"{per_node} processes on this machine need {per_node} GPUs, but it has {gpus}; "
                              f"use --nproc-per-node {gpus} (or --device cpu).")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return context()


def teardown() -> None:
    """Leave the process group (after a barrier, so no process exits while others still talk)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def device_for(device: torch.device, ctx: Context) -> torch.device:
    """On CUDA each process of a machine takes its own GPU (LOCAL_RANK)."""
    if ctx.distributed and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)  # setup made sure there is one GPU per process
    return device


def data_parallel(module: nn.Module, ctx: Context, device: torch.device) -> nn.Module:
    """``module`` under DistributedDataParallel in a run of many processes (gradients averaged
    over the processes at every step), else ``module`` itself."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # A one-output head's gradient comes back with other strides; DDP copies it and says so once.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def shard(index: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This process's contiguous part of a global batch (sizes differ by at most one)."""
    return index.tensor_split(ctx.world_size)[ctx.rank] if ctx.distributed else index


def min_last_batch(ctx: Context) -> int:
    """A last batch smaller than this is dropped: every process needs 2 samples for BatchNorm."""
    return 2 * ctx.world_size


def shard_rows(batch: int, ctx: Context) -> list[int]:
    """How many rows of a global batch of ``batch`` each process holds (see ``shard``)."""
    return [len(part) for part in torch.arange(batch).tensor_split(ctx.world_size)]


def gather(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows of ``t`` from every process, in rank order, with gradients back to each process's
    rows. Process r holds ``rows[r]`` rows; all_gather needs one shape, so pad, gather, trim."""
    most = max(rows)
    padded = F.pad(t, (0, 0) * (t.dim() - 1) + (0, most - t.shape[0])) if t.shape[0] < most else t
    return torch.cat([part[:n] for part, n in zip(_all_gather(padded), rows)])


def gather_all(tensors: list[torch.Tensor], rows: list[int]) -> list[torch.Tensor]:
    """``gather`` for many tensors of one batch at once: one collective per dtype (their rows
    side by side), not one per tensor — on gloo each collective costs a round trip."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for indices in by_dtype.values():
        flat = [tensors[i].reshape(tensors[i].shape[0], -1) for i in indices]
        joined = gather(torch.cat(flat, 1), rows)
        for i, part in zip(indices, joined.split([f.shape[1] for f in flat], 1)):
            out[i] = part.reshape(-1, *tensors[i].shape[1:])
    return out  # type: ignore[return-value]


def summed(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over every process, differentiable (through all_gather, not the
    deprecated autograd all_reduce)."""
    return torch.stack(_all_gather(t)).sum(0)


def _all_gather(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """torch.distributed.nn.functional.all_gather (autograd: the gradient of each process's rows
    is summed over the processes), without its notice that it may move to a private module."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_gather(t)


@torch.no_grad()
def mean_over_processes(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of a detached tensor over every process (for reported figures)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / ctx.world_size


def any_process(flag: bool, ctx: Context, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on one (a cancel stops all at the same step)."""
    import torch.distributed as dist

    if not ctx.distributed:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def lost_a_partner(exc: BaseException) -> bool:
    """True for the error a collective raises when another process of the run has died."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(
        word in text for word in ("connection closed by peer", "connection reset", "gloo", "nccl")))


def nan_hook(ctx: Context, step: int) -> bool:
    """True when the test hook ``NAN_HOOK_ENV`` asks this process to fail at this step."""
    wanted = os.environ.get(NAN_HOOK_ENV)
    if not wanted:
        return False
    try:
        rank, at = (int(v) for v in wanted.split(":"))
    except ValueError:
        raise TrainingError(f"{NAN_HOOK_ENV} must read RANK:STEP, not '{wanted}'.") from None
    return rank == ctx.rank and at == step


# ---------------------------------------------------------------- BatchNorm across processes

class GlobalBatchNorm(nn.Module):
    """A BatchNorm whose training statistics cover the whole batch of every process. It holds
    the original layer's own parameter and buffer tensors under the same names, so a
    state_dict (a checkpoint) reads exactly as the plain layer's. In eval mode, or with one
    process, it computes what that BatchNorm does. The mean and the variance are taken in two
    passes (sum, then sum of squared deviations), as accurate as one process's BatchNorm."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        if not (bn.affine and bn.track_running_stats) or bn.momentum is None:
            raise ConfigError("--sync-bn needs affine BatchNorm layers that keep running statistics.")
        self.weight, self.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(bn, name))
        self.momentum, self.eps = bn.momentum, bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        if not (dist.is_initialized() and dist.get_world_size() > 1):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                self.momentum, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        # The sum and the count in one collective, then the squared deviations in a second.
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        total = summed(local)
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = summed(centred.pow(2).sum(dims)) / count
        with torch.no_grad():
            n = float(count)
            self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var.detach() * (n / max(1.0, n - 1)), alpha=self.momentum)
        return centred * torch.rsqrt(var + self.eps).view(shape) * self.weight.view(shape) + self.bias.view(shape)


def sync_batchnorm(modules: list[nn.Module], device: torch.device) -> Callable[[], None]:
    """Swap every BatchNorm in ``modules`` for one with statistics across processes (in place,
    keeping the same parameter and buffer tensors); return the function that swaps them back."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for root in modules:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    synced = nn.SyncBatchNorm.convert_sync_batchnorm(child) if device.type == "cuda" \
                        else GlobalBatchNorm(child)
                    setattr(parent, name, synced)
                    swapped.append((parent, name, child))

    def restore() -> None:
        for parent, name, original in swapped:
            # The same tensors unless .to() moved them since: copy the state back either way.
            original.load_state_dict(getattr(parent, name).state_dict())
            setattr(parent, name, original)
    return restore
