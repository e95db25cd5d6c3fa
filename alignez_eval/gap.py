"""% of the base-to-tuned gap closed (the paper's headline number).

  gap closed = Net(alignez vs base) / Net(tuned vs base) x 100

per dataset and model, on the docs where both candidates were judged against the same baseline.
The interval comes from a paired bootstrap that resamples docs jointly for both nets. A ratio is
only meaningful when its denominator is clearly positive, so the gap is *undefined* (with the
reason) when the tuned model's net is not above `min_tuned_net` or its 95% interval reaches 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alignez_eval.bootstrap import DEFAULT_N_BOOT, bootstrap_indices, percentile_ci
from alignez_eval.metrics import net_win

MIN_TUNED_NET = 10.0  # points; below it a ratio mostly measures noise in the denominator


def gap_ratio(net_alignez: float | np.ndarray, net_tuned: float | np.ndarray) -> float | np.ndarray:
    """The formula itself: 100 * Net(alignez vs base) / Net(tuned vs base)."""
    return 100.0 * np.asarray(net_alignez, dtype=np.float64) / np.asarray(net_tuned, dtype=np.float64)


@dataclass
class GapResult:
    value: float | None  # percent; None when undefined
    ci: tuple[float, float] | None
    defined: bool
    reason: str | None  # why undefined
    net_alignez: float
    net_alignez_ci: tuple[float, float]
    net_tuned: float
    net_tuned_ci: tuple[float, float]
    n: int
    dropped_resamples: float = 0.0  # share of resamples whose tuned net was <= 0 (ratio skipped)
    datasets: list[str] = field(default_factory=list)  # for averages: datasets included
    excluded: dict[str, str] = field(default_factory=dict)  # for averages: dataset -> reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _undefined_reason(net_t: float, ci_t: tuple[float, float], n: int, min_tuned_net: float) -> str | None:
    if n == 0:
        return "no doc judged for both candidates"
    if net_t <= 0:
        return f"the tuned model does not beat the base (net {net_t:+.1f})"
    if net_t < min_tuned_net:
        return f"the tuned model's net {net_t:+.1f} is below the minimum {min_tuned_net:g}"
    if not ci_t[0] > 0:
        return f"the tuned model's net {net_t:+.1f} is not clearly positive (95% CI lower bound {ci_t[0]:+.1f})"
    return None


def gap_closed(alignez: np.ndarray, tuned: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
               min_tuned_net: float = MIN_TUNED_NET, alpha: float = 0.05) -> GapResult:
    """% gap closed from per-doc verdict values (+1 win, 0 tie, -1 lose vs the base), aligned:
    alignez[i] and tuned[i] are the same doc."""
    a = np.asarray(alignez, dtype=np.float64)
    t = np.asarray(tuned, dtype=np.float64)
    if a.shape != t.shape:
        raise ValueError("gap_closed needs the two candidates' verdicts on the same docs, in the same order")
    n = int(a.size)
    if n == 0:
        nan2 = (float("nan"), float("nan"))
        return GapResult(None, None, False, "no doc judged for both candidates", float("nan"), nan2,
                         float("nan"), nan2, 0)
    idx = bootstrap_indices(n, n_boot, seed)
    ba, bt = net_win(a[idx]), net_win(t[idx])
    net_a, net_t = float(net_win(a)), float(net_win(t))
    ci_a, ci_t = percentile_ci(ba, alpha), percentile_ci(bt, alpha)
    reason = _undefined_reason(net_t, ci_t, n, min_tuned_net)
    if reason is not None:
        return GapResult(None, None, False, reason, net_a, ci_a, net_t, ci_t, n)
    ok = bt > 0
    ratios = np.where(ok, gap_ratio(ba, np.where(ok, bt, 1.0)), np.nan)
    return GapResult(float(gap_ratio(net_a, net_t)), percentile_ci(ratios, alpha), True, None, net_a, ci_a, net_t,
                     ci_t, n, dropped_resamples=float(1 - ok.mean()))


def average_gap(per_dataset: dict[str, tuple[np.ndarray, np.ndarray]], *, n_boot: int = DEFAULT_N_BOOT,
                seed: int = 0, min_tuned_net: float = MIN_TUNED_NET, alpha: float = 0.05) -> GapResult:
    """Mean of the per-dataset gaps over the datasets where the gap is defined; the interval
    resamples docs within every dataset (stratified) and averages the resampled ratios."""
    results = {ds: gap_closed(a, t, n_boot=n_boot, seed=seed, min_tuned_net=min_tuned_net, alpha=alpha)
               for ds, (a, t) in per_dataset.items()}
    included = [ds for ds, r in results.items() if r.defined]
    excluded = {ds: str(r.reason) for ds, r in results.items() if not r.defined}
    net_a = float(np.mean([r.net_alignez for r in results.values()])) if results else float("nan")
    net_t = float(np.mean([r.net_tuned for r in results.values()])) if results else float("nan")
    n_total = sum(r.n for r in results.values())
    nan2 = (float("nan"), float("nan"))
    if not included:
        return GapResult(None, None, False, "no dataset has a defined gap", net_a, nan2, net_t, nan2, n_total,
                         datasets=[], excluded=excluded)
    ratio_boots = []
    for k, ds in enumerate(included):
        a = np.asarray(per_dataset[ds][0], dtype=np.float64)
        t = np.asarray(per_dataset[ds][1], dtype=np.float64)
        idx = bootstrap_indices(a.size, n_boot, seed + 1000 * (k + 1))  # independent strata
        bt = net_win(t[idx])
        ratio_boots.append(np.where(bt > 0, gap_ratio(net_win(a[idx]), np.where(bt > 0, bt, 1.0)), np.nan))
    stacked = np.stack(ratio_boots)  # [datasets, n_boot]
    valid = np.all(np.isfinite(stacked), axis=0)
    means = stacked.mean(axis=0)  # NaN where some dataset's resampled tuned net was <= 0
    value = float(np.mean([results[ds].value for ds in included]))
    return GapResult(value, percentile_ci(means, alpha), True, None, net_a, nan2, net_t, nan2, n_total,
                     dropped_resamples=float(1 - valid.mean()), datasets=included, excluded=excluded)
