"""The scorer's Bradley–Terry head: one scalar per (instruction, answer).

  z = (φ(x) − μ) / σ
  s(x) = w · z  [+ v · relu(W₁ z + b₁)]  [+ γ · ℓ(x)]  [− κ · relu(τ − r(x))]
  P(answer 2 better than answer 1) = sigmoid(s(x₂) − s(x₁))

ℓ(x) = ln(1 + characters of the answer); the bracketed MLP part exists for `kind="mlp"` heads (one
score function shared by both answers, so swapping them flips the prediction: no position bias);
r(x) is the relevance of the answer to its instruction (relevance.py, a PMI), and the gate is there
when the head was trained with one: an answer that does not address its instruction (r below τ)
loses κ per unit, one that does is untouched, so a short generic opening gains nothing from it.

φ are the frozen features (features.py), μ and σ their training mean and spread. `length_term`:
  none     no explicit length term (the features still carry whatever length they encode)
  control  fitted with γℓ and *read without it*: the quality part with length set to zero, as
           AlpacaEval 2's length-controlled win rate reads its GLM
  full     fitted with γℓ and read with it (a judge that, like its teacher, may prefer length)

A head file is safetensors (w, mu, sigma, gamma[, W1, b1, v][, gate]) with one metadata key holding the
provenance (feature spec, training files' sha256, generators, licence, settings, cross-validation)
and a checksum of the tensors; `load_head` refuses a file whose tensors or provenance were changed.
An MLP head's W₁ (h × D, nearly all of the file) is stored in float16 (`STORAGE`): at 128 × 4608 a
float64 W₁ is 4.7 MB, over the 2 MiB a tracked file may hold, and float16 keeps 11 bits of each weight
(relative error ≤ 2⁻¹¹) while the scores are still computed in float64; the checksum is over the
values as read, so a head converted once loads and re-saves to the same bytes.
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
HEAD_KINDS = ("linear", "mlp")
MLP_TENSORS = ("W1", "b1", "v")
# how each tensor is stored (anything not named: float64)
STORAGE: dict[str, torch.dtype] = {"W1": torch.float16}


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
    kind: str = "linear"
    mlp: dict[str, np.ndarray] | None = None  # W1 [h, D], b1 [h], v [h] for kind="mlp"
    # (κ, τ) of the relevance gate and what r(x) is (RelevanceSpec.identity()); None: no gate
    gate: tuple[float, float] | None = None
    relevance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.length_term not in LENGTH_TERMS:
            raise ArtifactError(f"length_term {self.length_term!r} is unknown; use one of {LENGTH_TERMS}")
        if not (self.w.shape == self.mu.shape == self.sigma.shape) or self.w.ndim != 1:
            raise ArtifactError("scorer head tensors w, mu and sigma must be vectors of one length")
        if self.kind not in HEAD_KINDS:
            raise ArtifactError(f"scorer head kind {self.kind!r} is unknown; use one of {HEAD_KINDS}")
        if (self.kind == "mlp") != (self.mlp is not None):
            raise ArtifactError("an mlp scorer head needs its W1, b1, v tensors (and a linear one has none)")
        if self.mlp is not None:
            w1, b1, v = (np.asarray(self.mlp[k]) for k in MLP_TENSORS)
            # held at the precision the file stores, so a head scores the same before and after save/load
            for k, dtype in STORAGE.items():
                stored = np.asarray(self.mlp[k]).astype(torch.empty(0, dtype=dtype).numpy().dtype)
                if not np.isfinite(stored).all():
                    raise ArtifactError(f"scorer head tensor {k} exceeds the range of its storage type {dtype}; "
                                        "retrain with a larger l2")
                self.mlp = {**self.mlp, k: stored.astype(np.float64)}
            w1 = self.mlp["W1"]
            if w1.shape != (len(b1), len(self.w)) or v.shape != b1.shape:
                raise ArtifactError(f"scorer head MLP shapes W1 {w1.shape}, b1 {b1.shape}, v {v.shape} do not fit "
                                    f"{len(self.w)} features")
        if (self.gate is None) != (self.relevance is None):
            raise ArtifactError("a relevance gate needs both its (κ, τ) and the relevance spec it reads")

    @property
    def reads_relevance(self) -> bool:
        return self.gate is not None

    def quality(self, phi: np.ndarray) -> np.ndarray:
        """The feature part of the score: w·z (+ the MLP), no length and no relevance term."""
        z = (np.asarray(phi, dtype=np.float64) - self.mu) / self.sigma
        s = z @ self.w
        if self.mlp is not None:
            s = s + np.maximum(z @ self.mlp["W1"].T + self.mlp["b1"], 0.0) @ self.mlp["v"]
        return s

    def score(self, phi: np.ndarray, answers: Sequence[str] | None = None,
              relevance: np.ndarray | None = None) -> np.ndarray:
        """Scores of feature rows `phi` [n, D]; `answers` (their texts) are needed for length_term=full,
        `relevance` (r of each row) for a gated head."""
        s = self.quality(phi)
        if self.length_term == "full":
            if answers is None:
                raise ArtifactError("this scorer head reads answer length (length_term=full); pass the answers")
            s = s + self.gamma * np.array([answer_length(a) for a in answers])
        if self.gate is not None:
            if relevance is None:
                raise ArtifactError("this scorer head has a relevance gate; pass the answers' relevance "
                                    "(alignez_eval.scorer.relevance.relevance_for)")
            s = s - relevance_penalty(np.asarray(relevance, dtype=np.float64), *self.gate)
        return s

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"w": torch.tensor(self.w, dtype=torch.float64), "mu": torch.tensor(self.mu, dtype=torch.float64),
               "sigma": torch.tensor(self.sigma, dtype=torch.float64),
               "gamma": torch.tensor([self.gamma], dtype=torch.float64)}
        for k in MLP_TENSORS if self.mlp is not None else ():
            out[k] = torch.tensor(np.asarray(self.mlp[k]), dtype=STORAGE.get(k, torch.float64))
        if self.gate is not None:
            out["gate"] = torch.tensor(list(self.gate), dtype=torch.float64)
        return out

    def metadata(self) -> dict[str, Any]:
        meta = {"format": HEAD_FORMAT, "features": self.features.identity(), "length_term": self.length_term,
                "provenance": self.provenance}
        # written only when used, so a linear ungated head's file is the one earlier versions wrote
        if self.kind != "linear":
            meta["kind"] = self.kind
        if self.relevance is not None:
            meta["relevance"] = self.relevance
        return meta

    def save(self, path: str | Path) -> str:
        """Write the head atomically; -> the file's sha256 (equal heads give equal files)."""
        tensors = self.tensors()
        meta = self.metadata()
        meta["checksum"] = _checksum(tensors, meta)
        atomic_write_safetensors(path, tensors, metadata={META_KEY: canonical_json(meta)})
        return sha256_file(path)


def relevance_penalty(r: np.ndarray, kappa: float, tau: float) -> np.ndarray:
    """κ · relu(τ − r): zero for an answer that addresses its instruction at least as well as τ."""
    return kappa * np.maximum(tau - r, 0.0)


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
    kind = meta.get("kind", "linear")
    mlp = {k: tensors[k].double().numpy() for k in MLP_TENSORS} if kind == "mlp" else None
    gate = tuple(float(x) for x in tensors["gate"]) if "gate" in tensors else None
    try:
        return ScorerHead(features=spec, w=tensors["w"].double().numpy(), mu=tensors["mu"].double().numpy(),
                          sigma=tensors["sigma"].double().numpy(), gamma=float(tensors["gamma"][0]),
                          length_term=meta["length_term"], provenance=meta.get("provenance", {}), kind=kind,
                          mlp=mlp, gate=gate, relevance=meta.get("relevance"))  # type: ignore[arg-type]
    except KeyError as exc:
        raise ArtifactError(f"scorer head {path} lacks tensor {exc}; {fix}") from None
