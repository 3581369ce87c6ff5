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

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Generator

import torch

from kfstudio.core import calibration, distributed
from kfstudio.core.data import feeds, streaming
from kfstudio.core.students.backbones import check_stem_stride, resolve_stem_stride
from kfstudio.core.students.brick_input import channels_to_read, check_brick_input
from kfstudio.core.students.budget import (
    AUTO_TASK_NET,
    WIDE_MIDDLE_FOR,
    WIDE_MIDDLE_TASK_NET,
    Sizing,
    conv_channels,
    parse_budget,
    resolve_task_net,
    size_students,
    student_macs,
    teacher_macs,
    wide_middle_fits,
)
from kfstudio.core.checkpoint import (
    check_resume_config,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from kfstudio.core.data.sources import Dataset, DataSplit
from kfstudio.core.devices import pick_device
from kfstudio.core.errors import ConfigError, DataError, TrainingError
from kfstudio.core.imb import IMBObjective, IMBWeights, group_targets
from kfstudio.core.measures.detection import Detector
from kfstudio.core.measures.metrics import TaskMetrics, evaluate_logits, teacher_group_logits
from kfstudio.core.names import check_task_names
from kfstudio.core.runs import (
    TrainingSchedule,
    CheckpointReport,
    EvalReport,
    Report,
    RunControl,
    SetupReport,
    TrainLoop,
    TrainStep,
    batches,
    drain,
)
from kfstudio.core.spec import InputSpec
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import ArchSpec, BrickSpec, CommonModule, TaskBrick, check_z_dim
from kfstudio.core.tasks import Task, TaskGroup, group_tasks, resolve_tasks
from kfstudio.core.progress import ProgressReport, relay, with_progress
from kfstudio.core.teachers.cache import cache_fits, iter_teacher_pass, teacher_pass
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
class FactorizeConfig(TrainingSchedule):
    """Everything a factorization run needs; the defaults suit the built-in demos. The training
    schedule (epochs, batch size, learning rate, device, seed, …) is ``TrainingSchedule``'s."""

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
    brick_input: str = "image"  # what each brick reads: the image (the paper) or "stage<k>" of the common module
    stem_stride: int | str = 1  # 1: the paper's CIFAR stems; 2: half resolution first; "auto": 2 from 32 px up
    budget: str | None = None  # e.g. "1x", "1/2": widths scaled so all bricks cost at most this share of the teacher
    z_dim: int | None = None  # the shared latent's size (z_c, each z_k); None: the common module's last stage width
    teacher_bn: str = "eval"
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
        check_brick_input(self.brick_input)
        check_stem_stride(self.stem_stride)
        if self.budget is not None:
            parse_budget(self.budget)
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

@dataclass
class TeacherInfo:
    """What outlives the run about its teacher (the teacher object itself is not kept)."""

    name: str
    ref: str
    sha256: str
    input_spec: InputSpec
    class_names: dict[str, list[str]]
    feature_note: str
    weights: str | None = None  # a factory's weights file, recorded so the run's teacher loads again

    @classmethod
    def of(cls, teacher: Teacher) -> "TeacherInfo":
        return cls(teacher.name, teacher.ref, teacher.sha256, teacher.input_spec, teacher.class_names,
                   teacher.feature_note, teacher.weights)


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
    sizing: dict | None = None  # what the cost budget chose (budget.Sizing), when there was one
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


def _prepare(config: FactorizeConfig, device: torch.device, teacher: Teacher | None,
             data: DataSplit | None) -> Generator[ProgressReport, None, _Prepared]:
    # config.teacher is what the user named for this run (a flag, the wizard), never read from a file
    if data is None:
        yield ProgressReport(f"Reading the data {config.data}" + (f" and {config.test_data}" if config.test_data else ""))
    split, path_note = (data, None) if data else streaming.load_split(
        config.data, test_ref=config.test_data, seed=config.seed, stream_above_mb=config.stream_above_mb,
        workers=config.workers)
    spec_note = None
    if teacher is None:
        yield ProgressReport(f"Loading the teacher {config.teacher}")
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
    train_logits, train_feats = {}, []
    if needed:
        train_logits, train_feats = yield from with_progress(
            "The teacher's outputs for the training images",
            iter_teacher_pass(teacher, train, device, keep_features=cache_ok, workers=config.workers))
    train_targets = {}
    for g in groups:
        source_y = labels[g.source] if labels[g.source] is not None else train_logits[g.source].argmax(1).cpu()
        train_targets[g.name] = group_targets(g, source_y.cpu())
    test_logits, _ = yield from with_progress("The teacher's outputs for the test images",
                                              iter_teacher_pass(teacher, test, device, keep_features=False,
                                                                workers=config.workers))
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
    return FactorNetwork(*build_students(config, tasks, spec), fused=not config.sync_bn)


def build_students(config: FactorizeConfig, tasks: list[Task], spec: InputSpec) -> tuple[CommonModule, dict[str, TaskBrick]]:
    """The common module and one brick per task, as ``config`` describes them."""
    stride = resolve_stem_stride(config.stem_stride, spec.height, spec.width)
    common = CommonModule(ArchSpec(config.common, config.common_width, spec.channels, stride), config.z_dim)
    net = ArchSpec(resolve_task_net(config.task_net, config.brick_input), config.task_width, spec.channels, stride)
    reads, channels = config.brick_input, channels_to_read(config.brick_input, common.offered_stages)
    bricks = {t.name: TaskBrick(BrickSpec(net, common.z_dim, t.num_outputs, config.gaussian_bricks, reads, channels))
              for t in tasks}
    return common, bricks


def evaluate(network: FactorNetwork, p: _Prepared, device: torch.device, epoch: int, step: int) -> EvalReport:
    joined = feeds.network_logits(network, p.test, device, p.workers)
    tasks, groups = evaluate_logits(p.tasks, joined, p.test_teacher_logits, p.test_labels)
    return EvalReport(epoch, step, tasks, groups)


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


def iter_factorize(config: FactorizeConfig, *, control: RunControl | None = None, teacher: Teacher | None = None,
                   data: DataSplit | None = None, progress: bool = False) -> Generator[Report, None, FactorizeResult]:
    """Factorize a teacher into a common module and one brick per task (see module docstring).
    With ``progress``, ``ProgressReport``s of the set-up come before the ``SetupReport``."""
    control = control or RunControl()
    started = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    ctx = distributed.context()
    device = distributed.device_for(pick_device(config.device), ctx)
    p = yield from relay(_prepare(config, device, teacher, data), progress)
    spec = p.teacher.input_spec   # "auto" becomes the stride itself: run.json and checkpoints say which
    config = replace(config, stem_stride=resolve_stem_stride(config.stem_stride, spec.height, spec.width))
    config, sizing = _sized(config, p)
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
    trainer = distributed.data_parallel(TrainStep(network, objective), ctx, device)
    if ctx.rank:
        # Gaussian-brick noise differs per process (process 0 draws a one-process run's).
        torch.manual_seed(config.seed + 7919 * ctx.rank)
    steps_per_epoch = len(batches(len(p.train), config.batch_size, config.seed, 0, distributed.min_last_batch(ctx)))
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
    loop = TrainLoop(config, p, trainer, objective, optimizer, device, control, started, total_steps, step, ctx)
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
    detectors = calibration.calibrate_run(network, p, device) if ctx.is_main else {}
    network.eval().cpu()
    return FactorizeResult(network, p.tasks, TeacherInfo.of(p.teacher), config, final, teacher_metrics, p.data_note,
                           epochs_done, loop.stopped, str(checkpoint) if checkpoint else None,
                           time.perf_counter() - started, loop.last_losses,
                           sizing=sizing and sizing.to_dict(), detectors=detectors)


def _sized(config: FactorizeConfig, p: _Prepared) -> tuple[FactorizeConfig, Sizing | None]:
    """The config with the widths its cost budget allows; the choice (or why none) joins the run's messages."""
    sized, sizing = sized_config(config, p.teacher, p.tasks)
    if config.budget and sizing is None:
        p.messages.append(f"The teacher's multiply-adds cannot be counted ({p.teacher.name} is not a torch module), "
                          "so the budget is not applied: the students keep their set widths.")
    elif sizing is not None:
        p.messages.append(sizing.describe())
    return sized, sizing


def sized_config(config: FactorizeConfig, teacher: Teacher, tasks: list[Task]) -> tuple[FactorizeConfig, Sizing | None]:
    """``config`` with the widths its cost budget allows (``kfstudio.core.students.budget``) and its task net
    resolved (for "auto", the budget chooses), and what was chosen; without a budget, or when the teacher's
    multiply-adds cannot be counted, the set widths and None."""
    if not config.budget or teacher.module is None:
        return replace(config, task_net=resolve_task_net(config.task_net, config.brick_input)), None
    shape = teacher.input_spec.shape
    spent = teacher_macs(teacher.module, teacher.outputs, shape)
    auto = config.task_net == AUTO_TASK_NET
    config = replace(config, task_net="tiny") if auto else config
    sizing = size_students(config.budget, spent, config.common_width, config.task_width,
                           *_candidates(config, teacher, tasks))
    sized = replace(config, common_width=sizing.common_width, task_width=sizing.task_width)
    return _with_wide_middle(sized, sizing, teacher, tasks) if auto else (sized, sizing)


def _with_wide_middle(sized: FactorizeConfig, sizing: Sizing, teacher: Teacher,
                      tasks: list[Task]) -> tuple[FactorizeConfig, Sizing]:
    """For task net "auto", sized with tiny bricks: tiny-mid bricks at the same widths where the budget still
    affords them (``budget.wide_middle_fits``), else the tiny ones."""
    sizing = replace(sizing, task_net="tiny")
    if sized.brick_input != WIDE_MIDDLE_FOR:
        return sized, sizing
    wide = replace(sized, task_net=WIDE_MIDDLE_TASK_NET)
    cost_at, channels_at = _candidates(wide, teacher, tasks)
    cost = cost_at(wide.common_width, wide.task_width)
    if not wide_middle_fits(sizing, cost, channels_at(wide.common_width, wide.task_width)):
        return sized, sizing
    return wide, replace(sizing, task_net=WIDE_MIDDLE_TASK_NET, student_macs=cost)


def _candidates(config: FactorizeConfig, teacher: Teacher, tasks: list[Task]):
    """For candidate widths of ``config``'s students: their multiply-adds and their convolutions' channel counts
    (each candidate built once)."""
    shape = teacher.input_spec.shape
    built: dict[tuple[float, float], tuple[CommonModule, dict[str, TaskBrick]]] = {}

    def students_at(common_width: float, task_width: float):
        if (common_width, task_width) not in built:
            with torch.random.fork_rng(devices=[]):   # candidates draw no random numbers from the run's
                built[common_width, task_width] = build_students(
                    replace(config, common_width=common_width, task_width=task_width), tasks, teacher.input_spec)
        return built[common_width, task_width]

    def cost_at(common_width: float, task_width: float) -> int:
        common, bricks = students_at(common_width, task_width)
        return student_macs(common, bricks.values(), shape)

    def channels_at(common_width: float, task_width: float) -> list[int]:
        common, bricks = students_at(common_width, task_width)
        return conv_channels([common, *bricks.values()])

    return cost_at, channels_at


def _evaluate_on_main(network: FactorNetwork, p: _Prepared, device: torch.device, epoch: int, step: int,
                      ctx: distributed.Context) -> EvalReport:
    """Process 0 scores the whole test split; the others report nothing (they write nothing)."""
    return evaluate(network, p, device, epoch, step) if ctx.is_main else EvalReport(epoch, step, {}, {})


def factorize(config: FactorizeConfig, **kwargs) -> FactorizeResult:
    """Run ``iter_factorize`` to the end, ignoring the reports."""
    return drain(iter_factorize(config, **kwargs))
