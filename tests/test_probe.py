"""Linear probe: the optimum matches an independent scipy solve; held-out accuracy behaves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from alignez_eval.fitting.probe import fit_logistic, pair_folds, probe_layer


def _scipy_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """The same objective (mean BCE + l2/2‖w‖² on standardised features), solved in full dimension."""
    mu, sd = x.mean(0), np.maximum(x.std(0), 1e-8)
    z = (x - mu) / sd

    def f(p: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = p[:-1], p[-1]
        t = z @ w + b
        loss = np.mean(np.logaddexp(0, t) - y * t) + 0.5 * l2 * w @ w
        r = (1 / (1 + np.exp(-t)) - y) / len(y)
        return loss, np.concatenate([z.T @ r + l2 * w, [r.sum()]])

    p = minimize(f, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B",
                 options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15}).x
    w, b = p[:-1], p[-1]
    return w / sd, b - float((w * mu / sd).sum())


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)])  # d < n and d > n (span-reduced path)
def test_logistic_matches_scipy(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    y = (rng.random(n) < 0.5).astype(float)
    y[:2] = [0, 1]
    w, b = fit_logistic(torch.tensor(x), torch.tensor(y), l2=0.1)
    w_ref, b_ref = _scipy_logistic(x, y, 0.1)
    assert np.allclose(w.numpy(), w_ref, atol=1e-4, rtol=1e-3)
    assert b == pytest.approx(b_ref, abs=1e-4)


def test_probe_separates_planted_classes_and_points_to_helpful():
    rng = np.random.default_rng(0)
    d, n = 32, 30
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    base = rng.normal(size=(n, d))
    hh = torch.tensor(base + 2.0 * u + 0.3 * rng.normal(size=(n, d)))
    hr = torch.tensor(base - 2.0 * u + 0.3 * rng.normal(size=(n, d)))
    res = probe_layer(hh, hr, folds=5)
    assert res.accuracy >= 0.95
    assert res.folds == 5
    assert float(res.direction.double().numpy() @ u) > 0.5
    assert float(res.direction.norm()) == pytest.approx(1.0, abs=1e-6)


def test_probe_on_unrelated_labels_is_near_chance():
    rng = np.random.default_rng(1)
    hh = torch.tensor(rng.normal(size=(60, 8)))
    hr = torch.tensor(rng.normal(size=(60, 8)))
    assert 0.3 <= probe_layer(hh, hr, folds=5).accuracy <= 0.7


def test_too_few_pairs_give_nan_accuracy():
    one = torch.ones(1, 4, dtype=torch.float64)
    assert math.isnan(probe_layer(one, -one).accuracy)
    assert math.isnan(probe_layer(torch.zeros(0, 4), torch.zeros(0, 4)).accuracy)


def test_pair_folds_partition_deterministically():
    folds = pair_folds(11, 4, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(11))
    assert [f.tolist() for f in folds] == [f.tolist() for f in pair_folds(11, 4, seed=0)]
