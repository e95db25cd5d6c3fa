"""Synthetic preference pairs against the failure modes of small models: a preferred answer beats
its own degraded copies (truncated mid-way, its first sentence looped, its words shuffled) and
another instruction's answer. A head trained only on GPT-4's pairs reads mostly what the answers
are about and how long they are; these pairs teach it that coherence and relevance matter, which
`judge-check` measures. Built from training answers only, so evaluation answers stay unseen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from alignez_eval.judge.check import gibberish, loop, truncate_midway
from alignez_eval.scorer.data import PrefPair

DEGRADATIONS = ("truncated", "looped", "gibberish", "swapped")
AUGMENT_GENERATOR = "degraded"


def preferred(pair: PrefPair) -> str:
    return pair.output_2 if pair.p2 >= 0.5 else pair.output_1


def degraded_pairs(pairs: Sequence[PrefPair], n: int, seed: int = 0) -> list[PrefPair]:
    """For `n` seeded decisive pairs, the preferred answer (output_2, p2 = 1) against each degradation
    (output_1). generator_2 keeps the original answer's generator, so grouped CV keeps them together."""
    decisive = [p for p in pairs if abs(p.p2 - 0.5) > 0.25 and len(preferred(p).split()) >= 8]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(decisive)), min(n, len(decisive))))
    out = []
    for k, i in enumerate(chosen):
        p = decisive[i]
        good = preferred(p).strip()
        other = preferred(decisive[chosen[(k + len(chosen) // 2) % len(chosen)]]).strip()
        gen = p.generator_2 if p.p2 >= 0.5 else p.generator_1
        variants = {"truncated": truncate_midway(good), "looped": loop(good), "gibberish": gibberish(good, seed + i),
                    "swapped": other}
        for kind in DEGRADATIONS:
            if variants[kind] != good:
                out.append(PrefPair(p.instruction, variants[kind], good, 1.0, f"{AUGMENT_GENERATOR}:{kind}", gen,
                                    p.source, p.row))
    return out
