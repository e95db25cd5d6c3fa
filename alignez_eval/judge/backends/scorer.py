"""A trained scorer as judge (`scorer:HEAD`): a Bradley–Terry head on frozen features gives each
answer one scalar, and the verdict is the score difference (engine.py, single mode), so there is
no position bias and k systems x n prompts cost k·n feature passes. Features come from any
compatible feature store first (a head trained by `train-scorer` finds its training answers
there); the rest are computed once and stored."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from alignez_eval.errors import ArtifactError, ConfigError
from alignez_eval.judge.backends.base import JudgeRequest, empty_result
from alignez_eval.judge.spec import JudgeSpec
from alignez_eval.scorer.features import FeatureExtractor, features_for
from alignez_eval.scorer.head import ScorerHead, load_head

logger = logging.getLogger(__name__)


def check_feature_model(head: ScorerHead) -> None:
    """Refuse a head whose feature model's weights differ from the ones here (when both are known)."""
    from alignez_eval.scorer.train import model_sha256

    want = head.provenance.get("feature_model_sha256")
    have = model_sha256(head.features.model, prepare=False)
    if want and have and want != have:
        raise ArtifactError(f"scorer head was trained on features of {head.features.model} with weights sha256 "
                            f"{want[:12]}, but that model here has {have[:12]}; prepare the same model or retrain "
                            "the head with `alignez-eval train-scorer`")


def refuse_trained_generators(spec: JudgeSpec, names: Iterable[str], why: str) -> None:
    """A scorer judge must not be checked on generators whose answers it was trained on (compared by
    family name, so X_verbose is X)."""
    if spec.backend != "scorer":
        return
    from alignez_eval.scorer.data import generator_family

    trained = set(load_head(spec.model).provenance.get("generators", []))
    overlap = sorted(trained & {generator_family(n) for n in names if n})
    if overlap:
        raise ConfigError(f"the scorer head was trained on answers of {overlap}; {why}: retrain it with "
                          "`train-scorer --exclude-generators` or evaluate on other generators")


class ScorerBackend:
    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.calls = 0
        self.head = load_head(spec.model)
        check_feature_model(self.head)
        self.extractor: FeatureExtractor | None = None
        if spec.model_obj is not None:
            if spec.tokenizer_obj is None:
                raise ConfigError("a preloaded scorer feature model needs its tokenizer too (spec.using(model, tok))")
            self.extractor = FeatureExtractor(self.head.features, batch_size=spec.batch_size,
                                              model=spec.model_obj, tokenizer=spec.tokenizer_obj)

    @property
    def forward_passes(self) -> int:
        return self.extractor.forward_passes if self.extractor is not None else 0

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]:
        for req in requests:
            if req.kind != "grade":
                raise ConfigError("the scorer backend scores single answers (mode=single)")
        if not requests:
            return
        items = [(r.instruction, r.answer_a) for r in requests]
        phi, self.extractor = features_for(items, self.head.features, extractor=self.extractor,
                                           batch_size=self.spec.batch_size)
        scores = self.head.score(phi, [a for _, a in items])
        self.calls += len(requests)
        for req, score in zip(requests, scores, strict=True):
            yield req, empty_result(grade=float(score))

    def close(self) -> None:
        pass
