"""Overhead: kfstudio's engine against the same factorization step written as a bare loop.

Both sides build the same students (``build_network``), use the same objective
(``IMBObjective``), the same cached teacher outputs, the same batches, optimizer, schedule
and gradient clipping. The bare loop does nothing else; the engine (``iter_factorize``,
its reports consumed) also evaluates after every epoch, averages the loss terms for its
reports and checks the loss is finite. Rounds alternate in one process.

    python -m benchmarks.overhead [--device cpu|cuda] [--quick] [--data builtin:shapes]
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import time
from contextlib import contextmanager

import torch
from torch import nn

from benchmarks import _common as C
from kfstudio.core import factorize as engine
from kfstudio.core.data.sources import load_data, prepare
from kfstudio.core.factorize import FactorizeConfig, build_network, iter_factorize
from kfstudio.core.imb import IMBObjective, group_targets
from kfstudio.core.runs import TrainLoop, drain
from kfstudio.core.tasks import group_tasks, resolve_tasks
from kfstudio.core.teachers.loaders import load_teacher


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Fixture:
    """Teacher, data and cached teacher outputs, loaded once and shared by both sides."""

    def __init__(self, config: FactorizeConfig) -> None:
        self.config = config
        self.teacher = load_teacher(config.teacher)
        self.split = load_data(config.data, seed=config.seed)
        self.teacher.to(torch.device(config.device))
        self.teacher.set_batchnorm_train(False)
        spec = self.teacher.input_spec
        self.train_x = prepare(self.split.train, spec).x.to(config.device)
        self.tasks = resolve_tasks(config.tasks, self.teacher.class_names)
        self.groups = group_tasks(self.tasks)
        with torch.no_grad():
            logits, feats = self.teacher.outputs_and_features(self.train_x)
        self.logits = {k: v.float() for k, v in logits.items()}
        self.feats = [f.float() for f in feats]
        labels = self.split.train.labels
        self.targets = {g.name: group_targets(g, labels[g.source]).to(config.device) for g in self.groups}


def bare_loop(fx: Fixture) -> tuple[float, int, nn.Module]:
    """The factorization step in plain PyTorch; returns (seconds, samples, network)."""
    cfg = fx.config
    torch.manual_seed(cfg.seed)
    net = build_network(cfg, fx.tasks, fx.teacher.input_spec).to(cfg.device)
    objective = IMBObjective(fx.groups, [f.shape[1] for f in fx.feats], net.common.stage_dims, cfg.imb).to(cfg.device)
    opt = torch.optim.SGD(list(net.parameters()) + list(objective.parameters()), lr=cfg.lr, momentum=0.9,
                          weight_decay=cfg.weight_decay, nesterov=True)
    n = len(fx.train_x)
    batches_per_epoch = [_shuffle(n, cfg, e) for e in range(cfg.epochs)]
    total = sum(len(b) for b in batches_per_epoch)
    warmup = max(1, total // 50)
    net.train(), objective.train()
    _sync(cfg.device)
    start, step, samples = time.perf_counter(), 0, 0
    for batches in batches_per_epoch:
        for index in batches:
            index = index.to(cfg.device)
            lr = cfg.lr * (step + 1) / warmup if step < warmup else \
                0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group in opt.param_groups:
                group["lr"] = lr
            stages, bricks = net.forward_train(fx.train_x[index])
            terms = objective(stages, bricks, {k: v[index] for k, v in fx.logits.items()},
                              [f[index] for f in fx.feats], {k: v[index] for k, v in fx.targets.items()})
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            samples += len(index)
    _sync(cfg.device)
    return time.perf_counter() - start, samples, net


def _shuffle(n: int, cfg: FactorizeConfig, epoch: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    batches = list(order.split(cfg.batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


@contextmanager
def timed_engine():
    """Time the engine's parts by wrapping them: evaluate, the train step, the report."""
    spent = {"evaluate": 0.0, "train step": 0.0, "report": 0.0}
    originals = (engine.evaluate, TrainLoop._train_step, TrainLoop._report)

    def wrap(fn, key):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t
        return inner

    engine.evaluate = wrap(originals[0], "evaluate")
    TrainLoop._train_step = wrap(originals[1], "train step")
    TrainLoop._report = wrap(originals[2], "report")
    try:
        yield spent
    finally:
        engine.evaluate, TrainLoop._train_step, TrainLoop._report = originals


def engine_run(fx: Fixture, profile: cProfile.Profile | None = None):
    """Run the engine to the end; returns (train-phase seconds, setup seconds, samples, steps, parts, result)."""
    with timed_engine() as parts:
        t0 = time.perf_counter()
        gen = iter_factorize(fx.config, teacher=fx.teacher, data=fx.split)
        setup = next(gen)
        _sync(fx.config.device)
        t1 = time.perf_counter()
        if profile:
            profile.enable()
        result = drain(gen)
        _sync(fx.config.device)
        if profile:
            profile.disable()
        t2 = time.perf_counter()
    samples = sum(len(b) for e in range(fx.config.epochs) for b in _shuffle(len(fx.train_x), fx.config, e))
    return t2 - t1, t1 - t0, samples, setup.total_steps, dict(parts), result


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--data", default="builtin:digits"),
        p.add_argument("--rounds", type=int, default=5),
        p.add_argument("--epochs", type=int, default=5)))
    C.setup_torch(args)
    rounds, epochs = (2, 1) if args.quick else (args.rounds, args.epochs)
    # No calibration hold-out: the bare loop trains on every training image, so the engine must too.
    config = FactorizeConfig(teacher=args.data, data=args.data, epochs=epochs, device=args.device, seed=0,
                             calibration_fraction=0.0)
    fx = Fixture(config)
    for _ in range(2):  # warm up both paths (allocator, oneDNN kernels, lazy imports)
        bare_loop(replace_epochs(fx, 1))
        engine_run(replace_epochs(fx, 1))
    fx.config = config
    rows, ratios, last = [], [], {}
    for r in range(rounds):
        order = ("bare", "engine") if r % 2 == 0 else ("engine", "bare")
        for side in order:
            if side == "bare":
                bare_s, bare_n, bare_net = bare_loop(fx)
            else:
                eng_s, setup_s, eng_n, steps, parts, result = engine_run(fx)
        bare_rate, eng_rate = bare_n / bare_s, eng_n / eng_s
        ratios.append(eng_rate / bare_rate)
        rows.append([r + 1, " then ".join(order), f"{bare_rate:,.0f}", f"{eng_rate:,.0f}", f"{eng_rate / bare_rate:.3f}",
                     f"{setup_s:.2f}", f"{parts['evaluate']:.2f}", f"{parts['report'] * 1000:.1f}"])
        last = {"bare_s": bare_s, "eng_s": eng_s, "parts": parts, "steps": steps, "bare_net": bare_net,
                "result": result}
    gap = weight_gap(last["bare_net"], last["result"].network)
    profile = cProfile.Profile()
    prof_s, *_ = engine_run(fx, profile)
    C.write_section(args, "overhead", "## Engine overhead\n\n" + report_text(
        args, config, rows, ratios, last, gap, profile, prof_s, len(fx.train_x)))


def replace_epochs(fx: Fixture, epochs: int) -> Fixture:
    from dataclasses import replace
    fx.config = replace(fx.config, epochs=epochs)
    return fx


def weight_gap(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.float().cpu() - sb[k].float().cpu()).abs().max()) for k, v in a.state_dict().items()
               if v.is_floating_point())


def report_text(args, config, rows, ratios, last, gap, profile, prof_s, n_train) -> str:
    parts, steps = last["parts"], last["steps"]
    bare_step = last["bare_s"] / steps
    extra = last["eng_s"] - last["bare_s"]
    other = last["eng_s"] - parts["evaluate"] - parts["train step"] - parts["report"]
    text = [C.machine_header(args, [config.seed], notes=[
        f"Data {config.data} ({n_train} training images), batch {config.batch_size}, {config.epochs} epochs "
        f"({steps} steps) per round, students `{config.common}`/`{config.task_net}` "
        f"(widths {config.common_width}/{config.task_width}), report_every {config.report_every} (the default).",
        "samples/s counts training images over the training phase only: the engine's clock starts when its "
        "SetupReport arrives (teacher pass, students built) and stops when it returns; the bare loop's clock "
        "covers its loop only. Two warm-up rounds of one epoch per side ran first."]),
        "", f"Timed on: {C.timing_caption()}.",
        "", C.table(["round", "order", "bare samples/s", "engine samples/s", "engine / bare", "engine setup s",
                     "engine evaluate s", "engine report ms"], rows),
        "", f"**Engine / bare throughput: median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}) over {len(ratios)} rounds.**",
        "", f"Same seed, same batches: the largest weight difference between the two students after the last "
            f"round is {gap:.2e} (they train the same network).",
        "", "Where the engine's extra time went in the last round:", "",
        C.table(["part", "seconds", "per step (ms)"], [
            ["bare loop, total", f"{last['bare_s']:.3f}", f"{bare_step * 1000:.2f}"],
            ["engine, total training phase", f"{last['eng_s']:.3f}", f"{last['eng_s'] / steps * 1000:.2f}"],
            ["engine: train steps", f"{parts['train step']:.3f}", f"{parts['train step'] / steps * 1000:.2f}"],
            ["engine: evaluate after each epoch", f"{parts['evaluate']:.3f}", f"{parts['evaluate'] / steps * 1000:.2f}"],
            ["engine: building reports", f"{parts['report']:.4f}", f"{parts['report'] / steps * 1000:.3f}"],
            ["engine: the rest (batches, generator, checks)", f"{other:.3f}", f"{other / steps * 1000:.2f}"],
            ["engine minus bare", f"{extra:.3f}", f"{extra / steps * 1000:.2f}"],
        ]),
        "", "A train step of the engine differs from the bare one by: reading every loss term back as a Python "
            "float each step (six device syncs on a GPU), the finiteness check of the loss, and the autocast "
            "context. cProfile of one more engine round, kfstudio functions by cumulative time (profiling slows "
            f"everything; that round took {prof_s:.2f} s):", "", _profile_table(profile)]
    return "\n".join(text)


def _profile_table(profile: cProfile.Profile, limit: int = 10) -> str:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        if "/kfstudio/" in file:
            rows.append((cumtime, tottime, calls, f"{file.split('/kfstudio/', 1)[-1]}:{line} {func}"))
    rows.sort(reverse=True)
    return C.table(["function", "calls", "own s", "cumulative s"],
                   [[f"`{r[3]}`", r[2], f"{r[1]:.3f}", f"{r[0]:.3f}"] for r in rows[:limit]])


if __name__ == "__main__":
    main()
