"""Stage 1 of a fit: the preference pairs — loaded from `pref_data`, or self-generated from queries.

The pairs' identity (`data_key`) is decided before any generation, so a fit-cache hit costs nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignez_eval.errors import DataError
from alignez_eval.fitting.prefdata import load_pref_pairs
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.hashing import sha256_json
from alignez_eval.selfpref.pipeline import normalize_queries, self_generate

PrefData = str | os.PathLike[str] | list[dict[str, Any]]
Queries = list[dict[str, Any]] | list[str]


@dataclass
class Pairs:
    """Where the pairs come from and, once generated or loaded, the pair records."""

    source: str  # "pref-data" | "self"
    data_key: str
    records: list[dict[str, Any]] = field(default_factory=list)
    generation: dict[str, Any] | None = None  # the self-generation header (None for pref-data)
    queries: list[Any] | None = None  # the queries to generate from, after --limit
    n_queries: int | None = None
    resumed: int = 0  # pairs read back from an interrupted generation

    def kept(self) -> list[dict[str, Any]]:
        """The pairs that survived the text filter; none at all is an error."""
        kept = [r for r in self.records if r["status"] == "kept"]
        if not kept:
            raise DataError(
                f"all {len(self.records)} pairs were dropped as empty or identical; nothing to fit on — "
                "use more queries, other --keywords, or a larger --answer-tokens"
            )
        return kept


def identify_pairs(
    queries: Queries | None,
    pref_data: PrefData | None,
    s: FitSettings,
    model_identity: dict[str, Any],
    timings: dict[str, float],
) -> Pairs:
    """Ground-truth pairs are loaded here (their content is their identity); self-generated ones
    are only named, by the generation settings and the queries."""
    if pref_data is not None:
        t0 = time.perf_counter()
        records = (load_pref_pairs(pref_data, s.pref_limit) if not isinstance(pref_data, list)
                   else [dict(r) for r in pref_data])
        timings["load_pref_data"] = time.perf_counter() - t0
        data_key = sha256_json({"pref": [[r["id"], r["query"], r["answers"]] for r in records]})
        return Pairs(source="pref-data", data_key=data_key, records=records)
    if queries is None:
        raise DataError("no queries and no --pref-data; pass queries to self-generate pairs from, or real pairs")
    qlist = list(queries)[: s.limit] if s.limit else list(queries)
    items = normalize_queries(qlist)
    header = s.selfpref().header(model_identity)
    data_key = sha256_json({"gen": header, "queries": [[i, t] for i, t, _ in items]})
    return Pairs(source="self", data_key=data_key, generation=header, queries=qlist, n_queries=len(items))


def generate_pairs(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Pairs,
    s: FitSettings,
    cache: Path | None,
    model_identity: dict[str, Any],
    timings: dict[str, float],
    *,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> None:
    """Self-generate the pairs (resumable through <cache>/selfpref); loaded pairs need nothing."""
    if pairs.source != "self":
        return
    store = cache / "selfpref" / f"{pairs.data_key[:24]}.jsonl" if cache is not None else None
    pairs.records, stats = self_generate(
        model, tokenizer, pairs.queries, s.selfpref(), store, model_id=model_identity, on_batch=on_batch,
        progress=progress,
    )
    timings["generate_characteristics"] = stats.seconds_characteristics
    timings["generate_answers"] = stats.seconds_answers
    pairs.resumed = stats.resumed
