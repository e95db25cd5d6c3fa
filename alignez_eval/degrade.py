"""Controlled degradations of a good answer, the failure modes of small models: cut mid-way, its
first sentence looped, its words shuffled. `judge-check` asks a judge to prefer the original;
the scorer's training can add them as synthetic pairs (scorer/augment.py). A leaf: text in, text out."""

from __future__ import annotations

import random
import re


def truncate_midway(text: str, frac: float = 0.45) -> str:
    words = text.split()
    cut = max(1, int(len(words) * frac))
    # End mid-sentence: a cut right after a full stop would read as a complete short answer.
    while cut > 1 and re.search(r"[.!?]$", words[cut - 1]):
        cut -= 1
    return " ".join(words[:cut])


def loop(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s+", text.strip())[0]
    n_words = len(text.split())
    reps = max(3, -(-n_words // max(1, len(first.split()))))
    return " ".join([first] * reps)


def gibberish(text: str, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    rng.shuffle(words)
    return " ".join(words)
