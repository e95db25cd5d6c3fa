"""Judge backends: `openai` (any OpenAI-compatible endpoint), `hf` (local chat model scored by
next-token probabilities), `rm` (sequence-classification reward model)."""

from __future__ import annotations

from alignez_eval.judge.backends.base import Backend, JudgeRequest, make_backend

__all__ = ["Backend", "JudgeRequest", "make_backend"]
