"""Seeded paired bootstrap: resample docs with replacement; both sides of a doc (and, for the gap,
both candidates' verdicts on it) always move together."""

from __future__ import annotations

import numpy as np

DEFAULT_N_BOOT = 2000


def bootstrap_indices(n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> np.ndarray:
    """[n_boot, n] doc indices; the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval, ignoring NaN resamples (statistics undefined on that resample)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_se(samples: np.ndarray) -> float:
    finite = samples[np.isfinite(samples)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
