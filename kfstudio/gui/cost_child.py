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


def submit(request: dict, modules: dict) -> Future:
    """Ask the child (started on first need) for ``request``; ``modules`` {token: module} holds
    every part it names, of which only those it has not seen travel."""
    global _executor
    if _executor is None:
        from kfstudio.gui.worker import main_hidden

        _executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init)
        _sent.clear()
        with main_hidden():   # the child process starts on the first submit
            return _submit(request, modules)
    return _submit(request, modules)


def _submit(request: dict, modules: dict) -> Future:
    global _executor
    new = {token: m for token, m in modules.items() if token not in _sent}
    try:
        future = _executor.submit(measure_in_child, dict(request, modules=new))
    except BrokenProcessPool:   # the child died (killed, out of memory): a fresh one next time
        _executor = None
        raise
    _sent.update(new)
    return future


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


def measure_in_child(request: dict) -> list[tuple]:
    """The answers for one request: multiply-adds of the parts named in ``count``, then (with
    ``bricks``) the latency of the fused network of ``common`` and those bricks."""
    import torch

    from kfstudio.assembly.build import AssembledNetwork
    from kfstudio.core.cost import count_macs, measure_latency
    from kfstudio.gui.cost_model import CPU, LATENCY_RUNS

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
