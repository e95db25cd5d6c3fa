"""Loading a local judge model (`hf`: a causal LM, `rm`: a sequence-classification reward model):
one function serves both backends and compare's shared judge, so all three resolve the model
name, the dtype and the device alike and a cached judgment means the same weights everywhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from alignez_eval.errors import ConfigError
from alignez_eval.judge.spec import JudgeSpec

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


def resolve_model_path(name: str) -> str:
    """A directory as given, else an embedded model name resolved by `alignez_eval.models`."""
    if Path(name).exists():
        return name
    try:
        from alignez_eval.models import model_path  # lazy: the registry may download/convert
    except ImportError as exc:
        raise ConfigError(f"judge model {name!r} is not a directory and alignez_eval.models is unavailable "
                          f"({exc}); pass a local model directory") from exc
    return str(model_path(name))


def torch_dtype(name: str) -> torch.dtype:
    """A torch dtype from its name; `auto` is decided for this machine (alignez_eval.dtypes)."""
    from alignez_eval.dtypes import resolve_dtype

    name = resolve_dtype(name)
    if name not in _DTYPES:
        raise ConfigError(f"dtype {name!r} is unknown; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def default_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def load_judge_model(spec: JudgeSpec) -> tuple[Any, Any]:
    """-> (model in eval mode on the spec's device, tokenizer) of an `hf` or `rm` judge spec."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if spec.backend not in ("hf", "rm"):
        raise ConfigError(f"the {spec.backend} judge backend has no local model to load")
    path = resolve_model_path(spec.model)
    device = torch.device(default_device(spec.options.device))
    what, cls = (("judge", AutoModelForCausalLM) if spec.backend == "hf"
                 else ("reward model", AutoModelForSequenceClassification))
    logger.info("loading %s %s (%s) on %s", what, spec.model, spec.resolved_dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = cls.from_pretrained(path, dtype=torch_dtype(spec.resolved_dtype)).to(device)
    return model.eval(), tokenizer


def judge_model(spec: JudgeSpec) -> tuple[Any, Any]:
    """-> (model in eval mode, tokenizer with a pad token) of an `hf` or `rm` judge: the preloaded
    pair of `spec.using(model, tokenizer)` when there is one, else loaded from the spec."""
    if spec.model_obj is not None:
        if spec.tokenizer_obj is None:
            raise ConfigError(f"a preloaded {spec.backend} judge model needs its tokenizer too "
                              "(spec.using(model, tokenizer))")
        model, tokenizer = spec.model_obj, spec.tokenizer_obj
    else:
        model, tokenizer = load_judge_model(spec)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
