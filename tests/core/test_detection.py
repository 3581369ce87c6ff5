"""The detector math of a one-vs-rest brick: ROC AUC against scikit-learn, the fitted threshold."""

import math

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from kfstudio.core.measures.detection import (
    Detector,
    balanced_accuracy,
    fit_threshold,
    roc_auc,
    with_none_column,
)


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(300, generator=g) < 0.2
    # Rounded scores: many ties, which sklearn counts a half.
    scores = (torch.randn(300, generator=g) + 1.5 * labels).mul(3).round()
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_roc_auc_is_nan_without_both_kinds():
    assert math.isnan(roc_auc(torch.randn(5), torch.ones(5, dtype=torch.bool)))


def test_balanced_accuracy_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    labels = torch.rand(200, generator=g) < 0.1
    scores = torch.randn(200, generator=g) + 2 * labels
    expected = balanced_accuracy_score(labels.numpy(), (scores > 0.7).numpy())
    assert balanced_accuracy(scores, labels, 0.7) == pytest.approx(expected)


def test_fit_threshold_is_the_best_cut_between_scores():
    g = torch.Generator().manual_seed(2)
    labels = torch.rand(400, generator=g) < 0.1
    scores = torch.randn(400, generator=g) + 2.5 * labels + 3.0  # all positive: a zero threshold fires for all
    t = fit_threshold(scores, labels)
    best = max(balanced_accuracy(scores, labels, float(c)) for c in scores)
    assert balanced_accuracy(scores, labels, t) == pytest.approx(max(best, balanced_accuracy(scores, labels, t)))
    assert balanced_accuracy(scores, labels, t) > balanced_accuracy(scores, labels, 0.0) + 0.3
    assert not bool((scores == t).any())  # halfway between two scores, never on one


def test_separable_scores_are_split_perfectly():
    scores, labels = torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([False, False, True, True])
    assert fit_threshold(scores, labels) == pytest.approx(0.55)
    assert roc_auc(scores, labels) == 1.0


def test_none_column_wins_when_no_brick_clears_its_threshold():
    stacked = torch.tensor([[3.0, 1.0], [1.0, 0.5], [0.0, 4.0]])
    out = with_none_column(stacked, torch.tensor([2.0, 1.0]))
    assert out.argmax(dim=1).tolist() == [0, 2, 1]


def test_detector_fit_records_its_figures():
    scores, labels = torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([False, False, True, True])
    d = Detector.fit((scores, labels), (scores - 0.5, labels), source_classes=10)
    assert d.calibration_auc == 1.0 and d.calibration_images == 4 and d.test_images == 4
    assert d.accuracy == 0.5  # shifted test scores all fall below the threshold
    assert Detector(**d.to_dict()) == d
