"""Cleaning of self-generated text and the degeneracy measures reported with every fit.

Small base models loop ("1. Be a good listener. 2. Be a good listener. …"), run on into a new
dialogue turn, and answer a "useless" persona by echoing the query. We cut at turn markers, collapse
repeated list items / sentences / phrases, and flag echoes and near-identical pairs so the fit report
says how much of the data is degenerate instead of hiding it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from alignez_eval.selfpref.templates import turn_markers

_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+")
# An inline list item starts with "1." / "2)" / "-" / "*" / "•" after whitespace.
_ITEM_START = re.compile(r"(?:(?<=\s)|^)(?=(?:\d{1,2}[.)]|[-*•])\s)")
_NUMBERED = re.compile(r"^(\d{1,2})([.)])(\s)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# The same phrase (3–80 chars) three or more times in a row: a decoding loop without punctuation.
_RENUMBER = re.compile(r"(?:(?<=\s)|^)\d{1,2}([.)])(?=\s)")
_PHRASE_LOOP = re.compile(r"(.{3,80}?)(?:[\s,;]*\1){2,}", re.DOTALL)

ECHO_RATIO = 0.8
NEAR_IDENTICAL_RATIO = 0.9


def normalize(text: str) -> str:
    """Lower-case words only: the key used to compare items, answers and queries."""
    return _WS.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def cut_at_turn(text: str, markers: tuple[str, ...] | None = None) -> str:
    """Cut at the first turn marker; a marker at the very start (the model restating the role) is
    skipped first, otherwise the whole answer would be lost."""
    markers = markers or turn_markers()
    s = text.lstrip()
    for m in ("Assistant:", "assistant:", "Answer:"):
        if s.startswith(m):
            s = s[len(m):].lstrip()
    cut = len(s)
    for m in markers:
        i = s.find(m)
        if i != -1:
            cut = min(cut, i)
    return s[:cut].strip()


def _split_items(line: str) -> list[str]:
    parts = [p for p in _ITEM_START.split(line) if p.strip()]
    return parts or [line]


def collapse_repeats(text: str) -> tuple[str, int]:
    """Drop list items, sentences and phrase loops that repeat earlier ones; renumber numbered items.

    Returns the cleaned text and how many repeats were removed (0 = the text was not looping).
    """
    removed = 0

    def loop_repl(m: re.Match[str]) -> str:
        nonlocal removed
        if not any(ch.isalpha() for ch in m.group(1)):  # "1000000", "-----": not a decoding loop
            return m.group(0)
        removed += 1
        return m.group(1)

    text = _PHRASE_LOOP.sub(loop_repl, text)
    seen_items: set[str] = set()
    seen_sentences: set[str] = set()
    out_lines: list[str] = []
    for line in text.split("\n"):
        kept_items: list[str] = []
        for item in _split_items(line):
            key = normalize(_NUMBERED.sub("", item.strip()))
            if key and key in seen_items:
                removed += 1
                continue
            if key:
                seen_items.add(key)
            sentences = _SENTENCE_END.split(item)
            kept_s = []
            for s in sentences:
                k = normalize(_NUMBERED.sub("", s.strip()))
                if k and len(k) > 12 and k in seen_sentences:
                    removed += 1
                    continue
                if k:
                    seen_sentences.add(k)
                kept_s.append(s)
            if kept_s:
                kept_items.append(" ".join(x.strip() for x in kept_s if x.strip()))
        if kept_items or not line.strip():
            out_lines.append(" ".join(kept_items))
    cleaned = "\n".join(out_lines)
    cleaned = re.sub(r"\n{3,}", "\n\n", cleaned).strip()
    return _renumber(cleaned), removed


def _renumber(text: str) -> str:
    """After dropping repeats, "1. a 3. b" reads oddly: number the surviving items 1, 2, 3 …"""
    counter = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal counter
        counter += 1
        return f"{counter}{m.group(1)}"

    return _RENUMBER.sub(repl, text)


def clean_text(text: str) -> tuple[str, int]:
    """cut_at_turn + collapse_repeats."""
    return collapse_repeats(cut_at_turn(text))


def clean_characteristics(text: str) -> tuple[str, int]:
    """Characteristics are spliced into "Your answer should {c}." — drop the trailing full stop and
    keep them on one line so the answer prompt stays well-formed."""
    c, removed = clean_text(text)
    c = _WS.sub(" ", c).strip().rstrip(".").strip()
    return c, removed


def similarity(a: str, b: str) -> float:
    """difflib ratio of the normalised texts (1.0 = same words)."""
    na, nb = normalize(a), normalize(b)
    if not na and not nb:
        return 1.0
    sm = difflib.SequenceMatcher(None, na, nb, autojunk=False)
    # quick_ratio is an upper bound: far-apart texts skip the quadratic exact ratio.
    quick = sm.quick_ratio()
    return quick if quick < 0.5 else sm.ratio()


def is_echo(answer: str, query: str) -> bool:
    """The answer restates the query instead of answering it."""
    na, nq = normalize(answer), normalize(query)
    if not na or not nq:
        return False
    if na in nq:
        return True
    if nq in na and len(na) <= 1.5 * len(nq):
        return True
    return similarity(na, nq) >= ECHO_RATIO


def near_identical(a: str, b: str) -> bool:
    return similarity(a, b) >= NEAR_IDENTICAL_RATIO


# Phrases of our own prompts: an answer containing them restates its instructions instead of answering.
INSTRUCTION_PHRASES = ("your answer should", "your response to this query should", "pretend you are a")


def echoes_instruction(answer: str, keywords: tuple[str, ...] = ()) -> bool:
    na = normalize(answer)
    phrases = INSTRUCTION_PHRASES + tuple(f"you are a {normalize(k)} assistant" for k in keywords)
    return any(p in na for p in phrases)


@dataclass
class PairFlags:
    """Why a pair is degenerate (any True) and whether it must be dropped (`drop_reason`)."""

    echo_pos: bool = False
    echo_neg: bool = False
    echo_instruction: bool = False
    near_identical: bool = False
    loops_collapsed: bool = False
    drop_reason: str | None = None  # "empty" | "identical" | None

    @property
    def degenerate(self) -> bool:
        return bool(self.echo_pos or self.echo_neg or self.echo_instruction or self.near_identical
                    or self.drop_reason)


def judge_pair(
    query: str, pos: str, neg: str, repeats_removed: int = 0, keywords: tuple[str, ...] = ()
) -> PairFlags:
    """Flags of one (helpful, harmful) answer pair after cleaning."""
    f = PairFlags(loops_collapsed=repeats_removed > 0)
    f.echo_instruction = echoes_instruction(pos, keywords) or echoes_instruction(neg, keywords)
    if not pos.strip() or not neg.strip():
        f.drop_reason = "empty"
    elif normalize(pos) == normalize(neg):
        f.drop_reason = "identical"
    f.echo_pos = is_echo(pos, query)
    f.echo_neg = is_echo(neg, query)
    f.near_identical = f.drop_reason == "identical" or (f.drop_reason is None and near_identical(pos, neg))
    return f
