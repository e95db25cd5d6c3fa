"""The judging loop shared by `judge` and `judge-check`: pairs in, one verdict record per pair out.

Every raw judgment is looked up in the cache first; the missing ones go to the backend, and each
result is committed the moment it arrives. In single mode an answer's grade is keyed by the
answer alone, so the baseline is graded once per doc however many candidates there are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from alignez_eval.judge.backends import Backend, JudgeRequest, make_backend
from alignez_eval.judge.cache import JudgmentCache, judgment_key
from alignez_eval.judge.spec import JudgeSpec
from alignez_eval.judge.verdicts import ERROR, TIE, length_term, pairwise_verdict, single_verdict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairItem:
    """One doc to judge: the baseline's and the candidate's answers to the same instruction."""

    family: str
    doc_id: str
    instruction: str
    baseline: str
    candidate: str
    meta: tuple[tuple[str, Any], ...] = ()  # carried into the record (task names, degradation, ...)


def n_words(text: str) -> int:
    return len(text.split())


class Judge:
    def __init__(self, spec: JudgeSpec, cache: JudgmentCache | None = None, backend: Backend | None = None) -> None:
        self.spec = spec
        self.cache = cache
        self._backend = backend
        ident = spec.identity()
        self.prompt_tag = ident.get("prompt")
        self.spec_hash = spec.identity_hash()
        self.memory: dict[str, dict[str, Any]] = {}  # this session's results, also when there is no cache
        self.stats: dict[str, float] = {"requests": 0, "cache_hits": 0, "calls": 0, "call_errors": 0,
                                        "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}

    @property
    def backend(self) -> Backend:
        if self._backend is None:  # loading a model is expensive: only when something is not cached
            self._backend = make_backend(self.spec)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    # ---------------------------------------------------------------------------------------------
    def _request(self, kind: str, order: str, instruction: str, a: str, b: str = "") -> JudgeRequest:
        key = judgment_key(self.spec_hash, self.prompt_tag, instruction, a, b, order)
        return JudgeRequest(key=key, kind=kind, order=order, instruction=instruction, answer_a=a, answer_b=b)

    def requests_for(self, item: PairItem) -> dict[str, JudgeRequest]:
        if item.baseline.strip() == item.candidate.strip():
            return {}  # identical answers: a tie without asking
        if self.spec.mode == "pairwise":
            return {"AB": self._request("pair", "AB", item.instruction, item.baseline, item.candidate),
                    "BA": self._request("pair", "BA", item.instruction, item.candidate, item.baseline)}
        return {"baseline": self._request("grade", "single", item.instruction, item.baseline),
                "candidate": self._request("grade", "single", item.instruction, item.candidate)}

    def _fetch(self, requests: list[JudgeRequest], desc: str) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(r.key for r in requests))
        self.stats["requests"] += len(keys)
        found = {k: self.memory[k] for k in keys if k in self.memory}
        if self.cache is not None:
            found.update(self.cache.get_many([k for k in keys if k not in found]))
        self.stats["cache_hits"] += len(found)
        unique = {r.key: r for r in requests if r.key not in found}
        if unique:
            logger.info("%s: %d judgments cached, %d to make", desc, len(found), len(unique))
            bar = tqdm(total=len(unique), desc=f"judging {desc}", unit="judgment", leave=False)
            try:
                for req, res in self.backend.run(list(unique.values())):
                    self.stats["calls"] += 1
                    usage = res.get("usage") or {}
                    self.stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
                    self.stats["completion_tokens"] += usage.get("completion_tokens", 0)
                    self.stats["cost_usd"] += float(res.get("cost_usd") or 0.0)
                    if res.get("error"):
                        self.stats["call_errors"] += 1
                    found[req.key] = res
                    if not res.get("transient"):
                        self.memory[req.key] = res
                        if self.cache is not None:
                            self.cache.put(req.key, self.spec_hash, self.prompt_tag, req.order, res)
                    bar.update(1)
            finally:
                bar.close()
        return found

    def judge_pairs(self, items: list[PairItem], desc: str = "pairs") -> list[dict[str, Any]]:
        per_item = [self.requests_for(it) for it in items]
        results = self._fetch([r for reqs in per_item for r in reqs.values()], desc)
        margin = float(self.spec.margin or 0.0)
        beta = float(self.spec.length_debias or 0.0)
        records = []
        for item, reqs in zip(items, per_item, strict=True):
            raw = {name: results[req.key] for name, req in reqs.items()}
            if not reqs:
                verdict: dict[str, Any] = {"verdict": TIE, "error": None, "score": 0.0, "inconsistent": None}
            elif self.spec.mode == "pairwise":
                verdict = pairwise_verdict(raw["AB"], raw["BA"], use_probs=self.spec.uses_probabilities,
                                           margin=margin, length_debias=beta,
                                           length=length_term(item.baseline, item.candidate))
            else:
                verdict = single_verdict(raw["baseline"], raw["candidate"], margin=margin, length_debias=beta,
                                         length=length_term(item.baseline, item.candidate))
            records.append({
                "family": item.family,
                "doc_id": item.doc_id,
                **dict(item.meta),
                "mode": self.spec.mode,
                "verdict": verdict.pop("verdict"),
                **verdict,
                "identical": not reqs,
                "len_baseline": n_words(item.baseline),
                "len_candidate": n_words(item.candidate),
                "instruction": item.instruction,
                "baseline": item.baseline,
                "candidate": item.candidate,
                "judgments": raw,
            })
        n_err = sum(r["verdict"] == ERROR for r in records)
        if n_err:
            logger.warning("%s: %d of %d pairs could not be judged (excluded and counted as errors)", desc,
                           n_err, len(records))
        return records
