"""A fit, stage by stage: pairs → activations → per-layer fit → artifact and report (cached)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from alignez_eval.adapters import model_adapter
from alignez_eval.editing.artifact import Edit
from alignez_eval.fitting.activations import pair_activations
from alignez_eval.fitting.cache import (
    fit_key,
    load_cached,
    model_fingerprint,
    resolve_cache_dir,
    store_cached,
)
from alignez_eval.fitting.layer_fit import fit_layers
from alignez_eval.fitting.outputs import write_outputs
from alignez_eval.fitting.pairs import PrefData, Queries, generate_pairs, identify_pairs
from alignez_eval.fitting.result import FitResult, assemble
from alignez_eval.fitting.settings import FitSettings

logger = logging.getLogger(__name__)


def run_fit(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: Queries | None,
    settings: FitSettings | None = None,
    *,
    pref_data: PrefData | None = None,
    cache_dir: str | os.PathLike[str] | None = "default",
    activations_path: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    adapter: dict[str, str] | None = None,
    progress: bool = True,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> FitResult:
    """The whole pipeline; `fit` is the short form returning only the `Edit`.

    `adapter` (alignez_eval.adapters.adapter_identity of a PEFT adapter applied to `model`, merged or
    not; default: the one the loaders marked on `model`) joins the model's identity: it keys the cache
    and is recorded in the artifact."""
    s = settings or FitSettings()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cache = resolve_cache_dir(cache_dir)
    ident = model_fingerprint(model)
    adapter = adapter if adapter is not None else model_adapter(model)
    if adapter:
        ident["adapter"] = dict(adapter)

    pairs = identify_pairs(queries, pref_data, s, ident, timings)
    key = fit_key(pairs.data_key, s, ident)
    if cache is not None:
        hit = load_cached(cache, key)
        if hit is not None:
            logger.info("fit cache hit %s (no generation, no activations)", key[:16])
            return hit

    generate_pairs(model, tokenizer, pairs, s, cache, ident, timings, on_batch=on_batch, progress=progress)
    kept = pairs.kept()

    t0 = time.perf_counter()
    acts = pair_activations(model, tokenizer, kept, s, ident, cache, activations_path, progress)
    timings["activations"] = time.perf_counter() - t0

    fits = fit_layers(s, acts)
    timings.update(fits.seconds)
    timings["total"] = time.perf_counter() - t_start

    result = assemble(s, pairs, kept, fits, hidden_size=acts.hidden_size, num_layers=acts.num_layers,
                      model_identity=ident, model_name=model_name or ident["name"], cache_key=key, timings=timings)
    if cache is not None:
        store_cached(cache, key, result)
    return result


def fit(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: Queries | None,
    settings: FitSettings | None = None,
    *,
    pref_data: PrefData | None = None,
    cache_dir: str | os.PathLike[str] | None = "default",
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Edit:
    """Fit an edit artifact on `model` from its own answers to `queries` (or from `pref_data`).

    `overrides` are FitSettings fields (method="caa", energy=0.8, …). `out` also writes the
    artifact, `*.pairs.jsonl` and `*.report.json` there. `cache_dir=None` disables caching.
    """
    s = (settings or FitSettings()).replace(**overrides)  # replace() with no overrides is the same object
    result = run_fit(model, tokenizer, queries, s, pref_data=pref_data, cache_dir=cache_dir, progress=progress)
    if out is not None:
        write_outputs(result, out)
    return result.edit
