"""Helpers shared by the test packages (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

# Two runs that do the same arithmetic in another order (processes, streaming, machines) agree
# only to float32 rounding, which grows with the value and with every training step that feeds
# it back. A relative bound follows that; an absolute one on a loss of ~15 fails on machines
# whose reductions round differently (5.2e-4 apart = 3.5e-5 relative, seen on one CI machine).
LOSS_RTOL = 5e-4
# Terms that end near zero keep an absolute floor so that rounding of a tiny value is not "relative".
LOSS_ATOL = 1e-5


def largest_loss_mismatch(a: list[dict], b: list[dict]) -> float:
    """How far two runs' per-step loss dicts are apart, in units of the tolerance (<= 1: equal).

    ``a`` and ``b`` must have the same steps and keys; each value is compared as
    ``|x - y| / (LOSS_ATOL + LOSS_RTOL * max(|x|, |y|))``, the test of ``math.isclose``."""
    assert len(a) == len(b) and a, f"{len(a)} vs {len(b)} steps"
    return max(abs(x[k] - y[k]) / (LOSS_ATOL + LOSS_RTOL * max(abs(x[k]), abs(y[k])))
               for x, y in zip(a, b) for k in x)
