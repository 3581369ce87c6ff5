"""Disentanglement measures of a representation against known generative factors.

``mig`` is the Mutual Information Gap (Chen et al., 2018) and ``dci`` the Disentanglement,
Completeness and Informativeness scores (Eastwood & Williams, 2018), as the KF paper reports
them on data with known factors (builtin:shapes here). Both take latents ``z`` (N, D) and
integer factors ``v`` (N, K) as numpy arrays or tensors; torch is never required.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _array(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def discretize(z, bins: int = 20) -> np.ndarray:
    """Each latent dimension cut into ``bins`` equal-width bins over its own range."""
    z = _array(z).astype(np.float64)
    out = np.zeros(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        edges = np.histogram_bin_edges(z[:, j], bins=bins)
        out[:, j] = np.digitize(z[:, j], edges[1:-1])
    return out


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(code_j; factor_k) in nats, shape (D, K), for discrete codes and factors."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(factors[:, k], codes[:, j]) for k in range(factors.shape[1])]
                     for j in range(codes.shape[1])])


def mig(z, factors, bins: int = 20) -> float:
    """Mean over factors of (top - second mutual information) / H(factor); 1 is perfect."""
    from sklearn.metrics import mutual_info_score

    v = _array(factors).astype(np.int64)
    if v.ndim == 1:
        v = v[:, None]
    z = _array(z)
    if z.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions.")
    mi = mutual_info_matrix(discretize(z, bins), v)
    entropy = np.array([mutual_info_score(v[:, k], v[:, k]) for k in range(v.shape[1])])
    top2 = np.sort(mi, axis=0)[::-1][:2]
    gaps = (top2[0] - top2[1]) / np.maximum(entropy, 1e-12)
    return float(np.mean(gaps[entropy > 0])) if (entropy > 0).any() else 0.0


@dataclass(frozen=True)
class DCIScores:
    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray  # (D, K): how much each latent dimension predicts each factor


def _entropy_base(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis) / np.log(max(base, 2))


DCI_REGRESSORS = ("lasso", "gbt")


def dci(z_train, v_train, z_test, v_test, *, regressor: str = "lasso", c: float = 0.1, seed: int = 0,
        trees: int = 100) -> DCIScores:
    """DCI with one predictor per factor: ``lasso`` (L1-regularized logistic) or ``gbt``
    (gradient-boosted trees, as Locatello et al., 2019 compute it).

    The importance of latent i for factor j is, for lasso, the mean absolute coefficient of the
    standardized latent in the predictor of factor j; for gbt, the trees' impurity-based feature
    importance (``trees`` boosting rounds of depth-3 trees). Informativeness is the mean test
    accuracy of those predictors.
    """
    from sklearn.preprocessing import StandardScaler

    if regressor not in DCI_REGRESSORS:
        raise ValueError(f"Unknown DCI regressor '{regressor}'; use one of {', '.join(DCI_REGRESSORS)}.")
    z_train, z_test = _array(z_train).astype(np.float64), _array(z_test).astype(np.float64)
    v_train, v_test = _array(v_train).astype(np.int64), _array(v_test).astype(np.int64)
    if v_train.ndim == 1:
        v_train, v_test = v_train[:, None], v_test[:, None]
    scaler = StandardScaler().fit(z_train)
    a, b = scaler.transform(z_train), scaler.transform(z_test)
    dims, k = z_train.shape[1], v_train.shape[1]
    importance = np.zeros((dims, k))
    accuracy = []
    for j in range(k):
        if regressor == "gbt":
            model = _boosted_trees(trees, seed).fit(a, v_train[:, j])
            importance[:, j] = model.feature_importances_
        else:
            model = _lasso_classifier(c, seed).fit(a, v_train[:, j])
            coefs = [e.coef_ for e in model.estimators_]
            importance[:, j] = np.abs(np.concatenate(coefs)).mean(axis=0)
        accuracy.append(model.score(b, v_test[:, j]))
    return DCIScores(*_dci_from_importance(importance), float(np.mean(accuracy)), importance)


def _boosted_trees(trees: int, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=trees, max_depth=3, random_state=seed)


def _lasso_classifier(c: float, seed: int):
    """One-vs-rest L1 logistic regression (liblinear), across scikit-learn versions."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", random_state=seed, max_iter=500, **l1))


def _dci_from_importance(r: np.ndarray) -> tuple[float, float]:
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0
    dims, k = r.shape
    per_dim = r.sum(axis=1)
    p_dim = r / np.maximum(per_dim[:, None], 1e-12)
    disentanglement = float(((1.0 - _entropy_base(p_dim, k, axis=1)) * per_dim / total).sum()) if k > 1 else 1.0
    per_factor = r.sum(axis=0)
    p_factor = r / np.maximum(per_factor[None, :], 1e-12)
    completeness = float(((1.0 - _entropy_base(p_factor, dims, axis=0)) * per_factor / total).sum())
    return disentanglement, completeness
