"""The factorization loop: one readable generator that the CLI and the studio both drive.

``iter_factorize(config)`` yields small immutable reports (plain numbers only, safe to
hand to another thread) and returns a ``FactorizeResult``. A ``RunControl`` passed in
pauses, resumes or cancels it from another thread; a cancelled run still returns its
bricks as they are. A checkpoint is written after every epoch and on cancel.

Under torchrun (``kfstudio.core.distributed``) every process runs this same loop on its shard
of each seeded global batch, with DDP over the student and the InfoMax projectors; process 0
alone evaluates (on the whole test split) and writes checkpoints.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Generator, Iterator

import torch
from torch import nn

from kfstudio.core import calibration, distributed
from kfstudio.core.data import streaming
from kfstudio.core.checkpoint import (
    check_resume_config,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from kfstudio.core.data.sources import Dataset, DataSplit, random_shift
from kfstudio.core.devices import autocast, pick_device
from kfstudio.core.errors import ConfigError, DataError, TrainingError
from kfstudio.core.imb import TERMS, IMBObjective, IMBWeights, StageHealth, group_targets
from kfstudio.core.measures.detection import Detector
from kfstudio.core.measures.metrics import TaskMetrics, evaluate_logits, teacher_group_logits
from kfstudio.core.names import check_task_names
from kfstudio.core.runs import drain
from kfstudio.core.spec import InputSpec
from kfstudio.core.students import (
    ArchSpec,
    BrickSpec,
    CommonModule,
    FactorNetwork,
    TaskBrick,
    check_z_dim,
)
from kfstudio.core.tasks import Task, TaskGroup, group_tasks, resolve_tasks
from kfstudio.core.teachers.cache import cache_fits, teacher_pass
from kfstudio.core.teachers.loaders import Teacher, TeacherOptions, load_teacher_fitting

AUTO_STEPS = 480  # enough for the demos to reach the teacher; about 40 epochs of digits


def auto_epochs(steps_per_epoch: int) -> int:
    """How many epochs make about ``AUTO_STEPS`` steps (3 to 40)."""
    return max(3, min(40, round(AUTO_STEPS / max(1, steps_per_epoch))))


def check_schedule(config, batch_why: str) -> None:
    """The training-schedule settings every trainer shares (a run's, a new brick's), in words."""
    if config.epochs is not None and config.epochs < 1:
        raise ConfigError("Train for at least one epoch.")
    if config.batch_size < 2:
        raise ConfigError(f"The batch size must be at least 2 ({batch_why}).")
    if not config.lr > 0:
        raise ConfigError("The learning rate must be positive.")
    if config.schedule not in ("cosine", "step"):
        raise ConfigError(f"Unknown learning-rate schedule '{config.schedule}'; use cosine or step.")
    if config.report_every < 1:
        raise ConfigError("report_every must be at least 1.")


@dataclass(frozen=True)
class FactorizeConfig:
    """Everything a factorization run needs; the defaults suit the built-in demos."""

    teacher: str = "builtin:digits"
    data: str = "builtin:digits"
    test_data: str | None = None
    tasks: str | None = None
    teacher_weights: str | None = None
    teacher_input: str | None = None
    teacher_taps: tuple[str, ...] = ()
    common: str = "tiny"
    common_width: float = 1.0
    task_net: str = "tiny"
    task_width: float = 0.5
    gaussian_bricks: bool = False
    z_dim: int | None = None  # the shared latent's size (z_c, each z_k); None: the common module's last stage width
    epochs: int | None = None  # None: about AUTO_STEPS optimizer steps, between 3 and 40 epochs
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    grad_clip: float = 35.0
    imb: IMBWeights = IMBWeights()
    teacher_bn: str = "eval"
    augment: bool = False
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    report_every: int = 5
    checkpoint: str | None = None
    resume: str | None = None
    # Runs of many processes (torchrun): batch statistics across processes; both no-ops in one process
    # except that --sync-bn runs the bricks one by one (the fused runner keeps per-process statistics).
    sync_bn: bool = False
    infomax_stats: str = "local"  # local: per process, as the authors' code; global: over the whole batch
    teacher_cache_mb: float = 2048  # the teacher's outputs for the training set are kept only within this
    stream_above_mb: float = streaming.STREAM_ABOVE_MB  # bigger data (decoded) streams from disk
    workers: int | None = None  # loader processes for streamed data; None: from the free cores, 0: none
    # Held out of training to calibrate one-vs-rest bricks as detectors (core.calibration); 0: none.
    calibration_fraction: float = calibration.CALIBRATION_FRACTION

    def __post_init__(self) -> None:
        check_schedule(self, "the InfoMax term compares samples in a batch")
        check_z_dim(self.z_dim)
        if self.teacher_bn not in ("eval", "train"):
            raise ConfigError("teacher_bn must be 'eval' or 'train'.")
        if not self.teacher_cache_mb >= 0:
            raise ConfigError("The teacher cache budget must be 0 MB or more.")
        if not self.stream_above_mb >= 0 or (self.workers is not None and self.workers < 0):
            raise ConfigError("The streaming threshold must be 0 MB or more and the worker count 0 or more.")
        if not 0 <= self.calibration_fraction < 1:
            raise ConfigError("The calibration fraction must be from 0 up to (not including) 1.")
        if self.infomax_stats not in distributed.INFOMAX_STATS:
            raise ConfigError(f"Unknown InfoMax statistics '{self.infomax_stats}'; use local or global.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FactorizeConfig":
        d = dict(d)
        d["imb"] = IMBWeights(**d.get("imb", {}))
        d["teacher_taps"] = tuple(d.get("teacher_taps", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def teacher_options(self) -> TeacherOptions:
        spec = InputSpec.parse(self.teacher_input) if self.teacher_input else None
        return TeacherOptions(weights=self.teacher_weights, input_spec=spec, taps=self.teacher_taps)


# ---------------------------------------------------------------- reports (plain numbers only)

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


Report = SetupReport | StepReport | EvalReport | CheckpointReport


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


@dataclass
class TeacherInfo:
    """What outlives the run about its teacher (the teacher object itself is not kept)."""

    name: str
    ref: str
    sha256: str
    input_spec: InputSpec
    class_names: dict[str, list[str]]
    feature_note: str

    @classmethod
    def of(cls, teacher: Teacher) -> "TeacherInfo":
        return cls(teacher.name, teacher.ref, teacher.sha256, teacher.input_spec, teacher.class_names,
                   teacher.feature_note)


@dataclass
class FactorizeResult:
    network: FactorNetwork
    tasks: list[Task]
    teacher: TeacherInfo
    config: FactorizeConfig
    final: EvalReport
    teacher_metrics: dict[str, TaskMetrics]
    data_note: str
    epochs_done: int
    cancelled: bool
    checkpoint: str | None
    elapsed_s: float
    last_losses: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)  # calibrated one-vs-rest bricks, by task


# ---------------------------------------------------------------- preparation

@dataclass
class _Prepared:
    teacher: Teacher
    tasks: list[Task]
    groups: list[TaskGroup]
    train: Dataset | streaming.FileImages  # FileImages: streamed from disk, batch by batch
    test: Dataset | streaming.FileImages
    train_targets: dict[str, torch.Tensor]
    test_labels: dict[str, torch.Tensor | None]
    test_teacher_logits: dict[str, torch.Tensor]
    train_cache: tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None
    messages: list[str]
    data_note: str
    workers: int | None = 0  # loader processes for streamed images (None: from the free cores)
    calibration: Dataset | streaming.FileImages | None = None  # held out of training (core.calibration)
    calibration_classes: dict[str, torch.Tensor] = field(default_factory=dict)  # by source


def _source_labels(ds: Dataset, teacher: Teacher, messages: list[str] | None) -> dict[str, torch.Tensor | None]:
    """True labels per teacher output where the data has them, else None."""
    found: dict[str, torch.Tensor | None] = {}
    only = next(iter(ds.labels)) if len(ds.labels) == 1 and len(teacher.class_names) == 1 else None
    for source, classes in teacher.class_names.items():
        name = source if source in ds.labels else only
        y = ds.labels.get(name) if name else None
        if y is not None and len(y) and int(y.max()) >= len(classes):
            raise DataError(f"The data's labels go up to {int(y.max())}, but the teacher's output '{source}' "
                            f"has only {len(classes)} classes.")
        found[source] = y
        if y is None and messages is not None:
            messages.append(f"The data has no labels for '{source}'; the teacher's predictions serve as labels.")
    return found


def _adopt_data_class_names(teacher: Teacher, ds: Dataset) -> None:
    """Name a teacher's classes after the data's when the teacher only numbers them."""
    for source, names in teacher.class_names.items():
        label = source if source in ds.labels else (next(iter(ds.class_names)) if len(ds.class_names) == 1 else None)
        data_names = ds.class_names.get(label) if label else None
        numbered = names == [str(i) for i in range(len(names))]
        if numbered and data_names and len(data_names) == len(names):
            teacher.class_names[source] = list(data_names)


def _prepare(config: FactorizeConfig, device: torch.device, teacher: Teacher | None, data: DataSplit | None) -> _Prepared:
    # config.teacher is what the user named for this run (a flag, the wizard), never read from a file
    split, path_note = (data, None) if data else streaming.load_split(
        config.data, test_ref=config.test_data, seed=config.seed, stream_above_mb=config.stream_above_mb,
        workers=config.workers)
    spec_note = None
    if teacher is None:
        teacher, spec_note = load_teacher_fitting(config.teacher, config.teacher_options(),
                                                  streaming.spec_of(split.train), "the data", allow_code=True)
    spec = teacher.input_spec
    train, test = streaming.prepare(split.train, spec), streaming.prepare(split.test, spec)
    if len(train) < 2 or len(test) < 1:
        raise DataError("There are too few images to train and evaluate on (at least 2 for training, 1 for testing).")
    _adopt_data_class_names(teacher, train)
    tasks = resolve_tasks(config.tasks, teacher.class_names)
    check_task_names(t.name for t in tasks)  # before any training: no two bricks share a file or key
    train, held_out = calibration.hold_out(train, tasks, config.calibration_fraction, config.seed)
    groups = group_tasks(tasks)
    teacher.to(device)
    teacher.set_batchnorm_train(config.teacher_bn == "train")
    messages = [m for m in (spec_note, teacher.describe(), teacher.feature_note, split.note, path_note) if m]
    cache_ok = cache_fits(config, teacher, train, device, messages)
    labels = _source_labels(train, teacher, messages)
    # One pass over the training images only for the cache, or for labels the data does not have.
    needed = cache_ok or any(labels[g.source] is None for g in groups)
    train_logits, train_feats = teacher_pass(teacher, train, device, keep_features=cache_ok,
                                              workers=config.workers) if needed else ({}, [])
    train_targets = {}
    for g in groups:
        source_y = labels[g.source] if labels[g.source] is not None else train_logits[g.source].argmax(1).cpu()
        train_targets[g.name] = group_targets(g, source_y.cpu())
    test_logits, _ = teacher_pass(teacher, test, device, keep_features=False, workers=config.workers)
    p = _Prepared(teacher, tasks, groups, train, test, train_targets,
                  {k: (v.to(device) if v is not None else None) for k, v in _source_labels(test, teacher, None).items()},
                  test_logits, (train_logits, train_feats) if cache_ok else None, messages, split.note,
                  config.workers)
    if held_out is not None:
        p.calibration, p.calibration_classes = held_out, _source_classes(held_out, teacher, device, config.workers)
        messages.append(f"{len(held_out):,} training images are held out to calibrate each brick as a detector.")
    return p


def _source_classes(ds, teacher: Teacher, device: torch.device, workers: int | None) -> dict[str, torch.Tensor]:
    """The class of every image by source: its label, else the teacher's choice."""
    labels = _source_labels(ds, teacher, None)
    guessed = {} if all(v is not None for v in labels.values()) else \
        teacher_pass(teacher, ds, device, keep_features=False, workers=workers)[0]
    return {s: (y if y is not None else guessed[s].argmax(1)).cpu() for s, y in labels.items()}


def build_network(config: FactorizeConfig, tasks: list[Task], spec: InputSpec) -> FactorNetwork:
    common = CommonModule(ArchSpec(config.common, config.common_width, spec.channels), config.z_dim)
    net = ArchSpec(config.task_net, config.task_width, spec.channels)
    bricks = {t.name: TaskBrick(BrickSpec(net, common.z_dim, t.num_outputs, config.gaussian_bricks)) for t in tasks}
    return FactorNetwork(common, bricks, fused=not config.sync_bn)


def _learning_rate(config: FactorizeConfig, step: int, total: int) -> float:
    warmup = max(1, total // 50)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "step":
        return config.lr * (0.1 ** sum(step >= total * f for f in (0.5, 0.75)))
    return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---------------------------------------------------------------- the loop

@torch.no_grad()
def _network_logits(network: FactorNetwork, images, device: torch.device, workers: int | None) -> dict[str, torch.Tensor]:
    was_training = network.training
    network.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    for chunk in streaming.chunks(images, streaming.CHUNK, workers):
        for name, out in network(chunk.to(device)).items():
            logits.setdefault(name, []).append(out.float())
    network.train(was_training)
    return {k: torch.cat(v) for k, v in logits.items()}


def evaluate(network: FactorNetwork, p: _Prepared, device: torch.device, epoch: int, step: int) -> EvalReport:
    joined = _network_logits(network, p.test, device, p.workers)
    tasks, groups = evaluate_logits(p.tasks, joined, p.test_teacher_logits, p.test_labels)
    return EvalReport(epoch, step, tasks, groups)


def _calibrate(network: FactorNetwork, p: _Prepared, device: torch.device) -> dict[str, Detector]:
    """Each one-vs-rest brick's detector: fitted on the held-out images, measured on the test split."""
    if p.calibration is None:
        return {}
    test_classes = {s: (y if y is not None else p.test_teacher_logits[s].argmax(1)).cpu()
                    for s, y in p.test_labels.items()}
    return calibration.calibrate(
        p.tasks, (_network_logits(network, p.calibration, device, p.workers), p.calibration_classes),
        (_network_logits(network, p.test, device, p.workers), test_classes),
        {s: len(names) for s, names in p.teacher.class_names.items()})


def _teacher_metrics(p: _Prepared) -> dict[str, TaskMetrics]:
    """The teacher scored like a student on each task group: its own agreement is 1."""
    task_logits = {}
    for g in p.groups:
        columns = teacher_group_logits(g, p.test_teacher_logits)
        start = 0
        for t in g.tasks:
            task_logits[t.name] = columns[:, start:start + t.num_outputs]
            start += t.num_outputs
    tasks, groups = evaluate_logits(p.tasks, task_logits, p.test_teacher_logits, p.test_labels)
    return {**tasks, **groups}


def _batches(n: int, batch_size: int, seed: int, epoch: int, min_last: int = 2) -> list[torch.Tensor]:
    """A fixed shuffle per (seed, epoch), so a resumed run sees the same batches. These are the
    global batches: in a run of many processes each takes its shard of every one."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < min_last:
        batches.pop()  # a batch of one (one per process) has no batch statistics
    return batches


def iter_factorize(config: FactorizeConfig, *, control: RunControl | None = None, teacher: Teacher | None = None,
                   data: DataSplit | None = None) -> Generator[Report, None, FactorizeResult]:
    """Factorize a teacher into a common module and one brick per task (see module docstring)."""
    control = control or RunControl()
    started = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    ctx = distributed.context()
    device = distributed.device_for(pick_device(config.device), ctx)
    p = _prepare(config, device, teacher, data)
    network = build_network(config, p.tasks, p.teacher.input_spec).to(device)
    teacher_dims = [f.shape[1] for f in p.teacher.features(streaming.head(p.train, 2).to(device))]
    objective = IMBObjective(p.groups, teacher_dims, network.common.stage_dims, config.imb).to(device)
    params = list(network.parameters()) + list(objective.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    step = 0
    if config.resume:
        state = load_checkpoint(config.resume)
        check_resume_config(state, config)
        step = restore_checkpoint(state, p.tasks, network, objective, optimizer)
    # With global InfoMax statistics the projectors already run on the gathered global batch in
    # every process: a synchronized BatchNorm there would count each sample once per process (the
    # running variance's n/(n-1) then used n x processes). Their plain BatchNorm is a one-process run's.
    synced = [network] if config.infomax_stats == "global" else [network, objective]
    restore_bn = distributed.sync_batchnorm(synced, device) if config.sync_bn else None
    trainer = distributed.data_parallel(_TrainStep(network, objective), ctx, device)
    if ctx.rank:
        # Gaussian-brick noise differs per process (process 0 draws a one-process run's).
        torch.manual_seed(config.seed + 7919 * ctx.rank)
    steps_per_epoch = len(_batches(len(p.train), config.batch_size, config.seed, 0, distributed.min_last_batch(ctx)))
    # A run cancelled mid-epoch resumes at the very batch where it stopped (the shuffle is fixed).
    start_epoch, skip = divmod(step, steps_per_epoch)
    if config.resume:
        p.messages.append(f"Resumed from {config.resume} at step {step} (epoch {start_epoch + 1}).")
    if config.epochs is None:
        config = replace(config, epochs=auto_epochs(steps_per_epoch))
        p.messages.append(f"Training for {config.epochs} epochs ({steps_per_epoch} steps each).")
    if ctx.distributed:
        p.messages.append(f"Training on {ctx.world_size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}): "
                          f"each takes its part of every batch of {config.batch_size}; InfoMax statistics "
                          f"{config.infomax_stats}, BatchNorm {'synchronized' if config.sync_bn else 'per process'}; "
                          "process 0 evaluates and writes the files.")
    total_steps = steps_per_epoch * config.epochs
    teacher_metrics = _teacher_metrics(p)
    yield SetupReport(tuple(m for m in p.messages if m), tuple(t.name for t in p.tasks), tuple(t.title for t in p.tasks),
                      str(device), steps_per_epoch, total_steps, step,
                      {"common": sum(x.numel() for x in network.common.parameters()),
                       **{t.name: sum(x.numel() for x in network.brick(t.name).parameters()) for t in p.tasks}},
                      teacher_metrics)

    checkpoint = Path(config.checkpoint) if config.checkpoint and ctx.is_main else None
    loop = _Loop(config, p, trainer, objective, optimizer, device, control, started, total_steps, step, ctx)
    epoch = start_epoch
    final: EvalReport | None = None
    try:
        for epoch in range(start_epoch, config.epochs):
            yield from loop.run_epoch(epoch, skip if epoch == start_epoch else 0)
            if loop.stopped:
                break
            final = _evaluate_on_main(network, p, device, epoch + 1, loop.step, ctx)
            yield final
            if checkpoint:
                save_checkpoint(checkpoint, model=network, objective=objective, optimizer=optimizer,
                                epoch=epoch + 1, step=loop.step, config=config, tasks=p.tasks)
                yield CheckpointReport(epoch + 1, str(checkpoint))
    except KeyboardInterrupt:
        loop.stopped = True  # Ctrl-C in the CLI: keep what was learned, like a cancel
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(f"The GPU ran out of memory. Lower the batch size (now {config.batch_size}), "
                            "pick a smaller student, or train on the CPU.") from None
    epochs_done = epoch if loop.stopped else config.epochs
    if loop.stopped and checkpoint:
        save_checkpoint(checkpoint, model=network, objective=objective, optimizer=optimizer,
                        epoch=epochs_done, step=loop.step, config=config, tasks=p.tasks)
    if final is None or loop.stopped:
        final = _evaluate_on_main(network, p, device, epochs_done, loop.step, ctx)
    if restore_bn:
        restore_bn()  # plain BatchNorm again: the result is a one-process network
    detectors = _calibrate(network, p, device) if ctx.is_main else {}
    network.eval().cpu()
    return FactorizeResult(network, p.tasks, TeacherInfo.of(p.teacher), config, final, teacher_metrics, p.data_note,
                           epochs_done, loop.stopped, str(checkpoint) if checkpoint else None,
                           time.perf_counter() - started, loop.last_losses, detectors)


def _evaluate_on_main(network: FactorNetwork, p: _Prepared, device: torch.device, epoch: int, step: int,
                      ctx: distributed.Context) -> EvalReport:
    """Process 0 scores the whole test split; the others report nothing (they write nothing)."""
    return evaluate(network, p, device, epoch, step) if ctx.is_main else EvalReport(epoch, step, {}, {})


class _TrainStep(nn.Module):
    """The student and the objective as one module, so that one DDP wrapper covers the
    student (common module and bricks) and the InfoMax projectors."""

    def __init__(self, network: FactorNetwork, objective: IMBObjective) -> None:
        super().__init__()
        self.network, self.objective = network, objective

    def forward(self, x, teacher_logits, teacher_feats, targets, gather=None) -> dict[str, torch.Tensor]:
        stages, bricks = self.network.forward_train(x)
        return self.objective(stages, bricks, teacher_logits, teacher_feats, targets, gather=gather)


class _Loop:
    """The inner training loop; holds the running sums between reports."""

    def __init__(self, config, p: _Prepared, trainer: nn.Module, objective, optimizer, device, control: RunControl,
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
        self._feed = streaming.feed(p.train, device, getattr(config, "workers", 0))
        self._targets = {k: v.to(device) for k, v in p.train_targets.items()}
        self._cache = p.train_cache
        self._params = [q for group in optimizer.param_groups for q in group["params"]]

    def run_epoch(self, epoch: int, skip: int = 0) -> Iterator[StepReport]:
        self.trainer.train()
        batches = _batches(len(self.p.train), self.config.batch_size, self.config.seed, epoch,
                           distributed.min_last_batch(self.ctx))
        # The images of this process's shard of each batch: indexed in memory, or read ahead from disk.
        with self._feed.epoch([distributed.shard(b, self.ctx) for b in batches[skip:]]) as images:
            for i in range(skip, len(batches)):
                if self._should_stop():
                    return
                self._train_step(batches[i].to(self.device), next(images))
                self.step += 1
                if self.step % self.config.report_every == 0 or i == len(batches) - 1:
                    yield self._report(epoch + (i + 1) / len(batches))

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
            x = random_shift(x, self._shift_gen)
        teacher_logits, teacher_feats = self._teacher_batch(index, x)
        lr = _learning_rate(config, self.step, self.total_steps)
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
                f"{_checkpoint_note(config)} Try a lower learning rate.")
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


def _checkpoint_note(config: FactorizeConfig) -> str:
    if config.checkpoint and Path(config.checkpoint).is_file():
        return f"The last good checkpoint is kept ({config.checkpoint})."
    return "No checkpoint had been written yet (one is written after each epoch)."


def factorize(config: FactorizeConfig, **kwargs) -> FactorizeResult:
    """Run ``iter_factorize`` to the end, ignoring the reports."""
    return drain(iter_factorize(config, **kwargs))
