"""How often a judge agrees with a reference annotator: reading reference files and the figures.

Reference file: AlpacaEval's `annotations.json` (a JSON list) or JSONL, one pair per record with
`instruction`, `output_1`, `output_2`, `preference`, and optionally `generator_1`, `generator_2`,
`dataset`. Preferences come as int, float or string ("1", 2.0, "1.5", ...) and are read as:
  1 <= p < 1.5  -> output_1 preferred ("1")      (AlpacaEval writes fractional values like 1.25)
  1.5 < p <= 2  -> output_2 preferred ("2")
  p == 1.5 or p == 0 -> tie                       (0: AlpacaEval's identical/undecided)
  null / NaN    -> the row is skipped, and counted
anything else is an error naming the file and row.

Figures (on the pairs the judge judged; its errors are excluded and counted), each with a seeded
percentile-bootstrap 95% CI over pairs:
  agreement                 share of the reference's decisive pairs where the judge picks the same
                            answer (a judge tie counts as a miss)
  agreement_judge_decisive  share of the judge's decisive pairs where the reference agrees (a
                            reference tie counts as a miss)
  judge_tie_rate, reference_tie_rate
  kappa                     Cohen's kappa over 3 classes (1 / 2 / tie), all pairs both rated
  swap_consistency          pairwise mode: share of pairs whose two orders' labels agree
  length_baseline           `agreement` of the length-only annotator: the answer with more
                            characters (surrounding whitespace stripped) wins; equal lengths are
                            its tie, so it never gets credit for a decisive pair of equal lengths
  reference_picks_longer, judge_picks_longer
                            among an annotator's decisive pairs of unequal lengths, the share where
                            it picked the longer answer
  agreement_ref_longer / agreement_ref_shorter
                            `agreement` restricted to decisive pairs of unequal lengths where the
                            reference picked the longer / the shorter answer
  length_balanced           mean of those two: the length-only annotator scores exactly 50% here,
                            so a judge above 50% has shown something beyond answer length
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
from alignez_eval.errors import DataError

FORMAT = "alignez-eval-judge-agreement/1"
OUT1, OUT2, TIE = "1", "2", "tie"
CODE = {TIE: 0, OUT1: 1, OUT2: 2}
REQUIRED = ("instruction", "output_1", "output_2", "preference")
OPTIONAL = ("generator_1", "generator_2", "dataset")
FIX = ("each pair needs instruction, output_1, output_2 (text) and preference (1 = output_1 preferred, "
       "2 = output_2, 0 or 1.5 = tie, null = skip)")

# (key, short column name, description) in the order tables show them.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("agreement", "agreement", "agreement on the reference's decisive pairs (judge ties count as misses)"),
    ("agreement_judge_decisive", "when judge decisive",
     "agreement on the judge's decisive pairs (reference ties count as misses)"),
    ("judge_tie_rate", "judge ties", "share of pairs the judge calls a tie"),
    ("reference_tie_rate", "reference ties", "share of pairs the reference calls a tie"),
    ("kappa", "kappa", "Cohen's kappa, 3 classes (output_1 / output_2 / tie), all pairs"),
    ("swap_consistency", "swap consistency", "pairwise mode: share of pairs whose two orders agree"),
    ("length_baseline", "length-only", "agreement of 'the longer answer wins' on the reference's decisive pairs"),
    ("reference_picks_longer", "ref picks longer", "reference's decisive pairs of unequal length: longer picked"),
    ("judge_picks_longer", "judge picks longer", "judge's decisive pairs of unequal length: longer picked"),
    ("agreement_ref_longer", "agree, ref longer", "agreement where the reference picked the longer answer"),
    ("agreement_ref_shorter", "agree, ref shorter", "agreement where the reference picked the shorter answer"),
    ("length_balanced", "length-balanced", "mean of the two above (length-only scores 50%)"),
)


# -- reading a reference file -----------------------------------------------------------------------
def parse_preference(value: Any) -> str | None:
    """A reference preference -> "1", "2" or "tie"; None for null/NaN (skip the row).
    Raises ValueError (with the reason) for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is a {type(value).__name__}, not a number")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("null", "none"):
            return None
        try:
            num = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        num = float(value)
    if math.isnan(num):
        return None
    if num == 0 or abs(num - 1.5) < 1e-9:
        return TIE
    if 1 <= num < 1.5:
        return OUT1
    if 1.5 < num <= 2:
        return OUT2
    raise ValueError(f"{value!r} is outside 1..2 (and not 0)")


@dataclass(frozen=True)
class RefPair:
    """One reference judgment. `row` is the record's 0-based position in the file."""

    row: int
    instruction: str
    output_1: str
    output_2: str
    preference: Any  # as written in the file
    label: str  # "1" | "2" | "tie"
    generator_1: str | None = None
    generator_2: str | None = None
    dataset: str | None = None


@dataclass
class Reference:
    path: Path
    sha256: str
    format: str  # "json" (a list) or "jsonl"
    n_rows: int
    pairs: list[RefPair]
    null_rows: list[int] = field(default_factory=list)  # rows skipped for a null/NaN preference


def json_records(path: Path, text: str) -> tuple[str, list[tuple[int, str, Any]]]:
    """-> (format, [(row, where, record)]); `where` names the row (and its line in JSONL)."""
    body = text.lstrip("\ufeff").strip()
    if body.startswith("["):
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the reference must be a JSON "
                            "list (AlpacaEval annotations.json) or JSONL with one pair per line") from None
        return "json", [(i, f"row {i}", r) for i, r in enumerate(data)]
    if body.startswith("{"):
        if "\n" in body:  # a pretty-printed object (e.g. an agreement.json) is not JSONL
            try:
                whole = json.loads(body)
            except json.JSONDecodeError:
                whole = None
            if isinstance(whole, dict):
                raise DataError(f"{path} holds one JSON object, not pairs; the reference must be a JSON list "
                                "(AlpacaEval annotations.json) or JSONL with one pair per line")
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} row {len(out)} (line {lineno}): not a JSON object ({exc.msg}); JSONL "
                                "needs one complete JSON object per line (or give a JSON list)") from None
            out.append((len(out), f"row {len(out)} (line {lineno})", rec))
        return "jsonl", out
    raise DataError(f"{path} is neither a JSON list nor JSONL; give AlpacaEval's annotations.json or one JSON "
                    "object per line with instruction, output_1, output_2, preference")


def check_pair_fields(path: Path, where: str, rec: dict[str, Any], fix: str) -> None:
    """An AlpacaEval annotation row has its instruction, two outputs (text) and a preference; else
    one DataError naming the row, the field and `fix`."""
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DataError(f"{path} {where}: missing {', '.join(missing)}; {fix}")
    for k in ("instruction", "output_1", "output_2"):
        if not isinstance(rec[k], str):
            raise DataError(f"{path} {where}: {k} is {type(rec[k]).__name__}, not text; {fix}")


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"reference file {path} does not exist; pass AlpacaEval's annotations.json or a JSONL "
                        "of {instruction, output_1, output_2, preference}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON or JSONL") from None
    fmt, records = json_records(path, text)
    pairs: list[RefPair] = []
    nulls: list[int] = []
    for row, where, rec in records:
        if not isinstance(rec, dict):
            raise DataError(f"{path} {where}: a {type(rec).__name__}, not an object; {FIX}")
        check_pair_fields(path, where, rec, FIX)
        try:
            label = parse_preference(rec["preference"])
        except ValueError as exc:
            raise DataError(f"{path} {where}: preference {exc}; use 1 (output_1 preferred), 2 (output_2), "
                            "0 or 1.5 (tie), a value in between (<1.5 -> output_1, >1.5 -> output_2) or null "
                            "(skip the row)") from None
        if label is None:
            nulls.append(row)
            continue
        opt = {k: (None if rec.get(k) is None else str(rec[k])) for k in OPTIONAL}
        pairs.append(RefPair(row=row, instruction=rec["instruction"], output_1=rec["output_1"],
                             output_2=rec["output_2"], preference=rec["preference"], label=label, **opt))
    if not records:
        raise DataError(f"{path} holds no pairs; {FIX}")
    return Reference(path=path, sha256=hashlib.sha256(raw).hexdigest(), format=fmt, n_rows=len(records),
                     pairs=pairs, null_rows=nulls)


def n_chars(text: str) -> int:
    return len(text.strip())


def length_label(len_1: int, len_2: int) -> str:
    """The length-only annotator: the longer answer wins; equal lengths are a tie."""
    return OUT1 if len_1 > len_2 else OUT2 if len_2 > len_1 else TIE


# -- figures ------------------------------------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _stats(r: np.ndarray, j: np.ndarray, longer: np.ndarray, cons: np.ndarray,
           idx: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every figure on each row of `idx` (resampled pair indices) -> {name: (values, denominators)}."""
    R, J, LO, C = r[idx], j[idx], longer[idx], cons[idx]
    hit = R == J
    ref_dec, judge_dec, unequal = R != 0, J != 0, LO != 0
    n = np.full(R.shape[0], R.shape[1])

    def frac(num_mask: np.ndarray, den_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        den = den_mask.sum(1)
        return _ratio((num_mask & den_mask).sum(1).astype(float), den), den

    po = hit.mean(1)
    pe = sum((R == k).mean(1) * (J == k).mean(1) for k in (0, 1, 2))
    kappa = _ratio(po - pe, 1 - pe)
    ref_long = ref_dec & unequal & (R == LO)
    ref_short = ref_dec & unequal & (R != LO)
    a_long, n_long = frac(hit, ref_long)
    a_short, n_short = frac(hit, ref_short)
    return {
        "agreement": frac(hit, ref_dec),
        "agreement_judge_decisive": frac(hit, judge_dec),
        "judge_tie_rate": ((J == 0).mean(1), n),
        "reference_tie_rate": ((R == 0).mean(1), n),
        "kappa": (kappa, n),
        "swap_consistency": frac(C == 1, C >= 0),
        "length_baseline": frac(R == LO, ref_dec),
        "reference_picks_longer": frac(R == LO, ref_dec & unequal),
        "judge_picks_longer": frac(J == LO, judge_dec & unequal),
        "agreement_ref_longer": (a_long, n_long),
        "agreement_ref_shorter": (a_short, n_short),
        "length_balanced": ((a_long + a_short) / 2, n_long + n_short),
    }


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def agreement_figures(reference: Sequence[str], judge: Sequence[str], len_1: Sequence[int], len_2: Sequence[int],
                      consistent: Sequence[bool | None] | None = None, *, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Figures for aligned labels ("1"/"2"/"tie") of the reference and the judge on the same pairs.
    `consistent`: per pair, whether the judge's two orders agreed (None where not applicable).
    -> {"n", "counts", "figures": {name: {"value", "ci", "n"}}}; undefined figures are None."""
    n = len(reference)
    if not (len(judge) == len(len_1) == len(len_2) == n):
        raise ValueError("reference, judge and lengths must be aligned")
    r = np.array([CODE[x] for x in reference], dtype=np.int8)
    j = np.array([CODE[x] for x in judge], dtype=np.int8)
    longer = np.array([CODE[length_label(a, b)] for a, b in zip(len_1, len_2, strict=True)], dtype=np.int8)
    cons_list = list(consistent) if consistent is not None else [None] * n
    cons = np.array([-1 if c is None else int(bool(c)) for c in cons_list], dtype=np.int8)
    figures: dict[str, Any] = {}
    if n:
        point = _stats(r, j, longer, cons, np.arange(n)[None, :])
        boot = _stats(r, j, longer, cons, bootstrap_indices(n, n_boot, seed)) if n_boot > 0 else None
        for name, (vals, dens) in point.items():
            ci = percentile_ci(boot[name][0]) if boot is not None else (float("nan"), float("nan"))
            value = _num(float(vals[0]))
            figures[name] = {"value": value, "ci": [_num(ci[0]), _num(ci[1])] if value is not None else [None, None],
                             "n": int(dens[0])}
    else:
        figures = {name: {"value": None, "ci": [None, None], "n": 0} for name, _, _ in FIGURES}
    counts = {
        "pairs": n,
        "reference": {lab: int(sum(x == lab for x in reference)) for lab in (OUT1, OUT2, TIE)},
        "judge": {lab: int(sum(x == lab for x in judge)) for lab in (OUT1, OUT2, TIE)},
        "equal_length": int((longer == 0).sum()),
    }
    return {"n": n, "counts": counts, "figures": figures}


# -- one line for a leaderboard -----------------------------------------------------------------------
def load_agreement(path: str | Path) -> dict[str, Any]:
    """An agreement.json written by `alignez-eval judge-agreement`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"judge agreement file {path} does not exist; write it with "
                        "`alignez-eval judge-agreement --judge SPEC --reference FILE --out DIR` (DIR/agreement.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path} is not an agreement.json written by `alignez-eval judge-agreement`; run it "
                        "(--judge SPEC --reference FILE --out DIR) and pass DIR/agreement.json")
    return data


def is_agreement_file(path: str | Path) -> bool:
    """True for an agreement.json (a JSON object of our format), False for anything else, e.g. a
    reference annotations file."""
    try:
        load_agreement(path)
    except DataError:
        return False
    return True


def agreement_extra(data: dict[str, Any]) -> dict[str, Any]:
    """The parts of an agreement.json a report carries (its header line and provenance): the
    overall figures and what they were measured with; per-generator figures stay in the file."""
    keys = ("format", "summary", "judge_description", "judge_identity", "mode", "margin", "reference", "settings",
            "counts", "overall")
    return {k: data[k] for k in keys if k in data}


def _pct(fig: dict[str, Any] | None, ci: bool = False) -> str:
    if not fig or fig.get("value") is None:
        return "n/a"
    text = f"{100 * fig['value']:.0f}%"
    lo, hi = fig.get("ci") or (None, None)
    if ci and lo is not None and hi is not None:
        text += f" [{100 * lo:.0f}, {100 * hi:.0f}]"
    return text


def agreement_summary_line(result: dict[str, Any] | str | Path) -> str:
    """judge, n, agreement [CI], length-only baseline, length-balanced, ties — in one line."""
    data = load_agreement(result) if isinstance(result, str | Path) else result
    ov = data["overall"]
    f = ov["figures"]
    ref = data.get("reference") or {}
    kappa = f.get("kappa", {}).get("value")
    swap = "" if data.get("mode") != "pairwise" else f"; swap consistency {_pct(f.get('swap_consistency'))}"
    errors = data.get("counts", {}).get("judge_errors", 0)
    return (f"{data.get('judge_description')} vs reference `{Path(str(ref.get('path', '?'))).name}` "
            f"(sha256 {str(ref.get('sha256', ''))[:12]}), {ov['n']} pairs: agreement "
            f"{_pct(f.get('agreement'), True)} on {f.get('agreement', {}).get('n', 0)} decisive pairs; "
            f"length-only baseline {_pct(f.get('length_baseline'), True)}; length-balanced "
            f"{_pct(f.get('length_balanced'), True)} (reference picked the shorter answer: "
            f"{_pct(f.get('agreement_ref_shorter'), True)} of {f.get('agreement_ref_shorter', {}).get('n', 0)}); "
            f"judge ties {_pct(f.get('judge_tie_rate'))}; kappa {'n/a' if kappa is None else f'{kappa:.2f}'}"
            f"{swap}" + (f"; {errors} judge errors excluded" if errors else ""))
