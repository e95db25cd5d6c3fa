"""The judge's steps of a compare: the judge check, the agreement with a reference, and one judging
step per comparison, all sharing one load of an hf/rm judge model (kept until `free_judge`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_text
from alignez_eval.judge import judge_check
from alignez_eval.judge.agreement import (
    agreement_extra,
    is_agreement_file,
    load_agreement,
    load_reference,
)
from alignez_eval.judge.agreement_run import judge_agreement
from alignez_eval.judge.backends.loading import load_judge_model, resolve_model_path
from alignez_eval.judge.runs import load_run
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.compare_config import CompareConfig
from alignez_eval.pipeline.identity import model_identity
from alignez_eval.pipeline.plan import Comparison
from alignez_eval.pipeline.steps import StepCache, StepResult

logger = logging.getLogger(__name__)


class JudgeSteps:
    """The judge steps of a compare (`ComparePipeline.judging`): they record into its step cache and
    stats, judge its datasets (`variants`), and share one judgment cache and one judge load."""

    def __init__(self, cfg: CompareConfig, cache: StepCache, stats: dict[str, int],
                 variants: dict[str, tuple[str, str]], judge_cache: Path) -> None:
        self.cfg, self.cache, self.stats, self.variants = cfg, cache, stats, variants
        self.judge_cache = judge_cache
        self._judge_model: tuple[Any, Any] | None = None

    def judge_identity(self, spec: Any) -> dict[str, Any]:
        ident = {"spec": spec.identity()}
        if spec.backend in ("hf", "rm"):
            ident["model"] = model_identity(resolve_model_path(spec.model))
        return ident

    def loaded_judge(self, spec: Any) -> Any:
        """`spec` with its hf/rm model loaded once (and kept until `free_judge`)."""
        if spec.backend not in ("hf", "rm") or spec.model_obj is not None:
            return spec
        if self._judge_model is None:
            t0 = time.perf_counter()
            self._judge_model = load_judge_model(spec)
            self.stats["judge_loads"] = self.stats.get("judge_loads", 0) + 1
            logger.info("judge %s loaded in %.1f s", spec.model, time.perf_counter() - t0)
        return spec.using(*self._judge_model)

    def free_judge(self) -> None:
        if self._judge_model is not None:
            jm, self._judge_model = self._judge_model, None
            parts.free(jm)

    def judge_step(self, comp: Comparison, gens: dict[tuple[str, str], StepResult], spec: Any,
                   name: str | None = None) -> StepResult:
        datasets = list(self.variants)

        def sig(system: str) -> dict[str, str]:
            return {ds: gens[(system, ds)].meta["samples_sha256"] for ds in datasets}

        inputs = {"judge": self.judge_identity(spec), "margin": spec.margin, "length_debias": spec.length_debias,
                  "baseline": sig(comp.baseline),
                  "candidates": {c: sig(c) for c in comp.candidates}}

        def produce(out: Path) -> dict[str, Any]:
            baseline = merge_runs(comp.baseline, [load_run(gens[(comp.baseline, ds)].path) for ds in datasets])
            cands = {c: merge_runs(c, [load_run(gens[(c, ds)].path) for ds in datasets]) for c in comp.candidates}
            parts.judge(baseline, cands, self.loaded_judge(spec), out, self.judge_cache)
            calls = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("stats", {})
            self.stats["judge_steps"] = self.stats.get("judge_steps", 0) + 1
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(calls.get("calls", 0))
            return {"comparison": comp.name, "judge_stats": calls}

        return self.cache.run("judge", name or comp.name, inputs, produce)

    def judge_check_step(self, spec: Any) -> dict[str, Any] | None:
        if not self.cfg.judge_check:
            return None

        inputs = {"judge": self.judge_identity(spec), "n": self.cfg.judge_check_n}

        def produce(out: Path) -> dict[str, Any]:
            check = judge_check(self.loaded_judge(spec), n=self.cfg.judge_check_n, cache_path=self.judge_cache)
            # per-item verdicts stay in the step directory; the report shows the summary
            atomic_write_text(out / "judge_check.json", json.dumps(check, indent=2, default=str) + "\n")
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(check.get("stats", {}).get("calls", 0))
            return {"check": {k: v for k, v in check.items() if k not in ("items", "records")}}

        return self.cache.run("judge-check", "judge", inputs, produce).meta["check"]

    def judge_agreement_step(self, spec: Any) -> dict[str, Any] | None:
        """--judge-reference: a precomputed agreement.json is read; reference annotations are judged
        here (a cached step, sharing the judge load and the judgment cache). -> the report's summary."""
        if self.cfg.judge_reference is None:
            return None

        path = Path(self.cfg.judge_reference)
        if is_agreement_file(path):
            return agreement_extra(load_agreement(path))
        reference = load_reference(path)
        inputs = {"judge": self.judge_identity(spec), "margin": spec.margin, "length_debias": spec.length_debias,
                  "reference": reference.sha256,
                  "limit": self.cfg.judge_reference_limit, "seed": self.cfg.seed}

        def produce(out: Path) -> dict[str, Any]:
            result = judge_agreement(self.loaded_judge(spec), reference, out, cache_path=self.judge_cache,
                                     limit=self.cfg.judge_reference_limit, seed=self.cfg.seed)
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(result["stats"].get("calls", 0))
            return {"agreement": agreement_extra(result)}

        return self.cache.run("judge-agreement", "judge", inputs, produce).meta["agreement"]


def merge_runs(name: str, runs: list[Any]) -> Any:
    """One Run over several tasks (each task generated as its own cached step)."""

    samples: dict[Any, Any] = {}
    files: dict[str, Path] = {}
    notes: list[str] = []
    for r in runs:
        samples.update(r.samples)
        files.update(r.files)
        notes.extend(r.notes)
    first = runs[0]
    return dataclasses.replace(first, name=name, samples=samples, files=files, notes=notes)
