"""What a network costs: parameters, multiply-adds for one input, and measured latency.

Multiply-adds (MACs) are counted with forward hooks on every convolution and linear layer
while the network runs on one input, so any architecture is counted the same way; other
layers (norms, activations, pooling) are cheap next to them and are left out. Programs whose
layers hooks cannot see (TorchScript, torch.export) are counted from the convolutions and
matrix products torch dispatches while they run; ONNX models from their graph (``onnx_counts``). Networks that
run fused are counted brick by brick: the same multiply-adds, reordered. Latency is
the best of a few medians of single-input forward passes on the chosen device, after warm-up
(on the CPU with one thread).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
from torch import nn


@dataclass(frozen=True)
class Cost:
    """Parameters, multiply-adds per input and median latency in ms (None where unknown)."""

    parameters: int | None
    macs: int | None
    latency_ms: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one conv/linear call, per input in the batch."""
    batch = max(1, int(output.shape[0]))
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        return output.numel() // batch * per_output
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


@torch.no_grad()
def count_macs(run: Callable[[], object], module: nn.Module) -> int:
    """Multiply-adds of conv and linear layers inside ``module`` while ``run()`` executes."""
    total = 0

    def hook(layer: nn.Module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += _layer_macs(layer, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with _brick_by_brick(module):
            run()
    finally:
        for h in handles:
            h.remove()
    if total == 0 or isinstance(module, torch.jit.ScriptModule):  # hooks see no layers inside a program
        return _dispatched_macs(run)
    return total


@torch.no_grad()
def _dispatched_macs(run: Callable[[], object]) -> int:
    """Multiply-adds of the convolutions and matrix products torch runs during ``run()``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops()) // 2  # a multiply-add is two floating-point operations


def onnx_counts(model, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters (the sizes of the graph's initializers) and multiply-adds of its Conv, Gemm and
    MatMul nodes for one input of ``input_shape`` (C, H, W), from ONNX shape inference."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: its input gets batch 1
    params = sum(int(torch.tensor(list(t.dims), dtype=torch.long).prod()) for t in model.graph.initializer)
    initializers = {t.name for t in model.graph.initializer}
    image = next(i for i in model.graph.input if i.name not in initializers)
    for dim, size in zip(image.type.tensor_type.shape.dim, (1, *input_shape)):
        dim.ClearField("dim_param")
        dim.dim_value = size
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    return params, sum(_node_macs(node, shapes) for node in graph.node)


def _node_macs(node, shapes: dict[str, list[int]]) -> int:
    out, first = shapes.get(node.output[0]), shapes.get(node.input[0]) if node.input else None
    if not out or not first or 0 in out:
        return 0
    out_size = int(torch.tensor(out).prod())
    if node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1]):
        return out_size * int(torch.tensor(shapes[node.input[1]][1:]).prod())  # weight (out, in/groups, k...)
    if node.op_type == "Gemm":
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        return out_size * first[0 if trans_a else -1]
    if node.op_type == "MatMul":
        return out_size * first[-1]
    return 0


@contextlib.contextmanager
def _brick_by_brick(module: nn.Module) -> Iterator[None]:
    """Fused runners (``kfstudio.core.students.fused``) call no conv or linear layers, so the hooks would see
    nothing: count on the brick-by-brick form, which does the same arithmetic."""
    switched = [m for m in module.modules() if getattr(m, "fused", None) is True]
    for m in switched:
        m.fused = False
    try:
        yield
    finally:
        for m in switched:
            m.fused = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.no_grad()
def measure_latency(run: Callable[[], object], device: torch.device, *, warmup: int = 3, repeats: int = 15,
                    rounds: int = 3, budget_s: float = 0.3) -> float:
    """Milliseconds of ``run()``: the best of ``rounds`` medians, so that a burst of other work on
    a shared machine does not pass for the network's own speed. Each round stops early once
    ``budget_s`` is spent (after at least 3 runs)."""
    return measure_latencies({"run": run}, device, warmup=warmup, repeats=repeats, rounds=rounds,
                             budget_s=budget_s)["run"]


@torch.no_grad()
def measure_latencies(runs: dict[str, Callable[[], object]], device: torch.device, *, warmup: int = 3,
                      repeats: int = 15, rounds: int = 3, budget_s: float = 0.3) -> dict[str, float]:
    """Milliseconds of each of ``runs``, timed in turns (interleaved): in each of ``rounds`` rounds every
    run takes its median over up to ``repeats`` calls, so a burst of other work hits all of them alike;
    each figure is its best round. With one CPU thread (torch's; runtimes that own their threads, such
    as onnxruntime sessions, are set up by their caller)."""
    with _single_thread(device):
        for run in runs.values():
            for _ in range(warmup):
                run()
        _sync(device)
        medians: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                medians[name].append(_median_round(run, device, repeats, budget_s))
        return {name: min(values) for name, values in medians.items()}


@contextlib.contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """One CPU thread while timing one input: intra-op threads only add hand-offs on networks this
    small, and on a busy machine every hand-off waits for a free core, which would be timed too."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _median_round(run: Callable[[], object], device: torch.device, repeats: int, budget_s: float) -> float:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def module_cost(module: nn.Module | None, run: Callable[[], object], device: torch.device,
                *, latency: bool = True) -> Cost:
    """The cost of ``module`` as exercised by ``run()`` (one input); ``module`` None: latency only."""
    params = count_parameters(module) if module is not None else None
    macs = count_macs(run, module) if module is not None else None
    return Cost(params, macs, measure_latency(run, device) if latency else None)
