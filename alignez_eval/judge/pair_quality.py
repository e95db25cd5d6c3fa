"""Pair quality of a fit's preference data: the judge's verdict of each helpful answer against its
harmful twin (fitting/diagnostics.py says what it is for). Identical or empty pairs are ties."""

from __future__ import annotations

from typing import Any

import numpy as np

from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.spec import parse_judge_spec
from alignez_eval.judge.verdicts import LOSE, TIE, WIN


def pair_quality(records: list[dict[str, Any]], judge_spec: Any, cache_path: Any = None,
                 n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Judge p_help against p_harm for every pair record -> counts, quality [95% CI], verdict per id."""
    spec = parse_judge_spec(judge_spec)
    items = [PairItem(family="fit-pairs", doc_id=str(r["id"]), instruction=str(r["query"]),
                      baseline=str(r["answers"]["neg"]), candidate=str(r["answers"]["pos"])) for r in records]
    cache = JudgmentCache(cache_path) if cache_path else None
    judge = Judge(spec, cache)
    try:
        judged = judge.judge_pairs(items, desc="pair quality (helpful vs harmful)")
    finally:
        judge.close()
        if cache is not None:
            cache.close()
    value = {WIN: 1.0, TIE: 0.5, LOSE: 0.0}
    verdicts = {r["doc_id"]: r["verdict"] for r in judged}
    scores = np.array([value[r["verdict"]] for r in judged if r["verdict"] in value])
    out: dict[str, Any] = {"judge": spec.describe(), "pairs": len(records), "judged": int(len(scores)),
                           "help_wins": sum(v == WIN for v in verdicts.values()),
                           "ties": sum(v == TIE for v in verdicts.values()),
                           "harm_wins": sum(v == LOSE for v in verdicts.values()),
                           "quality": None, "ci95": None, "verdicts": verdicts}
    if len(scores):
        idx = bootstrap_indices(len(scores), n_boot, seed)
        lo, hi = percentile_ci(scores[idx].mean(axis=1))
        out["quality"], out["ci95"] = round(float(scores.mean()), 4), [round(lo, 4), round(hi, 4)]
    return out
