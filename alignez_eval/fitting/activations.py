"""Stage 2 of a fit: Φ_l of every kept pair's two answers, one batched pass, cached by content."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignez_eval.editing.architectures import find_components, hidden_size
from alignez_eval.errors import DataError
from alignez_eval.fitting.capture import capture, load_activations, save_activations
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.hashing import sha256_json
from alignez_eval.selfpref.generate import context_length
from alignez_eval.selfpref.templates import activation_text

logger = logging.getLogger(__name__)


@dataclass
class PairActivations:
    help: torch.Tensor  # (pairs, layers, hidden): Φ of the preferred answers
    harm: torch.Tensor  # the same for the rejected answers
    hidden_size: int
    num_layers: int


def activation_texts(records: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Activation texts help₀, harm₀, help₁, … and each answer's character offset."""
    texts, starts = [], []
    for r in records:
        for side in ("pos", "neg"):
            t, s = activation_text(r["query"], r["answers"][side])
            texts.append(t)
            starts.append(s)
    return texts, starts


def _check_activation_lengths(tokenizer: Any, model: Any, texts: list[str], ids: list[str]) -> None:
    ctx = context_length(model, tokenizer)
    if ctx is None:
        return
    for t, qid in zip(texts, ids, strict=True):
        n = len(tokenizer(t)["input_ids"])
        if n > ctx:
            raise DataError(
                f"pair {qid!r} is {n} tokens long as 'Human: …\\nAssistant: …', more than the model's context of "
                f"{ctx}; drop or shorten that pair (or lower --answer-tokens)"
            )


def pair_activations(
    model: torch.nn.Module,
    tokenizer: Any,
    kept: list[dict[str, Any]],
    s: FitSettings,
    model_identity: dict[str, Any],
    cache: Path | None,
    activations_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> PairActivations:
    """Read from `activations_path` (or the cache) when it holds these texts and settings, else
    captured and saved there."""
    texts, starts = activation_texts(kept)
    d = hidden_size(model)
    n_layers = len(find_components(model, s.component, s.layers_path))
    act_meta = {"model": model_identity, "texts": sha256_json(texts), "component": s.component, "read": s.read,
                "layers_path": s.layers_path}
    act_file = Path(activations_path) if activations_path is not None else (
        cache / "activations" / f"{sha256_json(act_meta)[:24]}.safetensors" if cache is not None else None)
    acts = None
    if act_file is not None and act_file.exists():
        tensors, meta = load_activations(act_file, d, n_layers)
        if meta.get("texts") == act_meta["texts"] and meta.get("component") == s.component \
                and meta.get("read") == s.read:
            acts = tensors["phi"]
        else:
            logger.info("activation file %s is for other texts/settings; recomputing", act_file)
    if acts is None:
        _check_activation_lengths(tokenizer, model, texts, [r["id"] for r in kept for _ in (0, 1)])
        acts = capture(model, tokenizer, texts, component=s.component, layers_path=s.layers_path, read=s.read,
                       answer_starts=starts if s.read == "mean" else None, batch_size=s.act_batch_size,
                       progress=progress)
        if act_file is not None:
            save_activations(act_file, {"phi": acts}, act_meta)
    return PairActivations(help=acts[0::2], harm=acts[1::2], hidden_size=d, num_layers=n_layers)
