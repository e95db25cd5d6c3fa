"""Self-generated preference pairs: characteristics, then paired answers, per batch of queries.

For each query q the model writes what a {kw_pos} and a {kw_neg} assistant's answer "should" do,
then answers q under each persona. One record per query (both characteristics, both answers, raw
and cleaned, degeneracy flags, kept/dropped and why) is appended to a resumable JSONL store.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.queries import query_id
from alignez_eval.selfpref.clean import clean_characteristics, clean_text, judge_pair
from alignez_eval.selfpref.generate import (
    Sampling,
    check_lengths,
    frame,
    generate_texts,
    uses_chat_template,
)
from alignez_eval.selfpref.store import PairStore
from alignez_eval.selfpref.templates import (
    Keywords,
    answer_prompts,
    characteristics_prompts,
    parse_keywords,
    templates,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfPrefSettings:
    keywords: str = "helpful"
    char_tokens: int = 50
    answer_tokens: int = 200
    batch_size: int = 16
    chat: str = "auto"
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        parse_keywords(self.keywords)
        for name in ("char_tokens", "answer_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    def header(self, model_id: dict[str, Any] | str) -> dict[str, Any]:
        """What a pairs file was produced by (also the content the generation cache key hashes)."""
        kw = parse_keywords(self.keywords)
        return {
            "model": model_id,
            "keywords": kw.as_list(),
            "char_tokens": self.char_tokens,
            "answer_tokens": self.answer_tokens,
            "batch_size": self.batch_size,
            "chat": self.chat,
            "sampling": asdict(self.sampling),
            "templates_version": templates()["version"],
        }


@dataclass
class GenStats:
    seconds_characteristics: float = 0.0
    seconds_answers: float = 0.0
    generated: int = 0  # queries generated in this call (not resumed)
    resumed: int = 0  # queries found already finished in the store


def _query_text(q: dict[str, Any] | str) -> tuple[str, str, str]:
    if isinstance(q, str):
        return query_id(q), q, ""
    text = q.get("instruction") or q.get("query") or q.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"query {q.get('id', '?')!r} has no text (instruction/query/prompt)")
    qid = q.get("id")
    if qid is None or str(qid) == "":
        qid = query_id(text)
    return str(qid), text, str(q.get("category") or "")


def normalize_queries(queries: list[dict[str, Any]] | list[str]) -> list[tuple[str, str, str]]:
    """(id, text, category) per query; refuses an empty list and duplicate ids."""
    out = [_query_text(q) for q in queries]
    if not out:
        raise DataError("no queries to fit on; pass a non-empty query file or task (--queries)")
    seen: set[str] = set()
    for qid, _, _ in out:
        if qid in seen:
            raise DataError(f"query id {qid!r} appears twice; ids must be unique")
        seen.add(qid)
    return out


def make_record(
    qid: str, text: str, category: str, kw: Keywords, chars_raw: tuple[str, str], answers_raw: tuple[str, str],
    batch: int, seed: int,
) -> dict[str, Any]:
    pos_c, rp = clean_characteristics(chars_raw[0])
    neg_c, rn = clean_characteristics(chars_raw[1])
    pos_a, ra = clean_text(answers_raw[0])
    neg_a, rb = clean_text(answers_raw[1])
    flags = judge_pair(text, pos_a, neg_a, repeats_removed=rp + rn + ra + rb, keywords=(kw.pos, kw.neg))
    return {
        "id": qid,
        "query": text,
        "category": category,
        "keywords": kw.as_list(),
        "characteristics": {"pos": pos_c, "neg": neg_c},
        "answers": {"pos": pos_a, "neg": neg_a},
        "raw": {"characteristics": list(chars_raw), "answers": list(answers_raw)},
        "flags": {
            "echo_pos": flags.echo_pos,
            "echo_neg": flags.echo_neg,
            "echo_instruction": flags.echo_instruction,
            "near_identical": flags.near_identical,
            "loops_collapsed": flags.loops_collapsed,
            "degenerate": flags.degenerate,
        },
        "status": "dropped" if flags.drop_reason else "kept",
        "reason": flags.drop_reason,
        "batch": batch,
        "seed": seed,
    }


def self_generate(
    model: Any,
    tokenizer: Any,
    queries: list[dict[str, Any]] | list[str],
    settings: SelfPrefSettings,
    store_path: str | Path | None,
    model_id: dict[str, Any] | str = "",
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], GenStats]:
    """Generate (or resume) one pair per query; records come back in query order.

    `on_batch(batch_index, records)` runs after each batch is safely on disk (used to report progress
    and, in tests, to interrupt a run for real).
    """
    items = normalize_queries(queries)
    kw = parse_keywords(settings.keywords)
    chat = uses_chat_template(tokenizer, settings.chat)
    header = settings.header(model_id)
    store = PairStore(store_path, header) if store_path is not None else None
    memory: dict[str, dict[str, Any]] = {}
    stats = GenStats()
    todo = [it for it in items if store is None or not store.done(it[0])]
    stats.resumed = len(items) - len(todo)
    if stats.resumed:
        logger.info("resuming self-generation: %d of %d queries already done (%s)",
                    stats.resumed, len(items), store_path)

    # Fail before any generation if a query cannot fit: the answer prompt (with characteristics of at
    # most char_tokens) plus answer_tokens must fit in the context.
    framed: list[str] = []
    framed_ids: list[str] = []
    for qid, text, _ in todo:
        for p in answer_prompts(text, kw, "", ""):
            framed.append(frame(tokenizer, p, chat))
            framed_ids.append(qid)
    check_lengths(tokenizer, model, framed, framed_ids, settings.char_tokens + settings.answer_tokens + 8, chat)

    bs = settings.batch_size
    sampling = settings.sampling
    n_batches = (len(todo) + bs - 1) // bs
    bar = tqdm(total=len(todo), desc="self-generating pairs", unit="query", disable=not progress)
    for b in range(n_batches):
        chunk = todo[b * bs:(b + 1) * bs]
        # Seed per batch from the first query id, so a resumed run does not replay batch 0's stream.
        seed = (sampling.seed * 1_000_003 + _stable_int(chunk[0][0])) % (2**31 - 1)
        t0 = time.perf_counter()
        cprompts: list[str] = []
        for _, text, _ in chunk:
            cprompts.extend(characteristics_prompts(text, kw))
        craw = generate_texts(model, tokenizer, cprompts, settings.char_tokens, sampling, seed, chat)
        t1 = time.perf_counter()
        aprompts: list[str] = []
        for j, (_, text, _) in enumerate(chunk):
            pos_c, _ = clean_characteristics(craw[2 * j])
            neg_c, _ = clean_characteristics(craw[2 * j + 1])
            aprompts.extend(answer_prompts(text, kw, pos_c, neg_c))
        araw = generate_texts(model, tokenizer, aprompts, settings.answer_tokens, sampling, seed + 1, chat)
        t2 = time.perf_counter()
        stats.seconds_characteristics += t1 - t0
        stats.seconds_answers += t2 - t1
        recs = [
            make_record(qid, text, cat, kw, (craw[2 * j], craw[2 * j + 1]), (araw[2 * j], araw[2 * j + 1]), b, seed)
            for j, (qid, text, cat) in enumerate(chunk)
        ]
        if store is not None:
            store.append(recs)
        for r in recs:
            memory[r["id"]] = r
        stats.generated += len(recs)
        bar.update(len(chunk))
        if on_batch is not None:
            on_batch(b, recs)
    bar.close()
    source = store.records if store is not None else {}
    out = []
    for qid, _, _ in items:
        rec = memory.get(qid) or source.get(qid)
        if rec is None:  # pragma: no cover — every query was either resumed or generated above
            raise DataError(f"query {qid!r} has no generated record")
        out.append({k: v for k, v in rec.items() if k != "kind"})
    return out, stats


def _stable_int(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:4], "big")


def degeneracy(records: list[dict[str, Any]]) -> dict[str, float | int]:
    """Rates over generated pairs: echoes, near-identical pairs, loops collapsed, drops."""
    n = len(records)
    if n == 0:
        return {"n": 0, "rate": 0.0}

    def rate(pred: Callable[[dict[str, Any]], bool]) -> float:
        return round(sum(1 for r in records if pred(r)) / n, 4)

    return {
        "n": n,
        "rate": rate(lambda r: bool(r["flags"]["degenerate"])),
        "echo_pos": rate(lambda r: bool(r["flags"]["echo_pos"])),
        "echo_neg": rate(lambda r: bool(r["flags"]["echo_neg"])),
        "echo_instruction": rate(lambda r: bool(r["flags"].get("echo_instruction"))),
        "near_identical": rate(lambda r: bool(r["flags"]["near_identical"])),
        "loops_collapsed": rate(lambda r: bool(r["flags"]["loops_collapsed"])),
        "dropped_empty": sum(1 for r in records if r.get("reason") == "empty"),
        "dropped_identical": sum(1 for r in records if r.get("reason") == "identical"),
    }
