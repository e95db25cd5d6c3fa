"""What a scorer's features are (torch-free, so CLIs can show defaults without loading torch)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alignez_eval.errors import ArtifactError, ConfigError
from alignez_eval.hashing import sha256_json, sha256_text

POOLINGS = ("mean", "last")
PACKAGED_DIR = Path(__file__).resolve().parent / "heads"
# Bumped when rendering or pooling changes, so old stores are not mixed with new vectors.
RENDER_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which vectors describe an answer. Everything here changes the numbers, so all of it is the
    identity that keys the store and that a head records."""

    model: str  # embedded model name or a model directory
    layers: tuple[int, ...] = (3, 6, 9, 12)
    poolings: tuple[str, ...] = POOLINGS
    max_answer_tokens: int = 160
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "poolings", tuple(str(x) for x in self.poolings))
        if not self.model:
            raise ConfigError("scorer features need a model (an embedded name such as smollm2-135m-instruct "
                              "or a model directory)")
        if not self.layers or any(x < 0 for x in self.layers) or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"scorer layers {self.layers} must be distinct non-negative hidden-state indices "
                              "(0 = embeddings, l = output of block l)")
        bad = [p for p in self.poolings if p not in POOLINGS]
        if bad or not self.poolings or len(set(self.poolings)) != len(self.poolings):
            raise ConfigError(f"scorer poolings {self.poolings} must be distinct values of {POOLINGS}")
        if self.max_answer_tokens < 8:
            raise ConfigError("scorer max_answer_tokens must be >= 8")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"scorer dtype {self.dtype!r}: use float32 or bfloat16")

    @property
    def blocks(self) -> list[tuple[int, str]]:
        """(layer, pooling) of each block of `dim` columns, in column order."""
        return [(layer, pool) for layer in self.layers for pool in self.poolings]

    def identity(self) -> dict[str, Any]:
        from alignez_eval.shareable import shareable_text

        d = asdict(self)
        d.update(model=shareable_text(self.model), layers=list(self.layers), poolings=list(self.poolings),
                 render=RENDER_VERSION)
        return d

    def identity_hash(self) -> str:
        return sha256_json(self.identity())

    def subset(self, layers: Sequence[int], poolings: Sequence[str]) -> FeatureSpec:
        missing = [x for x in layers if x not in self.layers] + [p for p in poolings if p not in self.poolings]
        if missing:
            raise ConfigError(f"{missing} not among the extracted features {self.layers} x {self.poolings}")
        return FeatureSpec(self.model, tuple(layers), tuple(poolings), self.max_answer_tokens, self.dtype)

    def columns(self, sub: FeatureSpec, dim: int) -> np.ndarray:
        """Column indices of `sub`'s blocks inside this spec's feature matrix."""
        idx = [self.blocks.index(b) for b in sub.blocks]
        return np.concatenate([np.arange(i * dim, (i + 1) * dim) for i in idx])


def answer_key(instruction: str, answer: str) -> str:
    return sha256_text(json.dumps([instruction, answer], ensure_ascii=False))


def resolve_head_path(name: str | Path) -> Path:
    """A head file as given, else a packaged head by name (alignez_eval/scorer/heads/NAME.safetensors)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = PACKAGED_DIR / f"{name}.safetensors"
    if packaged.is_file():
        return packaged
    known = sorted(p.stem for p in PACKAGED_DIR.glob("*.safetensors"))
    raise ArtifactError(f"scorer head {name!r} is neither a file nor a packaged head ({', '.join(known) or 'none'}); "
                        "train one with `alignez-eval train-scorer` or name a packaged one")
