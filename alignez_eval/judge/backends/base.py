"""What every backend takes and gives back.

A backend receives `JudgeRequest`s (one order of a pair, or one answer to grade) and yields
`(request, result)` as each finishes, so the caller can commit it at once. A result is a plain
JSON-able dict:
  label      "A" | "B" | "tie" | None    the verdict of this order (pairwise)
  probs      {"A", "B", "tie"} | None    normalised label probabilities (hf pairwise)
  grade      float | None                the grade, expected grade (hf) or reward score (rm)
  reply      str | None                  the judge's text (openai)
  usage      {"prompt_tokens", "completion_tokens"} | None
  cost_usd   float
  error      str | None                  set: the judgment failed and is excluded (never a tie)
  transient  bool                        an error worth retrying on a later run (not cached)
  truncated  bool                        an answer was cut to max_answer_tokens
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class JudgeRequest:
    key: str
    kind: str  # "pair" | "grade"
    order: str  # "AB" (baseline shown as A) | "BA" (candidate shown as A) | "single"
    instruction: str
    answer_a: str
    answer_b: str = ""


def empty_result(**kw: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"label": None, "probs": None, "grade": None, "reply": None, "usage": None,
                           "cost_usd": 0.0, "error": None, "transient": False, "truncated": False}
    res.update(kw)
    return res


class Backend(Protocol):
    calls: int  # judge calls actually made (model forward items or HTTP requests that got a reply)

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]: ...

    def close(self) -> None: ...

