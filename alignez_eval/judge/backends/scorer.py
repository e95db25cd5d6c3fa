"""A trained scorer as judge (`scorer:HEAD`): a Bradley–Terry head on frozen features gives each
answer one scalar, and the verdict is the score difference (engine.py, single mode), so there is
no position bias and k systems x n prompts cost k·n feature passes. Features come from any
compatible feature store first (a head trained by `train-scorer` finds its training answers
there); the rest are computed once and stored."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from alignez_eval.dtypes import fast_dtype
from alignez_eval.errors import ArtifactError, ConfigError
from alignez_eval.hashing import sha256_text
from alignez_eval.judge.backends.base import JudgeRequest, empty_result
from alignez_eval.judge.spec import JudgeSpec
from alignez_eval.scorer.features import FeatureExtractor, FeatureSpec, features_for
from alignez_eval.scorer.head import ScorerHead, load_head
from alignez_eval.scorer.relevance import RelevanceSpec, relevance_for

logger = logging.getLogger(__name__)


def check_feature_model(head: ScorerHead) -> None:
    """Refuse a head whose feature model's weights differ from the ones here (when both are known)."""
    from alignez_eval.scorer.features import model_sha256

    want = head.provenance.get("feature_model_sha256")
    have = model_sha256(head.features.model, prepare=False)
    if want and have and want != have:
        raise ArtifactError(f"scorer head was trained on features of {head.features.model} with weights sha256 "
                            f"{want[:12]}, but that model here has {have[:12]}; prepare the same model or retrain "
                            "the head with `alignez-eval train-scorer`")


def refuse_trained_generators(spec: JudgeSpec, names: Iterable[str], why: str,
                              instructions: Iterable[str] = (), provenance: dict[str, Any] | None = None) -> str | None:
    """A scorer judge must not be checked on answers it was trained on. Generators are compared by
    family name (X_verbose is X). An overlapping generator is allowed only when none of the evaluated
    instructions is among the head's training instructions (one data source split by prompt, as
    HH-RLHF's human labels are): -> "instruction" then (held out by instruction only), else None.
    `provenance`: the head's, when the caller has read it already."""
    if spec.backend != "scorer":
        return None
    from alignez_eval.scorer.data import generator_family

    prov = provenance if provenance is not None else load_head(spec.model).provenance
    overlap = sorted(set(prov.get("generators", [])) & {generator_family(n) for n in names if n})
    if not overlap:
        return None
    trained = set(prov.get("instruction_sha256_16", []))
    seen = sum(sha256_text(q)[:16] in trained for q in set(instructions))
    if trained and instructions and not seen:
        logger.warning("scorer head was trained on %s, but on none of these instructions: held out by instruction "
                       "only", overlap)
        return "instruction"
    raise ConfigError(f"the scorer head was trained on answers of {overlap}; {why}: retrain it with "
                      "`train-scorer --exclude-generators` or evaluate on other generators (or, for one source, "
                      "on instructions it was not trained on)")


def extraction_spec(features: FeatureSpec) -> FeatureSpec:
    """The features to compute here: the head's own, except that bf16 features are computed in fp32 on a
    CPU without native bf16 (emulated bf16 is 5-70x slower there). The two differ by bf16 rounding of the
    hidden states; reports/scorer measures what that does to verdicts."""
    if features.dtype == "bfloat16" and not torch.cuda.is_available() and fast_dtype("cpu") == "float32":
        logger.warning("scorer head was trained on bf16 features; this CPU has no native bf16, so they are computed "
                       "in float32 (a rounding-level difference)")
        return dataclasses.replace(features, dtype="float32")
    return features


class ScorerBackend:
    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.calls = 0
        self.head = load_head(spec.model)
        check_feature_model(self.head)
        self.features = extraction_spec(self.head.features)
        self.extractor: FeatureExtractor | None = None
        self.relevance_model: Any = None
        if spec.model_obj is not None:
            if spec.tokenizer_obj is None:
                raise ConfigError("a preloaded scorer feature model needs its tokenizer too (spec.using(model, tok))")
            self.extractor = FeatureExtractor(self.features, batch_size=spec.options.batch_size,
                                              model=spec.model_obj, tokenizer=spec.tokenizer_obj)

    @property
    def forward_passes(self) -> int:
        return ((self.extractor.forward_passes if self.extractor is not None else 0)
                + (self.relevance_model.forward_passes if self.relevance_model is not None else 0))

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]:
        for req in requests:
            if req.kind != "grade":
                raise ConfigError("the scorer backend scores single answers (mode=single)")
        if not requests:
            return
        items = [(r.instruction, r.answer_a) for r in requests]
        phi, self.extractor = features_for(items, self.features, extractor=self.extractor,
                                           batch_size=self.spec.options.batch_size)
        relevance = None
        if self.head.reads_relevance:
            assert self.head.relevance is not None
            relevance, self.relevance_model = relevance_for(items, RelevanceSpec.from_identity(self.head.relevance),
                                                            model=self.relevance_model,
                                                            batch_size=self.spec.options.batch_size)
        scores = self.head.score(phi, [a for _, a in items], relevance)
        self.calls += len(requests)
        for req, score in zip(requests, scores, strict=True):
            yield req, empty_result(grade=float(score))

    def close(self) -> None:
        pass
