"""Query lists for `fit --queries` and `alignez-eval queries`.

A spec is either a JSONL file (one object per line with `instruction`, `query` or `prompt`; `id` and
`category` optional) or the name of one of our lm-eval tasks, whose docs are loaded through lm-eval's
TaskManager with our include path and the task's own processing, so the queries a fit sees are exactly
the instructions the judge later sees.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.lm_eval_compat import load_yaml, task_config, task_yaml_path
from alignez_eval.package import tasks_path

logger = logging.getLogger(__name__)

# Fields every processed task document must carry to serve as a query (and to pair answers).
QUERY_DOC_FIELDS: tuple[str, ...] = ("id", "instruction")
# Field names accepted for the query text, in order of preference.
TEXT_FIELDS: tuple[str, ...] = ("instruction", "query", "prompt")


def query_id(text: str) -> str:
    """Stable id of a query without one: a content hash, so the same text gets the same id in every run."""
    return "q-" + hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".jsonl", ".json", ".ndjson")) or "/" in spec or "\\" in spec or Path(spec).exists()


def _text_of(obj: dict[str, Any]) -> str | None:
    for field in TEXT_FIELDS:
        value = obj.get(field)
        if isinstance(value, str) and value.strip():
            return value
        # Chat-style prompts (a list of turns) use the first user turn, as the task loaders do.
        if isinstance(value, list) and value and isinstance(value[0], str) and value[0].strip():
            return value[0]
    return None


def _category_of(obj: dict[str, Any]) -> str:
    value = obj.get("category", "")
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def load_jsonl_queries(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read a query JSONL file into dicts with `id`, `instruction`, `category` (other fields kept)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"query file {str(path)!r} does not exist; pass an existing JSONL file or a task name "
                        "(see `alignez-eval queries alignez_embedded --limit 5`)")
    if path.is_dir():
        raise DataError(f"query spec {str(path)!r} is a directory; pass a JSONL file with one query per line")
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                "each line must be one JSON object such as {\"instruction\": \"...\"}") from exc
            if isinstance(obj, str):
                obj = {"instruction": obj}
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}; "
                                "write one object per line such as {\"instruction\": \"...\"}")
            text = _text_of(obj)
            if text is None:
                raise DataError(f"{path}:{lineno}: no non-empty {' / '.join(TEXT_FIELDS)} field; "
                                "add the query text under \"instruction\"")
            rec = dict(obj)
            rec["instruction"] = text
            rec["category"] = _category_of(obj)
            given = obj.get("id")
            rec["id"] = str(given) if given is not None and str(given) != "" else query_id(text)
            if rec["id"] in seen:
                if given is not None:
                    raise DataError(f"{path}:{lineno}: id {rec['id']!r} already used on line {seen[rec['id']]}; "
                                    "ids must be unique (or leave `id` out to use a content hash)")
                # The same text twice without explicit ids: keep both, with a deterministic suffix.
                n = 2
                while f"{rec['id']}-{n}" in seen:
                    n += 1
                rec["id"] = f"{rec['id']}-{n}"
            seen[rec["id"]] = lineno
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise DataError(f"query file {str(path)!r} is empty; write one JSON object per line with an "
                        "\"instruction\" field")
    return out


def load_queries(spec: str, limit: int | None = None, *, data_files: str | dict[str, str] | None = None,
                 include_path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Queries from a JSONL file or one of our lm-eval tasks (or a task under `include_path`).

    Every returned dict has at least `id` (str), `instruction` (str) and `category` (str, "" if none).
    `data_files` (tasks only) reads a local copy of the task's dataset split instead of the hub.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of queries, got {limit}")
    if _looks_like_path(spec):
        if data_files is not None:
            raise ConfigError("data_files applies to task names, not to a JSONL query file")
        return load_jsonl_queries(spec, limit)
    return load_task_queries(spec, limit, data_files, include_path)


def _task_manager(include_path: tuple[str, ...] = ()):  # -> lm_eval.tasks.TaskManager (lazy: slow import)
    # lazy: lm_eval.tasks costs 2.9 s to import (measured on AMD EPYC, 2 cores)
    from lm_eval.tasks import TaskManager

    # Only our directory (then the user's): indexing lm-eval's own few thousand YAMLs would add
    # seconds for nothing.
    return TaskManager(include_path=[tasks_path(), *include_path], include_defaults=False)


def _override_data(cfg: dict[str, Any], data_files: str | dict[str, str]) -> dict[str, Any]:
    """The task's config reading local files instead of the hub, keeping every other setting."""
    split = cfg.get("test_split") or cfg.get("validation_split")
    files = {split: str(data_files)} if isinstance(data_files, (str, Path)) else {k: str(v) for k, v in data_files.items()}
    out = dict(cfg)
    out.pop("custom_dataset", None)
    out.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
    return out


def load_task_docs(task: str, data_files: str | dict[str, str] | None = None,
                   include_path: tuple[str, ...] = ()):  # -> lm_eval Task
    """Build one of our lm-eval tasks (docs loaded and processed) through lm-eval's TaskManager.

    `data_files` (a path, or {split: path}) reads a local JSON/JSONL copy of the dataset instead of
    the hub, through the same YAML and processing: for offline mirrors and tests.
    """
    tm = _task_manager(tuple(include_path))
    names = [n for n in tm.all_subtasks if n.startswith("alignez_") or include_path]
    if task not in tm.all_tasks:
        close = difflib.get_close_matches(task, names, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(sorted(names))}"
        raise ConfigError(f"unknown task {task!r} (and no such file); {hint}")
    if task not in tm.all_subtasks:
        cfg = task_config(tm, task)
        members = [m if isinstance(m, str) else str(m.get("task", m)) for m in cfg.get("task", [])]
        raise ConfigError(f"{task!r} is a group, not a task; pass one of its tasks, e.g. {', '.join(members[:4])}")
    spec: str | dict[str, Any] = task
    if data_files is not None:
        spec = _override_data(load_yaml(task_yaml_path(tm, task), resolve_func=True), data_files)
    # lazy: only for a user's own templates (0.13 s), most runs never need it
    import jinja2

    try:
        return tm.load([spec])["tasks"][task]
    except jinja2.TemplateError as exc:  # lm-eval renders the prompt of the first doc while building
        raise DataError(f"task {task!r}: its prompt template fails on its documents ({exc}); each processed "
                        f"document needs the fields the template uses, and {' and '.join(QUERY_DOC_FIELDS)} "
                        "for alignez-eval") from exc
    except (ConnectionError, OSError, ValueError) as exc:
        if data_files is None and "alignez_embedded" not in task:
            raise DataError(f"could not load the dataset of {task!r} ({type(exc).__name__}: {exc}); without "
                            "Hugging Face hub access use alignez_embedded, a JSONL file, or a local copy "
                            "of the split (`alignez-eval queries TASK --data-files PATH`, "
                            "load_task_docs(task, data_files=PATH))") from exc
        raise DataError(f"could not load the documents of {task!r}: {exc}") from exc


def load_task_queries(task: str, limit: int | None = None, data_files: str | dict[str, str] | None = None,
                      include_path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Processed docs of one of our tasks (or a user's, under `include_path`), in evaluation order."""
    docs = load_task_docs(task, data_files, include_path).eval_docs
    out: list[dict[str, Any]] = []
    for doc in docs:
        missing = [f for f in QUERY_DOC_FIELDS if f not in doc]
        if missing:
            raise DataError(
                f"task {task!r}: its documents have no {', '.join(repr(f) for f in missing)} field "
                f"(doc {len(out)} has {', '.join(sorted(doc)) or 'no fields'}); alignez-eval needs `id` (unique, "
                "the same in a task's base and chat variants) and `instruction` (the bare user query): add "
                "them to the data or set them in the task's process_docs")
        rec = dict(doc)
        rec["id"] = str(rec["id"])
        rec["category"] = _category_of(rec)
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"task {task!r} has no documents; check its dataset")
    logger.info("%d queries from task %s", len(out), task)
    return out
