"""Per-layer linear probe separating helpful from harmful embeddings (L2 logistic regression, Newton, torch).

Used to rank layers (`layers=probe:K`), as ITI's direction, and as a "when does it work" diagnostic.
Held-out accuracy is cross-validated over *pairs*: both answers of a query fall in the same fold, so
the probe cannot score by recognising the query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ProbeResult:
    accuracy: float  # mean held-out accuracy over folds (nan when there are < 2 pairs)
    direction: torch.Tensor  # (d,) unit vector in the original feature space, oriented towards helpful
    folds: int


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, max_iter: int = 100) -> tuple[torch.Tensor, float]:
    """Weights (d,) and bias minimising mean BCE + l2/2·‖w‖² on standardised features, mapped back to
    the original space (w / σ) so the direction is meaningful for steering."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    mu = x.mean(0)
    sd = x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - mu) / sd
    # Representer theorem: with an L2 penalty the optimal w lies in the span of the (centred) samples,
    # so when d > n we solve in that ≤ n-dimensional span — exact, and ~50x faster at d=640, n=48.
    basis = None
    if z.shape[1] > z.shape[0]:
        _, sv, vt = torch.linalg.svd(z, full_matrices=False)
        basis = vt[sv > sv.max() * 1e-10].T  # (d, r), orthonormal columns
        z = z @ basis
    w, b = _newton_logistic(z, y, l2, max_iter)
    w_full = w if basis is None else basis @ w
    w_orig = w_full / sd
    b_orig = float(b - (w_full * mu / sd).sum())
    return w_orig, b_orig


def _objective(z: torch.Tensor, y: torch.Tensor, l2: float, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    t = z @ w + b
    return torch.nn.functional.softplus(t).sub(y * t).mean() + 0.5 * l2 * (w @ w)


def _newton_logistic(
    z: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int, tol: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Newton on mean BCE + l2/2·‖w‖² (bias unpenalised). The problem is small (≤ n
    dimensions after the span reduction) and strictly convex, so a handful of exact Newton steps
    replace the hundreds of L-BFGS iterations a 30-layer × 6-fold probe used to spend."""
    n, r = z.shape
    a = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)  # (n, r+1); last column: bias
    reg = torch.full((r + 1,), l2, dtype=z.dtype)
    reg[-1] = 0.0
    p = torch.zeros(r + 1, dtype=z.dtype)
    f = _objective(z, y, l2, p[:-1], p[-1])
    for _ in range(max_iter):
        s = torch.sigmoid(a @ p)
        grad = a.T @ (s - y) / n + reg * p
        if float(grad.abs().max()) < tol:
            break
        hess = (a.T * (s * (1 - s))) @ a / n + torch.diag(reg)
        hess.diagonal().add_(1e-12)  # keeps the bias row solvable when every s saturates
        step = torch.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking (Armijo): Newton's full step can overshoot far from the optimum
            cand = p - t * step
            fc = _objective(z, y, l2, cand[:-1], cand[-1])
            if fc <= f - 1e-4 * t * float(grad @ step) or t < 1e-8:
                break
            t *= 0.5
        p, f = cand, fc
    return p[:-1], p[-1]


def pair_folds(n_pairs: int, k: int, seed: int = 0) -> list[torch.Tensor]:
    """Deterministic split of pair indices into k folds."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_pairs, generator=g)
    return [perm[i::k] for i in range(k)]


def probe_layer(
    h_help: torch.Tensor, h_harm: torch.Tensor, folds: int = 5, l2: float = 1e-2, seed: int = 0
) -> ProbeResult:
    """Cross-validated accuracy (pairs split into min(folds, n) folds) and the direction fitted on all pairs."""
    n, d = h_help.shape
    x_all = torch.cat([h_help, h_harm]).to(torch.float64)
    y_all = torch.cat([torch.ones(n), torch.zeros(n)]).to(torch.float64)
    mean_diff = (h_help - h_harm).to(torch.float64).mean(0)
    if n == 0:
        return ProbeResult(math.nan, torch.zeros(d, dtype=torch.float32), 0)
    w, _ = fit_logistic(x_all, y_all, l2)
    if float(w @ mean_diff) < 0:  # a degenerate fit could point either way; helpful is the convention
        w = -w
    nrm = w.norm()
    direction = (w / nrm if nrm > 0 else w).to(torch.float32)
    k = min(folds, n)
    if k < 2:
        return ProbeResult(math.nan, direction, 0)
    correct = 0
    total = 0
    for test in pair_folds(n, k, seed):
        mask = torch.ones(n, dtype=torch.bool)
        mask[test] = False
        tr = torch.nonzero(mask).flatten()
        xtr = torch.cat([h_help[tr], h_harm[tr]]).to(torch.float64)
        ytr = torch.cat([torch.ones(len(tr)), torch.zeros(len(tr))]).to(torch.float64)
        wf, bf = fit_logistic(xtr, ytr, l2)
        xte = torch.cat([h_help[test], h_harm[test]]).to(torch.float64)
        yte = torch.cat([torch.ones(len(test)), torch.zeros(len(test))])
        pred = ((xte @ wf + bf) > 0).to(torch.float32)
        correct += int((pred == yte).sum())
        total += len(yte)
    return ProbeResult(correct / total, direction, k)
