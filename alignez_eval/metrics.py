"""Head-to-head metrics of a candidate against the baseline on one dataset.

Verdict values per doc: win = +1, tie = 0, lose = -1 (errors excluded, counted).
  Win% / Tie% / Lose%    shares of judged docs, in percent
  Net                    Win% - Lose%  (= 100 * mean value; the paper's Delta%)
  win rate               100 * mean((value + 1) / 2): ties count half
  length-adjusted win rate (ours)
                         logistic regression of the preference (win 1, tie 0.5, lose 0) on the
                         standardised length difference (candidate - baseline, in words) of this one
                         head-to-head, read at zero difference: 100 * sigmoid(b0). NOT AlpacaEval 2's
                         length-controlled win rate, whose GLM also fits per-instruction difficulty and
                         model terms over many models' annotations (docs/judging-and-validation.md "Metrics" says how they differ).
  swap inconsistency     share of pairwise-judged docs whose two orders disagreed
Every figure gets a seeded paired-bootstrap 95% interval (docs resampled with replacement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignez_eval.bootstrap import DEFAULT_N_BOOT, bootstrap_indices, bootstrap_se, percentile_ci

VALUES = {"win": 1.0, "tie": 0.0, "lose": -1.0}
LENGTH_ADJ_RIDGE = 1e-2  # keeps the slope finite when length separates the outcomes perfectly


def net_win(values: np.ndarray) -> np.ndarray:
    """Net = Win% - Lose% along the last axis."""
    return 100.0 * np.mean(values, axis=-1)


def win_rate(values: np.ndarray) -> np.ndarray:
    return 100.0 * np.mean((values + 1.0) / 2.0, axis=-1)


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = LENGTH_ADJ_RIDGE, iters: int = 100) -> np.ndarray:
    """Batched Newton fit of p = sigmoid(b0 + b1 x) to soft labels y in [0, 1].
    x, y: [B, n] -> beta [B, 2]. Penalty ridge/2 * b1^2 (and 1e-6 * b0^2, for all-win/all-lose data)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    beta = np.zeros((x.shape[0], 2))
    ridge0 = 1e-6
    for _ in range(iters):
        z = np.clip(beta[:, :1] + beta[:, 1:] * x, -40, 40)
        p = 1.0 / (1.0 + np.exp(-z))
        r = p - y
        w = p * (1 - p)
        g0 = r.sum(1) + ridge0 * beta[:, 0]
        g1 = (r * x).sum(1) + ridge * beta[:, 1]
        h00 = w.sum(1) + ridge0
        h01 = (w * x).sum(1)
        h11 = (w * x * x).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        step = np.clip(np.stack([step0, step1], 1), -5, 5)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def length_adjusted_win_rate(values: np.ndarray, len_diff: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Our length-adjusted win rate (percent) along the last axis; `scale` standardises the length
    difference (default: its standard deviation), which only conditions the fit."""
    values = np.atleast_2d(values)
    len_diff = np.atleast_2d(np.asarray(len_diff, dtype=np.float64))
    if scale is None:
        scale = float(np.std(len_diff)) or 1.0
    beta = fit_logistic(len_diff / scale, (values + 1.0) / 2.0)
    return 100.0 / (1.0 + np.exp(-beta[:, 0]))


@dataclass
class HeadToHead:
    """Figures of one candidate vs the baseline on one dataset (or pooled: dataset 'all')."""

    candidate: str
    dataset: str
    mode: str
    n: int  # judged docs (errors excluded)
    wins: int
    ties: int
    losses: int
    errors: int
    identical: int
    win_pct: float
    tie_pct: float
    lose_pct: float
    net: float
    win_rate: float
    length_adjusted_win_rate: float
    mean_len_baseline: float
    mean_len_candidate: float
    swap_inconsistency: float | None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("ci", "se")}
        for name, (lo, hi) in self.ci.items():
            d[f"{name}_lo"], d[f"{name}_hi"] = lo, hi
        for name, se in self.se.items():
            d[f"{name}_se"] = se
        return d


def judged_arrays(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """-> (verdict values, length differences in words, the judged records) without errors."""
    judged = [r for r in records if r["verdict"] in VALUES]
    values = np.array([VALUES[r["verdict"]] for r in judged], dtype=np.float64)
    dlen = np.array([r["len_candidate"] - r["len_baseline"] for r in judged], dtype=np.float64)
    return values, dlen, judged


def head_to_head(records: list[dict[str, Any]], candidate: str, dataset: str, mode: str,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = 0.05) -> HeadToHead:
    values, dlen, judged = judged_arrays(records)
    n = len(values)
    errors = sum(r["verdict"] == "error" for r in records)
    nan = float("nan")
    if n == 0:
        return HeadToHead(candidate, dataset, mode, 0, 0, 0, 0, errors, 0, nan, nan, nan, nan, nan, nan, nan, nan,
                          None)
    wins, ties, losses = int((values > 0).sum()), int((values == 0).sum()), int((values < 0).sum())
    pairwise_judged = [r for r in judged if r.get("inconsistent") is not None]
    swap = (sum(bool(r["inconsistent"]) for r in pairwise_judged) / len(pairwise_judged)
            if pairwise_judged else None)
    scale = float(np.std(dlen)) or 1.0
    point = {
        "win_pct": 100.0 * wins / n,
        "tie_pct": 100.0 * ties / n,
        "lose_pct": 100.0 * losses / n,
        "net": float(net_win(values)),
        "win_rate": float(win_rate(values)),
        "length_adjusted_win_rate": float(length_adjusted_win_rate(values, dlen, scale)[0]),
    }
    idx = bootstrap_indices(n, n_boot, seed)
    bv, bd = values[idx], dlen[idx]
    boots = {
        "win_pct": 100.0 * (bv > 0).mean(1),
        "tie_pct": 100.0 * (bv == 0).mean(1),
        "lose_pct": 100.0 * (bv < 0).mean(1),
        "net": net_win(bv),
        "win_rate": win_rate(bv),
        "length_adjusted_win_rate": length_adjusted_win_rate(bv, bd, scale),
    }
    return HeadToHead(
        candidate=candidate, dataset=dataset, mode=mode, n=n, wins=wins, ties=ties, losses=losses, errors=errors,
        identical=sum(bool(r.get("identical")) for r in judged),
        mean_len_baseline=float(np.mean([r["len_baseline"] for r in judged])),
        mean_len_candidate=float(np.mean([r["len_candidate"] for r in judged])),
        swap_inconsistency=swap,
        ci={k: percentile_ci(v, alpha) for k, v in boots.items()},
        se={k: bootstrap_se(v) for k, v in boots.items()},
        **point,
    )
