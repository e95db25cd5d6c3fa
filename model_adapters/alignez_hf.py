"""`alignez-hf`: lm-eval's HFLM with an AlignEZ edit applied inside every model call.

Only the choke points are overridden: `_model_call` (loglikelihood forwards) and
`_model_generate` (generation) install the edit hooks for that call and remove them afterwards.
`_loglikelihood_tokens` is wrapped only to learn each row's context/continuation split, which the
position modes need. With `edit=none` every override calls straight through to HFLM, so results
are those of `--model hf`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  — fill the registry with the built-ins before adding ours
import torch
from lm_eval.api.registry import get_model, register_model
from lm_eval.models.huggingface import HFLM

from alignez_eval._autoload import MODEL_NAME
from alignez_eval.adapters import adapter_identity, fitted_elsewhere, mark
from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.config import EDIT_SETTINGS, is_none
from alignez_eval.editing.edited_model import EditedModel
from alignez_eval.editing.interop import load_edit
from alignez_eval.editing.layers import check_no_split_layer_list
from alignez_eval.editing.plan import EditConfig, EditPlan, prepare_plan
from alignez_eval.editing.positions import loglikelihood_span
from alignez_eval.errors import ConfigError
from alignez_eval.fitting.on_the_fly import fit_for_evaluation
from alignez_eval.package import __version__
from alignez_eval.parallel import data_parallel_rank

logger = logging.getLogger(__name__)

_KEEP = object()

LLRequest = tuple[Any, list[int], list[int]]


def _strip_pad(tokens: Sequence[int]) -> tuple[int, ...]:
    """lm-eval right-pads loglikelihood rows with token id 0 (`pad_and_concat`)."""
    end = len(tokens)
    while end > 0 and tokens[end - 1] == 0:
        end -= 1
    return tuple(tokens[:end])


@register_model(MODEL_NAME)
class AlignEZHFLM(HFLM):
    """HFLM + an AlignEZ edit. model_args (all scalars, so lm-eval's comma parser keeps them):
    edit        PATH of a saved artifact | none (the unedited baseline through the same code path)
    alpha, layers, n_layers, positions, component, gate
                the edit settings: EditConfig's fields (alignez_eval/editing/config.py holds their
                defaults, help and allowed values; unset layers/n_layers/component/gate are the artifact's)
    layers_path dotted path of the decoder-block list, for architectures not in the table
    peft        (HFLM's) a LoRA adapter directory; an artifact fitted with another adapter, or with none,
                or on another model, is applied with a warning naming the fix
    fit         self (fit on the evaluation's own prompts) | QUERIES.jsonl | TASK; settings as fit_<name>=…
                (fit_method, fit_energy, fit_keywords, fit_limit, fit_answer_tokens, fit_cache_dir, fit_out, …)
    """

    def __init__(
        self,
        pretrained: Any,
        edit: Any = _KEEP,
        layers_path: str | None = None,
        fit: Any = None,
        **kwargs: Any,
    ) -> None:
        check_no_split_layer_list(kwargs)
        # Seam for the fit module: `fit=...` plus any `fit_*` model_args.
        self._fit_args: dict[str, Any] = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("fit_")}
        self._fit_spec = fit
        # The edit settings given (alpha=…, layers=…); the rest of kwargs goes to HFLM.
        self._edit_settings: dict[str, Any] = {k: kwargs.pop(k) for k in EDIT_SETTINGS if k in kwargs}
        self._edit: Edit | None = None
        self._edited: EditedModel | None = None  # the edit engine for the current plan
        self._ll_rows: dict[tuple[int, ...], tuple[int, int]] = {}
        # Generation with a q̂ pre-pass (layers=auto or a gate) reuses its prompt KV cache (see
        # EditedModel.generate); off, generate runs its own full prefill after the pre-pass.
        self.reuse_prompt_cache = True
        # bad settings (alpha=abc) fail here, before minutes of weight loading
        EditConfig.from_mapping(self._edit_settings)
        self.adapter = adapter_identity(kwargs.get("peft"))  # a directory that is no adapter fails here
        super().__init__(pretrained, **kwargs)
        mark(self.model, self.adapter)  # a fit on this model (compare, fit=...) records the adapter
        self._rank, self._world_size = data_parallel_rank(getattr(self, "accelerator", None), self._rank,
                                                          self._world_size)
        self.layers_path = layers_path
        if edit is _KEEP and fit is None:
            logger.warning("alignez-hf without edit=: running unedited (pass edit=PATH, or edit=none to silence)")
            edit = None
        if fit is not None and not (edit is _KEEP or is_none(edit)):
            raise ConfigError("pass either edit=PATH or fit=..., not both")
        self.set_edit(edit=None if edit is _KEEP else edit, **self._edit_settings)

    # ---- configuration -----------------------------------------------------------------------
    def set_edit(self, edit: Any = _KEEP, **settings: Any) -> None:
        """(Re)configure the edit without reloading weights. `edit` is a path, an `Edit`, or
        none; omitted, the current artifact is kept. `settings` are EditConfig's fields (alpha,
        layers, …); every one not passed returns to its default (so a sweep point never inherits
        the previous point's settings)."""
        if edit is not _KEEP:
            if is_none(edit):
                self._edit = None
            elif isinstance(edit, Edit):
                self._edit = edit
            elif isinstance(edit, (str, os.PathLike)):
                self._edit = load_edit(Path(edit), self.model, self.layers_path)
            else:
                raise ConfigError(f"edit={edit!r}: pass a path to an edit artifact, or edit=none")
        config = EditConfig.from_mapping(settings)
        if edit is not _KEEP and self._edit is not None:
            self._warn_if_fitted_elsewhere(self._edit)
        if self._edit is not None and self.backend != "causal":
            raise ConfigError(f"alignez-hf edits decoder-only models; this one loads as {self.backend}. "
                              "Use edit=none, or --model hf")
        self._config = config
        plan = None if self._edit is None else prepare_plan(self._edit, config, self.model, self.layers_path)
        # a new engine per plan: chosen layers and layer usage start afresh with every set_edit
        self._edited = None if plan is None else EditedModel(self.model, plan, autocast=self._autocast)
        if plan is not None:
            logger.info("alignez-hf edit: %s", {k: v for k, v in plan.describe().items() if k != "edit"})

    def _warn_if_fitted_elsewhere(self, edit: Edit) -> None:
        why = fitted_elsewhere(edit.meta.fit.get("model_identity"), self.model, self.adapter)
        if why:
            logger.warning("edit artifact %s does not belong to this model: %s. Its directions were read from "
                           "another model's activations; fit one on this model (`alignez-eval fit --model_args "
                           "pretrained=...,peft=...`, or fit=self) unless the transfer is what you are measuring",
                           edit.path or "(in memory)", why)

    @property
    def edit_plan(self) -> EditPlan | None:
        return self._edited.plan if self._edited is not None else None

    @property
    def last_chosen_layers(self) -> list[list[int]]:
        """Per row of the last call with a q̂ pre-pass: the layers it edited."""
        return self._edited.last_chosen_layers if self._edited is not None else []

    @property
    def layer_usage(self) -> Counter[int]:
        """How often each layer was chosen (layers=auto) since the last set_edit."""
        return self._edited.layer_usage if self._edited is not None else Counter()

    def edit_info(self) -> dict[str, Any]:
        """What goes into lm-eval's results `config` (via get_model_info)."""
        if self.edit_plan is None:
            return {"edit": "none", "positions": self._config.positions or "last", "alignez_eval_version": __version__}
        info = self.edit_plan.describe()
        info["alignez_eval_version"] = __version__
        if self.layer_usage:
            info["auto_layer_usage"] = {str(k): v for k, v in sorted(self.layer_usage.items())}
        return info

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["alignez_edit"] = self.edit_info()
        info["alignez_edit_sha256"] = self.edit_plan.edit.sha256 if self.edit_plan is not None else None
        return info

    # ---- the fit seam ------------------------------------------------------------------------
    def _fit_edit(self, requests: list[Any]) -> Edit:
        """Fit an edit on the fly (`fit=self` — the evaluation's own prompts — or `fit=QUERIES.jsonl|TASK`),
        with `fit_*` model_args as settings; cached by (model, queries, settings)."""
        return fit_for_evaluation(self.model, self.tokenizer, self._fit_spec, self._fit_args, requests,
                                  rank=self.rank, world_size=self.world_size,
                                  accelerator=getattr(self, "accelerator", None))

    def _ensure_fitted(self, requests: list[Any]) -> None:
        if self._fit_spec is not None and self._edit is None:
            edit = self._fit_edit(requests)
            self.set_edit(edit=edit, **self._edit_settings)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self._ensure_fitted(requests)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        self._ensure_fitted(requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        self._ensure_fitted(requests)
        return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    # ---- loglikelihood -----------------------------------------------------------------------
    def _ll_row(self, context_enc: list[int], continuation_enc: list[int]) -> tuple[tuple[int, ...], tuple[int, int]]:
        """The key and (inplen, contlen) of a request's row, built exactly as HFLM builds `inp`."""
        inp = (context_enc + continuation_enc)[-(self.max_length + 1) :][:-1]
        return _strip_pad(inp), (len(inp), len(continuation_enc))

    def _loglikelihood_tokens(
        self, requests: list[LLRequest], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        if self._edited is None or self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        # Rows are identified inside _model_call by their tokens. Two requests whose rows are the
        # same tokens but split differently into context/continuation edit different positions,
        # so they go to separate rounds (rare; usually there is one round).
        rounds: list[tuple[list[int], dict[tuple[int, ...], tuple[int, int]]]] = []
        for idx, (_, ctx, cont) in enumerate(requests):
            key, val = self._ll_row(ctx, cont)
            for members, table in rounds:
                if table.get(key, val) == val:
                    table[key] = val
                    members.append(idx)
                    break
            else:
                rounds.append(([idx], {key: val}))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        try:
            for members, table in rounds:
                self._ll_rows = table
                sub = [requests[i] for i in members]
                out = super()._loglikelihood_tokens(sub, disable_tqdm=disable_tqdm, override_bs=override_bs)
                for i, r in zip(members, out, strict=True):
                    results[i] = r
        finally:
            self._ll_rows = {}
        return results  # type: ignore[return-value]

    def _row_splits(self, inps: torch.Tensor) -> tuple[list[int], list[int]]:
        """(inplen, contlen) of every row in a loglikelihood batch. A row not from
        _loglikelihood_tokens (e.g. batch-size detection) counts as a prompt whose next token is
        scored: the whole row is context, and `last` edits its last position."""
        inplens, contlens = [], []
        for row in inps.tolist():
            inplen, contlen = self._ll_rows.get(_strip_pad(row), (len(row), 1))
            inplens.append(inplen)
            contlens.append(contlen)
        return inplens, contlens

    def _model_call(
        self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        edited = self._edited
        if edited is None or attn_mask is not None or labels is not None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        inplens, contlens = self._row_splits(inps)
        spans = [loglikelihood_span(edited.plan.config.positions, i, c)
                 for i, c in zip(inplens, contlens, strict=True)]
        starts = torch.tensor([s for s, _ in spans], device=inps.device)
        ends = torch.tensor([e for _, e in spans], device=inps.device)
        # q̂ at the last context token, read from an unedited pass over the prompt part only (the
        # model is causal, so later columns cannot change it)
        qpos = torch.tensor([i - c for i, c in zip(inplens, contlens, strict=True)], device=inps.device)
        width = int(qpos.max()) + 1
        base_call = super()._model_call
        return edited.call(lambda: base_call(inps), starts, ends, qpos, prepass=lambda: base_call(inps[:, :width]))

    # ---- generation --------------------------------------------------------------------------
    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> torch.Tensor:
        edited = self._edited
        base_generate = super()._model_generate
        if edited is None:
            return base_generate(context, max_length, stop, **generation_kwargs)
        return edited.generate(lambda extra: base_generate(context, max_length, stop, **generation_kwargs, **extra),
                               context, generation_kwargs.get("attention_mask"), generation_kwargs,
                               prefill_generate=self.model.generate, pad_token_id=self.tokenizer.pad_token_id,
                               reuse_prompt_cache=self.reuse_prompt_cache)

    def _autocast(self) -> Any:
        """The mixed-precision context HFLM's own generate runs under, for our pre-passes."""
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)


def register() -> type:
    """Make `alignez-hf` resolvable in this process and return its class. Importing this module
    registered it (after lm-eval's built-ins, imported above: `get_model` fills the registry only
    while it is empty, so registering ours into an empty registry would hide `hf` and the rest)."""
    return get_model(MODEL_NAME)
