"""A reward model (sequence-classification head) as judge: each answer gets a scalar score
(output `label_index` of the head, in fp32) and the verdict comes from the score difference, so
it always runs in single mode and N candidates cost N+1 scorings per doc."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from alignez_eval.errors import ConfigError
from alignez_eval.judge.backends.base import JudgeRequest, empty_result
from alignez_eval.judge.backends.hf import truncate_tokens
from alignez_eval.judge.backends.loading import judge_model
from alignez_eval.judge.spec import JudgeSpec

logger = logging.getLogger(__name__)


class RewardModelBackend:
    def __init__(self, spec: JudgeSpec) -> None:
        self.spec = spec
        self.calls = 0
        self.model, self.tokenizer = judge_model(spec)
        self.device = next(self.model.parameters()).device
        if getattr(self.model.config, "pad_token_id", None) is None:
            # The classification head reads the last non-pad token; it needs to know the pad id.
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_labels = int(getattr(self.model.config, "num_labels", 1))
        if not 0 <= spec.options.label_index < n_labels:
            raise ConfigError(f"label_index={spec.options.label_index} but the reward head has {n_labels} outputs")

    def render(self, req: JudgeRequest) -> tuple[str, bool]:
        answer, cut = truncate_tokens(self.tokenizer, req.answer_a, self.spec.options.max_answer_tokens)
        msgs = [{"role": "user", "content": req.instruction}, {"role": "assistant", "content": answer}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(msgs, tokenize=False), cut
        return f"Human: {req.instruction}\nAssistant: {answer}", cut

    @torch.no_grad()
    def scores(self, texts: list[str]) -> torch.Tensor:
        self.tokenizer.padding_side = "right"
        templated = bool(getattr(self.tokenizer, "chat_template", None))  # a template adds BOS itself
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        out = self.model(**{k: v.to(self.device) for k, v in enc.items()})
        return out.logits[:, self.spec.options.label_index].float().cpu()

    def run(self, requests: list[JudgeRequest]) -> Iterator[tuple[JudgeRequest, dict[str, Any]]]:
        for req in requests:
            if req.kind != "grade":
                raise ConfigError("the rm backend only scores single answers (mode=single)")
        rendered = sorted(((req, *self.render(req)) for req in requests), key=lambda r: len(r[1]))
        bs = self.spec.options.batch_size
        for start in range(0, len(rendered), bs):
            chunk = rendered[start:start + bs]
            scores = self.scores([text for _req, text, _cut in chunk])
            self.calls += len(chunk)
            for row, (req, _text, cut) in enumerate(chunk):
                yield req, empty_result(grade=float(scores[row]), truncated=cut)

    def close(self) -> None:
        pass
