"""A user's own prompt sets for `compare` and `sweep`: lm-eval task YAMLs under `--include_path DIR`.

A dataset is a chat-variant task NAME, optionally with a base-model twin NAME_base (as ours are);
a task without a twin serves both models. Each processed document needs `id` and `instruction`
(checked where the queries are read, `alignez_eval.queries`), the task must generate
(`output_type: generate_until`), and both variants must list the same documents under the same ids,
since answers are paired across models by (task family, doc id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.lm_eval_compat import load_yaml, task_config, task_yaml_path
from alignez_eval.package import tasks_path

YAML_SUFFIXES = (".yaml", ".yml")


def normalize_include_path(paths: Iterable[str | Path] | str | Path | None) -> tuple[str, ...]:
    """Absolute, de-duplicated task directories; a missing or YAML-less one is a ConfigError."""
    if paths is None:
        return ()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        d = Path(p).expanduser()
        if not d.is_dir():
            raise ConfigError(f"--include_path {str(p)!r} is not a directory; pass the directory that holds "
                              "your task YAMLs (as with lm_eval --include_path)")
        if not any(f.suffix in YAML_SUFFIXES for f in d.rglob("*")):
            raise ConfigError(f"--include_path {str(p)!r} holds no .yaml task file; write one task YAML per "
                              "variant there (see docs/compare-sweeps-data-parallel.md, 'Your own prompt sets')")
        resolved = str(d.resolve())
        if resolved not in out:
            out.append(resolved)
    return tuple(out)


def broken_yaml_hint(task: str, include_path: tuple[str, ...]) -> str:
    """Why `task` may be missing from the index: lm-eval skips a YAML it cannot parse, silently."""

    for root in include_path:
        for f in sorted(Path(root).rglob("*")):
            if f.suffix not in YAML_SUFFIXES or task not in f.read_text(encoding="utf-8", errors="replace"):
                continue
            try:
                load_yaml(f, resolve_func=False, recursive=True)
            except Exception as exc:  # noqa: BLE001 - any parse failure is what the user needs to see
                return f" ({f} names it but does not load: {type(exc).__name__}: {exc})"
    return ""


def is_user_task(tm: Any, name: str) -> bool:
    """Whether `name` comes from a user's directory rather than our packaged tasks."""

    path = task_yaml_path(tm, name)
    if path is None:
        return False
    return not path.resolve().is_relative_to(Path(tasks_path()).resolve())


def _yaml_and_includes(path: Path, seen: list[Path]) -> list[Path]:
    path = path.resolve()
    if path in seen:
        return seen
    seen.append(path)
    includes = load_yaml(path, resolve_func=False, recursive=False).get("include") or []
    for inc in [includes] if isinstance(includes, str) else includes:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        if inc_path.is_file():
            _yaml_and_includes(inc_path, seen)
    return seen


def task_source_sha(tm: Any, name: str) -> str | None:
    """A hash of a user task's own files (its YAML, the YAMLs it includes, the Python helpers next
    to it), so that editing its prompt template reruns its generations, and only its own; None for
    our tasks, whose package version keys every step already."""

    yaml_path = task_yaml_path(tm, name)
    if yaml_path is None or not is_user_task(tm, name):
        return None
    files = _yaml_and_includes(yaml_path, [])
    files += sorted(f for f in yaml_path.resolve().parent.iterdir() if f.is_file() and f.suffix == ".py")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def check_generates(tm: Any, name: str) -> None:
    """compare generates answers: a loglikelihood or multiple-choice task cannot be judged."""

    kind = task_config(tm, name).get("output_type", "generate_until")
    if kind != "generate_until":
        raise ConfigError(f"task {name!r} has output_type {kind!r}; compare and sweep judge generated answers, "
                          "so the task needs `output_type: generate_until`")


def check_same_documents(dataset: str, base: str, chat: str, base_queries: list[dict[str, Any]],
                         chat_queries: list[dict[str, Any]]) -> None:
    """The base and chat variants must list the same documents under the same ids."""
    for name, qs in ((chat, chat_queries), (base, base_queries)):
        seen: set[str] = set()
        for q in qs:
            if q["id"] in seen:
                raise DataError(f"task {name!r}: doc id {q['id']!r} appears twice; ids must be unique "
                                "(answers are paired by id)")
            seen.add(q["id"])
    if base == chat:
        return
    b, c = [q["id"] for q in base_queries], [q["id"] for q in chat_queries]
    if b != c:
        only = sorted(set(b) ^ set(c))[:3]
        what = f"ids only in one: {', '.join(only)}" if only else "the same ids in another order"
        raise DataError(f"{dataset}: tasks {base!r} and {chat!r} do not list the same documents ({what}); "
                        "a base variant must read the same data, in the same order, with the same ids")
