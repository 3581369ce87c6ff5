"""The teacher's outputs are cached only within a memory budget; above it the teacher runs on
every batch, and the run is the same run."""

from __future__ import annotations

from helpers import largest_loss_mismatch
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.runs import drain

BASE = dict(teacher="builtin:digits", data="builtin:digits", tasks="one-vs-rest:3,7", common_width=0.25,
            task_width=0.25, device="cpu", seed=0, report_every=1, epochs=1, batch_size=200,
            calibration_fraction=0)  # all 1437 training images, 8 batches: none held out for calibration


def _run(config: FactorizeConfig) -> tuple[list[str], list[dict[str, float]]]:
    messages, losses = [], []

    def on_report(report):
        if report.kind == "setup":
            messages.extend(report.messages)
        elif report.kind == "step":
            losses.append(report.losses)

    drain(iter_factorize(config), on_report)
    return messages, losses


def test_above_the_budget_the_teacher_runs_on_every_batch_with_the_same_losses():
    cached_messages, cached = _run(FactorizeConfig(**BASE))
    messages, uncached = _run(FactorizeConfig(**BASE, teacher_cache_mb=0.01))
    assert not any("cache budget" in m for m in cached_messages)
    note = next(m for m in messages if "cache budget" in m)
    assert "1,437 training images" in note and "the teacher runs on every batch" in note
    assert len(cached) == len(uncached) == 8
    # The teacher runs on chunks of the set in one, on each batch in the other: rounding may differ.
    assert largest_loss_mismatch(cached, uncached) <= 1
