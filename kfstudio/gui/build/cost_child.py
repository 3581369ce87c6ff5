"""The cost panel's measurements in a child process, at a lower priority than the window.

Counting multiply-adds and timing the fused network are Python-heavy: in a thread of the
window's process they hold the GIL for most of a second, and the window's timer waits behind
them (on a busy 2-core machine an attach stalled the GUI thread 150-600 ms that way). One
spawned child (``concurrent.futures.ProcessPoolExecutor``, shared by every cost panel) does
them instead, niced below the window, so the GUI thread never waits for it.

Modules cross once: each part (the common module, a brick) goes to the child under a token the
first time it is needed, and the child keeps it. ``submit(request)`` returns a Future of the
answers: ``("macs", token, n)`` per part asked for, then ``("latency", ms)``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

CHILD_NICENESS = 10   # below the window, as the training process is

_executor: ProcessPoolExecutor | None = None
_sent: set[str] = set()   # tokens of the modules the child holds


def _run(fn, *args) -> Future:
    """Submit ``fn(*args)`` to the child, starting it (without re-running ``__main__``) on first need."""
    global _executor
    if _executor is None:
        from kfstudio.gui.train.worker import main_hidden

        _executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init)
        _sent.clear()
        with main_hidden():   # the child process starts on the first submit
            return _executor.submit(fn, *args)
    try:
        return _executor.submit(fn, *args)
    except BrokenProcessPool:   # the child died (killed, out of memory): a fresh one next time
        _executor = None
        raise


def submit(request: dict, modules: dict) -> Future:
    """Ask the child for ``request``; ``modules`` {token: module} holds every part it names, of
    which only those it has not seen travel."""
    new = {token: m for token, m in modules.items() if token not in _sent}
    future = _run(measure_in_child, dict(request, modules=new))
    _sent.update(new)
    return future


def submit_teacher(module, shape: tuple, fits: bool) -> Future:
    """Ask the child for a teacher's multiply-adds and latency (the Future fails when its module
    cannot be sent to a process, e.g. TorchScript: ``cost_model.teacher_job`` does it then)."""
    return _run(teacher_in_child, module, shape, fits)


def shutdown() -> None:
    """Stop the child (the application is quitting)."""
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=False, cancel_futures=True)
        _executor = None


# ---------------------------------------------------------------- in the child

_modules: dict = {}


def _child_init() -> None:
    import torch

    torch.set_num_threads(1)
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS))
        except OSError:
            pass


def teacher_in_child(module, shape: tuple, fits: bool) -> tuple:
    """A teacher's multiply-adds and latency for one input of ``shape`` (None, None if it does not fit)."""
    import torch

    from kfstudio.assembly.measure import inference_form
    from kfstudio.core.measures.cost import count_macs, measure_latency
    from kfstudio.gui.build.cost_model import CPU, LATENCY_RUNS

    if not fits:
        return None, None
    module = module.to(CPU).eval()
    timed, _folded = inference_form(module)  # timed as the fused network runs: like with like
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return count_macs(lambda: module(x), module), measure_latency(lambda: timed(x), CPU, **LATENCY_RUNS)


def measure_in_child(request: dict) -> list[tuple]:
    """The answers for one request: multiply-adds of the parts named in ``count``, then (with
    ``bricks``) the latency of the fused network of ``common`` and those bricks."""
    import torch

    from kfstudio.assembly.build import AssembledNetwork
    from kfstudio.core.measures.cost import count_macs, measure_latency
    from kfstudio.gui.build.cost_model import CPU, LATENCY_RUNS

    _modules.update(request["modules"])
    common = _modules[request["common"]]
    x = torch.randn(1, *request["shape"], generator=torch.Generator().manual_seed(0))
    answers = []
    with torch.no_grad():
        z_c = common(x)[0]
        for token in request["count"]:
            module = _modules[token]
            run = (lambda: module(x)) if token == request["common"] else (lambda: module(x, z_c))
            answers.append(("macs", token, count_macs(run, module)))
        if request["bricks"]:
            bricks = {task.name: _modules[token] for token, task in request["bricks"]}
            tasks = [task for _token, task in request["bricks"]]
            network = AssembledNetwork(common, bricks, tasks, request["spec"])
            answers.append(("latency", measure_latency(lambda: network(x), CPU, **LATENCY_RUNS)))
    return answers
