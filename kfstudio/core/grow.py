"""Grow the set: train one new task brick against a frozen common module.

A factorized run gives a fixed set of bricks. ``iter_grow`` trains one more brick (its own
small backbone, projection and two heads, the same ``BrickSpec`` family as the run's) for a
task the teacher may never have had, from labeled data of that task only:
``loss_cls`` and ``loss_task`` on the labels, ``loss_infomin`` on the brick's ``z_k`` and
``loss_kd`` when a teacher that knows the task is given. The common module is never
trained: it stays in eval mode (BatchNorm statistics untouched), its parameters are out of
the optimizer, and it runs under ``no_grad``, so every old assembly is unchanged.

The inner loop is factorize's own ``TrainLoop`` (same batches, schedule, clipping, reports,
pause/cancel); only the network and the objective it drives differ.

A task is ``NAME`` (a whole label of the data: a head), ``NAME=a,b,c`` (a group of the
label's classes) or ``NAME=a`` (one-vs-rest: one logit, "is it class a", trained against
all the rest of the data given).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Generator

import torch
from torch import nn

from kfstudio.core import distributed
from kfstudio.core.students.brick_input import IMAGE, channels_to_read
from kfstudio.core.data.sources import Dataset, DataSplit, load_data, prepare
from kfstudio.core.devices import pick_device
from kfstudio.core.errors import ConfigError, DataError, TaskError, TeacherError, TrainingError
from kfstudio.core.factorize import auto_epochs, check_schedule
from kfstudio.core.runs import (EvalReport, Report, RunControl, SetupReport, TrainingSchedule, TrainLoop, TrainStep,
                                batches, drain)
from kfstudio.core.imb import IMBWeights, distillation, infomin, smoothed_cross_entropy
from kfstudio.core.measures.metrics import TaskMetrics
from kfstudio.core.teachers.cache import teacher_pass
from kfstudio.core.spec import InputSpec
from kfstudio.core.students.networks import ArchSpec, BrickOutputs, BrickSpec, CommonModule, TaskBrick
from kfstudio.core.tasks import GROUP, HEAD, ONE_VS_REST, Task
from kfstudio.core.teachers.record import teacher_entry
from kfstudio.core.teachers.loaders import Teacher, TeacherOptions, load_teacher


@dataclass(frozen=True)
class GrowConfig(TrainingSchedule):
    """What training one new brick needs; its training schedule is ``TrainingSchedule``'s, as
    ``FactorizeConfig``'s is, so the shared settings have one name, default and meaning."""

    data: str
    task: str
    label: str | None = None  # which label of the data; default: the task's name, or the only label
    test_data: str | None = None
    teacher: str | None = None
    teacher_weights: str | None = None  # weights for a factory teacher

    def __post_init__(self) -> None:
        if not self.task.partition("=")[0].strip():
            raise ConfigError("Give the new task a name, e.g. --task y or --task seven=7.")
        check_schedule(self, "the InfoMin term uses batch statistics")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GrowResult:
    brick: TaskBrick
    task: Task
    config: GrowConfig
    final: EvalReport
    teacher_metrics: TaskMetrics | None
    teacher: dict | None  # name, ref, sha256 of the teacher used for loss_kd
    data_note: str
    epochs_done: int
    cancelled: bool
    elapsed_s: float
    last_losses: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- the task and its targets

def _pick_label(ds: Dataset, name: str, label: str | None) -> str:
    if not ds.labels:
        raise DataError(f"The data '{ds.name}' has no labels; a new brick learns its task from labeled images.")
    if label is not None:
        if label not in ds.labels:
            raise TaskError(f"The data has no label '{label}'; its labels are: {', '.join(ds.labels)}.")
        return label
    if name in ds.labels:
        return name
    if len(ds.labels) == 1:
        return next(iter(ds.labels))
    raise TaskError(f"The data has several labels ({', '.join(ds.labels)}); name the task after one of them "
                    f"or say which with --label.")


def _class_index(token: str, names: list[str]) -> int:
    token = token.strip()
    if token in names:
        return names.index(token)
    if token.isdigit() and int(token) < len(names):
        return int(token)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise TaskError(f"There is no class '{token}'; the classes are: {shown}.")


def parse_task(spec: str, ds: Dataset, label: str | None = None) -> Task:
    """``NAME`` (a head over a label), ``NAME=a,b`` (a group) or ``NAME=a`` (one-vs-rest)."""
    name, has_classes, members = (part.strip() for part in spec.partition("="))
    source = _pick_label(ds, name, label)
    names = ds.class_names.get(source) or [str(i) for i in range(int(ds.labels[source].max()) + 1)]
    if not has_classes:
        if len(names) < 2:
            raise TaskError(f"The label '{source}' has a single class; a task needs at least two to tell apart.")
        return Task(name, source, tuple(range(len(names))), tuple(names), HEAD)
    classes = tuple(_class_index(t, names) for t in members.split(",") if t.strip())
    if not classes:
        raise TaskError(f"The task '{spec}' names no classes; write NAME=class or NAME=class,class.")
    if len(set(classes)) != len(classes):
        raise TaskError(f"The task '{name}' names a class twice.")
    if len(classes) == 1:  # a binary brick: its logit is the log-odds against all the rest
        return Task(name, source, classes, (names[classes[0]],), ONE_VS_REST, rest=True)
    return Task(name, source, classes, tuple(names[c] for c in classes), GROUP)


def task_targets(task: Task, y: torch.Tensor) -> torch.Tensor:
    """One-vs-rest: 1 for the class, 0 for the rest; otherwise the class's position, -1 outside."""
    if task.kind == ONE_VS_REST:
        return (y == task.classes[0]).long()
    lookup = torch.full((max(int(y.max()), max(task.classes)) + 1,), -1, dtype=torch.long)
    lookup[list(task.classes)] = torch.arange(len(task.classes))
    return lookup[y]


def _two_class(logit: torch.Tensor) -> torch.Tensor:
    """A one-vs-rest logit as two-class logits [rest, class]: softmax of them is sigmoid(logit)."""
    return torch.cat([torch.zeros_like(logit), logit], dim=1)


def teacher_task_logits(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """The teacher's logits over the task's choices (one-vs-rest: log-sum-exp of the rest vs the class)."""
    if task.kind != ONE_VS_REST:
        return logits[:, list(task.classes)]
    k = task.classes[0]
    rest = torch.cat([logits[:, :k], logits[:, k + 1:]], dim=1)
    return torch.stack([rest.logsumexp(dim=1), logits[:, k]], dim=1)


def task_prediction(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """One-vs-rest: 1 where the brick says "the class"; otherwise the chosen class's position."""
    if task.kind == ONE_VS_REST:
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(dim=1)
    return logits.argmax(dim=1)


# ---------------------------------------------------------------- what the loop drives

class FrozenCommonWithBrick(nn.Module):
    """The frozen common module and one trainable brick, shaped for factorize's ``TrainLoop``."""

    def __init__(self, common: CommonModule, task_name: str, brick: TaskBrick) -> None:
        super().__init__()
        self.common = common.eval().requires_grad_(False)
        self.task_name = task_name
        self.brick = brick

    def train(self, mode: bool = True) -> "FrozenCommonWithBrick":
        super().train(mode)
        self.common.eval()  # BatchNorm running statistics are weights of the common module too
        return self

    def forward_train(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, BrickOutputs]]:
        with torch.no_grad():
            enc = self.common.encode(x)
        return [], {self.task_name: self.brick.forward_train(enc.source(self.brick.spec.reads), enc.z_c)}

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.common.encode(x).run(self.brick)


class BrickObjective(nn.Module):
    """The IMB terms for one brick on a frozen common module; ``loss_infomax`` is 0 (nothing to align)."""

    def __init__(self, task: Task, weights: IMBWeights, teacher_output: str | None) -> None:
        super().__init__()
        self.task, self.weights, self.teacher_output = task, weights, teacher_output
        self.health = torch.zeros(0, 3)  # InfoMax health per common stage: none, the common module is frozen

    def forward(self, stages, bricks: dict[str, BrickOutputs], teacher_logits: dict[str, torch.Tensor],
                teacher_feats, targets: dict[str, torch.Tensor], gather=None) -> dict[str, torch.Tensor]:
        w, out = self.weights, bricks[self.task.name]
        logits, task_logits = out.logits, out.task_logits
        if self.task.kind == ONE_VS_REST:
            logits, task_logits = _two_class(logits), _two_class(task_logits)
        target = targets[self.task.name]
        zero = logits.new_zeros(()).float()
        terms = {
            "loss_cls": smoothed_cross_entropy(logits, target, w.label_smoothing),
            "loss_task": smoothed_cross_entropy(task_logits, target, w.label_smoothing),
            "loss_kd": zero if self.teacher_output is None else distillation(
                logits, teacher_task_logits(self.task, teacher_logits[self.teacher_output].float()), w.temperature),
            "loss_infomax": zero,
            "loss_infomin": infomin(out),
        }
        terms["loss"] = (terms["loss_cls"] + w.w_task * terms["loss_task"] + w.l_kd * terms["loss_kd"]
                         + w.beta * terms["loss_infomin"])
        return {"loss": terms.pop("loss"), **terms}


@dataclass
class _GrowData:
    """What ``TrainLoop`` reads of a prepared run, for one brick."""

    task: Task
    train: Dataset
    test: Dataset
    train_targets: dict[str, torch.Tensor]
    train_cache: tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None
    teacher: Teacher | None
    teacher_output: str | None
    test_teacher_logits: torch.Tensor | None
    messages: list[str]
    data_note: str


def teacher_output_for(teacher: Teacher, task: Task, ds: Dataset) -> str:
    """The teacher output that knows ``task``: the one named like its label, or the only one."""
    outputs = teacher.class_names
    name = task.source if task.source in outputs else (next(iter(outputs)) if len(outputs) == 1 else None)
    if name is None:
        raise TaskError(f"The teacher has no output '{task.source}' (its outputs are {', '.join(outputs)}); "
                        "it does not know this task, so leave the teacher out.")
    data_classes = ds.class_names.get(task.source) or []
    if data_classes and len(outputs[name]) != len(data_classes):
        raise TaskError(f"The teacher's output '{name}' has {len(outputs[name])} classes but the data's label "
                        f"'{task.source}' has {len(data_classes)}; it does not know this task.")
    return name


def _prepare(config: GrowConfig, spec: InputSpec, device: torch.device, teacher: Teacher | None,
             data: DataSplit | None) -> _GrowData:
    split = data or load_data(config.data, test_ref=config.test_data, seed=config.seed)
    train, test = prepare(split.train, spec), prepare(split.test, spec)
    if len(train) < 2 or len(test) < 1:
        raise DataError("There are too few images to train and evaluate on (at least 2 for training, 1 for testing).")
    task = parse_task(config.task, train, config.label)
    if task.source not in test.labels:
        raise DataError(f"The test data has no label '{task.source}' to score the new brick on.")
    targets = task_targets(task, train.labels[task.source])
    if task.kind != ONE_VS_REST and int((targets >= 0).sum()) < 2:
        raise DataError(f"Fewer than two training images belong to the classes of '{task.name}'.")
    messages = [split.note, "The common module is frozen: only the new brick learns (no InfoMax term)."]
    if teacher is None and config.teacher:
        # named by the user for this run, not read from a file
        teacher = load_teacher(config.teacher, TeacherOptions(weights=config.teacher_weights), allow_code=True)
        if teacher.weights_note:
            messages.append(teacher.weights_note)
    output, cache, test_logits = None, ({}, []), None
    if teacher is not None:
        if teacher.input_spec != spec:
            raise TeacherError(f"The teacher expects inputs of {teacher.input_spec.describe()} but the common "
                               f"module expects {spec.describe()}; give the teacher the run was factorized from.")
        output = teacher_output_for(teacher, task, train)
        teacher.to(device)
        teacher.set_batchnorm_train(False)
        messages.append(f"Distilling from {teacher.name}'s output '{output}'.")
        train_logits, _ = teacher_pass(teacher, train.x, device, keep_features=False)
        cache = None if config.augment else ({output: train_logits[output]}, [])
        test_logits = teacher_pass(teacher, test.x, device, keep_features=False)[0][output]
    return _GrowData(task, train, test, {task.name: targets}, cache, teacher, output, test_logits, messages,
                     split.note)


# ---------------------------------------------------------------- scoring

def _metrics(pred: torch.Tensor, truth: torch.Tensor, teacher_pred: torch.Tensor | None) -> TaskMetrics:
    return TaskMetrics(
        accuracy=float((pred == truth).float().mean()) if len(truth) else float("nan"),
        agreement=float((pred == teacher_pred).float().mean()) if teacher_pred is not None and len(truth) else float("nan"),
        teacher_accuracy=float((teacher_pred == truth).float().mean()) if teacher_pred is not None and len(truth) else None,
        samples=int(len(truth)),
    )


@torch.no_grad()
def evaluate_brick(network: FrozenCommonWithBrick, d: _GrowData, device: torch.device, epoch: int,
                   step: int) -> EvalReport:
    """Test accuracy of the brick on its task (one-vs-rest: the yes/no decision on every image)."""
    was_training = network.training
    network.eval()
    logits = torch.cat([network.logits(c.to(device)).float().cpu() for c in d.test.x.split(512)])
    network.train(was_training)
    truth = task_targets(d.task, d.test.labels[d.task.source])
    inside = truth >= 0
    teacher_pred = None
    if d.test_teacher_logits is not None:
        teacher_pred = teacher_task_logits(d.task, d.test_teacher_logits.cpu()).argmax(dim=1)[inside]
    pred = task_prediction(d.task, logits)[inside]
    return EvalReport(epoch, step, {d.task.name: _metrics(pred, truth[inside], teacher_pred)}, {})


def _teacher_metrics(d: _GrowData) -> TaskMetrics | None:
    if d.test_teacher_logits is None:
        return None
    truth = task_targets(d.task, d.test.labels[d.task.source])
    inside = truth >= 0
    pred = teacher_task_logits(d.task, d.test_teacher_logits.cpu()).argmax(dim=1)[inside]
    return _metrics(pred, truth[inside], pred)


# ---------------------------------------------------------------- the generator

def _evaluates_after(epoch: int, epochs: int, times: int = 20) -> bool:
    """About ``times`` evaluations per run, the last epoch always: 50 labels make one-step epochs."""
    return epoch + 1 == epochs or (epoch + 1) % max(1, epochs // times) == 0


def new_brick(common: CommonModule, task: Task, net: ArchSpec, gaussian: bool = False, reads: str = IMAGE) -> TaskBrick:
    """A fresh brick of the given backbone that fits ``common``'s z_c and reads ``reads`` (the image,
    or a stage of ``common``: a light brick)."""
    if net.in_channels != common.spec.in_channels:
        raise ConfigError(f"The brick's backbone reads {net.in_channels} channels but the common module reads "
                          f"{common.spec.in_channels}.")
    channels = channels_to_read(reads, common.offered_stages)
    return TaskBrick(BrickSpec(net, common.z_dim, task.num_outputs, gaussian, reads, channels))


def iter_grow(config: GrowConfig, common: CommonModule, input_spec: InputSpec, net: ArchSpec, *,
              gaussian: bool = False, reads: str = IMAGE, control: RunControl | None = None,
              teacher: Teacher | None = None, data: DataSplit | None = None) -> Generator[Report, None, GrowResult]:
    """Train one new brick on the frozen ``common``; yields factorize's reports, returns a ``GrowResult``."""
    control = control or RunControl()
    started = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    d = _prepare(config, input_spec, device, teacher, data)
    brick = new_brick(common, d.task, net, gaussian, reads)
    network = FrozenCommonWithBrick(common, d.task.name, brick).to(device)
    objective = BrickObjective(d.task, config.imb, d.teacher_output)
    optimizer = torch.optim.SGD(brick.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                                nesterov=True)
    steps_per_epoch = len(batches(len(d.train), config.batch_size, config.seed, 0))
    if config.epochs is None:
        config = replace(config, epochs=auto_epochs(steps_per_epoch))
    total_steps = steps_per_epoch * config.epochs
    teacher_metrics = _teacher_metrics(d)
    d.messages.append(f"Training a {d.task.kind} brick '{d.task.title}' for {config.epochs} epochs "
                      f"({steps_per_epoch} steps each) on {len(d.train)} images.")
    yield SetupReport(tuple(m for m in d.messages if m), (d.task.name,), (d.task.title,), str(device),
                      steps_per_epoch, total_steps, 0, {d.task.name: sum(p.numel() for p in brick.parameters())},
                      {d.task.name: teacher_metrics} if teacher_metrics else {})
    loop = TrainLoop(config, d, TrainStep(network, objective), objective, optimizer, device, control, started,
                 total_steps, 0, distributed.Context())  # a new brick trains in one process
    final, epoch = None, 0
    try:
        for epoch in range(config.epochs):
            yield from loop.run_epoch(epoch)
            if loop.stopped:
                break
            if _evaluates_after(epoch, config.epochs):
                final = evaluate_brick(network, d, device, epoch + 1, loop.step)
                yield final
    except KeyboardInterrupt:
        loop.stopped = True
    except torch.cuda.OutOfMemoryError:
        raise TrainingError(f"The GPU ran out of memory. Lower the batch size (now {config.batch_size}) "
                            "or train on the CPU.") from None
    epochs_done = epoch if loop.stopped else config.epochs
    if final is None or loop.stopped:
        final = evaluate_brick(network, d, device, epochs_done, loop.step)
    brick.eval().cpu()
    common.cpu()
    info = None if d.teacher is None else teacher_entry(d.teacher)
    return GrowResult(brick, d.task, config, final, teacher_metrics, info, d.data_note, epochs_done, loop.stopped,
                      time.perf_counter() - started, loop.last_losses)


def grow(config: GrowConfig, common: CommonModule, input_spec: InputSpec, net: ArchSpec, **kwargs) -> GrowResult:
    """Run ``iter_grow`` to the end, ignoring the reports."""
    return drain(iter_grow(config, common, input_spec, net, **kwargs))
