"""`judge-check`: does a judge prefer a good answer to obviously degraded versions of it?

Each prompt's good answer (baseline side) is judged against four degradations (candidate side):
  truncated  the answer cut mid-way (mid-sentence, ~45% of its words)
  looped     its first sentence repeated, as small models do when they degenerate
  swapped    the good answer of a different prompt (fluent, but off-topic)
  gibberish  the answer's own words in a seeded random order (same length and vocabulary)
Accuracy = share of judged pairs the good answer wins (ties and losses are failures; errors are
excluded and counted). Swap consistency (pairwise mode) = share of pairs whose two orders agree.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from alignez_eval.degrade import gibberish, loop, truncate_midway
from alignez_eval.errors import ConfigError
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.spec import JudgeSpec, parse_judge_spec
from alignez_eval.judge.verdicts import ERROR, LOSE, TIE, WIN

CHECK_PROMPTS = Path(__file__).parent / "data" / "check_prompts.yaml"
DEGRADATIONS = ("truncated", "looped", "swapped", "gibberish")


def load_check_prompts() -> list[dict[str, str]]:
    return list(yaml.safe_load(CHECK_PROMPTS.read_text(encoding="utf-8")))


def build_check_items(prompts: list[dict[str, str]], degradations: tuple[str, ...] = DEGRADATIONS,
                      seed: int = 0, pool: list[dict[str, str]] | None = None) -> list[PairItem]:
    """Pairs for `prompts`; the 'swapped' answer of prompt i is pool[i + len(pool) // 2] (pool:
    the whole prompt set, so a prompt's pairs do not depend on how many are checked)."""
    pool = pool if pool is not None else prompts
    if len(pool) < 2 and "swapped" in degradations:
        raise ConfigError("judge-check needs at least 2 prompts to swap answers between them")
    items = []
    n = len(pool)
    for i, p in enumerate(prompts):
        good = str(p["answer"]).strip()
        other = str(pool[(i + max(1, n // 2)) % n]["answer"]).strip()
        variants = {"truncated": truncate_midway(good), "looped": loop(good), "swapped": other,
                    "gibberish": gibberish(good, seed + i)}
        for deg in degradations:
            if deg not in variants:
                raise ConfigError(f"unknown degradation {deg!r}; use some of {DEGRADATIONS}")
            items.append(PairItem(family="judge-check", doc_id=f"{p.get('id', i)}:{deg}",
                                  instruction=str(p["instruction"]), baseline=good, candidate=variants[deg],
                                  meta=(("degradation", deg), ("prompt_id", str(p.get("id", i))))))
    return items


def judge_check(spec: JudgeSpec | str | dict[str, Any], prompts: list[dict[str, str]] | None = None,
                n: int | None = None, cache_path: str | Path | None = None,
                degradations: tuple[str, ...] = DEGRADATIONS, seed: int = 0) -> dict[str, Any]:
    """Judge good answers against degraded ones. -> a JSON-able summary (accuracy per degradation,
    overall, swap consistency, counts, per-item verdicts)."""
    spec = parse_judge_spec(spec)
    pool = list(prompts) if prompts is not None else load_check_prompts()
    prompts = pool[:n] if n is not None else pool
    items = build_check_items(prompts, tuple(degradations), seed, pool=pool)
    started = time.time()
    cache = JudgmentCache(cache_path) if cache_path else None
    judge = Judge(spec, cache)
    try:
        records = judge.judge_pairs(items, desc="judge-check")
    finally:
        judge.close()
        if cache is not None:
            cache.close()
    # The good answer is the baseline side: the check passes when the candidate (degraded) loses.
    counts: dict[str, Counter[str]] = {d: Counter() for d in degradations}
    for r in records:
        counts[r["degradation"]][r["verdict"]] += 1
    accuracy: dict[str, float | None] = {}
    for d, c in counts.items():
        judged = c[WIN] + c[TIE] + c[LOSE]
        accuracy[d] = c[LOSE] / judged if judged else None
    judged_all = sum(c[WIN] + c[TIE] + c[LOSE] for c in counts.values())
    correct_all = sum(c[LOSE] for c in counts.values())
    overall = correct_all / judged_all if judged_all else None
    consistency = None
    first_pos = None
    if spec.mode == "pairwise":
        judged = [r for r in records if r["verdict"] != ERROR and not r["identical"]]
        if judged:
            consistency = 1 - sum(bool(r["inconsistent"]) for r in judged) / len(judged)
            labels = [r["judgments"][o].get("label") for r in judged for o in ("AB", "BA")]
            first_pos = sum(lab == "A" for lab in labels) / len(labels)
    acc_text = ", ".join(f"{d} {'n/a' if a is None else f'{a:.0%}'}" for d, a in accuracy.items())
    summary = (f"{spec.describe()}: accuracy {'n/a' if overall is None else f'{overall:.0%}'} "
               f"over {judged_all} pairs ({acc_text})")
    summary += "; swap consistency n/a (single mode)" if consistency is None and spec.mode == "single" else (
        f"; swap consistency {consistency:.0%}, first position chosen {first_pos:.0%}" if consistency is not None
        else "")
    errors = sum(c[ERROR] for c in counts.values())
    if errors:
        summary += f"; {errors} errors"
    return {
        "judge": spec.describe(),
        "judge_identity": spec.identity(),
        "mode": spec.mode,
        "n_prompts": len(prompts),
        "degradations": list(degradations),
        "accuracy": accuracy,
        "overall_accuracy": overall,
        "swap_consistency": consistency,
        "first_position_rate": first_pos,
        "counts": {d: {k: c[k] for k in (WIN, TIE, LOSE, ERROR)} for d, c in counts.items()},
        "errors": errors,
        "stats": {**judge.stats, "wall_s": round(time.time() - started, 2)},
        "summary": summary,
        "items": [{k: r.get(k) for k in ("doc_id", "degradation", "verdict", "score", "inconsistent", "error")}
                  for r in records],
    }
