"""Fitting a Bradley–Terry head on feature differences, with the L2 strength chosen by
cross-validation grouped by generator (a fold holds out whole generators, as evaluation does).

Loss over pairs i with target y_i = P(output_2 better):
  L(w, γ) = Σ_i weight_i · BCE(sigmoid(Δz_i · w + γ Δℓ_i), y_i) / Σ weight_i + λ/2 · ‖w‖²
where Δz = z(output_2) − z(output_1) on standardized features. There is no intercept: a pair's two
answers are exchangeable, so swapping them must flip the prediction. L-BFGS from zero on a convex
loss: the result depends on the data alone (deterministic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from alignez_eval.errors import DataError

DEFAULT_L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)


@dataclass
class PairData:
    """Aligned arrays of training pairs: standardized feature differences and length differences."""

    dz: np.ndarray  # [n, D]
    dl: np.ndarray  # [n]
    y: np.ndarray  # [n] in [0, 1]
    weight: np.ndarray  # [n]
    group: np.ndarray  # [n] generator family of each pair (the CV unit)

    def take(self, idx: np.ndarray) -> PairData:
        return PairData(self.dz[idx], self.dl[idx], self.y[idx], self.weight[idx], self.group[idx])


def fit_bt(data: PairData, l2: float, use_length: bool) -> tuple[np.ndarray, float]:
    """-> (w, γ) minimising the loss above (γ = 0 when the length term is off)."""
    d = data.dz.shape[1]
    wsum = float(data.weight.sum())
    X = np.hstack([data.dz, data.dl[:, None]]) if use_length else data.dz

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        m = X @ theta
        # BCE with logits, numerically stable: -(y log σ(m) + (1-y) log σ(-m))
        ll = data.y * log_expit(m) + (1 - data.y) * log_expit(-m)
        val = -float((data.weight * ll).sum()) / wsum + 0.5 * l2 * float(theta[:d] @ theta[:d])
        g = X.T @ (data.weight * (expit(m) - data.y)) / wsum
        g[:d] += l2 * theta[:d]
        return val, g

    res = minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    theta = res.x
    return theta[:d], (float(theta[d]) if use_length else 0.0)


def pair_metrics(margin_quality: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Agreement on decisive pairs (y != 0.5) of the quality score's sign, and log loss."""
    dec = np.abs(y - 0.5) > 1e-9
    agree = float(np.mean((margin_quality[dec] > 0) == (y[dec] > 0.5))) if dec.any() else float("nan")
    ll = -float(np.mean(y * log_expit(margin_quality) + (1 - y) * log_expit(-margin_quality)))
    return {"agreement": agree, "log_loss": ll}


def grouped_folds(groups: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k folds of pair indices, each holding whole groups; groups dealt largest first, round robin
    over a seeded order, so folds are of similar size."""
    uniq, counts = np.unique(groups, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of = {uniq[g]: i % k for i, g in enumerate(order)}
    assign = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(assign == f) for f in range(k)]


def cross_validate(data: PairData, l2_grid: Sequence[float], use_length: bool, k: int = 5,
                   seed: int = 0, read_length: bool = False) -> list[dict[str, float]]:
    """Grouped k-fold CV of each λ: held-out log loss and agreement of the score a head reports (the
    quality part, plus γΔℓ when the head reads length), pooled over folds."""
    k = min(k, len(np.unique(data.group)))
    if k < 2:
        raise DataError("cross-validation grouped by generator needs at least 2 generators (or, for one source, "
                        "2 prompts); give more training data")
    folds = grouped_folds(data.group, k, seed)
    rows = []
    for l2 in l2_grid:
        def fit_and_score(train: np.ndarray, test: np.ndarray, l2: float = l2) -> np.ndarray:
            w, gamma = fit_bt(data.take(train), l2, use_length)
            return data.dz[test] @ w + (gamma * data.dl[test] if read_length else 0.0)

        rows.append({"l2": float(l2), **pair_metrics(held_out_margins(len(data.y), folds, fit_and_score), data.y)})
    return rows


def held_out_margins(n: int, folds: Sequence[np.ndarray],
                     fit_and_score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Each pair's margin from the model fitted without its fold: `fit_and_score(train, test)` fits on
    the train rows and returns the test rows' margins."""
    margins = np.zeros(n)
    for test in folds:
        margins[test] = fit_and_score(np.setdiff1d(np.arange(n), test), test)
    return margins


def choose_l2(cv: list[dict[str, float]]) -> float:
    """The λ with the lowest held-out log loss (a proper score: it rewards calibrated margins, not
    only their signs); ties go to the stronger regularisation."""
    best = min(cv, key=lambda r: (round(r["log_loss"], 6), -r["l2"]))
    return best["l2"]
