"""`train_scorer`: reference annotations -> a verified scorer head file.

1. read the annotation files (hard and soft preferences; data.py), drop the excluded generators and
   refuse any generator also named for evaluation;
2. optionally keep a share of the instructions (a split by instruction) and at most N rows per
   generator (seeded);
3. compute the features of every distinct answer once (stored and resumable; features.py);
4. standardize, choose λ by cross-validation grouped by generator, fit on all pairs (fit.py); with
   `head_kind` mlp or auto, the MLP settings are cross-validated on the same folds (mlp.py) and
   auto keeps whichever of linear and MLP has the lower held-out log loss;
5. optionally fit a relevance gate (relevance.py) on a sample of the pairs and every synthetic
   "swapped" pair: κ, τ by a grid over held-in log loss, the head's margins fixed;
6. write the head with its provenance and a training report beside it.
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
import torch

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
from alignez_eval.scorer.head import LENGTH_TERMS, ScorerHead, answer_length, relevance_penalty
from alignez_eval.scorer.mlp import MLPSettings, PairIndex, fit_mlp, mlp_scores
from alignez_eval.scorer.relevance import RelevanceSpec, relevance_for

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


HEAD_CHOICES = ("linear", "mlp", "auto")


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
    head_kind: str = "linear"  # linear | mlp | auto (the lower grouped-CV log loss)
    mlp_grid: tuple[MLPSettings, ...] = (MLPSettings(),)
    relevance: RelevanceSpec | None = None  # fit a relevance gate reading this signal
    relevance_pairs: int = 2000  # real pairs (seeded sample) beside every swapped pair for the gate fit

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
        if self.head_kind not in HEAD_CHOICES:
            raise ConfigError(f"--head {self.head_kind!r}: use one of {HEAD_CHOICES}")
        if self.head_kind != "linear" and self.length_term != "none":
            raise ConfigError("an mlp head is fitted without a length term: use --length-term none with --head mlp/auto")
        if self.head_kind != "linear" and not self.mlp_grid:
            raise ConfigError("--head mlp/auto needs at least one MLP setting")

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
    best_linear = next(r for r in cv if r["l2"] == l2)
    kind, mlp, mlp_cv, chosen_mlp = "linear", None, [], None
    if s.head_kind != "linear":
        index = pair_index(pairs, answers, (matrix - mu) / sigma, data)
        mlp_cv = cross_validate_mlp(index, s.mlp_grid, k=s.folds, seed=s.seed)
        chosen_mlp = min(mlp_cv, key=lambda r: (round(r["log_loss"], 6), -r["l2"], r["hidden"]))
        if s.head_kind == "mlp" or chosen_mlp["log_loss"] < best_linear["log_loss"]:
            kind = "mlp"
    if kind == "mlp":
        assert chosen_mlp is not None
        settings_mlp = next(m for m in s.mlp_grid if _mlp_row(m) == {k: chosen_mlp[k] for k in _mlp_row(m)})
        params = fit_mlp(index, settings_mlp)
        w, gamma = params["w"], 0.0
        mlp = {k: params[k] for k in ("W1", "b1", "v")}
    else:
        w, gamma = fit_bt(data, l2, use_length)
    gens = sorted({generator_family(p.generator_2) for p in pairs})
    head = ScorerHead(features=head_spec, w=w, mu=mu, sigma=sigma, gamma=gamma, length_term=s.length_term,
                      kind=kind, mlp=mlp)
    gate_report = None
    if s.relevance is not None:
        gate_report = fit_gate(head, pairs, phi, s, store_root=store_root)
        head.gate, head.relevance = (gate_report["kappa"], gate_report["tau"]), s.relevance.identity()
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
    if s.head_kind != "linear":
        provenance.update(head_kind=s.head_kind, chosen_kind=kind, mlp_cv=mlp_cv)
    if gate_report is not None:
        provenance["relevance_gate"] = gate_report
    head.provenance = provenance
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = head.save(out)
    if kind == "mlp":
        sc = mlp_scores(index.Z, {"w": w, **(mlp or {})})
        train_margin = sc[index.i2] - sc[index.i1]
    else:
        train_margin = data.dz @ w + (gamma * data.dl if s.length_term == "full" else 0.0)
    report = {"head": str(out), "sha256": sha, "kind": kind, "l2": l2, "gamma": gamma, "cv": cv, "mlp_cv": mlp_cv,
              "relevance_gate": gate_report,
              "train_agreement": float(np.mean((train_margin > 0)[data.y != 0.5] == (data.y > 0.5)[data.y != 0.5])),
              "pairs": len(pairs), "answers": len(answers), "generators": gens,
              "seconds": round(time.time() - t0, 1)}
    atomic_write_json(out.with_suffix(".json"), report)
    logger.info("scorer head %s (%s): %d pairs, λ=%g, CV agreement %.3f, sha256 %s", out, kind, len(pairs), l2,
                best_linear["agreement"], sha[:12])
    return report


def pair_index(pairs: Sequence[PrefPair], answers: Sequence[tuple[str, str]], Z: np.ndarray,
               data: PairData) -> PairIndex:
    row = {answer_key(q, a): i for i, (q, a) in enumerate(answers)}
    i1 = np.array([row[answer_key(p.instruction, p.output_1)] for p in pairs])
    i2 = np.array([row[answer_key(p.instruction, p.output_2)] for p in pairs])
    return PairIndex(Z, i1, i2, data.y, data.weight, data.group)


def _mlp_row(m: MLPSettings) -> dict[str, Any]:
    return {"hidden": m.hidden, "l2": m.l2, "epochs": m.epochs, "lr": m.lr, "batch_size": m.batch_size,
            "threads": m.threads or torch.get_num_threads()}


def cross_validate_mlp(index: PairIndex, grid: Sequence[MLPSettings], k: int = 5,
                       seed: int = 0) -> list[dict[str, Any]]:
    """The MLP settings on the linear head's folds (grouped by generator): pooled held-out metrics."""
    from alignez_eval.scorer.fit import grouped_folds, held_out_margins, pair_metrics

    k = min(k, len(np.unique(index.group)))
    folds = grouped_folds(index.group, k, seed)
    rows = []
    for m in grid:
        def fit_and_score(train: np.ndarray, test: np.ndarray, m: MLPSettings = m) -> np.ndarray:
            sc = mlp_scores(index.Z, fit_mlp(index.take(train), m))
            return sc[index.i2[test]] - sc[index.i1[test]]

        rows.append({**_mlp_row(m), **pair_metrics(held_out_margins(len(index.y), folds, fit_and_score), index.y)})
        logger.info("MLP head %s: held-out agreement %.3f, log loss %.4f", _mlp_row(m), rows[-1]["agreement"],
                    rows[-1]["log_loss"])
    return rows


GATE_QUANTILES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
GATE_KAPPAS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)


def fit_gate(head: ScorerHead, pairs: Sequence[PrefPair], phi: dict[str, np.ndarray], s: TrainSettings, *,
             store_root: str | Path | None = None) -> dict[str, Any]:
    """κ, τ of the relevance gate: τ among the lower quantiles of r over every answer of the fit pairs,
    κ on a grid (in units of the head's margin spread), chosen by log loss over a seeded sample of the
    real pairs plus every synthetic 'swapped' pair, with the head's own margins fixed."""
    from scipy.special import log_expit

    from alignez_eval.scorer.augment import AUGMENT_GENERATOR

    assert s.relevance is not None
    swapped = [p for p in pairs if p.generator_1 == f"{AUGMENT_GENERATOR}:swapped"]
    real = [p for p in pairs if not p.generator_1.startswith(AUGMENT_GENERATOR)]
    rng = np.random.default_rng(s.seed)
    pick = sorted(rng.choice(len(real), min(s.relevance_pairs, len(real)), replace=False)) if real else []
    fit_pairs = [real[i] for i in pick] + swapped
    if not swapped:
        logger.warning("relevance gate fitted without synthetic swapped pairs (--augment-degradations 0): "
                       "nothing shows it an off-topic answer")
    items = list(dict.fromkeys((p.instruction, a) for p in fit_pairs for a in (p.output_1, p.output_2)))
    r_all, _ = relevance_for(items, s.relevance, store_root=None if store_root is None else Path(store_root) / "rel",
                             batch_size=s.batch_size)
    r = {answer_key(q, a): v for (q, a), v in zip(items, r_all, strict=True)}

    def quality(p: PrefPair, a: str) -> float:
        return float(head.quality(phi[answer_key(p.instruction, a)][None])[0])

    m0 = np.array([quality(p, p.output_2) - quality(p, p.output_1) for p in fit_pairs])
    r1 = np.array([r[answer_key(p.instruction, p.output_1)] for p in fit_pairs])
    r2 = np.array([r[answer_key(p.instruction, p.output_2)] for p in fit_pairs])
    y = np.array([p.p2 for p in fit_pairs])
    pooled = np.concatenate([r1, r2])
    scale = float(np.std(m0)) or 1.0
    rows = []
    for q in GATE_QUANTILES:
        tau = float(np.quantile(pooled, q))
        for kappa_unit in GATE_KAPPAS:
            kappa = kappa_unit * scale
            m = m0 - relevance_penalty(r2, kappa, tau) + relevance_penalty(r1, kappa, tau)
            ll = -float(np.mean(y * log_expit(m) + (1 - y) * log_expit(-m)))
            rows.append({"quantile": q, "tau": tau, "kappa": kappa, "log_loss": ll})
    best = min(rows, key=lambda x: (round(x["log_loss"], 6), x["kappa"], -x["quantile"]))
    swap_idx = np.arange(len(real[: len(pick)]), len(fit_pairs))
    m_best = m0 - relevance_penalty(r2, best["kappa"], best["tau"]) + relevance_penalty(r1, best["kappa"], best["tau"])
    logger.info("relevance gate: τ=%.3f (q %.2f), κ=%.3f; swapped pairs won %.1f%% -> %.1f%%", best["tau"],
                best["quantile"], best["kappa"], 100 * float(np.mean(m0[swap_idx] > 0)) if len(swap_idx) else 0,
                100 * float(np.mean(m_best[swap_idx] > 0)) if len(swap_idx) else 0)
    return {"kappa": best["kappa"], "tau": best["tau"], "quantile": best["quantile"], "pairs": len(fit_pairs),
            "swapped_pairs": len(swapped), "log_loss": best["log_loss"],
            "log_loss_without": next(x["log_loss"] for x in rows if x["kappa"] == 0.0),
            "margin_scale": scale, "relevance": s.relevance.identity()}
