"""Decoding settings of self-generated pairs, and their defaults (the one place they are written).

Kept free of torch so `alignez-eval fit --help` can show the defaults without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    """Decoding settings recorded with every generated pair."""

    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
