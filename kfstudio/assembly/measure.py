"""What an assembled network costs against its teacher, and how well it agrees with it.

Public API: ``CostReport``, ``measure_costs(network, device, teacher=None)``,
``Evaluation``, ``evaluate_tasks(tasks, run, data, spec, teacher=None, thresholds=None)``,
``teacher_parity(network, teacher, data)``; ``LatencyComparison`` and ``compare_latency(runs, shape,
runtime, form)`` (the network and its teacher timed in turns in one runtime, e.g. both as ONNX files
in onnxruntime: ``kfstudio.io.runtime_costs`` exports the teacher the same way), ``inference_form``
(a teacher in the fused assembly's eager form: BatchNorm folded, channels_last).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from kfstudio.assembly.build import AssembledNetwork
from kfstudio.core.measures.cost import Cost, measure_latencies, module_cost
from kfstudio.core.data.sources import Dataset, prepare
from kfstudio.core.errors import DataError
from kfstudio.core.measures.metrics import TaskMetrics, evaluate_logits, group_prediction
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task, group_tasks
from kfstudio.core.teachers.loaders import Teacher

TaskLogitsFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class CostReport:
    """Costs of the whole network, its common module, each brick (by task) and the teacher.

    ``network`` is the network as it runs: fused (bricks of one architecture as one network)
    when ``fused``; ``unfused_latency_ms`` is the same network run brick by brick, for comparison.
    Multiply-adds are the same either way (the same arithmetic, reordered). The network's and the
    teacher's latency are timed in turns, in eager torch, both in the fused form (``latency_form``
    says which form the teacher could be given).
    """

    device: str
    network: Cost
    common: Cost
    bricks: dict[str, Cost]
    teacher: Cost | None
    fused: bool = True
    unfused_latency_ms: float | None = None
    fused_groups: int = 1
    latency_form: str = ""

    def to_dict(self) -> dict:
        return {"device": self.device, "network": self.network.to_dict(), "common": self.common.to_dict(),
                "bricks": {k: v.to_dict() for k, v in self.bricks.items()},
                "teacher": None if self.teacher is None else self.teacher.to_dict(),
                "fused": self.fused, "unfused_latency_ms": self.unfused_latency_ms, "fused_groups": self.fused_groups,
                "latency_form": self.latency_form}


@torch.no_grad()
def measure_costs(network: AssembledNetwork, device: torch.device, teacher: Teacher | None = None,
                  *, latency: bool = True) -> CostReport:
    """Parameters, MACs and latency for one input, on ``device``; the network is copied there.
    Latency is measured fused (as the network runs) and brick by brick; the teacher's in turns with
    the fused network, on a copy in the same form (``inference_form``)."""
    net = copy.deepcopy(network).to(device).eval()
    x = net.example_input(1).to(device)
    enc = net.common.encode(x)
    bricks = {name: module_cost(net.bricks[key], lambda b=net.bricks[key]: enc.run(b), device, latency=latency)
              for name, key in net._keys}
    unfused = module_cost(net, lambda: net.forward_unfused(x), device, latency=latency)
    runs = {"network": lambda: net(x)}
    teacher_cost, form = None, eager_form(net.fused, None)
    if teacher is not None:
        teacher.to(device)
        tx = torch.zeros(1, *teacher.input_spec.shape, device=device)
        teacher_cost = module_cost(teacher.module, lambda: teacher.outputs(tx), device, latency=False)
        if teacher.module is None and teacher.counts:  # ONNX: counted from its graph
            teacher_cost = Cost(*teacher.counts, None)
        if teacher.module is not None:
            timed, folded = inference_form(teacher.module)
            timed.to(device)
            runs["teacher"] = lambda: timed(tx)
            form = eager_form(net.fused, folded)
    ms = measure_latencies(runs, device) if latency else {}
    as_run = Cost(unfused.parameters, unfused.macs, ms.get("network", unfused.latency_ms))
    if teacher_cost is not None:
        teacher_cost = replace(teacher_cost, latency_ms=ms.get("teacher"))
    return CostReport(str(device), as_run, module_cost(net.common, lambda: net.common(x), device, latency=latency),
                      bricks, teacher_cost, net.fused, unfused.latency_ms, len(net.fused_runner.groups), form)


def eager_form(fused: bool, teacher_folded: bool | None) -> str:
    """In words: the form the eager latency figures are of (``teacher_folded`` None: no teacher timed)."""
    network = "fused, BatchNorm folded, channels_last" if fused else "brick by brick"
    if teacher_folded is None:
        return f"network {network}"
    if teacher_folded:
        return f"network {network}; teacher BatchNorm folded, channels_last" if not fused else \
            "both BatchNorm folded, channels_last"
    return f"network {network}; teacher channels_last, its BatchNorm not foldable by torch.fx"


@dataclass(frozen=True)
class Evaluation:
    """Per-task and per-one-vs-rest-group metrics; agreement is NaN without a teacher."""

    tasks: dict[str, TaskMetrics]
    groups: dict[str, TaskMetrics]
    with_teacher: bool

    def to_dict(self) -> dict:
        return {"tasks": {k: v.to_dict() for k, v in self.tasks.items()},
                "groups": {k: v.to_dict() for k, v in self.groups.items()}, "with_teacher": self.with_teacher}


def source_labels(data: Dataset, sources: Sequence[str]) -> dict[str, torch.Tensor | None]:
    """True labels per source where the data has them; a lone label serves a lone source."""
    only = next(iter(data.labels)) if len(data.labels) == 1 and len(sources) == 1 else None
    return {s: data.labels.get(s, data.labels.get(only) if only else None) for s in sources}


@torch.no_grad()
def _run_batched(run: TaskLogitsFn, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for chunk in x.split(batch):
        for name, out in run(chunk).items():
            parts.setdefault(name, []).append(out.float())
    return {k: torch.cat(v) for k, v in parts.items()}


def self_reference(tasks: Sequence[Task], logits: dict[str, torch.Tensor],
                   class_counts: dict[str, int], thresholds: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Stand-in teacher logits (one-hot of the network's own choice) when no teacher is given,
    so ``evaluate_logits`` still scores accuracy; the agreement it reports is then meaningless."""
    ref: dict[str, torch.Tensor] = {}
    for group in group_tasks(tasks):
        pred = group_prediction(group, logits, thresholds)
        n = max(class_counts.get(group.source, 0), int(pred.max()) + 1 if pred.numel() else 1)
        # "none of these" (-1) has no column; only the discarded agreement sees the stand-in
        ref[group.source] = torch.nn.functional.one_hot(pred.clamp_min(0), n).float()
    return ref


def evaluate_tasks(tasks: Sequence[Task], run: TaskLogitsFn, data: Dataset, spec: InputSpec,
                   teacher: Teacher | None = None, thresholds: dict[str, float] | None = None) -> Evaluation:
    """Score ``run`` (input batch -> task logits) on ``data``, against labels and the teacher.
    ``thresholds``: the calibrated bricks' thresholds (``AssembledNetwork.thresholds``)."""
    sources = list(dict.fromkeys(t.source for t in tasks))
    _check_fits(tasks, data, teacher)
    x = prepare(data, spec).x
    logits = _run_batched(run, x)
    if teacher is not None:
        teacher_x = prepare(data, teacher.input_spec).x.to(teacher.device)
        teacher_logits = {k: v.cpu() for k, v in _run_batched(teacher.outputs, teacher_x).items()}
    else:
        counts = {s: len(data.class_names.get(s, [])) for s in sources}
        teacher_logits = self_reference(tasks, logits, counts, thresholds)
    per_task, per_group = evaluate_logits(tasks, logits, teacher_logits, source_labels(data, sources), thresholds)
    if teacher is None:
        per_task, per_group = _without_agreement(per_task), _without_agreement(per_group)
    return Evaluation(per_task, per_group, teacher is not None)


def _check_fits(tasks: Sequence[Task], data: Dataset, teacher: Teacher | None) -> None:
    """Refuse, in words, data or a teacher whose classes are not the ones the tasks were made for."""
    sources = list(dict.fromkeys(t.source for t in tasks))
    only = next(iter(data.class_names)) if len(data.class_names) == 1 and len(sources) == 1 else None
    for task in tasks:
        need = max(task.classes) + 1
        if teacher is not None:
            have = len(teacher.class_names.get(task.source, []))
            if have < need:
                outputs = ", ".join(teacher.class_names) or "none"
                raise DataError(f"The teacher '{teacher.name}' does not have the classes of '{task.title}' "
                                f"(its outputs: {outputs}); give the teacher these bricks came from.")
        labelled = data.class_names.get(task.source, data.class_names.get(only) if only else None)  # as source_labels
        if labelled is not None and len(labelled) < need:
            raise DataError(f"The data '{data.name}' has {len(labelled)} classes of '{task.source}', fewer than "
                            f"'{task.title}' needs; give data of the classes the bricks were made for.")
        if labelled is None and teacher is None:
            known = ", ".join(data.class_names) or "no labels at all"
            raise DataError(f"The data '{data.name}' has no '{task.source}' labels (it has {known}), so "
                            f"'{task.title}' cannot be scored; give labelled data of those classes or --teacher.")


def _without_agreement(metrics: dict[str, TaskMetrics]) -> dict[str, TaskMetrics]:
    return {k: replace(m, agreement=float("nan"), teacher_accuracy=None) for k, m in metrics.items()}


def teacher_parity(network: AssembledNetwork, teacher: Teacher, data: Dataset) -> Evaluation:
    """Per-task accuracy of the assembled network and its agreement with the teacher on ``data``."""
    network.eval()
    return evaluate_tasks(network.tasks, network.task_logits, data, network.input_spec, teacher, network.thresholds)


# ---------------------------------------------------------------- latency against the teacher, like with like

LATENCY_BATCHES = (1, 64)


@dataclass(frozen=True)
class LatencyComparison:
    """Milliseconds per call of the network and the teacher (and any other variant, e.g. the float
    network beside its int8 file), by batch size, timed in turns in one runtime and one form.

    ``runtime`` names where both ran ("onnxruntime", "TorchScript", "eager torch"); ``form`` says
    how both were prepared, in words, so a ratio is never read without them."""

    runtime: str
    form: str
    threads: int
    ms: dict[str, dict[int, float]]
    note: str = ""

    def ratio(self, batch: int, name: str = "network", baseline: str = "teacher") -> float | None:
        a, b = self.ms.get(name, {}).get(batch), self.ms.get(baseline, {}).get(batch)
        return None if a is None or not b else a / b

    def heading(self) -> str:
        """"latency vs teacher, both in onnxruntime (both exported to ONNX), 1 thread"."""
        return (f"latency vs teacher, both in {self.runtime} ({self.form}), "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}")

    def describe(self, name: str = "network") -> str:
        """One line per batch: "batch 1: 0.09 ms vs 0.11 ms (81 %)"."""
        if "teacher" not in self.ms:
            lines = [f"batch {b}: {ms:.3f} ms" for b, ms in self.ms.get(name, {}).items()]
            what = f"latency in {self.runtime} ({self.form}), {self.threads} thread{'s' if self.threads != 1 else ''}"
            return f"{what}: " + "; ".join(lines) + (f" ({self.note})" if self.note else "")
        parts = []
        for batch, ms in self.ms.get(name, {}).items():
            teacher = self.ms["teacher"].get(batch)
            ratio = self.ratio(batch, name)
            parts.append(f"batch {batch}: {ms:.3f} ms vs {teacher:.3f} ms ({ratio:.0%})" if ratio is not None
                         else f"batch {batch}: {ms:.3f} ms")
        return f"{self.heading()}: " + "; ".join(parts) + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "form": self.form, "threads": self.threads, "note": self.note,
                "ms": {name: {str(b): v for b, v in by_batch.items()} for name, by_batch in self.ms.items()}}


def compare_latency(runs: dict[str, Callable[[torch.Tensor], object]], shape: Sequence[int], runtime: str, form: str,
                    *, batches: Sequence[int] = LATENCY_BATCHES, threads: int = 1, note: str = "",
                    **timing) -> LatencyComparison:
    """Time each of ``runs`` (input batch -> anything) in turns at each batch size on seeded inputs,
    on the CPU with one torch thread (``threads`` records what the runtimes were given). A run that
    fails at a batch size (a teacher exported for a fixed batch) has no figure there."""
    ms: dict[str, dict[int, float]] = {name: {} for name in runs}
    for batch in batches:
        x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
        usable = {name: (lambda r=run, x=x: r(x)) for name, run in runs.items() if _runs_at(run, x)}
        for name, value in measure_latencies(usable, torch.device("cpu"), **timing).items():
            ms[name][batch] = value
    return LatencyComparison(runtime, form, threads, {k: v for k, v in ms.items() if v}, note)


def _runs_at(run: Callable[[torch.Tensor], object], x: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            run(x)
        return True
    except Exception:  # noqa: BLE001 - any failure means: no figure at this batch size
        return False


def inference_form(module: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """A hook-free eval-mode copy of a teacher in the form the fused assembly runs in: BatchNorm
    folded into the convolution before it and ``channels_last`` (kfstudio.core.students.fused), so that a
    latency ratio compares like with like. Folding uses torch.fx; a module it cannot trace is
    timed unfolded, and the returned flag says so."""
    module = copy.deepcopy(module).cpu().eval()
    for m in module.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    folded = False
    if not isinstance(module, torch.jit.ScriptModule):
        try:
            from torch.fx.experimental.optimization import fuse
            module, folded = fuse(module), True
        except Exception:  # noqa: BLE001 - untraceable Python: time it as it is
            folded = False
    return ChannelsLast(module), folded


class ChannelsLast(torch.nn.Module):
    """Runs ``module`` on a channels_last input, as the fused assembly does with its own input."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module if isinstance(module, torch.jit.ScriptModule) else module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        return self.module(x.contiguous(memory_format=torch.channels_last))
