"""Which positions of a forward an edit touches.

A `PositionRule` decides per forward (generation: per step and attention mask; loglikelihood: a
per-row token span); `loglikelihood_span` gives that span for one lm-eval row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SKIP = "skip"  # edit nothing in this forward
EVERY = "every"  # edit every position (no mask)
LAST = "last"  # edit only position -1 of every row (computed on that slice alone)
Where = str | torch.Tensor  # or a (B, T) bool mask


@dataclass
class ForwardState:
    """Filled by the pre-hook on the top-level model before every forward of the session."""

    step: int = -1
    attention_mask: torch.Tensor | None = None
    # keyed by (length, device): on a model split across devices (device_map) each layer needs
    # its mask on the device of its own activations
    cache: dict[tuple[int, torch.device], Where] = field(default_factory=dict)

    def pre_hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.step += 1
        mask = kwargs.get("attention_mask")
        self.attention_mask = mask if isinstance(mask, torch.Tensor) else None
        self.cache = {}


class PositionRule:
    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        raise NotImplementedError


@dataclass
class GenerationPositions(PositionRule):
    """Generation with left padding. Step 0 is the prefill (the whole prompt), steps ≥ 1 decode
    one new token each.
      last       prefill: the last prompt token of every row; decode: every new token
      all        prefill: every non-padding prompt token; decode: every new token
      generated  prefill: nothing; decode: every new token"""

    mode: str = "last"

    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        if state.step > 0:
            if length == 1:
                return EVERY
            return _real(state.attention_mask, length, device)
        if self.mode == "generated":
            return SKIP
        if self.mode == "last":
            return LAST
        return _real(state.attention_mask, length, device)


def _real(attention_mask: torch.Tensor | None, length: int, device: torch.device) -> Where:
    if attention_mask is None:
        return EVERY
    m = attention_mask[:, -length:].bool()
    # the mask lives with the inputs; a layer on another device (device_map) edits there
    return EVERY if bool(m.all()) else m.to(device)


@dataclass
class SpanPositions(PositionRule):
    """A fixed per-row span [start, end) of the (right-padded) input, for loglikelihood."""

    starts: torch.Tensor  # (B,)
    ends: torch.Tensor  # (B,)

    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        t = torch.arange(length, device=device)
        return (t[None, :] >= self.starts.to(device)[:, None]) & (t[None, :] < self.ends.to(device)[:, None])


def loglikelihood_span(positions: str, inplen: int, contlen: int) -> tuple[int, int]:
    """Edited positions of one lm-eval loglikelihood row: inp = (context + continuation)[:-1],
    the scored logits are at [inplen − contlen, inplen), and position inplen − contlen holds the
    last context token.
      last       [inplen − contlen, inplen): the last context token and every continuation token
      all        [0, inplen): every real token
      generated  [inplen − contlen + 1, inplen): continuation tokens only"""
    first_scored = inplen - contlen
    if positions == "last":
        return first_scored, inplen
    if positions == "all":
        return 0, inplen
    return first_scored + 1, inplen
