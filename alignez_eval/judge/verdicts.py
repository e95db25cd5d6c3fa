"""From raw judgments to one verdict per doc, seen from the candidate: win / tie / lose / error.

Pairwise (both orders judged; order "AB" shows the baseline as A, "BA" the candidate as A):
  - label judges (openai): the two orders' verdicts must agree; if they differ the doc is a tie
    and counts as swap-inconsistent (MT-bench's rule; a win in one order and a tie in the other is
    inconsistent too).
  - probability judges (hf): P(candidate better) and P(baseline better) are averaged over the two
    orders, which cancels a constant position bias; a winner needs a difference above `margin`.
    Swap inconsistency is still reported from each order's most likely label.
Single: verdict from the grade difference (candidate - baseline) beyond `margin`.
Length correction (both modes, `length_debias` = β): the score loses β·length_term, where
length_term = tanh(ln((chars_candidate + 1) / (chars_baseline + 1))) is in (-1, 1) and 0 for equal
lengths. Small judges prefer the longer answer far more often than strong ones (measured in
docs/judging-and-validation.md "Judge agreement"); β removes a fixed share of that preference, at verdict time, so a cached
judgment is re-used under any β.
Any error in a needed judgment makes the doc an error: excluded from every rate and counted.
"""

from __future__ import annotations

import math
from typing import Any

WIN, TIE, LOSE, ERROR = "win", "tie", "lose", "error"
VALUE = {WIN: 1.0, TIE: 0.0, LOSE: -1.0}


def candidate_view(label: str | None, order: str) -> str | None:
    """An order's label (which position won) -> the candidate's outcome."""
    if label is None:
        return None
    if label == "tie":
        return TIE
    cand_pos = "B" if order == "AB" else "A"
    return WIN if label == cand_pos else LOSE


def _decide(score: float, margin: float) -> str:
    if score > margin:
        return WIN
    if score < -margin:
        return LOSE
    return TIE


def length_term(baseline: str, candidate: str) -> float:
    """tanh of the log ratio of character lengths (candidate over baseline): > 0 when the candidate
    is longer, bounded so that one very long answer cannot dominate."""
    return math.tanh(math.log((len(candidate.strip()) + 1) / (len(baseline.strip()) + 1)))


def pairwise_verdict(ab: dict[str, Any], ba: dict[str, Any], *, use_probs: bool, margin: float,
                     length_debias: float = 0.0, length: float = 0.0) -> dict[str, Any]:
    errors = [f"{o}: {r['error']}" for o, r in (("AB", ab), ("BA", ba)) if r.get("error")]
    if errors:
        return {"verdict": ERROR, "error": "; ".join(errors), "score": None, "inconsistent": None,
                "order_verdicts": None}
    v_ab, v_ba = candidate_view(ab.get("label"), "AB"), candidate_view(ba.get("label"), "BA")
    inconsistent = v_ab != v_ba
    if use_probs and ab.get("probs") and ba.get("probs"):
        p_cand = (ab["probs"]["B"] + ba["probs"]["A"]) / 2
        p_base = (ab["probs"]["A"] + ba["probs"]["B"]) / 2
        score = p_cand - p_base - length_debias * length
        verdict = _decide(score, margin)
    else:
        verdict = TIE if inconsistent else str(v_ab)
        score = VALUE[verdict]
    return {"verdict": verdict, "error": None, "score": score, "inconsistent": inconsistent,
            "order_verdicts": [v_ab, v_ba]}


def single_verdict(base: dict[str, Any], cand: dict[str, Any], *, margin: float, length_debias: float = 0.0,
                   length: float = 0.0) -> dict[str, Any]:
    errors = [f"{side}: {r['error']}" for side, r in (("baseline", base), ("candidate", cand)) if r.get("error")]
    if errors:
        return {"verdict": ERROR, "error": "; ".join(errors), "score": None, "inconsistent": None}
    score = float(cand["grade"]) - float(base["grade"]) - length_debias * length
    return {"verdict": _decide(score, margin), "error": None, "score": score, "inconsistent": None}
