"""Judge backends: `openai` (any OpenAI-compatible endpoint), `hf` (local chat model scored by
next-token probabilities), `rm` (sequence-classification reward model), `scorer` (a Bradley–Terry head on frozen features,
trained by `train-scorer`)."""

from __future__ import annotations

from alignez_eval.judge.backends.base import Backend, JudgeRequest
from alignez_eval.judge.spec import JudgeSpec

__all__ = ["Backend", "JudgeRequest", "make_backend"]


def make_backend(spec: JudgeSpec) -> Backend:
    # Imported on demand: `openai` needs no torch, `hf`/`rm` need no HTTP client.
    if spec.backend == "openai":
        from alignez_eval.judge.backends.openai import OpenAIBackend

        return OpenAIBackend(spec)
    if spec.backend == "hf":
        from alignez_eval.judge.backends.hf import HFBackend

        return HFBackend(spec)
    if spec.backend == "scorer":
        from alignez_eval.judge.backends.scorer import ScorerBackend

        return ScorerBackend(spec)
    from alignez_eval.judge.backends.rm import RewardModelBackend

    return RewardModelBackend(spec)
