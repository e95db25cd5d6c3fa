"""The scorer's Bradley–Terry head: one scalar per (instruction, answer).

  s(x) = w · (φ(x) − μ) / σ  [+ γ · ℓ(x)]          ℓ(x) = ln(1 + characters of the answer)
  P(answer 2 better than answer 1) = sigmoid(s(x₂) − s(x₁))

φ are the frozen features (features.py), μ and σ their training mean and spread. `length_term`:
  none     no explicit length term (the features still carry whatever length they encode)
  control  fitted with γℓ and *read without it*: the quality part with length set to zero, as
           AlpacaEval 2's length-controlled win rate reads its GLM
  full     fitted with γℓ and read with it (a judge that, like its teacher, may prefer length) A head file is safetensors (w, mu, sigma, gamma) with one metadata key holding the
provenance (feature spec, training files' sha256, generators, licence, settings, cross-validation)
and a checksum of the tensors; `load_head` refuses a file whose tensors or provenance were changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignez_eval.atomic import atomic_write_safetensors
from alignez_eval.errors import ArtifactError
from alignez_eval.hashing import canonical_json, sha256_file, sha256_text
from alignez_eval.scorer.spec import FeatureSpec, resolve_head_path

HEAD_FORMAT = "alignez-eval/scorer-head/1"
META_KEY = "alignez_scorer"
LENGTH_TERMS = ("none", "control", "full")


def answer_length(answer: str) -> float:
    """ℓ: log characters, so doubling an answer moves the score by the same amount at any length."""
    return math.log1p(len(answer.strip()))


@dataclass
class ScorerHead:
    features: FeatureSpec
    w: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    gamma: float = 0.0  # the length coefficient (used in training only when length_term == "control")
    length_term: str = "none"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.length_term not in LENGTH_TERMS:
            raise ArtifactError(f"length_term {self.length_term!r} is unknown; use one of {LENGTH_TERMS}")
        if not (self.w.shape == self.mu.shape == self.sigma.shape) or self.w.ndim != 1:
            raise ArtifactError("scorer head tensors w, mu and sigma must be vectors of one length")

    def score(self, phi: np.ndarray, answers: Sequence[str] | None = None) -> np.ndarray:
        """Scores of feature rows `phi` [n, D]; `answers` (their texts) are needed for length_term=full."""
        z = (np.asarray(phi, dtype=np.float64) - self.mu) / self.sigma
        s = z @ self.w
        if self.length_term == "full":
            if answers is None:
                raise ArtifactError("this scorer head reads answer length (length_term=full); pass the answers")
            s = s + self.gamma * np.array([answer_length(a) for a in answers])
        return s

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor(self.w, dtype=torch.float64), "mu": torch.tensor(self.mu, dtype=torch.float64),
                "sigma": torch.tensor(self.sigma, dtype=torch.float64),
                "gamma": torch.tensor([self.gamma], dtype=torch.float64)}

    def metadata(self) -> dict[str, Any]:
        return {"format": HEAD_FORMAT, "features": self.features.identity(), "length_term": self.length_term,
                "provenance": self.provenance}

    def save(self, path: str | Path) -> str:
        """Write the head atomically; -> the file's sha256 (equal heads give equal files)."""
        tensors = self.tensors()
        meta = self.metadata()
        meta["checksum"] = _checksum(tensors, meta)
        atomic_write_safetensors(path, tensors, metadata={META_KEY: canonical_json(meta)})
        return sha256_file(path)


def _checksum(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    parts = [canonical_json(body)] + [f"{k}:{tensors[k].double().numpy().tobytes().hex()}" for k in sorted(tensors)]
    return sha256_text("\n".join(parts))


def load_head(name: str | Path) -> ScorerHead:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = resolve_head_path(name)
    fix = f"restore the file or retrain it with `alignez-eval train-scorer` ({path})"
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is one clear error
        raise ArtifactError(f"scorer head {path} is not a readable safetensors file ({exc}); {fix}") from None
    if raw is None:
        raise ArtifactError(f"{path} is not a scorer head (no {META_KEY} metadata); {fix}")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ArtifactError(f"scorer head {path} has damaged metadata; {fix}") from None
    if meta.get("format") != HEAD_FORMAT:
        raise ArtifactError(f"{path} is a {meta.get('format')!r} file, not {HEAD_FORMAT}; {fix}")
    missing = [k for k in ("w", "mu", "sigma", "gamma") if k not in tensors]
    if missing or meta.get("checksum") != _checksum(tensors, meta):
        raise ArtifactError(f"scorer head {path} fails its checksum: its weights or provenance were changed after "
                            f"training; {fix}")
    f = meta["features"]
    spec = FeatureSpec(model=f["model"], layers=tuple(f["layers"]), poolings=tuple(f["poolings"]),
                       max_answer_tokens=int(f["max_answer_tokens"]), dtype=f["dtype"])
    return ScorerHead(features=spec, w=tensors["w"].double().numpy(), mu=tensors["mu"].double().numpy(),
                      sigma=tensors["sigma"].double().numpy(), gamma=float(tensors["gamma"][0]),
                      length_term=meta["length_term"], provenance=meta.get("provenance", {}))
