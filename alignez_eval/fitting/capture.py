"""Φ_l capture: the forward output of each layer's component (MLP by default) for a set of texts.

One batched, padded forward pass per batch of texts with a hook on every component; we read the last
*real* token of each row (wherever the padding went) or, optionally, the mean over the answer tokens.
The pass is cut short after the last component fires, so the LM head (262k-wide for Gemma 3) never runs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from alignez_eval.atomic import atomic_write_safetensors
from alignez_eval.editing.architectures import find_components, hidden_size
from alignez_eval.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

READS = ("last", "mean")


class _Done(Exception):
    """Raised by the last hook: everything needed has been captured."""


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(f"component output of type {type(output).__name__} holds no tensor to read Φ_l from")


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended position per row — right padding or left padding alike."""
    t = attention_mask.shape[1]
    pos = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return (pos * attention_mask.long()).argmax(dim=1)


@torch.inference_mode()
def capture(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    *,
    component: str = "mlp",
    layers_path: str | None = None,
    read: str = "last",
    answer_starts: list[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "activations",
) -> torch.Tensor:
    """Φ for every text and layer: float32 tensor (n_texts, n_layers, d) on the CPU.

    `read="mean"` averages over the tokens whose characters start at or after `answer_starts[i]`
    (the answer part of "Human: {q}\\nAssistant: {answer}"); rows without such tokens fall back to
    the last token.
    """
    if read not in READS:
        raise ConfigError(f"read={read!r}; choose one of {READS}")
    if read == "mean" and (answer_starts is None or len(answer_starts) != len(texts)):
        raise ConfigError("read=mean needs the answer's character offset for every text")
    comps = find_components(model, component, layers_path)
    n_layers = len(comps)
    d = hidden_size(model)
    out = torch.zeros(len(texts), n_layers, d, dtype=torch.float32)
    if not texts:
        return out
    device = next(model.parameters()).device
    grabbed: dict[int, torch.Tensor] = {}

    def make_hook(i: int):
        def hook(_mod: torch.nn.Module, _inp: Any, output: Any) -> None:
            grabbed[i] = _first_tensor(output)
            if i == n_layers - 1:
                raise _Done

        return hook

    handles = [c.register_forward_hook(make_hook(i)) for i, c in enumerate(comps)]
    use_offsets = read == "mean" and getattr(tokenizer, "is_fast", False)
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    old_pad = tokenizer.pad_token
    if old_pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        # Batches of similar length: padded positions cost a full forward each, and self-generated
        # answers vary from a few tokens to the cap, so unsorted batches are about half padding.
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda j: -lengths[j])
        real = padded = 0
        bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress)
        for start in range(0, len(texts), batch_size):
            rows_at = order[start:start + batch_size]
            chunk = [texts[j] for j in rows_at]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, return_offsets_mapping=use_offsets)
            offsets = enc.pop("offset_mapping", None)
            mask = enc["attention_mask"]
            real += int(mask.sum())
            padded += mask.numel()
            grabbed.clear()
            kwargs: dict[str, Any] = {"input_ids": enc["input_ids"].to(device), "attention_mask": mask.to(device),
                                      "use_cache": False}
            if takes_positions:
                # As generate does: positions count real tokens only, so left padding does not shift
                # absolute position embeddings (GPT-2); RoPE models are unaffected either way.
                kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0).to(device)
            try:
                model(**kwargs)
            except _Done:
                pass
            if len(grabbed) != n_layers:
                raise DataError(f"captured {len(grabbed)} of {n_layers} layers; a hook did not fire")
            dest = torch.tensor(rows_at)
            if read == "last":
                idx = last_real_index(mask)
                rows = torch.arange(len(chunk))
                for i in range(n_layers):
                    h = grabbed[i].detach().to("cpu", torch.float32)
                    out[dest, i] = h[rows, idx]
            else:
                sel = _answer_mask(tokenizer, chunk, mask, offsets, [answer_starts[j] for j in rows_at])
                w = sel.to(torch.float32)
                w = w / w.sum(dim=1, keepdim=True)
                for i in range(n_layers):
                    h = grabbed[i].detach().to("cpu", torch.float32)
                    out[dest, i] = torch.einsum("bt,btd->bd", w, h)
            bar.update(len(chunk))
        bar.close()
        logger.info("activations: %d texts in %d passes, %d real tokens of %d positions (%.0f%% padding)",
                    len(texts), -(-len(texts) // batch_size), real, padded, 100 * (1 - real / max(1, padded)))
    finally:
        for h in handles:
            h.remove()
        if old_pad is None:
            tokenizer.pad_token = old_pad
    return out


def _answer_mask(
    tokenizer: Any,
    chunk: list[str],
    mask: torch.Tensor,
    offsets: torch.Tensor | None,
    starts: list[int],
) -> torch.Tensor:
    """(B, T) bool: attended tokens belonging to the answer; rows with none fall back to the last token."""
    b, t = mask.shape
    sel = torch.zeros(b, t, dtype=torch.bool)
    for r in range(b):
        if offsets is not None:
            st, en = offsets[r, :, 0], offsets[r, :, 1]
            sel[r] = (mask[r] > 0) & (en > st) & (en > starts[r])
        else:
            # Slow tokenizers have no offsets: count the prefix's tokens instead (the boundary token
            # may merge across "Assistant: " and the answer — a one-token approximation).
            n_prefix = len(tokenizer(chunk[r][:starts[r]])["input_ids"])
            real = torch.nonzero(mask[r] > 0).flatten()
            sel[r, real[n_prefix:]] = True
    empty = ~sel.any(dim=1)
    if empty.any():
        last = last_real_index(mask)
        for r in torch.nonzero(empty).flatten().tolist():
            sel[r, last[r]] = True
    return sel


# ---- activation files ---------------------------------------------------------------------------
def save_activations(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write named (n, L, d) tensors + JSON metadata atomically (safetensors; no pickle)."""
    atomic_write_safetensors(path, tensors, {"alignez_activations": json.dumps(meta, sort_keys=True)})


def load_activations(
    path: str | os.PathLike[str], hidden: int, n_layers: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an activation file, refusing one captured from a model of another shape."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("alignez_activations", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 — safe_open has no iterator
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"activation file {str(path)!r} is unreadable ({exc}); delete it to recompute") from exc
    for name, t in tensors.items():
        if t.dim() != 3 or t.shape[-1] != hidden or t.shape[1] != n_layers:
            raise DataError(
                f"activation file {str(path)!r} holds {name} of shape {tuple(t.shape)} "
                f"(hidden size {t.shape[-1] if t.dim() else '?'}, {t.shape[1] if t.dim() > 1 else '?'} layers), "
                f"but the model has hidden size {hidden} and {n_layers} layers; it was captured from another "
                "model — delete it or pass another --activations path"
            )
    return tensors, meta
