"""A small nonlinear Bradley–Terry head: s(z) = w·z + v·relu(W₁z + b₁), one function scoring each
answer alone, trained on pairs with the loss of fit.py (soft targets, weights):

  L = Σ_i weight_i · BCE(sigmoid(s(z₂ᵢ) − s(z₁ᵢ)), y_i) / Σ weight_i + λ/2 (‖w‖² + ‖W₁‖² + ‖v‖²)

Adam on shuffled minibatches, in float32, from a seeded start: the same data, settings, torch build
and thread count give the same weights (torch's CPU kernels are deterministic at a fixed thread
count; `MLPSettings.threads` fixes it, 0 = leave torch's setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alignez_eval.errors import ConfigError


@dataclass(frozen=True)
class MLPSettings:
    hidden: int = 128
    l2: float = 1e-3
    epochs: int = 12
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.l2 < 0:
            raise ConfigError(f"MLP head settings {self}: hidden, epochs and batch size must be >= 1, lr > 0, l2 >= 0")


@dataclass
class PairIndex:
    """Pairs as rows of one answer matrix: answer i1[k] vs i2[k], P(i2 better) = y[k]."""

    Z: np.ndarray  # [n_answers, D] standardized features
    i1: np.ndarray
    i2: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    group: np.ndarray

    def take(self, idx: np.ndarray) -> PairIndex:
        return PairIndex(self.Z, self.i1[idx], self.i2[idx], self.y[idx], self.weight[idx], self.group[idx])


def mlp_scores(Z: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    z = np.asarray(Z, dtype=np.float64)
    return z @ params["w"] + np.maximum(z @ params["W1"].T + params["b1"], 0.0) @ params["v"]


def fit_mlp(data: PairIndex, s: MLPSettings) -> dict[str, np.ndarray]:
    """-> {w [D], W1 [h, D], b1 [h], v [h]} (float64 copies of the float32 weights)."""
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)  # a fixed reduction order: equal inputs give equal bytes
    try:
        gen = torch.Generator().manual_seed(s.seed)
        Z = torch.from_numpy(np.ascontiguousarray(data.Z, dtype=np.float32))
        d = Z.shape[1]
        w = torch.zeros(d, requires_grad=True)
        W1 = (torch.randn(s.hidden, d, generator=gen) / np.sqrt(d)).requires_grad_(True)
        b1 = torch.zeros(s.hidden, requires_grad=True)
        v = (torch.randn(s.hidden, generator=gen) / np.sqrt(s.hidden) * 0.1).requires_grad_(True)
        params = [w, W1, b1, v]
        opt = torch.optim.Adam(params, lr=s.lr)
        i1, i2 = torch.from_numpy(data.i1.astype(np.int64)), torch.from_numpy(data.i2.astype(np.int64))
        y = torch.from_numpy(data.y.astype(np.float32))
        wt = torch.from_numpy(data.weight.astype(np.float32))
        n = len(y)

        def score(z: torch.Tensor) -> torch.Tensor:
            return z @ w + torch.relu(z @ W1.T + b1) @ v

        for _ in range(s.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, s.batch_size):
                b = order[start: start + s.batch_size]
                m = score(Z[i2[b]]) - score(Z[i1[b]])
                loss = (wt[b] * torch.nn.functional.binary_cross_entropy_with_logits(m, y[b], reduction="none")).sum()
                loss = loss / wt[b].sum() + 0.5 * s.l2 * (w.square().sum() + W1.square().sum() + v.square().sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {k: t.detach().double().numpy().copy() for k, t in zip(("w", "W1", "b1", "v"), params, strict=True)}
    finally:
        torch.set_num_threads(threads)
