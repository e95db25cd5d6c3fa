"""Reading lm-eval runs (`--output_path D --log_samples`) into pairable samples.

lm-eval 0.4.13 writes `D/<sanitized model name>/results_<ts>.json` and, per task,
`D/<sanitized model name>/samples_<task>_<ts>.jsonl` (one record per doc and filter, with `doc_id`,
`doc`, `arguments`, `resps`, `filtered_resps`, `filter`, ...). When `D` ends in `.json`, the files
sit next to it instead (`D_<ts>.json`). A RUN may be given as `D`, the model subdirectory, or one
results JSON (which pins the timestamp).

Samples pair across runs by (task family, doc id): the family is the task name without a trailing
`_base`, so `alignez_x_base` (base-model prompt format) pairs with `alignez_x` (chat format).

A RUN may also be an AlpacaEval `model_outputs.json` (a JSON list; see `alignez_eval.judge.alpaca_eval`).
A pair with such a run on either side pairs by exact instruction text instead, since the file has no
task or doc ids of ours.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval.errors import DataError
from alignez_eval.judge.alpaca_eval import is_alpaca_eval_data, load_alpaca_eval
from alignez_eval.judge.samples import BASE_SUFFIX, Run, Sample, task_family

__all__ = ["BASE_SUFFIX", "Run", "Sample", "load_run", "pair_runs", "task_family"]  # Run/Sample re-exported

logger = logging.getLogger(__name__)

def _file_task_and_ts(path: Path) -> tuple[str, str]:
    # Same parsing as lm_eval.utils.get_file_task_name / get_file_datetime: the timestamp has no "_".
    stem = path.name[: -len(".jsonl")]
    body = stem[len("samples_"):]
    task, _, ts = body.rpartition("_")
    return task, ts


def _results_ts(path: Path) -> str:
    return path.stem.rpartition("_")[2]


def _resolve(path: Path) -> tuple[Path, str | None, Path | None]:
    """-> (directory holding samples files, pinned timestamp or None, results JSON or None)."""
    if not path.exists():
        raise DataError(f"run {path} does not exist; pass an lm-eval --output_path directory, its model "
                        "subdirectory, or a results_*.json file")
    if path.is_file():
        if path.suffix != ".json":
            raise DataError(f"run {path} is a file but neither a results JSON nor an AlpacaEval model_outputs.json; "
                            "pass the lm-eval output directory instead")
        return path.parent, _results_ts(path), path
    if any(path.glob("samples_*.jsonl")):
        return path, None, None
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob("samples_*.jsonl")))
    if len(subdirs) == 1:
        return subdirs[0], None, None
    if not subdirs:
        raise DataError(f"no samples_*.jsonl under {path}; run lm-eval with --log_samples --output_path {path}")
    raise DataError(f"{path} holds runs of several models ({', '.join(d.name for d in subdirs)}); "
                    "pass one model subdirectory as the RUN")


def _answer(record: dict[str, Any]) -> str:
    resp: Any = record.get("filtered_resps")
    if resp is None:
        resp = record.get("resps")
    # generate_until logs [answer] (filtered) or [[answer]] (raw); unwrap to the string.
    while isinstance(resp, list):
        if not resp:
            return ""
        resp = resp[0]
    return "" if resp is None else str(resp)


def _prompt(record: dict[str, Any]) -> str:
    args = record.get("arguments")
    if isinstance(args, dict):  # sanitized form written by EvaluationTracker
        first = args.get("gen_args_0", {})
        return str(first.get("arg_0", ""))
    if isinstance(args, list) and args:
        first = args[0]
        return str(first[0] if isinstance(first, list | tuple) else first)
    return ""


def _load_samples_file(task: str, path: Path, notes: list[str]) -> dict[tuple[str, str], Sample]:
    family = task_family(task)
    out: dict[tuple[str, str], Sample] = {}
    filters_seen: list[str] = []
    fallback_ids = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no} is not valid JSON ({exc}); re-run lm-eval for task {task}") from exc
            filt = str(rec.get("filter", "none"))
            if filt not in filters_seen:
                filters_seen.append(filt)
            if filt != filters_seen[0]:
                continue  # one record per doc and filter: keep the first filter's answers
            doc = rec.get("doc") or {}
            if isinstance(doc, dict) and doc.get("id") is not None:
                doc_id = str(doc["id"])
            else:
                fallback_ids += 1
                doc_id = str(rec.get("doc_id"))
            instruction = doc.get("instruction") if isinstance(doc, dict) else None
            dataset = doc.get("dataset") if isinstance(doc, dict) else None
            prompt = _prompt(rec)
            sample = Sample(task=task, family=family, doc_id=doc_id,
                            instruction=str(instruction) if instruction is not None else prompt,
                            answer=_answer(rec), prompt=prompt, dataset=dataset if isinstance(dataset, str) else "")
            if sample.key in out:
                raise DataError(f"{path} has doc id {doc_id!r} twice; doc ids must be unique within a task")
            out[sample.key] = sample
    if fallback_ids:
        msg = (f"task {task}: {fallback_ids} docs have no doc['id']; paired by lm-eval's doc_id, which only "
               "matches across runs when both used the same dataset order and --limit")
        logger.warning(msg)
        notes.append(msg)
    if len(filters_seen) > 1:
        msg = f"task {task}: several filters {filters_seen}; used answers of filter {filters_seen[0]!r}"
        logger.warning(msg)
        notes.append(msg)
    return out


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"run {path} is not readable JSON ({exc}); pass an lm-eval results_*.json, an AlpacaEval "
                        "model_outputs.json or an lm-eval output directory") from exc


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Load an lm-eval run, or an AlpacaEval model_outputs.json. Per task, the newest samples file
    is used (or the one matching a given results JSON); the choice is logged and kept in `Run.notes`."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        data = _json_file(path)
        if is_alpaca_eval_data(data):
            return load_alpaca_eval(path, data, name=name)
    directory, pinned_ts, results_file = _resolve(path)
    notes: list[str] = []
    by_task: dict[str, list[tuple[str, Path]]] = {}
    for f in directory.glob("samples_*.jsonl"):
        task, ts = _file_task_and_ts(f)
        by_task.setdefault(task, []).append((ts, f))
    chosen: dict[str, Path] = {}
    for task, files in sorted(by_task.items()):
        if pinned_ts is not None:
            match = [f for ts, f in files if ts == pinned_ts]
            if match:
                chosen[task] = match[0]
            continue
        files.sort()
        chosen[task] = files[-1][1]
        if len(files) > 1:
            msg = (f"task {task}: {len(files)} timestamps in {directory}; using the newest "
                   f"({files[-1][0]}), pass a results_*.json to pick another")
            logger.info(msg)
            notes.append(msg)
    if not chosen:
        raise DataError(f"no samples file of {results_file or directory} found; run lm-eval with --log_samples")

    model_name = None
    results_json = results_file
    if results_json is None:
        cands = sorted(directory.glob("results_*.json"))
        results_json = cands[-1] if cands else None
    if results_json is not None:
        try:
            model_name = json.loads(results_json.read_text(encoding="utf-8")).get("model_name")
        except (OSError, json.JSONDecodeError):
            model_name = None

    samples: dict[tuple[str, str], Sample] = {}
    owner: dict[str, str] = {}
    for task, f in chosen.items():
        fam = task_family(task)
        if fam in owner:
            raise DataError(f"run {directory} has both {owner[fam]} and {task} (same dataset in two prompt "
                            "formats); keep one per run (split into separate --output_path runs)")
        owner[fam] = task
        samples.update(_load_samples_file(task, f, notes))
    run_name = name or directory.name
    return Run(name=run_name, path=directory, samples=samples, files=chosen, model_name=model_name, notes=notes)


@dataclass
class Pairing:
    """Docs judged, and docs that one side lacks (reported, never silently dropped)."""

    keys: list[tuple[str, str]]  # baseline keys; judgments are recorded under these
    missing: list[tuple[str, str]]  # in the baseline, not in the candidate
    extra: list[tuple[str, str]]  # in the candidate, not in the baseline
    by: str = "key"  # "key": (task family, doc id); "instruction": exact instruction text
    # baseline key -> candidate key where they differ (pairing by instruction text)
    candidate_keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def candidate_key(self, key: tuple[str, str]) -> tuple[str, str]:
        return self.candidate_keys.get(key, key)

    def summary(self) -> dict[str, Any]:
        return {
            "paired": len(self.keys),
            "paired_by": self.by,
            "missing_in_candidate": [list(k) for k in self.missing],
            "extra_in_candidate": [list(k) for k in self.extra],
        }


def _sort_key(k: tuple[str, str]) -> tuple[str, int, str]:
    fam, doc = k
    return (fam, int(doc) if doc.lstrip("-").isdigit() else 0, doc)


def _by_instruction(run: Run) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for key, s in run.samples.items():
        out.setdefault(s.instruction, []).append(key)
    return out


def _pair_by_instruction(baseline: Run, candidate: Run) -> Pairing:
    """Exact instruction text pairs the docs. An instruction asked by several docs of one run (the
    same prompt in two tasks of an lm-eval run) has no single partner: that is an error when the
    other run asks it too, and such docs count as unmatched otherwise."""
    base_ix, cand_ix = _by_instruction(baseline), _by_instruction(candidate)
    keys, mapping = [], {}
    for text, bkeys in base_ix.items():
        ckeys = cand_ix.get(text)
        if ckeys is None:
            continue
        for run, ks in ((baseline, bkeys), (candidate, ckeys)):
            if len(ks) > 1:
                shown = ", ".join(f"{f} doc {d}" for f, d in ks[:3])
                raise DataError(f"run {run.name} asks the instruction {text[:60]!r} in {len(ks)} docs ({shown}); "
                                "pairing with an AlpacaEval file needs one doc per instruction - give a run of "
                                "one task (e.g. lm-eval --tasks alignez_alpaca_eval)")
        keys.append(bkeys[0])
        if ckeys[0] != bkeys[0]:
            mapping[bkeys[0]] = ckeys[0]
    return Pairing(
        keys=sorted(keys, key=_sort_key),
        missing=sorted((k for t, ks in base_ix.items() if t not in cand_ix for k in ks), key=_sort_key),
        extra=sorted((k for t, ks in cand_ix.items() if t not in base_ix for k in ks), key=_sort_key),
        by="instruction",
        candidate_keys=mapping,
    )


def pair_runs(baseline: Run, candidate: Run) -> Pairing:
    """Pair by (task family, doc id), or by exact instruction text when either run is an AlpacaEval
    file. Docs of one side only are listed in the Pairing and logged, never dropped silently."""
    by_instruction = "alpaca_eval" in (baseline.source, candidate.source)
    if by_instruction:
        pairing = _pair_by_instruction(baseline, candidate)
    else:
        base_keys, cand_keys = set(baseline.samples), set(candidate.samples)
        pairing = Pairing(
            keys=sorted(base_keys & cand_keys, key=_sort_key),
            missing=sorted(base_keys - cand_keys, key=_sort_key),
            extra=sorted(cand_keys - base_keys, key=_sort_key),
        )
    if pairing.missing or pairing.extra:
        logger.warning("%s vs %s: %d paired by %s, %d docs only in the baseline, %d only in the candidate "
                       "(listed in the manifest)", candidate.name, baseline.name, len(pairing.keys), pairing.by,
                       len(pairing.missing), len(pairing.extra))
    if not pairing.keys:
        what = "instruction text" if by_instruction else "(task family, doc id)"
        raise DataError(f"runs {baseline.name} and {candidate.name} share no {what}; "
                        f"baseline families {baseline.families}, candidate families {candidate.families}")
    return pairing
