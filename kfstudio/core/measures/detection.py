"""One one-vs-rest brick used alone, as a detector of its class.

A one-vs-rest brick's logit is trained inside its group's softmax, so it is a score whose
zero means nothing on its own. Calibrating it picks the threshold above which the brick says
"this is my class" (the one that maximises balanced accuracy on held-out images), and scores
it by ROC AUC (threshold-free) and by balanced accuracy at that threshold. A group of
calibrated bricks answers "none of these" when no brick's logit clears its threshold
(``with_none_column``: the margins above the thresholds, and a column at 0).

Public API: ``roc_auc``, ``balanced_accuracy``, ``fit_threshold``, ``with_none_column``, ``Detector``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def _checked(scores: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.detach().reshape(-1).double().cpu(), positives.detach().reshape(-1).bool().cpu()


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """The probability that a random positive scores above a random negative (ties count a half):
    the Mann-Whitney form of the area under the ROC curve. NaN without both kinds of input."""
    s, pos = _checked(scores, positives)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = torch.argsort(s)
    # Tied scores share the mean of their ranks (1-based).
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = mean_rank[inverse]
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(scores: torch.Tensor, positives: torch.Tensor, threshold: float) -> float:
    """The mean of the hit rates on positives (score > threshold) and negatives (score <= threshold)."""
    s, pos = _checked(scores, positives)
    fired = s > threshold
    rates = [float(fired[pos].double().mean()) if pos.any() else None,
             float((~fired[~pos]).double().mean()) if (~pos).any() else None]
    measured = [r for r in rates if r is not None]
    return sum(measured) / len(measured) if measured else float("nan")


def fit_threshold(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """The threshold of best balanced accuracy, halfway between two neighbouring scores (0 when
    the images hold only one kind, where nothing can be fitted)."""
    s, pos = _checked(scores, positives)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return 0.0
    order = torch.argsort(s, descending=True)
    s, pos = s[order], pos[order]
    # Threshold just below the i-th highest score: the top i+1 fire.
    hits = pos.double().cumsum(0) / n_pos
    rejections = 1 - (~pos).double().cumsum(0) / n_neg
    score = (hits + rejections) / 2
    distinct = torch.ones_like(pos)
    distinct[:-1] = s[:-1] != s[1:]  # only cut between different scores
    score[~distinct] = -1
    best = int(score.argmax())
    below = float(s[best + 1]) if best + 1 < len(s) else float(s[best]) - 1.0
    return (float(s[best]) + below) / 2


def with_none_column(stacked: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """A group's logits as margins above each brick's threshold, plus a "none of these" column at 0:
    the argmax is "none of these" exactly when no brick's logit clears its threshold."""
    margins = stacked - thresholds.to(stacked.dtype)
    return torch.cat([margins, torch.zeros_like(margins[:, :1])], dim=1)


@dataclass(frozen=True)
class Detector:
    """A calibrated brick: its threshold (fitted on ``calibration_images`` held-out images), its AUC
    there, and its AUC and balanced accuracy at the threshold on the ``test_images`` test images.
    ``source_classes``: how many classes its source has (a group of fewer is a subset)."""

    threshold: float
    auc: float
    accuracy: float
    calibration_auc: float
    calibration_images: int
    test_images: int
    source_classes: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def fit(cls, calibration: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
            source_classes: int) -> "Detector":
        """Fit on ``calibration`` (scores, is-my-class) and measure on ``test``."""
        threshold = fit_threshold(*calibration)
        return cls(threshold, roc_auc(*test), balanced_accuracy(*test, threshold), roc_auc(*calibration),
                   int(calibration[0].numel()), int(test[0].numel()), source_classes)
