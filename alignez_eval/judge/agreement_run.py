"""`judge_agreement`: run a judge on every pair of a reference file and measure how it agrees.

Pairs go through the shared `Judge` engine and `JudgmentCache`, with output_1 as the baseline and
output_2 as the candidate (family = generator_2 or "reference", doc id = the row), so a judge "win"
means output_2 preferred, and the raw judgments are the ones any other run of the same judge on the
same answers makes: one cache serves both, and a re-run makes no call for a committed judgment.

Writes to DIR: agreement.json (every figure with its CI, counts, spec, reference sha256, settings),
agreement.md (a readable table) and pairs.jsonl (per pair: labels, score, lengths, per-order labels).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignez_eval import __version__
from alignez_eval.atomic import atomic_write_text
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.judge.agreement import (
    FIGURES,
    FORMAT,
    OUT1,
    OUT2,
    TIE,
    Reference,
    RefPair,
    agreement_figures,
    agreement_summary_line,
    length_label,
    load_reference,
    n_chars,
)
from alignez_eval.judge.backends.scorer import refuse_trained_generators
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.spec import JudgeSpec, parse_judge_spec
from alignez_eval.judge.verdicts import ERROR, LOSE, WIN

JUDGE_LABEL = {WIN: OUT2, LOSE: OUT1, "tie": TIE}
NO_GENERATOR = "(none)"
LIMIT_MODES = ("random", "first")
PREFERENCE_RULE = "1 <= p < 1.5 -> output_1; 1.5 < p <= 2 -> output_2; p == 1.5 or 0 -> tie; null/NaN -> skipped"
LENGTH_RULE = "characters, surrounding whitespace stripped; the longer answer wins, equal lengths are a tie"


def select_pairs(ref: Reference, *, generators: Sequence[str] | None = None, max_chars: int | None = None,
                 limit: int | None = None, limit_mode: str = "random",
                 seed: int = 0) -> tuple[list[RefPair], dict[str, int]]:
    """Filters in order: generator_2 in `generators`, both outputs <= `max_chars` characters, then
    `limit` pairs (random: a seeded sample, kept in file order; first: the first N)."""
    if limit_mode not in LIMIT_MODES:
        raise ConfigError(f"limit mode {limit_mode!r} is unknown; use random or first")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of pairs, got {limit}")
    if max_chars is not None and max_chars < 1:
        raise ConfigError(f"--max-chars must be a positive number of characters, got {max_chars}")
    pairs = list(ref.pairs)
    counts = {"rows": ref.n_rows, "skipped_null_preference": len(ref.null_rows)}
    if generators:
        present = {p.generator_2 for p in pairs}
        unknown = [g for g in generators if g not in present]
        if unknown:
            raise ConfigError(f"--generators {','.join(unknown)}: no such generator_2 in {ref.path}; it has "
                              f"{sorted(str(g) for g in present)}")
        kept = [p for p in pairs if p.generator_2 in set(generators)]
        counts["filtered_by_generator"] = len(pairs) - len(kept)
        pairs = kept
    if max_chars is not None:
        kept = [p for p in pairs if n_chars(p.output_1) <= max_chars and n_chars(p.output_2) <= max_chars]
        counts["skipped_max_chars"] = len(pairs) - len(kept)
        pairs = kept
    if limit is not None and limit < len(pairs):
        if limit_mode == "first":
            kept = pairs[:limit]
        else:
            chosen = set(random.Random(seed).sample(range(len(pairs)), limit))
            kept = [p for i, p in enumerate(pairs) if i in chosen]
        counts["dropped_by_limit"] = len(pairs) - len(kept)
        pairs = kept
    counts["selected"] = len(pairs)
    if not pairs:
        raise DataError(f"no pairs of {ref.path} are left to judge ({counts}); loosen --generators/--max-chars")
    return pairs, counts


def _pair_record(p: RefPair, rec: dict[str, Any]) -> dict[str, Any]:
    len_1, len_2 = n_chars(p.output_1), n_chars(p.output_2)
    out: dict[str, Any] = {
        "row": p.row, "generator_1": p.generator_1, "generator_2": p.generator_2, "dataset": p.dataset,
        "reference_preference": p.preference, "reference_label": p.label,
        "judge_verdict": rec["verdict"], "judge_label": JUDGE_LABEL.get(rec["verdict"]),
        "score": rec.get("score"), "error": rec.get("error"), "identical": rec["identical"],
        "inconsistent": rec.get("inconsistent"),
        "len_output_1": len_1, "len_output_2": len_2, "length_label": length_label(len_1, len_2),
    }
    raw = rec.get("judgments") or {}
    if rec.get("order_verdicts"):  # pairwise: each order's label, seen as output_1 / output_2 / tie
        out["order_labels"] = {o: JUDGE_LABEL.get(v) if v else None
                               for o, v in zip(("AB", "BA"), rec["order_verdicts"], strict=True)}
    elif "baseline" in raw:  # single: each answer's grade
        out["grades"] = {"output_1": raw["baseline"].get("grade"), "output_2": raw["candidate"].get("grade")}
    return out


def _figures(rows: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    ok = [r for r in rows if r["judge_verdict"] != ERROR]
    consistent = [None if r["inconsistent"] is None or r["identical"] else not r["inconsistent"] for r in ok]
    fig = agreement_figures([r["reference_label"] for r in ok], [r["judge_label"] for r in ok],
                            [r["len_output_1"] for r in ok], [r["len_output_2"] for r in ok], consistent,
                            n_boot=n_boot, seed=seed)
    fig["errors"] = len(rows) - len(ok)
    return fig


def render_agreement_md(result: dict[str, Any]) -> str:
    def cell(fig: dict[str, Any], key: str) -> str:
        f = fig["figures"].get(key) or {}
        v, (lo, hi) = f.get("value"), f.get("ci") or (None, None)
        if v is None:
            return "n/a"
        scale, fmt = (1, "{:.2f}") if key == "kappa" else (100, "{:.0f}%")
        def num(x: float) -> str:
            return fmt.format(round(scale * x, 6) + 0.0)  # + 0.0: no "-0.00" for a rounding residue

        text = num(v)
        if lo is not None and hi is not None:
            text += f" [{num(lo).rstrip('%')}, {num(hi).rstrip('%')}]"
        return text

    ref, c = result["reference"], result["counts"]
    lines = [f"# Judge agreement: {result['judge_description']}", "",
             f"- **Reference**: `{ref['path']}` ({ref['format']}, sha256 `{ref['sha256']}`)",
             f"- **Summary**: {result['summary']}",
             f"- **Pairs**: {c['rows']} rows; skipped {c['skipped_null_preference']} null preferences"
             + "".join(f", {c[k]} {what}" for k, what in (("filtered_by_generator", "by --generators"),
                                                        ("skipped_max_chars", "over --max-chars"),
                                                        ("dropped_by_limit", "by --limit")) if k in c)
             + f"; {c['selected']} judged ({c['identical']} identical answers: a tie without a call), "
               f"{c['judge_errors']} judge errors excluded",
             f"- **Rules**: preference {PREFERENCE_RULE}; length in {LENGTH_RULE}",
             f"- Values in %, 95% bootstrap CI over pairs ({result['settings']['n_boot']} resamples, seed "
             f"{result['settings']['seed']}); judge ties are misses in `agreement`; the length-only annotator "
             "scores 50% on `length-balanced` by construction.", ""]
    groups = [("all", result["overall"]), *result["per_generator"].items()]
    lines.append("| figure | " + " | ".join(f"{g} (n={fig['n']})" for g, fig in groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for key, short, _ in FIGURES:
        if key == "swap_consistency" and result["mode"] != "pairwise":
            continue
        lines.append(f"| {short} | " + " | ".join(cell(fig, key) for _, fig in groups) + " |")
    lines += ["", "Figures:", ""] + [f"- **{short}**: {desc}" for _, short, desc in FIGURES] + [""]
    return "\n".join(lines)


def judge_agreement(spec: JudgeSpec | str | dict[str, Any], reference: str | Path | Reference,
                    out_dir: str | Path, *, cache_path: str | Path | None = None,
                    generators: Sequence[str] | None = None, max_chars: int | None = None,
                    limit: int | None = None, limit_mode: str = "random", seed: int = 0,
                    n_boot: int = 2000) -> dict[str, Any]:
    """Judge every selected pair of `reference` and write DIR/{agreement.json, agreement.md,
    pairs.jsonl}. -> the agreement.json content."""
    spec = parse_judge_spec(spec)
    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    pairs, counts = select_pairs(ref, generators=generators, max_chars=max_chars, limit=limit,
                                 limit_mode=limit_mode, seed=seed)
    refuse_trained_generators(spec, {p.generator_2 for p in pairs if p.generator_2},
                              "agreement on them would be measured on answers it learned from")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [PairItem(family=p.generator_2 or "reference", doc_id=str(p.row), instruction=p.instruction,
                      baseline=p.output_1, candidate=p.output_2) for p in pairs]
    started = time.time()
    cache_file = Path(cache_path) if cache_path else out_dir / "cache.sqlite"
    with JudgmentCache(cache_file) as cache:
        judge = Judge(spec, cache)
        try:
            records = judge.judge_pairs(items, desc="judge-agreement")
        finally:
            judge.close()
    rows = [_pair_record(p, rec) for p, rec in zip(pairs, records, strict=True)]
    counts.update(identical=sum(r["identical"] for r in rows),
                  judge_errors=sum(r["judge_verdict"] == ERROR for r in rows))
    counts["judged"] = counts["selected"] - counts["judge_errors"]
    per_gen: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per_gen.setdefault(r["generator_2"] or NO_GENERATOR, []).append(r)
    result: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "alignez_eval": __version__,
        "reference": {"path": str(ref.path),  # as given: reports are shared, no machine paths
                      "sha256": ref.sha256, "format": ref.format,
                      "rows": ref.n_rows},
        "judge": spec.public_dict(),
        "judge_description": spec.describe(),
        "judge_identity": spec.identity(),
        "mode": spec.mode,
        "margin": spec.margin,
        "length_debias": spec.length_debias,
        "settings": {"generators": list(generators) if generators else None, "max_chars": max_chars,
                     "limit": limit, "limit_mode": limit_mode, "seed": seed, "n_boot": n_boot,
                     "preference_rule": PREFERENCE_RULE, "length": LENGTH_RULE},
        "counts": counts,
        "overall": _figures(rows, n_boot, seed),
        "per_generator": {g: _figures(rs, n_boot, seed) for g, rs in sorted(per_gen.items())},
        "cache": str(cache_file),
        "stats": {**judge.stats, "wall_s": round(time.time() - started, 2)},
    }
    result["summary"] = agreement_summary_line(result)
    atomic_write_text(out_dir / "pairs.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(out_dir / "agreement.json", json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    atomic_write_text(out_dir / "agreement.md", render_agreement_md(result))
    return result
