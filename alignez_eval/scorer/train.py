"""`train_scorer`: reference annotations -> a verified scorer head file.

1. read the annotation files (hard and soft preferences; data.py), drop the excluded generators and
   refuse any generator also named for evaluation;
2. optionally keep a share of the instructions (a split by instruction) and at most N rows per
   generator (seeded);
3. compute the features of every distinct answer once (stored and resumable; features.py);
4. standardize, choose λ by cross-validation grouped by generator, fit on all pairs (fit.py);
5. write the head with its provenance and a training report beside it.
Deterministic: the same files and settings give the same head file, byte for byte.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignez_eval.atomic import atomic_write_json
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.hashing import sha256_file, sha256_text
from alignez_eval.scorer.augment import degraded_pairs
from alignez_eval.scorer.data import (
    PrefPair,
    check_disjoint,
    generator_family,
    instruction_split,
    load_pairs,
    sample_per_generator,
)
from alignez_eval.scorer.features import FeatureExtractor, FeatureSpec, answer_key, features_for, model_sha256
from alignez_eval.scorer.fit import DEFAULT_L2_GRID, PairData, choose_l2, cross_validate, fit_bt
from alignez_eval.scorer.head import LENGTH_TERMS, ScorerHead, answer_length

logger = logging.getLogger(__name__)

LICENCES = {"alpaca_eval": "AlpacaEval annotations: CC BY-NC 4.0 (github.com/tatsu-lab/alpaca_eval); "
                           "the head is a derived work for non-commercial use",
            "hh-rlhf": "HH-RLHF: MIT (github.com/anthropics/hh-rlhf)"}


def licence_for(pairs: Sequence[PrefPair]) -> str:
    """The licences of the sources the pairs came from (HH-RLHF rows, else AlpacaEval-style files)."""
    from alignez_eval.scorer.augment import AUGMENT_GENERATOR
    from alignez_eval.scorer.data import HH_GENERATOR

    kinds = {"hh-rlhf" if p.generator_2 == HH_GENERATOR else "alpaca_eval" for p in pairs
             if not p.generator_1.startswith(AUGMENT_GENERATOR)}
    return "; ".join(LICENCES[k] for k in sorted(kinds))


@dataclass
class TrainSettings:
    features: FeatureSpec
    use_layers: tuple[int, ...] | None = None  # a subset of features.layers for the head (None: all)
    use_poolings: tuple[str, ...] | None = None
    length_term: str = "control"
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    folds: int = 5
    per_generator: int | None = None
    instruction_share: float | None = None  # keep only this seeded share of the instructions
    exclude_generators: tuple[str, ...] = ()
    evaluation_generators: tuple[str, ...] = ()
    shared_reference: tuple[str, ...] = ("text_davinci_003", "gpt4_1106_preview")
    augment: int = 0  # degrade this many preferred training answers into synthetic pairs (augment.py)
    seed: int = 0
    batch_size: int = 8
    licence: str | None = None  # None: from the data (licence_for)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.length_term not in LENGTH_TERMS:
            raise ConfigError(f"--length-term {self.length_term!r}: use one of {LENGTH_TERMS}")
        if self.instruction_share is not None and not 0 < self.instruction_share <= 1:
            raise ConfigError("--instruction-share must be in (0, 1]")
        if self.per_generator is not None and self.per_generator < 1:
            raise ConfigError("--per-generator must be >= 1")
        if self.augment < 0:
            raise ConfigError("--augment-degradations must be >= 0")
        if not self.l2_grid or any(x <= 0 for x in self.l2_grid):
            raise ConfigError("--l2 values must be positive")

    @property
    def head_features(self) -> FeatureSpec:
        return self.features.subset(self.use_layers or self.features.layers,
                                    self.use_poolings or self.features.poolings)


def select_pairs(files: Sequence[str | Path], s: TrainSettings) -> tuple[list[PrefPair], dict[str, Any]]:
    pairs: list[PrefPair] = []
    sources = []
    for f in files:
        rows, skipped = load_pairs(f)
        sources.append({"file": Path(f).name, "sha256": sha256_file(f), "rows": len(rows) + skipped,
                        "skipped_null": skipped})
        pairs += rows
    excluded = {generator_family(g) for g in s.exclude_generators}
    pairs = [p for p in pairs if generator_family(p.generator_2) not in excluded]
    check_disjoint(pairs, s.evaluation_generators, shared_reference=s.shared_reference)
    if s.instruction_share is not None:
        keep = instruction_split([p.instruction for p in pairs], s.instruction_share, s.seed)
        pairs = [p for p in pairs if p.instruction in keep]
    if s.per_generator is not None:
        pairs = sample_per_generator(pairs, s.per_generator, s.seed)
    if s.augment:
        pairs = pairs + degraded_pairs(pairs, s.augment, s.seed)
    if len(pairs) < 10:
        raise DataError(f"only {len(pairs)} training pairs are left after filtering; a head needs many more "
                        "(loosen --per-generator / --instruction-share / --exclude-generators)")
    return pairs, {"sources": sources}


def pair_data(pairs: Sequence[PrefPair], phi: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> PairData:
    def z(q: str, a: str) -> np.ndarray:
        return (phi[answer_key(q, a)] - mu) / sigma

    dz = np.stack([z(p.instruction, p.output_2) - z(p.instruction, p.output_1) for p in pairs])
    dl = np.array([answer_length(p.output_2) - answer_length(p.output_1) for p in pairs])
    y = np.array([p.p2 for p in pairs])
    groups = np.array([generator_family(p.generator_2) for p in pairs])
    if len(set(groups)) < 2:
        # one source (HH-RLHF's human labels): folds hold out whole prompts instead of generators
        groups = np.array([sha256_text(p.instruction)[:8] for p in pairs])
    return PairData(dz, dl, y, np.ones(len(pairs)), groups)


def train_scorer(files: Sequence[str | Path], out: str | Path, settings: TrainSettings, *,
                 store_root: str | Path | None = None,
                 extractor: FeatureExtractor | None = None) -> dict[str, Any]:
    """Train and write a head; -> the training report (also written as OUT.json)."""
    t0 = time.time()
    s = settings
    pairs, info = select_pairs(files, s)
    answers = list(dict.fromkeys((p.instruction, a) for p in pairs for a in (p.output_1, p.output_2)))
    matrix, _ = features_for(answers, s.features, store_root=store_root, extractor=extractor,
                             batch_size=s.batch_size)
    head_spec = s.head_features
    cols = s.features.columns(head_spec, matrix.shape[1] // len(s.features.blocks))
    matrix = matrix[:, cols].astype(np.float64)
    mu = matrix.mean(0)
    sigma = matrix.std(0) + 1e-6
    phi = {answer_key(q, a): row for (q, a), row in zip(answers, matrix, strict=True)}
    data = pair_data(pairs, phi, mu, sigma)
    use_length = s.length_term in ("control", "full")
    cv = cross_validate(data, s.l2_grid, use_length, k=s.folds, seed=s.seed, read_length=s.length_term == "full")
    l2 = choose_l2(cv)
    w, gamma = fit_bt(data, l2, use_length)
    gens = sorted({generator_family(p.generator_2) for p in pairs})
    provenance = {
        "trained_with": "alignez-eval train-scorer",
        "sources": info["sources"],
        "licence": s.licence or licence_for(pairs),
        "pairs": len(pairs),
        "answers": len(answers),
        "generators": gens,
        "reference_generators": sorted({generator_family(p.generator_1) for p in pairs}),
        "excluded_generators": sorted(s.exclude_generators),
        "evaluation_generators": sorted(s.evaluation_generators),
        "instruction_share": s.instruction_share,
        "instructions": len({p.instruction for p in pairs}),
        # so a later evaluation can count (or drop) the prompts this head learned from
        "instruction_sha256_16": sorted({sha256_text(p.instruction)[:16] for p in pairs}),
        "per_generator": s.per_generator,
        "augment_degradations": s.augment,
        "seed": s.seed,
        "l2": l2,
        "l2_grid": list(s.l2_grid),
        "folds": s.folds,
        "cv": cv,
        "feature_model_sha256": model_sha256(s.features.model),
        **s.extra,
    }
    head = ScorerHead(features=head_spec, w=w, mu=mu, sigma=sigma, gamma=gamma, length_term=s.length_term,
                      provenance=provenance)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = head.save(out)
    train_margin = data.dz @ w + (gamma * data.dl if s.length_term == "full" else 0.0)
    report = {"head": str(out), "sha256": sha, "l2": l2, "gamma": gamma, "cv": cv,
              "train_agreement": float(np.mean((train_margin > 0)[data.y != 0.5] == (data.y > 0.5)[data.y != 0.5])),
              "pairs": len(pairs), "answers": len(answers), "generators": gens,
              "seconds": round(time.time() - t0, 1)}
    atomic_write_json(out.with_suffix(".json"), report)
    logger.info("scorer head %s: %d pairs, λ=%g, CV agreement %.3f, sha256 %s", out, len(pairs), l2,
                next(r["agreement"] for r in cv if r["l2"] == l2), sha[:12])
    return report
