"""Answers made elsewhere as a leaderboard system: a finished lm-eval run of any model type (vllm,
local-completions against an OpenAI-compatible server, plain hf, …) or an AlpacaEval model_outputs.json.

The run is cut to one dataset's prompts of this compare and written as an lm-eval samples file, so the
judge steps read it exactly as they read our own generations. An lm-eval run is matched by (task family,
doc id) — it must have run the same task (e.g. `--tasks alignez_embedded` with `--log_samples`); an
AlpacaEval file by exact instruction text. Prompts the run lacks are listed, never filled in.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_text
from alignez_eval.errors import DataError
from alignez_eval.hashing import sha256_file
from alignez_eval.judge.runs import load_run
from alignez_eval.judge.samples import task_family

logger = logging.getLogger(__name__)


def write_external_samples(src: Path, label: str, task: str, queries: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """Write `src`'s answers to `queries` as `out/samples_{task}_external.jsonl`; -> the step's meta."""
    run = load_run(src, name=label)
    family = task_family(task)
    if run.source == "alpaca_eval":
        by_text = {s.instruction: s for s in run.samples.values()}
        found = {q["id"]: by_text.get(q["instruction"]) for q in queries}
    else:
        found = {q["id"]: run.samples.get((family, str(q["id"]))) for q in queries}
    missing = [qid for qid, s in found.items() if s is None]
    if len(missing) == len(queries):
        held = sorted(run.families) if run.source != "alpaca_eval" else ["(instructions of an AlpacaEval file)"]
        how = "instruction text" if run.source == "alpaca_eval" else f"(task family {family!r}, doc id)"
        raise DataError(f"external run {label} ({src}) answers none of the {len(queries)} prompts of task {task}, "
                        f"matched by {how}; it holds {held}. Run the same task with --log_samples "
                        f"(lm_eval --tasks {task} --log_samples --output_path DIR), or give an AlpacaEval file of "
                        "the same instructions")
    if missing:
        logger.warning("external run %s lacks %d of %d prompts of %s (listed in the step's meta)", label,
                       len(missing), len(queries), task)
    lines = []
    for q in queries:
        s = found[q["id"]]
        if s is None:
            continue
        doc = {"id": q["id"], "instruction": q["instruction"], **({"dataset": s.dataset} if s.dataset else {})}
        lines.append(json.dumps({"doc_id": q["id"], "doc": doc, "arguments": [[s.prompt or q["instruction"]]],
                                 "resps": [[s.answer]], "filtered_resps": [s.answer], "filter": "none"},
                                ensure_ascii=False))
    path = out / f"samples_{task}_external.jsonl"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return {"task": task, "system": label, "n_samples": len(lines), "samples_sha256": sha256_file(path),
            "samples_file": path.name, "missing": missing,
            "source": {"path": str(src), "kind": run.source, "model_name": run.model_name,
                       "files": {t: str(f) for t, f in run.files.items()}, "notes": run.notes}}
