"""What every run of the engine shares: factorizing and growing a brick alike.

Training, growing a brick and training a demo teacher are generators: they yield small frozen
reports while they work (``SetupReport``, ``StepReport``, ``EvalReport``, ``CheckpointReport``)
and return their result. ``RunControl`` pauses, resumes and cancels a run from another thread.
``TrainLoop`` is the inner loop both factorize and grow run (the same batches, learning-rate
schedule, clipping, NaN checks and reports); ``drain`` is the one loop that runs a generator to
its end, for the CLI, the studio's child processes, the benchmarks and the tests.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Iterator, TypeVar

import torch
from torch import nn

from kfstudio.core import distributed
from kfstudio.core.data import feeds
from kfstudio.core.data.sources import random_shifts
from kfstudio.core.devices import autocast
from kfstudio.core.errors import TrainingError
from kfstudio.core.imb import TERMS, IMBObjective, IMBWeights, StageHealth
from kfstudio.core.measures.metrics import TaskMetrics
from kfstudio.core.progress import ProgressReport
from kfstudio.core.students.factor_network import FactorNetwork

_Report = TypeVar("_Report")
_Result = TypeVar("_Result")


def drain(run: Generator[_Report, None, _Result], on_report: Callable[[_Report], None] | None = None) -> _Result:
    """Run ``run`` to its end, handing every report to ``on_report``; return what it returns."""
    while True:
        try:
            report = next(run)
        except StopIteration as stop:
            return stop.value
        if on_report is not None:
            on_report(report)

@dataclass(frozen=True, kw_only=True)
class TrainingSchedule:
    """How a run trains, shared by ``FactorizeConfig`` and ``GrowConfig`` (keyword-only, so each
    config keeps its own fields first)."""

    epochs: int | None = None  # None: about AUTO_STEPS optimizer steps, between 3 and 40 epochs
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    grad_clip: float = 35.0
    imb: IMBWeights = IMBWeights()
    augment: bool = False
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    report_every: int = 5



@dataclass(frozen=True)
class SetupReport:
    kind = "setup"
    messages: tuple[str, ...]
    task_names: tuple[str, ...]
    task_titles: tuple[str, ...]
    device: str
    steps_per_epoch: int
    total_steps: int
    start_step: int
    parameters: dict[str, int]
    teacher_metrics: dict[str, TaskMetrics]


@dataclass(frozen=True)
class StepReport:
    kind = "step"
    step: int
    total_steps: int
    epoch: float
    losses: dict[str, float]
    lr: float
    samples_per_s: float
    eta_s: float
    elapsed_s: float
    infomax_health: tuple[StageHealth, ...] = ()  # per common-module stage, mean over the report's steps


@dataclass(frozen=True)
class EvalReport:
    kind = "eval"
    epoch: int
    step: int
    tasks: dict[str, TaskMetrics]
    groups: dict[str, TaskMetrics]


@dataclass(frozen=True)
class CheckpointReport:
    kind = "checkpoint"
    epoch: int
    path: str


Report = ProgressReport | SetupReport | StepReport | EvalReport | CheckpointReport


class RunControl:
    """Pause, resume and cancel a run from another thread (or a signal handler)."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._cancelled = threading.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_while_paused(self) -> None:
        self._running.wait()


def learning_rate(config, step: int, total: int) -> float:
    warmup = max(1, total // 50)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "step":
        return config.lr * (0.1 ** sum(step >= total * f for f in (0.5, 0.75)))
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---------------------------------------------------------------- the loop

def batches(n: int, batch_size: int, seed: int, epoch: int, min_last: int = 2) -> list[torch.Tensor]:
    """A fixed shuffle per (seed, epoch), so a resumed run sees the same batches. These are the
    global batches: in a run of many processes each takes its shard of every one."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_last:
        batches.pop()  # a batch of one (one per process) has no batch statistics
    return batches


class TrainStep(nn.Module):
    """The student and the objective as one module, so that one DDP wrapper covers the
    student (common module and bricks) and the InfoMax projectors."""

    def __init__(self, network: FactorNetwork, objective: IMBObjective) -> None:
        super().__init__()
        self.network, self.objective = network, objective

    def forward(self, x, teacher_logits, teacher_feats, targets, gather=None) -> dict[str, torch.Tensor]:
        stages, bricks = self.network.forward_train(x)
        return self.objective(stages, bricks, teacher_logits, teacher_feats, targets, gather=gather)


class TrainLoop:
    """The inner training loop; holds the running sums between reports."""

    def __init__(self, config, p, trainer: nn.Module, objective, optimizer, device, control: RunControl,
                 started: float, total_steps: int, step: int, ctx: distributed.Context) -> None:
        self.config, self.p, self.trainer, self.objective = config, p, trainer, objective
        self.ctx = ctx
        self.optimizer, self.device, self.control = optimizer, device, control
        self.started, self.total_steps, self.step = started, total_steps, step
        self.stopped = False
        self.last_losses: dict[str, float] = {}
        # Loss terms are summed on the device and read back once per report, not every step.
        self._term_names: tuple[str, ...] = ()
        self._sums: torch.Tensor | None = None
        self._health_sums: torch.Tensor | None = None
        self._count = 0
        self._samples = 0
        self._window_start = time.perf_counter()
        self._paused_s = 0.0
        self._shift_gen = torch.Generator().manual_seed(config.seed + 17)
        self._feed = feeds.feed(p.train, device, getattr(config, "workers", 0))
        self._targets = {k: v.to(device) for k, v in p.train_targets.items()}
        self._cache = p.train_cache
        self._params = [q for group in optimizer.param_groups for q in group["params"]]

    def run_epoch(self, epoch: int, skip: int = 0) -> Iterator[StepReport]:
        self.trainer.train()
        order = batches(len(self.p.train), self.config.batch_size, self.config.seed, epoch,
                        distributed.min_last_batch(self.ctx))
        # The images of this process's shard of each batch: indexed in memory, or read ahead from disk.
        with self._feed.epoch([distributed.shard(b, self.ctx) for b in order[skip:]]) as images:
            for i in range(skip, len(order)):
                if self._should_stop():
                    return
                self._train_step(order[i].to(self.device), next(images))
                self.step += 1
                if self.step % self.config.report_every == 0 or i == len(order) - 1:
                    yield self._report(epoch + (i + 1) / len(order))

    def _should_stop(self) -> bool:
        if self.control.paused:
            paused_at = time.perf_counter()
            self.control.wait_while_paused()
            self._paused_s += time.perf_counter() - paused_at
        # In a run of many processes a cancel on one stops them all at the same step.
        self.stopped = self.stopped or distributed.any_process(self.control.cancelled, self.ctx, self.device)
        return self.stopped

    def _teacher_batch(self, index: torch.Tensor, x: torch.Tensor):
        if self._cache is not None:
            logits, feats = self._cache
            return {k: v[index] for k, v in logits.items()}, [f[index] for f in feats]
        return self.p.teacher.outputs_and_features(x)

    def _train_step(self, batch: torch.Tensor, x: torch.Tensor) -> None:
        config, ctx = self.config, self.ctx
        index = distributed.shard(batch, ctx)
        gather = None
        if ctx.distributed and config.infomax_stats == "global":
            rows = distributed.shard_rows(len(batch), ctx)
            gather = lambda tensors: distributed.gather_all(tensors, rows)  # noqa: E731
        if config.augment:
            x = random_shifts(x, self._shift_gen)
        teacher_logits, teacher_feats = self._teacher_batch(index, x)
        lr = learning_rate(config, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, config.precision):
            terms = self.trainer(x, teacher_logits, teacher_feats, {k: v[index] for k, v in self._targets.items()},
                                 gather=gather)
        if distributed.nan_hook(ctx, self.step + 1):
            terms["loss"] = terms["loss"] * float("nan")
        loss = terms["loss"]
        if not torch.isfinite(loss):
            bad = [k for k in TERMS if not torch.isfinite(terms[k])]
            raise TrainingError(
                f"The loss became {float(loss.detach())} at step {self.step + 1} ({', '.join(bad) or 'loss'}); training stopped. "
                f"{checkpoint_note(config)} Try a lower learning rate.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            nn.utils.clip_grad_norm_(self._params, config.grad_clip)
        self.optimizer.step()
        values = torch.stack([v.detach().float() for v in terms.values()])
        self._term_names = tuple(terms)
        self._sums = values if self._sums is None else self._sums + values
        health = self.objective.health
        self._health_sums = health if self._health_sums is None else self._health_sums + health
        self._count += 1
        self._samples += len(index)
        self._lr = lr

    def _window_means(self) -> tuple[list[float], list[list[float]], float]:
        """Mean loss terms and InfoMax health since the last report, and the samples trained on,
        over every process of the run (one read-back, one all-reduce)."""
        if self._sums is None:
            return [], [], float(self._samples)
        rows, cols = self._health_sums.shape
        packed = torch.cat([self._sums, self._health_sums.flatten(),
                            self._sums.new_tensor([float(self._samples)])]) / max(1, self._count)
        packed = distributed.mean_over_processes(packed, self.ctx).tolist()
        samples = packed[-1] * max(1, self._count) * self.ctx.world_size
        health = [packed[len(self._sums) + r * cols: len(self._sums) + (r + 1) * cols] for r in range(rows)]
        return packed[:len(self._sums)], health, samples

    def _report(self, epoch: float) -> StepReport:
        now = time.perf_counter()
        window = max(1e-9, now - self._window_start - self._paused_s)
        means, health, samples = self._window_means()
        losses = dict(zip(self._term_names, means))
        self.last_losses = losses
        rate = samples / window
        steps_left = self.total_steps - self.step
        eta = steps_left * (window / max(1, self._count))
        report = StepReport(self.step, self.total_steps, epoch, losses, self._lr, rate, eta,
                            now - self.started, tuple(StageHealth(*row) for row in health))
        self._sums, self._health_sums, self._count, self._samples = None, None, 0, 0
        self._window_start, self._paused_s = now, 0.0
        return report


def checkpoint_note(config) -> str:
    if config.checkpoint and Path(config.checkpoint).is_file():
        return f"The last good checkpoint is kept ({config.checkpoint})."
    return "No checkpoint had been written yet (one is written after each epoch)."
