"""Reference annotations as training pairs for the scorer.

Reads AlpacaEval annotations (a JSON list, JSONL, either optionally gzipped) of
{instruction, output_1, output_2, preference[, generator_1, generator_2]} and keeps the preference
as a probability that output_2 is better:
  hard 1 / 2          -> 0.0 / 1.0
  soft p in [1, 2]    -> p - 1        (AlpacaEval 2's weighted annotator)
  0 or 1.5            -> 0.5          (a tie)
  null / NaN          -> the row is skipped, and counted
Anything else is one DataError naming the file, the row and the fix.

HH-RLHF rows ({"chosen": "\n\nHuman: …\n\nAssistant: …", "rejected": …}, human labels) are read
as pairs too: the instruction is the dialogue before the last assistant turn, output_1 the
rejected last reply, output_2 the chosen one (p2 = 1), generator "hh-rlhf". Rows whose two
transcripts differ before the last reply, or whose last replies are equal, are skipped and counted.

Generators are compared by family name: AlpacaEval 2's prompted variants `X_concise` and
`X_verbose` are the model X, so X in training and X_verbose in evaluation is an overlap.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignez_eval.errors import DataError
from alignez_eval.hh_rlhf import HUMAN, normalized, split_last_reply, without_human_tag
from alignez_eval.judge.agreement import check_pair_fields, json_records

VARIANT_SUFFIXES = ("_concise", "_verbose")
FIX = ("each row needs instruction, output_1, output_2 (text) and preference (1 = output_1 better, 2 = output_2, "
       "a value in between = soft, 0 or 1.5 = tie, null = skip), or HH-RLHF chosen/rejected transcripts")


@dataclass(frozen=True)
class PrefPair:
    instruction: str
    output_1: str
    output_2: str
    p2: float  # probability that output_2 is the better answer
    generator_1: str
    generator_2: str
    source: str  # file name the row came from
    row: int


def generator_family(name: str) -> str:
    for suffix in VARIANT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def preference_to_p2(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is a {type(value).__name__}, not a number")
    try:
        num = float(value)
    except ValueError:
        if str(value).strip().lower() in ("null", "none"):
            return None
        raise ValueError(f"{value!r} is not a number") from None
    if math.isnan(num):
        return None
    if num == 0:
        return 0.5
    if not 1 <= num <= 2:
        raise ValueError(f"{value!r} is outside 1..2 (and not 0)")
    return num - 1.0


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise DataError(f"{path}: a damaged gzip file ({exc}); download it again") from None
    try:
        return raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON or JSONL") from None


HH_GENERATOR = "hh-rlhf"


def hh_split(transcript: str) -> tuple[str, str] | None:
    """(dialogue before the last assistant turn, last assistant reply); None if it has no turn."""
    split = split_last_reply(normalized(transcript))
    if split is None or HUMAN not in split[0]:
        return None
    head, reply = split
    context = head.strip()
    if context.startswith("Human:") and context.count("Human:") == 1 and "Assistant:" not in context:
        context = without_human_tag(context)  # one turn: the question itself, as the tasks pose it
    return context, reply


def hh_pair(rec: dict[str, Any]) -> tuple[str, str, str] | None:
    """(instruction, rejected reply, chosen reply) of an HH-RLHF row, or None to skip it."""
    a, b = hh_split(str(rec["chosen"])), hh_split(str(rec["rejected"]))
    if a is None or b is None or a[0] != b[0] or a[1] == b[1] or not a[1] or not b[1]:
        return None
    return a[0], b[1], a[1]


def load_pairs(path: str | Path) -> tuple[list[PrefPair], int]:
    """-> (pairs, rows skipped: a null preference, or an HH-RLHF row without a clean last-turn pair)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; pass AlpacaEval annotations (JSON list or "
                        "JSONL, optionally .gz)")
    pairs, skipped = [], 0
    # the same JSON-list / JSONL reading (and its errors) as judge-agreement's reference files
    _format, records = json_records(path, read_text(path))
    if not records:
        raise DataError(f"{path} holds no annotations; {FIX}")
    for row, where, rec in records:
        if not isinstance(rec, dict):
            raise DataError(f"{path} {where}: a {type(rec).__name__}, not an object; {FIX}")
        if "chosen" in rec and "rejected" in rec and "preference" not in rec:
            if not isinstance(rec["chosen"], str) or not isinstance(rec["rejected"], str):
                raise DataError(f"{path} {where}: chosen/rejected must be HH-RLHF transcripts (text); {FIX}")
            hh = hh_pair(rec)
            if hh is None:
                skipped += 1
                continue
            pairs.append(PrefPair(hh[0], hh[1], hh[2], 1.0, HH_GENERATOR, HH_GENERATOR, path.name, row))
            continue
        check_pair_fields(path, where, rec, FIX)
        try:
            p2 = preference_to_p2(rec["preference"])
        except ValueError as exc:
            raise DataError(f"{path} {where}: preference {exc}; {FIX}") from None
        if p2 is None:
            skipped += 1
            continue
        pairs.append(PrefPair(rec["instruction"], rec["output_1"], rec["output_2"], p2,
                              str(rec.get("generator_1") or "(none)"), str(rec.get("generator_2") or "(none)"),
                              path.name, row))
    return pairs, skipped


def generators(pairs: Iterable[PrefPair]) -> set[str]:
    return {generator_family(g) for p in pairs for g in (p.generator_1, p.generator_2)}


def check_disjoint(train: Sequence[PrefPair], evaluation_generators: Iterable[str], *,
                   shared_reference: Iterable[str] = ()) -> None:
    """Refuse a generator in both training and evaluation data (compared by family name). The
    common reference answerer (text_davinci_003 for AlpacaEval 1) may be named in `shared_reference`:
    its answers are the baseline side of every pair, not a system being judged."""
    allowed = {generator_family(g) for g in shared_reference}
    overlap = sorted((generators(train) & {generator_family(g) for g in evaluation_generators}) - allowed)
    if overlap:
        raise DataError(f"generator(s) {overlap} appear in both the training and the evaluation data, so agreement "
                        "would be measured on answers the scorer learned from; drop them from training "
                        "(--exclude-generators) or evaluate on other generators")


def instruction_split(instructions: Iterable[str], share: float, seed: int = 0) -> set[str]:
    """A seeded share of the distinct instructions (the training side of a split by instruction)."""
    uniq = sorted(set(instructions))
    rng = random.Random(seed)
    rng.shuffle(uniq)
    return set(uniq[: round(share * len(uniq))])


def sample_per_generator(pairs: Sequence[PrefPair], per_generator: int, seed: int = 0) -> list[PrefPair]:
    """At most `per_generator` rows of each generator_2 (seeded), in file order."""
    by_gen: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_gen.setdefault(p.generator_2, []).append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for gen in sorted(by_gen):
        idx = by_gen[gen]
        keep.update(idx if len(idx) <= per_generator else rng.sample(idx, per_generator))
    return [pairs[i] for i in sorted(keep)]
