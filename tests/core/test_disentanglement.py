"""MIG and DCI on cases whose answer is known."""

import numpy as np
import pytest

from kfstudio.core.measures.disentanglement import dci, discretize, mig


def _factors(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 2, n)], axis=1)


def test_discretize_uses_the_requested_bins():
    z = np.linspace(0, 1, 200)[:, None]
    codes = discretize(z, bins=20)
    assert codes.min() == 0 and codes.max() == 19


def test_perfectly_disentangled_latents_score_one():
    v = _factors()
    rng = np.random.default_rng(1)
    z = v + rng.normal(0, 0.01, v.shape)  # one latent per factor, nothing else
    assert mig(z, v) == pytest.approx(1.0, abs=0.02)
    scores = dci(z[:1000], v[:1000], z[1000:], v[1000:])
    assert scores.disentanglement > 0.95
    assert scores.completeness > 0.95
    assert scores.informativeness > 0.99


def test_random_latents_score_low():
    v = _factors()
    z = np.random.default_rng(2).normal(size=(len(v), 6))
    assert mig(z, v) < 0.05
    assert dci(z[:1000], v[:1000], z[1000:], v[1000:]).informativeness < 0.5


def test_entangled_latents_score_lower_than_disentangled():
    v = _factors()
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(3, 3))  # every latent mixes every factor
    z = (v - v.mean(0)) / v.std(0) @ mix + rng.normal(0, 0.01, v.shape)
    clean = v + rng.normal(0, 0.01, v.shape)
    assert mig(z, v) < 0.5 * mig(clean, v)
    assert dci(z[:1000], v[:1000], z[1000:], v[1000:]).disentanglement < 0.6


def test_accepts_a_single_factor_and_tensors():
    torch = pytest.importorskip("torch")
    v = _factors()[:, :1]
    z = torch.tensor(np.concatenate([v, np.random.default_rng(4).normal(size=(len(v), 1))], 1), dtype=torch.float32)
    assert mig(z, torch.tensor(v[:, 0])) > 0.9


def test_gbt_dci_finds_each_factor_in_its_own_latent_even_when_no_line_reads_it():
    v = _factors(900)
    rng = np.random.default_rng(5)
    sign = rng.choice([-1.0, 1.0], size=v.shape)
    # Latent j holds factor j as +-(value + 1): its magnitude, which no linear predictor reads; two noise latents.
    z = np.concatenate([sign * (v + 1) + rng.normal(0, 0.05, v.shape), rng.normal(size=(len(v), 2))], axis=1)
    trees = dci(z[:600], v[:600], z[600:], v[600:], regressor="gbt", trees=30)
    assert list(trees.importance[:3].argmax(axis=0)) == [0, 1, 2]
    assert trees.importance[3:].sum() < 0.05 * trees.importance.sum()
    assert trees.disentanglement > 0.9 and trees.completeness > 0.9 and trees.informativeness > 0.95
    lasso = dci(z[:600], v[:600], z[600:], v[600:], regressor="lasso")
    assert lasso.informativeness < trees.informativeness - 0.2  # the lasso cannot read a magnitude


def test_gbt_dci_scores_a_mixed_code_lower_and_refuses_an_unknown_regressor():
    v = _factors(900)
    rng = np.random.default_rng(6)
    clean = v + rng.normal(0, 0.05, v.shape)
    mixed = (v - v.mean(0)) / v.std(0) @ rng.normal(size=(3, 3))
    split = lambda z: (z[:600], v[:600], z[600:], v[600:])  # noqa: E731
    assert (dci(*split(mixed), regressor="gbt", trees=30).disentanglement
            < dci(*split(clean), regressor="gbt", trees=30).disentanglement - 0.3)
    with pytest.raises(ValueError, match="Unknown DCI regressor"):
        dci(*split(clean), regressor="forest")
