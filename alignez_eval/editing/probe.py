"""Per-layer linear probe separating helpful from harmful embeddings (L2 logistic regression, torch).

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


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, max_iter: int = 200) -> tuple[torch.Tensor, float]:
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
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_full = w.detach() if basis is None else basis @ w.detach()
    w_orig = w_full / sd
    b_orig = float(b.detach() - (w_full * mu / sd).sum())
    return w_orig, b_orig


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
