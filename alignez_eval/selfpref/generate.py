"""Batched sampling from the model being edited (left padding, chat template or plain frame)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.sampling import Sampling
from alignez_eval.selfpref.templates import base_frame, turn_markers

logger = logging.getLogger(__name__)

CHAT_MODES = ("auto", "yes", "no")


def uses_chat_template(tokenizer: Any, chat: str = "auto") -> bool:
    """`auto`: the tokenizer's chat template when it has one (instruct models), else the plain frame."""
    if chat not in CHAT_MODES:
        raise ConfigError(f"chat={chat!r}; choose one of {CHAT_MODES}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat == "yes" and not has:
        raise ConfigError("chat=yes but the tokenizer has no chat template; use chat=auto or chat=no")
    return has if chat == "auto" else chat == "yes"


def frame(tokenizer: Any, prompt: str, chat: bool) -> str:
    if chat:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return base_frame(prompt)


def context_length(model: Any, tokenizer: Any | None = None) -> int | None:
    """The longest sequence the model takes (config positions; the tokenizer's limit when smaller)."""
    cfg = getattr(model, "config", None)
    lens: list[int] = []
    if cfg is not None:
        get_text = getattr(cfg, "get_text_config", None)
        c = get_text() if callable(get_text) else cfg
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(c, key, None)
            if isinstance(v, int) and v > 0:
                lens.append(v)
                break
    tl = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    if isinstance(tl, int) and 0 < tl < 10**8:
        lens.append(tl)
    return min(lens) if lens else None


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def padding(tokenizer: Any, side: str) -> Iterator[None]:
    """Temporarily pad on `side` (and give a pad token to tokenizers without one, e.g. GPT-2)."""
    old_side = tokenizer.padding_side
    old_pad = tokenizer.pad_token
    tokenizer.padding_side = side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = old_pad


def encode_prompts(tokenizer: Any, texts: list[str], chat: bool) -> dict[str, torch.Tensor]:
    # Chat templates already contain BOS; a second one from add_special_tokens shifts the model.
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)


def check_lengths(
    tokenizer: Any,
    model: Any,
    framed: list[str],
    ids: list[str],
    extra_tokens: int,
    chat: bool,
    what: str = "query",
) -> None:
    """Refuse prompts that cannot fit the context with `extra_tokens` to spare, naming the query."""
    ctx = context_length(model, tokenizer)
    if ctx is None:
        return
    for text, qid in zip(framed, ids, strict=True):
        n = len(tokenizer(text, add_special_tokens=not chat)["input_ids"])
        if n + extra_tokens > ctx:
            raise DataError(
                f"{what} {qid!r} needs {n} prompt tokens + {extra_tokens} new tokens = {n + extra_tokens}, "
                f"more than the model's context of {ctx}; shorten or drop that query, or lower the "
                "new-token budget (--char-tokens / --answer-tokens)"
            )


@torch.inference_mode()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    sampling: Sampling,
    seed: int,
    chat: bool,
) -> list[str]:
    """One `model.generate` call over all prompts (left-padded); returns the new text per prompt.

    Stops each row at a turn marker or EOS, so a batch ends as soon as every row is done.
    """
    if not prompts:
        return []
    framed = [frame(tokenizer, p, chat) for p in prompts]
    with padding(tokenizer, "left"):
        enc = encode_prompts(tokenizer, framed, chat)
        pad_id = tokenizer.pad_token_id
    device = model_device(model)
    enc = {k: v.to(device) for k, v in enc.items()}
    stops = [m for m in turn_markers() if m.strip()]
    criteria = stop_string_criteria(tokenizer, stops)
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sampling.do_sample, pad_token_id=pad_id)
    if criteria is not None:
        kwargs["stopping_criteria"] = criteria
    if sampling.do_sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        # Greedy: neutralise sampling fields a generation_config may carry (avoids warnings).
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if sampling.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = sampling.repetition_penalty
    # A private RNG stream: fitting inside an evaluation (alignez-hf fit=self) must not shift the
    # random state lm-eval seeded for its own sampled generations.
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return texts if criteria is not None else [cut_after_stop(t, stops) for t in texts]


def stop_string_criteria(tokenizer: Any, stops: list[str]) -> Any:
    """transformers' StopStringCriteria for `stops`, or None where it cannot be built: it derives
    each token's text from the vocabulary's layout (byte-level or SentencePiece pieces) and fails on
    others, e.g. a word-level vocabulary (`ValueError: substring not found`). Generation then runs
    to the token budget and the text is cut afterwards (`cut_after_stop`), as lm-eval does."""
    # lazy: transformers costs 2.8 s to import (measured on AMD EPYC, 2 cores)
    from transformers import StoppingCriteriaList, StopStringCriteria

    try:
        return StoppingCriteriaList([StopStringCriteria(tokenizer=tokenizer, stop_strings=stops)])
    except Exception as exc:  # whatever this tokenizer's layout trips in transformers
        logger.warning(
            "stop strings cannot be matched token by token with this tokenizer (%s: %s); generating to the "
            "token limit and cutting each text at its first turn marker instead",
            type(exc).__name__, exc,
        )
        return None


def cut_after_stop(text: str, stops: list[str]) -> str:
    """The text up to and including the first stop string to complete: where StopStringCriteria
    would have stopped generating (it keeps the marker; the cleaning step cuts it later)."""
    ends = [i + len(m) for m in stops if (i := text.find(m)) != -1]
    return text[: min(ends)] if ends else text
