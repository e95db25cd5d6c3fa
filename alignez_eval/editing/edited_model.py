"""The edit engine: every edited call of a model — a forward over token spans, or a `generate` —
with its unedited q̂ pre-pass, the per-row gates, the hooks and the prompt-KV reuse, written once.

alignez-hf (model_adapters/alignez_hf.py: loglikelihood rows and lm-eval's generate) and
`apply_edit` (alignez_eval/apply.py: `model(...)` and `model.generate(...)` of any causal LM) each
hold one `EditedModel` per plan and hand it their calls; they differ only in how they call the
model (HFLM's `_model_call` / `_model_generate`, or the model's own saved methods).

    edited = EditedModel(model, plan)
    logits = edited.call(lambda: model(ids), starts, ends, qpos, prepass=lambda: model(ids[:, :w]))
    tokens = edited.generate(lambda extra: model.generate(ids, **kw, **extra), ids, mask, kw,
                             prefill_generate=model.generate, pad_token_id=pad)
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from alignez_eval.editing.gates import RowGates, capture_query_states, one_token_generate, query_gates
from alignez_eval.editing.hooks import edit_session
from alignez_eval.editing.plan import EditPlan
from alignez_eval.editing.positions import GenerationPositions, SpanPositions

logger = logging.getLogger(__name__)

# generate's own cache arguments (transformers 5 renamed `past_key_values` to `cache`)
CACHE_KWARGS = ("past_key_values", "cache")


class EditedModel:
    """One plan applied to one model. Records, per call with a pre-pass, each row's chosen layers
    (`last_chosen_layers`) and, over its lifetime, how often each layer was chosen (`layer_usage`)."""

    def __init__(self, model: torch.nn.Module, plan: EditPlan,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        self.model = model
        self.plan = plan
        self.autocast = autocast  # the context the caller's own forwards run under (HFLM's mixed precision)
        self.last_chosen_layers: list[list[int]] = []
        self.layer_usage: Counter[int] = Counter()

    # ---- per-query choices -------------------------------------------------------------------
    def gates(self, run: Callable[[], Any], qpos: torch.Tensor, stop_early: bool = True) -> RowGates:
        """q̂ at each row's `qpos` from the unedited `run()`, and the gates it gives."""
        states = capture_query_states(self.model, self.plan, run, qpos, stop_early=stop_early)
        gates = query_gates(self.plan, states)
        self.last_chosen_layers = gates.chosen
        for row in gates.chosen:
            self.layer_usage.update(row)
        logger.debug("chosen layers per row: %s", gates.chosen)
        return gates

    # ---- a forward over token spans ----------------------------------------------------------
    def call(self, run: Callable[[], Any], starts: torch.Tensor, ends: torch.Tensor, qpos: torch.Tensor,
             prepass: Callable[[], Any]) -> Any:
        """`run()` edited on positions [starts[b], ends[b]) of each row b; when the plan needs q̂
        (layers=auto, a gate) it is read at `qpos` from `prepass()`, an unedited forward (over the
        prompt part only is enough: the model is causal)."""
        gates = self.gates(prepass, qpos) if self.plan.needs_query_states else None
        with edit_session(self.model, self.plan, SpanPositions(starts, ends), gates):
            return run()

    # ---- generate ----------------------------------------------------------------------------
    def generate(self, run: Callable[[dict[str, Any]], Any], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None, gen_kwargs: dict[str, Any], *,
                 prefill_generate: Callable[..., Any], pad_token_id: int | None,
                 reuse_prompt_cache: bool = True) -> Any:
        """`run(extra_kwargs)` (the caller's generate, left-padded prompts) with the edit on.

        With a q̂ pre-pass, either one unedited pass over the prompt also keeps its KV cache, handed
        to `run` as `extra_kwargs` so generate skips its own prefill (`reuse_prompt_cache`, where
        exact), or an unedited greedy 1-token `prefill_generate` reads q̂ (exactly generate's own
        prefill) and generate then runs its full prefill."""
        gates = None
        extra: dict[str, Any] = {}
        if self.plan.needs_query_states:
            # with left padding each query's last token is at position −1 of every row
            qpos = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
            def prefill(keep_cache: bool = False) -> Any:
                with self.autocast():
                    return one_token_generate(prefill_generate, input_ids, attention_mask, pad_token_id, keep_cache)

            if reuse_prompt_cache and prompt_cache_applies(self.plan, self.model, input_ids, attention_mask,
                                                           gen_kwargs):
                gates, cache = self._gates_and_prompt_cache(prefill, qpos)
                if cache is not None:
                    extra[cache_kwarg(self.model)] = cache
            else:
                gates = self.gates(prefill, qpos)
        with edit_session(self.model, self.plan, GenerationPositions(self.plan.config.positions), gates):
            return run(extra)

    def _gates_and_prompt_cache(self, prefill: Callable[[bool], Any], qpos: torch.Tensor) -> tuple[RowGates, Any]:
        """q̂ from the unedited 1-token generate `prefill` — generate's own prefill, with the position
        ids this transformers version derives — run to the end so that it keeps the prompt's KV
        cache, cut back by the last token. With positions=last|generated the edit leaves every
        prompt token but the last unedited, so those keys and values are exactly what the edited
        generate would compute; generate then starts from the last prompt token, and the q̂
        pre-pass costs no extra prefill. Returns cache None (a full prefill follows) when the cache
        cannot be cut back."""
        box: dict[str, Any] = {}

        def run() -> None:
            out = prefill(True)
            cache = getattr(out, "cache", None)
            box["cache"] = cache if cache is not None else getattr(out, "past_key_values", None)

        gates = self.gates(run, qpos, stop_early=False)
        cache = box.get("cache")
        try:
            cache.crop(-1)
        except (AttributeError, RuntimeError, ValueError) as exc:
            # e.g. a sliding-window layer that is already full cannot be rolled back
            logger.debug("prompt cache not reusable (%s); generate runs its own prefill", exc)
            return gates, None
        return gates, cache


def prompt_cache_applies(plan: EditPlan, model: torch.nn.Module, context: torch.Tensor, attn: Any,
                         gen_kwargs: dict[str, Any]) -> bool:
    """Reusing the pre-pass's prompt cache is exact only when the prefill edits at most the last
    prompt token, and simple only for one sequence per prompt (asked for here or in the model's
    generation config) without a cache or generation config of the caller's."""
    defaults = getattr(model, "generation_config", None)
    return (
        plan.config.positions in ("last", "generated")
        and isinstance(attn, torch.Tensor)
        and context.shape[1] >= 2
        and int(gen_kwargs.get("num_beams") or getattr(defaults, "num_beams", 1) or 1) == 1
        and int(gen_kwargs.get("num_return_sequences") or getattr(defaults, "num_return_sequences", 1) or 1) == 1
        and not any(k in gen_kwargs for k in (*CACHE_KWARGS, "generation_config"))
    )


def cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5 renamed generate's `past_key_values` to `cache`; accept either."""
    # the class's forward: apply_edit wraps the instance's with a (*args, **kwargs) one
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
