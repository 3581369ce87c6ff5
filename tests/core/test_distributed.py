"""A run of two gloo processes on the CPU is the same run as one process.

The processes are forked from the test (fast: nothing is imported again) and meet through a
file store in tmp_path; every child is joined before the test ends. With ``--sync-bn`` and
``--infomax-stats global`` the two processes, each on its half of every global batch, give the
losses of one process on the whole batch, and a checkpoint of either continues in the other.
Over many steps "the same" means within ``helpers.TRAINED_RTOL``: rounding that puts a ReLU input
on the other side of 0 changes that element's gradient outright (see there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import TRAINED_RTOL, largest_loss_mismatch
from kfstudio.core import distributed
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.runs import RunControl
from kfstudio.core.runs import drain

# Tiny students on the digits; 1437 training images. sync_bn and global statistics make the
# objective and BatchNorm see the global batch, the condition for exact equivalence.
BASE = dict(teacher="builtin:digits", data="builtin:digits", tasks="one-vs-rest:3,7", common_width=0.25,
            task_width=0.25, device="cpu", seed=0, report_every=1, sync_bn=True, infomax_stats="global",
            calibration_fraction=0)  # all 1437 training images: the step counts below assume them


def _run(config: FactorizeConfig, stop_after_epoch: int | None = None, steps: int | None = None) -> list[dict]:
    """Every step's losses (report_every=1); cancel once ``stop_after_epoch`` is evaluated or
    after ``steps`` steps (every process sees the same reports, so all cancel together)."""
    control, losses = RunControl(), []

    def on_report(report):
        if report.kind == "step":
            losses.append(report.losses)
            if len(losses) == steps:
                control.cancel()
        elif report.kind == "eval" and report.epoch == stop_after_epoch:
            control.cancel()

    drain(iter_factorize(config, control=control), on_report)
    return losses


def _child(rank: int, world: int, store: str, config: FactorizeConfig, stop_after_epoch, steps, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        losses = _run(config, stop_after_epoch, steps)
        if rank == 0:
            Path(result).write_text(json.dumps(losses))
    finally:
        dist.destroy_process_group()


def _two_processes(tmp_path: Path, config: FactorizeConfig, stop_after_epoch: int | None = None,
                   steps: int | None = None) -> list[dict]:
    result = tmp_path / "losses.json"
    # join=True waits for both children and raises if either failed: nothing is left running.
    store = tmp_path / f"store-{len(list(tmp_path.glob('store-*')))}"
    mp.start_processes(_child, args=(2, str(store), config, stop_after_epoch, steps, str(result)), nprocs=2,
                       join=True, start_method="fork")
    return json.loads(result.read_text())


def test_two_processes_give_the_losses_of_one_on_the_global_batch(tmp_path):
    # Batch 63: the two halves differ by a row at every step (32 + 31), so the uneven gather is used.
    config = FactorizeConfig(**BASE, epochs=1, batch_size=63)
    one = _run(config, steps=20)
    two = _two_processes(tmp_path, config, steps=20)
    assert len(one) == len(two) == 20
    assert largest_loss_mismatch(one, two) <= 1
    # and the statistics matter: per-process statistics give other losses on the same batches
    local = _two_processes(tmp_path, FactorizeConfig(**{**BASE, "sync_bn": False, "infomax_stats": "local"},
                                                     epochs=1, batch_size=63), steps=3)
    assert largest_loss_mismatch(one[:3], local) > 10


# 1437 images at batch 200: 8 steps an epoch.
RESUMED = FactorizeConfig(**BASE, epochs=2, batch_size=200, lr=0.05)


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    """One process, two epochs, no break: what a run resumed on any number of processes continues."""
    return _run(RESUMED)


def _with(config: FactorizeConfig, **changes) -> FactorizeConfig:
    return FactorizeConfig(**{**config.to_dict(), "imb": config.imb, **changes})


def test_a_two_process_checkpoint_resumes_in_one_process_at_the_same_batch(tmp_path, reference):
    config = RESUMED
    checkpoint = tmp_path / "checkpoint.pt"
    first = _two_processes(tmp_path, FactorizeConfig(**{**config.to_dict(), "checkpoint": str(checkpoint),
                                                        "imb": config.imb}), stop_after_epoch=1)
    assert len(first) == 8  # both processes stopped at the same step
    state = torch.load(checkpoint, weights_only=True)
    assert state["step"] == 8
    assert not any(k.startswith("module.") for k in (*state["model"], *state["objective"]))
    rest = _run(FactorizeConfig(**{**config.to_dict(), "resume": str(checkpoint), "imb": config.imb}))
    assert len(rest) == 8
    assert largest_loss_mismatch(reference[:1], first[:1]) <= 1  # before any update: rounding alone
    assert largest_loss_mismatch(reference[:8], first, rtol=TRAINED_RTOL) <= 1
    assert largest_loss_mismatch(reference[8:], rest, rtol=TRAINED_RTOL) <= 1
    # The bound still tells batches apart: one batch off (measured 9e-2 relative) is far outside it.
    assert largest_loss_mismatch(reference[9:], rest[:-1], rtol=TRAINED_RTOL) > 2


def test_a_one_process_checkpoint_resumes_in_two_processes_at_the_same_batch(tmp_path, reference):
    checkpoint = tmp_path / "checkpoint.pt"
    first = _run(_with(RESUMED, checkpoint=str(checkpoint)), stop_after_epoch=1)
    assert len(first) == 8 and torch.load(checkpoint, weights_only=True)["step"] == 8
    # Two processes pick the run up at step 9 (epoch 2, batch 1), each on its half of every batch.
    rest = _two_processes(tmp_path, _with(RESUMED, resume=str(checkpoint)))
    assert len(rest) == 8
    assert largest_loss_mismatch(reference[8:9], rest[:1]) <= 1  # the same state: rounding alone
    assert largest_loss_mismatch(reference[8:], rest, rtol=TRAINED_RTOL) <= 1


def test_a_two_process_checkpoint_holds_the_batch_statistics_of_one_process(tmp_path):
    # After one step the running statistics come from the first forward pass alone, so the two runs
    # differ by rounding only. With global InfoMax statistics the projectors see the gathered batch
    # in each process: a synchronized BatchNorm there counted every sample twice, and its running
    # variance was off by 200/199 against 400/399 (1.5e-4 here).
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _run(_with(RESUMED, checkpoint=str(one)), steps=1)
    _two_processes(tmp_path, _with(RESUMED, checkpoint=str(two)), steps=1)
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert a["step"] == b["step"] == 1
    for part in ("model", "objective"):
        buffers = [k for k in a[part] if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]
        assert buffers and set(a[part]) == set(b[part])
        for key in buffers:
            torch.testing.assert_close(b[part][key], a[part][key], rtol=1e-5, atol=1e-7,
                                       msg=lambda m, k=key: f"{k}: {m}")


def test_gather_and_shards_join_a_batch_in_rank_order():
    ctx = distributed.Context(rank=1, world_size=2)
    batch = torch.arange(7)
    assert distributed.shard(batch, ctx).tolist() == [4, 5, 6]
    assert distributed.shard_rows(7, ctx) == [4, 3]
    assert distributed.min_last_batch(ctx) == 4
    assert distributed.shard(batch, distributed.Context()).tolist() == batch.tolist()


@pytest.mark.parametrize("value", ["x", "1"])
def test_the_nan_hook_refuses_a_malformed_value(monkeypatch, value):
    from kfstudio.core.errors import TrainingError

    monkeypatch.setenv(distributed.NAN_HOOK_ENV, value)
    with pytest.raises(TrainingError, match="RANK:STEP"):
        distributed.nan_hook(distributed.Context(), 1)
