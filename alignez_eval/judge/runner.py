"""`judge_runs`: judge candidate runs against a baseline run; write judgments and a manifest.

Output directory layout (read by `alignez_eval.report`):
  manifest.json         judge spec, prompt, runs, pairing (missing/extra docs), counts, calls, cost
  <candidate>.jsonl     one record per paired doc (verdict, score, lengths, raw judgments)
  cache.sqlite          raw judgments (unless another cache path is given)
Files are written atomically; the cache is committed per judgment, so a killed run resumes.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from alignez_eval import __version__
from alignez_eval.atomic import atomic_write_text
from alignez_eval.errors import DataError
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.runs import Run, pair_runs
from alignez_eval.judge.spec import SCORING_BACKENDS, JudgeSpec, parse_judge_spec

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "alignez-eval-judgments/1"


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name).strip("_") or "candidate"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _versions() -> dict[str, str]:
    # Package metadata, not imports: importing torch only to print its version costs seconds.
    out = {"alignez_eval": __version__}
    for dist in ("lm_eval", "transformers", "torch", "httpx"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def judge_runs(baseline: Run, candidates: dict[str, Run], spec: JudgeSpec | str | dict[str, Any],
               out_dir: str | Path, cache_path: str | Path | None = None, limit: int | None = None,
               seed: int = 0) -> Path:
    """Judge every candidate against the baseline on their shared (task family, doc id)s.
    With `limit`, a seeded random sample of that many paired docs (the same docs for every
    candidate that shares them), kept in doc order; the manifest records it.
    Returns `out_dir`, which holds the manifest and one judgments file per candidate."""
    spec = parse_judge_spec(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not candidates:
        raise DataError("no candidate runs to judge; pass at least one --candidate RUN")
    files = {name: f"{safe_name(name)}.jsonl" for name in candidates}
    if len(set(files.values())) != len(files):
        raise DataError(f"candidate names {sorted(candidates)} collide as file names; name them distinctly (NAME=RUN)")
    prompt = spec.load_prompt() if spec.backend not in SCORING_BACKENDS else None
    started = time.time()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "judge": spec.public_dict(),
        "judge_description": spec.describe(),
        "judge_identity": spec.identity(),
        "mode": spec.mode,
        "prompt": None if prompt is None else {"id": prompt.id, "version": prompt.version, "tag": prompt.tag},
        "baseline": baseline.describe(),
        "candidates": {},
        "versions": _versions(),
    }
    with JudgmentCache(cache_path or out_dir / "cache.sqlite") as cache:
        judge = Judge(spec, cache)
        try:
            for name, run in candidates.items():
                pairing = pair_runs(baseline, run)
                keys = sample_keys(pairing.keys, limit, seed)
                items = []
                for key in keys:
                    b, c = baseline.samples[key], run.samples[pairing.candidate_key(key)]
                    if b.instruction != c.instruction:
                        logger.debug("%s %s: instructions differ between runs; the baseline's is used", name, key)
                    items.append(PairItem(family=key[0], doc_id=key[1], instruction=b.instruction,
                                          baseline=b.answer, candidate=c.answer,
                                          meta=(("task_baseline", b.task), ("task_candidate", c.task))))
                records = judge.judge_pairs(items, desc=name)
                write_jsonl(out_dir / files[name], records)
                counts = Counter(r["verdict"] for r in records)
                manifest["candidates"][name] = {
                    "file": files[name],
                    "run": run.describe(),
                    "pairing": {**pairing.summary(), "judged": len(keys), "limit": limit, "seed": seed},
                    "counts": dict(counts),
                }
                logger.info("%s vs %s: %s", name, baseline.name, dict(counts))
        finally:
            judge.close()
        manifest["cache"] = str(Path(cache.path).resolve())
    manifest["stats"] = {**judge.stats, "wall_s": round(time.time() - started, 2)}
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    return out_dir


def sample_keys(keys: list[Any], limit: int | None, seed: int = 0) -> list[Any]:
    """A seeded random `limit` of `keys`, in their original order (all of them without a limit).
    Sampled by rank of a seeded permutation of the sorted keys, so the sample of a doc set does not
    depend on which candidate it is paired with."""
    if limit is None or limit >= len(keys):
        return list(keys)
    if limit < 1:
        raise DataError(f"--limit {limit} judges nothing; pass a positive number of docs")
    import random

    order = sorted(keys)
    random.Random(seed).shuffle(order)
    chosen = set(order[:limit])
    return [k for k in keys if k in chosen]


def load_judgments(judgments_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """-> (manifest, {candidate name: records})."""
    judgments_dir = Path(judgments_dir)
    path = judgments_dir / MANIFEST
    if not path.is_file():
        raise DataError(f"{judgments_dir} has no {MANIFEST}; pass a directory written by `alignez-eval judge --out`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    records = {name: read_jsonl(judgments_dir / info["file"]) for name, info in manifest["candidates"].items()}
    return manifest, records
