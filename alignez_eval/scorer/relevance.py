"""Does an answer address its instruction? A pointwise mutual information under a small causal LM:

  r(x) = mean_t log p(a_t | instruction, a_<t) − mean_t log p(a_t | empty instruction, a_<t)

both with the model's chat rendering (the user turn holds the instruction, or nothing), over the
answer's first `max_answer_tokens` tokens. An on-topic answer is more likely once its instruction
is known (r > 0); another instruction's answer is not (r ≈ 0 or below). r alone is no quality
signal (a truncated answer keeps a high r), so the head reads it only through a one-sided gate
(head.relevance_penalty).

Values are stored per (relevance identity, instruction, answer) in a FeatureStore of width 2
(the two means), so a re-run makes no forward pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.hashing import sha256_json
from alignez_eval.models.paths import alignez_home
from alignez_eval.scorer.features import SHARD_SIZE, FeatureStore, prefix_ids, resolve_model_dir
from alignez_eval.scorer.spec import answer_key

logger = logging.getLogger(__name__)

# Bumped when the rendering or the statistic changes, so stored values are never mixed.
RELEVANCE_VERSION = 1


@dataclass(frozen=True)
class RelevanceSpec:
    model: str = "smollm2-135m-instruct"
    # the opening of an answer says whether it addresses the instruction; 64 tokens halve the cost of 160
    max_answer_tokens: int = 64
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("the relevance signal needs a causal LM (an embedded name or a model directory)")
        if self.max_answer_tokens < 4:
            raise ConfigError("relevance max_answer_tokens must be >= 4")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"relevance dtype {self.dtype!r}: use float32 or bfloat16")

    def identity(self) -> dict[str, Any]:
        from alignez_eval.shareable import shareable_text

        return {**asdict(self), "model": shareable_text(self.model), "statistic": "pmi-mean-logprob",
                "version": RELEVANCE_VERSION}

    def identity_hash(self) -> str:
        return sha256_json(self.identity())

    @classmethod
    def from_identity(cls, ident: dict[str, Any]) -> RelevanceSpec:
        if ident.get("statistic") != "pmi-mean-logprob" or ident.get("version") != RELEVANCE_VERSION:
            raise ConfigError(f"relevance signal {ident.get('statistic')!r} v{ident.get('version')} is not the one "
                              f"this version computes (pmi-mean-logprob v{RELEVANCE_VERSION}); retrain the head")
        return cls(model=ident["model"], max_answer_tokens=int(ident["max_answer_tokens"]), dtype=ident["dtype"])


def default_relevance_root() -> Path:
    return alignez_home() / "scorer" / "relevance"


@dataclass
class RelevanceModel:
    """A causal LM (with its LM head) that returns, per (instruction, answer), the mean log-probability
    of the answer's tokens with and without the instruction."""

    spec: RelevanceSpec
    batch_size: int = 8
    device: str = "cpu"
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    forward_passes: int = 0

    def __post_init__(self) -> None:
        if self.model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = resolve_model_dir(self.spec.model)
            dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.spec.dtype]
            logger.info("loading relevance model %s (%s)", self.spec.model, self.spec.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def render(self, instruction: str, answer_ids: list[int]) -> tuple[list[int], int]:
        head = prefix_ids(self.tokenizer, instruction)
        return head + answer_ids, len(head)

    @torch.no_grad()
    def _mean_logprobs(self, rendered: list[tuple[list[int], int]]) -> np.ndarray:
        n, width = len(rendered), max(len(ids) for ids, _ in rendered)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, (ids, _start) in enumerate(rendered):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        # the backbone's states, then the LM head only where an answer token is predicted: the full
        # [n, T, vocab] logits of a 49k vocabulary would cost more than the pass itself
        body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model
        h = body(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)[0]
        self.forward_passes += n
        out = np.zeros(n, dtype=np.float64)
        head = self.model.get_output_embeddings()
        for i, (ids, start) in enumerate(rendered):
            logits = head(h[i, start - 1: len(ids) - 1]).float()
            target = input_ids[i, start: len(ids)].to(logits.device)
            out[i] = float(torch.log_softmax(logits, -1).gather(1, target[:, None]).mean())
        return out

    def compute(self, items: Sequence[tuple[str, str]]) -> np.ndarray:
        """[n, 2]: mean log p(answer | instruction), mean log p(answer | empty instruction)."""
        tok = self.tokenizer
        rows = []
        for q, a in items:
            ids = tok(a, add_special_tokens=False)["input_ids"][: self.spec.max_answer_tokens] or [tok.eos_token_id]
            rows.append((self.render(q, ids), self.render("", ids)))
        out = np.zeros((len(items), 2), dtype=np.float64)
        flat = [(k, j, r) for k, pair in enumerate(rows) for j, r in enumerate(pair)]
        flat.sort(key=lambda t: len(t[2][0]))
        for s in range(0, len(flat), self.batch_size):
            chunk = flat[s: s + self.batch_size]
            vals = self._mean_logprobs([r for _, _, r in chunk])
            for (k, j, _), v in zip(chunk, vals, strict=True):
                out[k, j] = v
        return out


def pmi(values: np.ndarray) -> np.ndarray:
    """r = conditional − unconditional mean log-probability, from stored [n, 2] rows."""
    return values[:, 0] - values[:, 1]


def relevance_for(items: Sequence[tuple[str, str]], spec: RelevanceSpec, *,
                  store_root: str | os.PathLike[str] | None = None, model: RelevanceModel | None = None,
                  batch_size: int = 8, shard_size: int = SHARD_SIZE,
                  progress: bool = True) -> tuple[np.ndarray, RelevanceModel | None]:
    """r of each (instruction, answer), in order: stored values first, the rest computed and stored
    shard by shard. -> (r [n], the model if one had to be loaded, else the one given)."""
    if not items:
        raise DataError("no answers to compute relevance for")
    store = FeatureStore(spec, store_root or default_relevance_root())  # type: ignore[arg-type]
    keys = [answer_key(q, a) for q, a in items]
    todo = list({k: it for k, it in zip(keys, items, strict=True) if k not in store}.items())
    if todo:
        model = model or RelevanceModel(spec, batch_size=batch_size)
        logger.info("relevance: %d of %d answers stored, %d to compute", len(set(keys)) - len(todo), len(set(keys)),
                    len(todo))
        bar = tqdm(total=len(todo), desc="relevance (PMI)", unit="answer", disable=not progress)
        for s in range(0, len(todo), shard_size):
            chunk = todo[s: s + shard_size]
            store.put([k for k, _ in chunk], model.compute([it for _, it in chunk]).astype(np.float32))
            bar.update(len(chunk))
        bar.close()
    return pmi(store.get(keys).astype(np.float64)), model
