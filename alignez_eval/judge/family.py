"""Real-family fidelity: does a judge see the base -> tuned gap that a trusted reference sees?

Input: AlpacaEval `model_outputs.json` files of one family (a base, a tuned model, optionally
candidates in between) and the reference annotator's win rates of each against one common baseline
(AlpacaEval 1: GPT-4's win rate vs text_davinci_003). The judge compares every system with the base
on the instructions all files share; the reference's nets follow from Bradley–Terry through the
common baseline:
  s_m = logit(win_rate_m)      P(a beats b) = sigmoid(s_a − s_b)      net(a vs b) = 100·(2P − 1)
(the reference's ties are folded into its win rates, so its implied nets have no ties). Gap closed
is Net(candidate vs base) / Net(tuned vs base) on both sides.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.gap import gap_closed
from alignez_eval.hashing import sha256_text
from alignez_eval.judge.backends.scorer import refuse_trained_generators
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.spec import JudgeSpec, parse_judge_spec
from alignez_eval.judge.verdicts import ERROR, VALUE
from alignez_eval.metrics import net_win

FAMILY_FORMAT = "alignez-eval-judge-family/1"


@dataclass(frozen=True)
class System:
    name: str
    path: Path
    answers: dict[str, str]  # instruction -> output
    reference_win_rate: float | None  # percent, vs the common baseline


def load_outputs(path: str | Path) -> tuple[str, dict[str, str]]:
    """An AlpacaEval model_outputs.json -> (generator name, {instruction: output})."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model outputs file {path} does not exist; pass AlpacaEval model_outputs.json files")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a JSON file ({exc}); pass AlpacaEval model_outputs.json "
                        "(a list of {instruction, output, generator})") from None
    if not isinstance(data, list) or not data or not all(
            isinstance(r, dict) and isinstance(r.get("instruction"), str) and isinstance(r.get("output"), str)
            for r in data):
        raise DataError(f"{path} must be a non-empty JSON list of {{instruction, output, generator}} records "
                        "(AlpacaEval model_outputs.json)")
    gens = {str(r.get("generator") or path.stem) for r in data}
    return (gens.pop() if len(gens) == 1 else path.stem), {r["instruction"]: r["output"] for r in data}


def implied_net(win_a: float, win_b: float) -> float:
    """Net(a vs b) in points implied by both systems' win rates (percent) against one baseline."""
    s = _logit(win_a / 100.0) - _logit(win_b / 100.0)
    return 100.0 * (2.0 / (1.0 + math.exp(-s)) - 1.0)


def _logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ConfigError(f"a reference win rate must be strictly between 0 and 100, got {100 * p:g}")
    return math.log(p / (1.0 - p))


def parse_win_rates(text: str | None) -> dict[str, float]:
    """`name=26.5,other=68.5` -> {name: 26.5, ...} (percent)."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, val = part.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise ConfigError(f"--reference-win-rates entry {part!r} must be NAME=PERCENT (e.g. phi-2=26.5)") from None
        if not eq:
            raise ConfigError(f"--reference-win-rates entry {part!r} must be NAME=PERCENT")
    return out


def judge_family(spec: JudgeSpec | str | dict[str, Any], base: str | Path, tuned: str | Path,
                 candidates: Sequence[str | Path] = (), *, win_rates: dict[str, float] | None = None,
                 limit: int | None = None, exclude_instructions: set[str] | None = None,
                 held_out_instructions: bool = False, seed: int = 0,
                 cache_path: str | Path | None = None, n_boot: int = 2000) -> dict[str, Any]:
    """Nets of every non-base system vs the base (judge and reference-implied) and gap closed."""
    spec = parse_judge_spec(spec)
    win_rates = dict(win_rates or {})
    systems = []
    for role, path in [("base", base), ("tuned", tuned)] + [("candidate", c) for c in candidates]:
        name, answers = load_outputs(path)
        systems.append((role, System(name, Path(path), answers, win_rates.get(name))))
    names = [s.name for _, s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"two model outputs files name the same generator {names}; a family needs distinct systems")
    unknown = sorted(set(win_rates) - set(names))
    if unknown:
        raise ConfigError(f"--reference-win-rates names {unknown}, which no outputs file holds (generators: {names})")
    provenance = _head_provenance(spec)
    refuse_trained_generators(spec, names, "a family check on them would measure memory, not judgment",
                              provenance=provenance)
    common = sorted(set.intersection(*(set(s.answers) for _, s in systems)) - (exclude_instructions or set()))
    if held_out_instructions:
        trained = _trained_instructions(provenance)
        common = [q for q in common if sha256_text(q)[:16] not in trained]
    if not common:
        raise DataError("the family's outputs files share no instruction; they must answer the same AlpacaEval set")
    if limit is not None and limit < len(common):
        common = sorted(random.Random(seed).sample(common, limit))
    seen = _seen_in_training(provenance, common)
    base_sys = systems[0][1]
    cache = JudgmentCache(cache_path) if cache_path else None
    judge = Judge(spec, cache)
    t0 = time.time()
    values: dict[str, np.ndarray] = {}
    errors: dict[str, int] = {}
    try:
        for _role, sysm in systems[1:]:
            items = [PairItem(family="family", doc_id=str(i), instruction=q, baseline=base_sys.answers[q],
                              candidate=sysm.answers[q]) for i, q in enumerate(common)]
            recs = judge.judge_pairs(items, desc=f"{sysm.name} vs {base_sys.name}")
            errors[sysm.name] = sum(r["verdict"] == ERROR for r in recs)
            values[sysm.name] = np.array([VALUE.get(r["verdict"], np.nan) for r in recs])
    finally:
        judge.close()
    tuned_sys = systems[1][1]
    rows = []
    for role, sysm in systems[1:]:
        v = values[sysm.name]
        ok = np.isfinite(v)
        idx = bootstrap_indices(int(ok.sum()), n_boot, seed)
        net = float(net_win(v[ok]))
        ref_net = (implied_net(sysm.reference_win_rate, base_sys.reference_win_rate)
                   if sysm.reference_win_rate is not None and base_sys.reference_win_rate is not None else None)
        rows.append({"system": sysm.name, "role": role, "n": int(ok.sum()), "errors": errors[sysm.name],
                     "win": float(np.mean(v[ok] == 1) * 100), "tie": float(np.mean(v[ok] == 0) * 100),
                     "lose": float(np.mean(v[ok] == -1) * 100), "net": net,
                     "net_ci": list(percentile_ci(net_win(v[ok][idx]))),
                     "reference_win_rate": sysm.reference_win_rate, "reference_net": ref_net})
    ref_t = next(r["reference_net"] for r in rows if r["role"] == "tuned")
    for r in rows:
        if r["role"] != "candidate":
            continue
        both = np.isfinite(values[r["system"]]) & np.isfinite(values[tuned_sys.name])
        g = gap_closed(values[r["system"]][both], values[tuned_sys.name][both], n_boot=n_boot, seed=seed)
        r["gap_closed"] = g.to_dict()
        r["reference_gap_closed"] = (100.0 * r["reference_net"] / ref_t
                                     if r["reference_net"] is not None and ref_t else None)
    result = {"format": FAMILY_FORMAT, "judge": spec.describe(), "judge_identity": spec.identity(),
              "base": base_sys.name, "base_reference_win_rate": base_sys.reference_win_rate,
              "tuned": tuned_sys.name, "instructions": len(common), "instructions_seen_in_training": seen,
              "held_out_instructions": held_out_instructions, "seed": seed, "limit": limit,
              "rows": rows, "stats": dict(judge.stats), "seconds": round(time.time() - t0, 1)}
    result["summary"] = family_summary(result)
    return result


def _head_provenance(spec: JudgeSpec) -> dict[str, Any] | None:
    """A scorer head's provenance, read once per family check (None for other judges)."""
    if spec.backend != "scorer":
        return None
    from alignez_eval.scorer.head import load_head

    return load_head(spec.model).provenance


def _trained_instructions(provenance: dict[str, Any] | None) -> set[str]:
    """Short hashes of the instructions a scorer head was trained on (empty for other judges)."""
    return set((provenance or {}).get("instruction_sha256_16", []))


def _seen_in_training(provenance: dict[str, Any] | None, instructions: Sequence[str]) -> int | None:
    """How many of `instructions` a scorer head was trained on (None for other judges)."""
    if provenance is None:
        return None
    trained = _trained_instructions(provenance)
    return sum(sha256_text(q)[:16] in trained for q in instructions)


def _fmt(x: float | None, ci: Sequence[float] | None = None, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    s = f"{x:+.1f}" if sign else f"{x:.1f}"
    return s + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci is not None else "")


def family_summary(result: dict[str, Any]) -> str:
    seen = result.get("instructions_seen_in_training")
    lines = [f"family {result['base']} -> {result['tuned']} ({result['instructions']} instructions"
             + (f", {seen} of them in the scorer's training data" if seen is not None else "")
             + f"), judge {result['judge']}"]
    lines.append("| system | role | judge net vs base [95% CI] | reference-implied net | judge gap closed % | "
                 "reference gap closed % |")
    lines.append("|---|---|---|---|---|---|")
    for r in result["rows"]:
        g = r.get("gap_closed")
        gap = ("—" if g is None else _fmt(g["value"], g["ci"]) if g["defined"] else f"undefined ({g['reason']})")
        lines.append(f"| {r['system']} | {r['role']} | {_fmt(r['net'], r['net_ci'])} | {_fmt(r['reference_net'])} | "
                     f"{gap} | {_fmt(r.get('reference_gap_closed'), sign=False)} |")
    return "\n".join(lines)
