"""Parsing judge replies strictly: anything not in the declared format is an error, never a tie."""

from __future__ import annotations

import json
import re
from typing import Any

_LABELS = {"a": "A", "b": "B", "tie": "tie", "c": "tie"}
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


class ParseError(ValueError):
    pass


def _first_json_object(text: str) -> dict[str, Any]:
    # Judges sometimes wrap JSON in ```json fences or add a preamble; take the first decodable object.
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ParseError("no JSON object in the reply")


def parse_pairwise_reply(text: str) -> tuple[str, dict[str, str]]:
    """-> (overall label in {A, B, tie}, per-aspect choices)."""
    obj = _first_json_object(text)
    overall = obj.get("overall")
    if not isinstance(overall, str) or overall.strip().lower() not in _LABELS:
        raise ParseError(f"'overall' must be \"A\", \"B\" or \"tie\", got {overall!r}")
    aspects: dict[str, str] = {}
    for name, val in obj.items():
        choice = val.get("choice") if isinstance(val, dict) else None
        if isinstance(choice, str) and choice.strip().lower() in _LABELS:
            aspects[name] = _LABELS[choice.strip().lower()]
    return _LABELS[overall.strip().lower()], aspects


def parse_grade_reply(text: str, max_grade: int) -> float:
    """The last `[[N]]` in the reply, an integer grade in 1..max_grade."""
    found = _RATING.findall(text)
    if not found:
        raise ParseError("no rating of the form [[N]] in the reply")
    grade = float(found[-1])
    if not (1 <= grade <= max_grade) or grade != int(grade):
        raise ParseError(f"rating {found[-1]} is not an integer in 1..{max_grade}")
    return grade
