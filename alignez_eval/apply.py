"""`apply_edit`: an AlignEZ edit on any transformers causal LM, outside lm-eval.

    from alignez_eval import apply_edit

    tok.padding_side = "left"  # generate continues every row from its last position
    enc = tok(prompts, return_tensors="pt", padding=True)
    with apply_edit(model, "edit.safetensors", alpha=1.5, layers="auto"):
        out = model.generate(**enc, max_new_tokens=64, do_sample=False)

Without `with`: `handle = apply_edit(model, edit, positions="all")`, then `handle.remove()`.

Every call goes through alignez-hf's edit engine (editing/edited_model.py `EditedModel`): its hooks
are installed for each call of `model.generate` or `model(...)` and removed after it, so between
calls the model carries no hook. `generate` edits as alignez-hf's generation does (left-padded
prompts; positions as in the paper), and with `layers=auto` or a direction gate it reuses the q̂
pre-pass's prompt KV cache where that is exact (`handle.reuse_prompt_cache = False` turns that
off). A forward outside `generate` is read as a prompt: `last` edits each row's last real token
(by the attention mask), `all` every real token, `generated` nothing. `layers=auto` and the
direction gate choose per row from an unedited pre-pass over the prompt, as alignez-hf does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.config import EditConfig
from alignez_eval.editing.edited_model import CACHE_KWARGS, EditedModel
from alignez_eval.editing.interop import load_edit
from alignez_eval.editing.plan import EditPlan, prepare_plan
from alignez_eval.errors import ConfigError


def apply_edit(model: torch.nn.Module, edit: Edit | str | os.PathLike[str], *, layers_path: str | None = None,
               **settings: Any) -> EditHandle:
    """Edit `model.generate(...)` and `model(...)` until the handle's `.remove()` (or the end of its
    `with` block). `edit` is an `Edit` or the path of an artifact; `settings` are EditConfig's
    (alpha, layers, n_layers, positions, component, gate), strings accepted as in model_args.
    Bad settings fail before the artifact is read or anything is installed."""
    config = EditConfig.from_mapping(settings)
    if not isinstance(edit, Edit):
        if not isinstance(edit, (str, os.PathLike)):
            raise ConfigError(f"edit={edit!r}: pass an Edit or the path of an edit artifact")
        edit = load_edit(Path(edit), model, layers_path)
    return EditHandle(model, prepare_plan(edit, config, model, layers_path))


class EditHandle:
    """An edit applied to a model: a context manager, or call `.remove()`.

    `model.forward` and `model.generate` are wrapped on the instance (what the model's own
    `__call__` and generate loop reach), and each call runs inside an `edit_session`."""

    def __init__(self, model: torch.nn.Module, plan: EditPlan) -> None:
        if isinstance(getattr(model.forward, "__self__", None), EditHandle):
            raise ConfigError("this model already has an edit applied; remove() it before applying another")
        self.model = model
        self.plan = plan
        self.edited = EditedModel(model, plan)
        self.reuse_prompt_cache = True  # generate starts from the q̂ pre-pass's prompt cache where exact
        self._in_generate = False
        # accelerate (device_map, offloading) may already have put its own `forward` on the instance
        self._saved = {name: model.__dict__[name] for name in ("forward", "generate") if name in model.__dict__}
        self._forward: Callable[..., Any] = model.forward
        self._generate: Callable[..., Any] = model.generate
        model.forward = self._edited_forward
        model.generate = self._edited_generate
        self._removed = False

    def remove(self) -> None:
        """Put the model back as it was (idempotent)."""
        if self._removed:
            return
        for name in ("forward", "generate"):
            if name in self._saved:
                setattr(self.model, name, self._saved[name])
            else:
                self.model.__dict__.pop(name, None)
        self._removed = True

    @property
    def last_chosen_layers(self) -> list[list[int]]:
        """Per row, from the last call with a pre-pass: the layers it edited."""
        return self.edited.last_chosen_layers

    def __enter__(self) -> EditHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    # ---- generation ----------------------------------------------------------------------------
    def _edited_generate(self, *args: Any, **kwargs: Any) -> Any:
        self._in_generate = True  # generate's own forwards are edited by this session, not per call
        try:
            ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
            if self.plan.needs_query_states:
                if not isinstance(ids, torch.Tensor):
                    raise ConfigError("layers=auto and the direction gate read each prompt: pass input_ids to generate")
                if any(kwargs.get(k) is not None for k in CACHE_KWARGS):
                    raise ConfigError("layers=auto and the direction gate run a pre-pass over the prompt, which "
                                      "would write into the cache passed to generate; pass explicit layers and "
                                      "gate=none")
            pad = kwargs.get("pad_token_id",
                             getattr(getattr(self.model, "generation_config", None), "pad_token_id", None))
            return self.edited.generate(lambda extra: self._generate(*args, **kwargs, **extra), ids,
                                        kwargs.get("attention_mask"), kwargs, prefill_generate=self._generate,
                                        pad_token_id=pad, reuse_prompt_cache=self.reuse_prompt_cache)
        finally:
            self._in_generate = False

    # ---- a forward outside generate ------------------------------------------------------------
    def _edited_forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._in_generate or self.plan.config.positions == "generated":
            return self._forward(*args, **kwargs)  # generate's session edits; a prompt has no generated token
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        shape = ids.shape if isinstance(ids, torch.Tensor) else embeds.shape[:2]
        device = ids.device if isinstance(ids, torch.Tensor) else embeds.device
        mask = kwargs.get("attention_mask")
        real = mask.bool() if isinstance(mask, torch.Tensor) else torch.ones(shape, dtype=torch.bool, device=device)
        cols = torch.arange(shape[1], device=real.device)
        last = torch.where(real, cols, -1).amax(dim=1)  # each row's last real token
        first = torch.where(real, cols, shape[1]).amin(dim=1)
        starts = last if self.plan.config.positions == "last" else first
        if self.plan.needs_query_states and any(kwargs.get(k) is not None for k in CACHE_KWARGS):
            raise ConfigError("layers=auto and the direction gate need the whole prompt in one forward; "
                              "call generate, or pass explicit layers and gate=none")
        run = lambda: self._forward(*args, **kwargs)  # noqa: E731 — the same call edited and, first, as the pre-pass
        return self.edited.call(run, starts, last + 1, last, prepass=run)
