"""`alignez-hf fit=...`: fitting on the evaluation's own queries (test-time, no labels).

Called by the lm-eval adapter when the first requests arrive. Under data parallel every rank holds
only its share of the requests: the ranks pool their prompts, rank 0 fits, and the others read the
same artifact back from the content-addressed fit cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import torch

from alignez_eval.editing.artifact import Edit
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.fitting.outputs import format_report, write_outputs
from alignez_eval.fitting.run import run_fit
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.parallel import all_gather_text
from alignez_eval.queries import load_queries, query_id

logger = logging.getLogger(__name__)

# `fit_*` model_args that are not FitSettings fields.
ADAPTER_KEYS = ("cache_dir", "pref_data", "out")


def is_self(spec: Any) -> bool:
    """`fit=self` (lm-eval's parser may hand over `True`)."""
    return spec is True or (isinstance(spec, str) and spec.strip().lower() == "self")


def queries_from_requests(requests: list[Any]) -> list[dict[str, Any]]:
    """One query per distinct prompt among lm-eval requests: the doc's `instruction` when it has
    one (our tasks), else the request's context string. Ids are content hashes, so the same prompt
    set always gives the same fit cache key."""

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for req in requests:
        doc = getattr(req, "doc", None)
        text = doc.get("instruction") if isinstance(doc, dict) else None
        if not isinstance(text, str) or not text.strip():
            args = getattr(req, "args", None) or getattr(req, "arguments", None) or ()
            text = args[0] if args and isinstance(args[0], str) else None
        if not text or not text.strip() or text in seen:
            continue
        seen.add(text)
        category = doc.get("category", "") if isinstance(doc, dict) else ""
        out.append({"id": query_id(text), "instruction": text, "category": str(category or "")})
    return out


def fit_from_model_args(
    model: torch.nn.Module,
    tokenizer: Any,
    spec: Any,
    fit_args: Mapping[str, Any],
    requests: list[Any],
    model_name: str | None = None,
    queries: list[dict[str, Any]] | None = None,
) -> Edit:
    """`alignez-hf fit=self|QUERIES.jsonl|TASK` with `fit_<setting>=…` model_args (scalars only:
    lm-eval splits model_args on commas). `fit_cache_dir`, `fit_pref_data` and `fit_out` (write the
    artifact, pairs and report there too) are also accepted. Cached like every fit. `queries`
    overrides the prompts taken from `requests` (data parallel pools them across ranks)."""
    args = {k[len("fit_"):] if k.startswith("fit_") else k: v for k, v in fit_args.items()}
    extra = {k: args.pop(k) for k in ADAPTER_KEYS if k in args}
    settings = FitSettings.from_mapping(args)
    pref = extra.get("pref_data")
    if is_self(spec):
        # `queries` is given under data parallel: the prompts pooled from every rank's requests
        queries = queries_from_requests(requests) if queries is None else queries
        where = f"the evaluation's {len(queries)} distinct prompts"
    elif isinstance(spec, str) and spec.strip():
        try:
            queries = load_queries(spec.strip(), settings.limit)
        except ConfigError as exc:
            raise ConfigError(f"fit={spec}: {exc} — or pass fit=self to fit on the evaluation's own prompts") from exc
        where = spec
    else:
        raise ConfigError(f"fit={spec!r}: pass fit=self (the evaluation's own queries) or fit=QUERIES.jsonl|TASK")
    if not queries and pref is None:
        raise DataError(f"fit={spec}: no queries found in {where}")
    logger.info("alignez-hf fit=%s: fitting %s on %s", spec, settings.method, where if pref is None else pref)
    cache_dir = extra.get("cache_dir") or "default"
    result = run_fit(model, tokenizer, queries, settings, pref_data=pref, cache_dir=cache_dir, model_name=model_name)
    if extra.get("out"):
        write_outputs(result, extra["out"])
    logger.info("%s", format_report(result.report | {"cache_hit": result.cache_hit}))
    return result.edit


def fit_for_evaluation(
    model: torch.nn.Module,
    tokenizer: Any,
    spec: Any,
    fit_args: Mapping[str, Any],
    requests: list[Any],
    *,
    rank: int = 0,
    world_size: int = 1,
    accelerator: Any = None,
) -> Edit:
    """The edit of `fit=...` for this process's `requests`; with world_size > 1 every rank gets
    the one edit fitted on all ranks' prompts (`accelerator` carries the process group)."""
    if world_size == 1:
        return fit_from_model_args(model, tokenizer, spec, fit_args, requests)
    # A local fit=self would give each rank a different edit: the ranks pool their queries (the
    # same list everywhere), rank 0 fits, the others wait and read the same artifact from the
    # content-addressed fit cache.
    queries = None
    if is_self(spec):
        pooled = all_gather_text(accelerator, json.dumps(queries_from_requests(requests)))
        merged = {q["id"]: q for text in pooled for q in json.loads(text)}
        queries = [merged[k] for k in sorted(merged)]

    def run() -> Edit:
        return fit_from_model_args(model, tokenizer, spec, fit_args, requests, queries=queries)

    edit = None
    if rank == 0:
        try:
            edit = run()
        except Exception as exc:  # tell the waiting ranks, then fail here too
            all_gather_text(accelerator, f"{type(exc).__name__}: {exc}")
            raise
    status = all_gather_text(accelerator, "")
    if status[0]:
        raise ConfigError(f"rank 0 could not fit the edit ({status[0]}); see rank 0's log")
    return edit if edit is not None else run()
