"""The cost panel's measurements in a child process, at a lower priority than the window.

Counting multiply-adds and timing the fused network are Python-heavy: in a thread of the
window's process they hold the GIL for most of a second, and the window's timer waits behind
them (on a busy 2-core machine an attach stalled the GUI thread 150-600 ms that way). One
spawned child (``concurrent.futures.ProcessPoolExecutor``, shared by every cost panel) does
them instead, niced below the window, so the GUI thread never waits for it.

Modules cross once: each part (the common module, a brick) goes to the child under a token the
first time it is needed, as its file's path where it has one (the child reads it), and the child
keeps it. ``submit(request)`` returns a Future of the
answers: ``("macs", token, n)`` per part asked for, then ``("latency", ms)``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

CHILD_NICENESS = 10   # below the window, as the training process is

_executor: ProcessPoolExecutor | None = None
_sent: set[str] = set()   # tokens of the modules the child holds
_lock = threading.Lock()  # the child may be started from the warm-up thread (``warm``)


def _run(fn, *args) -> Future:
    """Submit ``fn(*args)`` to the child, starting it (without re-running ``__main__``) on first need."""
    global _executor
    with _lock:
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


class _Packed:
    """A module that crosses to the child as one block of bytes (``torch.save``, made in the
    executor's feeder thread). Sent as is, torch would move every tensor into shared memory and
    pass a file descriptor per tensor, holding the window's GIL for seconds on a busy machine."""

    def __init__(self, module) -> None:
        self.module = module

    def __reduce__(self):
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(self.module, buffer)
        return _unpack, (buffer.getvalue(),)


def _unpack(data: bytes):
    import io

    import torch

    # bytes this studio's own process just wrote (never a user's file): a whole module, so not weights-only
    return torch.load(io.BytesIO(data), weights_only=False)


def _source(part):
    """How a part travels: a brick or common module saved in a file as its path (the child reads it;
    nothing to pickle here), anything else (a bundle's part) as bytes."""
    path = Path(str(getattr(part, "path", "")))
    if path.suffix == ".safetensors" and path.is_file() and path.with_suffix(".json").is_file():
        return ("file", str(path), hasattr(part, "task"))
    return _Packed(part.module)


def submit(request: dict, parts: dict) -> Future:
    """Ask the child for ``request``; ``parts`` {token: CommonFile or BrickFile} holds every part it
    names, of which only those it has not seen travel."""
    new = {token: _source(part) for token, part in parts.items() if token not in _sent}
    future = _run(measure_in_child, dict(request, modules=new))
    _sent.update(new)
    return future


def submit_teacher(teacher, shape: tuple, fits: bool) -> Future:
    """Ask the child for a teacher's multiply-adds and latency: a built-in teacher by name (the child
    builds it), another as bytes (the Future fails when its module cannot be sent to a process,
    e.g. TorchScript: ``cost_model.teacher_job`` does it then)."""
    source = ("builtin", teacher.ref) if teacher.ref.startswith("builtin:") else _Packed(teacher.module)
    return _run(teacher_in_child, source, shape, fits)


_warm: Future | None = None


def warm() -> None:
    """Start the child now, before the first edit needs it (its start imports torch: seconds on a
    busy machine, better spent while the user reads the Factorize page than at the first attach).
    The start itself (spawning a process, the executor's threads: tens of milliseconds) runs in a
    side thread, so the window does not wait for it either."""
    global _warm
    if _warm is not None and (_executor is not None or not _warm.done()):
        return
    _warm = Future()
    threading.Thread(target=_start_child, args=(_warm,), name="kfstudio-cost-child-start", daemon=True).start()


def _start_child(ready: Future) -> None:
    """Start the child and resolve ``ready`` once it has answered (or with why it could not start)."""
    try:
        _run(_child_ready).add_done_callback(lambda answered: _settle(ready, answered))
    except Exception as exc:  # a process that cannot be spawned: the first measurement will say so
        ready.set_exception(exc)


def _settle(ready: Future, answered: Future) -> None:
    exc = answered.exception()
    ready.set_exception(exc) if exc is not None else ready.set_result(True)


def is_ready() -> bool:
    """The child has started and answered (for benchmarks and tests)."""
    return _warm is not None and _warm.done()


def _child_ready() -> bool:
    import torch  # noqa: F401  (what the first measurement would import)

    from kfstudio.assembly import build  # noqa: F401
    return True


def shutdown() -> None:
    """Stop the child (the application is quitting)."""
    global _executor
    with _lock:
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


def _module(source):
    """The module a source names (see ``_source``)."""
    if isinstance(source, tuple) and source[0] == "file":
        from kfstudio.io.bricks import load_brick, load_common

        return (load_brick if source[2] else load_common)(source[1]).module
    if isinstance(source, tuple) and source[0] == "builtin":
        from kfstudio.core.teachers.loaders import load_teacher

        return load_teacher(source[1]).module
    return source


def teacher_in_child(source, shape: tuple, fits: bool) -> tuple:
    """A teacher's multiply-adds and latency for one input of ``shape`` (None, None if it does not fit)."""
    import torch

    from kfstudio.assembly.measure import inference_form
    from kfstudio.core.measures.cost import count_macs, measure_latency
    from kfstudio.gui.build.cost_model import CPU, LATENCY_RUNS

    if not fits:
        return None, None
    module = _module(source).to(CPU).eval()
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

    _modules.update({token: _module(source) for token, source in request["modules"].items()})
    common = _modules[request["common"]]
    x = torch.randn(1, *request["shape"], generator=torch.Generator().manual_seed(0))
    answers = []
    with torch.no_grad():
        encoded = common.encode(x)  # z_c and every stage: a light brick reads a stage, not the image
        for token in request["count"]:
            module = _modules[token]
            run = (lambda: module(x)) if token == request["common"] else (lambda: encoded.run(module))
            answers.append(("macs", token, count_macs(run, module)))
        if request["bricks"]:
            bricks = {task.name: _modules[token] for token, task in request["bricks"]}
            tasks = [task for _token, task in request["bricks"]]
            network = AssembledNetwork(common, bricks, tasks, request["spec"])
            answers.append(("latency", measure_latency(lambda: network(x), CPU, **LATENCY_RUNS)))
    return answers
