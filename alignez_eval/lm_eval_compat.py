"""Every use of lm-eval beyond its public API, in one place (pyproject: lm-eval >=0.4.13,<0.5).

Code elsewhere imports only the names in `PUBLIC_API`; anything else it needs from lm-eval (private
modules, structures behind public properties, the TaskManager patch, the HFLM methods the adapter
overrides) is reached through this module. tests/test_lm_eval_compat.py checks every name below
against the installed lm-eval and fails naming the one that moved; it also fails when another
module imports a name from lm-eval that `PUBLIC_API` does not list.

Nothing here imports lm-eval at module import time (`alignez_eval._autoload` and the CLI stay fast).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

# one definition of the model's name and "module:Class" target, in the import-light start-up module
from alignez_eval._autoload import MODEL_NAME, MODEL_TARGET
from alignez_eval.package import tasks_path

__all__ = ["MODEL_NAME", "MODEL_TARGET"]  # re-exported: lm-eval-facing names live here too

logger = logging.getLogger(__name__)

LM_EVAL_REQUIREMENT = "lm-eval>=0.4.13,<0.5"

# Imported directly by the rest of the repository (module -> names; None: the module itself).
PUBLIC_API: dict[str, frozenset[str] | None] = {
    "lm_eval": frozenset({"simple_evaluate"}),
    "lm_eval.models": None,  # imported for its side effect: registering the built-in models
    "lm_eval.models.huggingface": frozenset({"HFLM"}),
    "lm_eval.api.registry": frozenset({"register_model", "get_model", "model_registry"}),
    "lm_eval.api.instance": frozenset({"Instance"}),
    "lm_eval.tasks": frozenset({"TaskManager"}),
    "lm_eval.loggers": frozenset({"EvaluationTracker", "WandbLogger"}),
    "lm_eval.utils": frozenset({"make_table"}),
}

# Private names this module imports (module, name), checked by the test.
INTERNAL_API: tuple[tuple[str, str], ...] = (
    ("lm_eval._cli.utils", "split_top_level"),
    ("lm_eval.__main__", "cli_evaluate"),
    ("lm_eval.tasks._yaml_loader", "load_yaml"),
)

# HFLM methods model_adapters/alignez_hf.py overrides and calls through super(), with the
# parameters it passes; and HFLM attributes it reads or sets on every instance (`_rank` /
# `_world_size` for data parallel; `accelerator`, set only under data parallel, is read with
# getattr). A release that renames any of them breaks the adapter silently, so the test checks them.
HFLM_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_model_call": ("inps", "attn_mask", "labels"),
    "_model_generate": ("context", "max_length", "stop"),
    "_loglikelihood_tokens": ("requests", "disable_tqdm", "override_bs"),
}
HFLM_ATTRIBUTES: tuple[str, ...] = ("_rank", "_world_size", "backend", "mixed_precision_dtype", "device", "model",
                                    "tokenizer", "max_length", "rank", "world_size")


# ---------------------------------------------------------------------------------------------
# registration and our task directory


# Registering alignez-hf explicitly is `model_adapters.alignez_hf.register()`, next to the adapter.


def tasks_dir() -> str | None:
    """The packaged task YAMLs (alignez_eval.tasks_path() when present, else the repo's tasks/)."""
    try:
        return str(tasks_path())
    except Exception as exc:  # fall back to the checkout's directory
        logger.debug("alignez_eval.tasks_path() failed: %s", exc)
    repo_tasks = Path(__file__).resolve().parent.parent / "tasks"
    if repo_tasks.is_dir() and next(repo_tasks.rglob("*.yaml"), None) is not None:
        return str(repo_tasks)
    return None


# ---------------------------------------------------------------------------------------------
# private lm-eval functions


def split_top_level(value: str) -> list[str]:
    """How lm-eval's CLI splits `--model_args` (commas outside brackets and quotes)."""
    # lazy: lm-eval's CLI modules pull torch, seconds (measured on AMD EPYC, 2 cores)
    from lm_eval._cli.utils import split_top_level as split

    return split(value)


def cli_evaluate() -> None:
    """lm-eval's command line (reads sys.argv), as the `lm_eval` console script runs it."""
    # lazy: lm-eval's CLI modules pull torch, seconds (measured on AMD EPYC, 2 cores)
    from lm_eval.__main__ import cli_evaluate as run

    run()


def load_yaml(path: str | Path, *, resolve_func: bool = True, recursive: bool = True) -> dict[str, Any]:
    """A task YAML as lm-eval reads it: `include:` merged (`recursive`), `!function` resolved
    (`resolve_func`)."""
    # lazy: lm_eval.tasks costs 2.9 s to import (measured on AMD EPYC, 2 cores)
    from lm_eval.tasks._yaml_loader import load_yaml as load

    return load(path, resolve_func=resolve_func, recursive=recursive)


# ---------------------------------------------------------------------------------------------
# TaskManager internals: its index entries and the include-path patch


def task_entry(tm: Any, name: str) -> Any | None:
    """The index entry of `name` (a task, group or tag), or None."""
    return tm.task_index.get(name)


def task_yaml_path(tm: Any, name: str) -> Path | None:
    """The YAML file that defines `name`; None for unknown or Python-only entries."""
    path = getattr(task_entry(tm, name), "yaml_path", None)
    return Path(path) if path is not None else None


def task_config(tm: Any, name: str) -> dict[str, Any]:
    """The raw (unresolved) config of `name` from the index; {} when there is none."""
    return getattr(task_entry(tm, name), "cfg", None) or {}


def add_tasks_dir(tasks_dir: str) -> None:
    """Put our tasks on every TaskManager's include path, before the user's --include_path (later
    paths override earlier ones, so a user's task of the same name wins). lm-eval's CLI takes a
    single --include_path string and does not split it, hence a patch of TaskManager.__init__
    instead of argv. Idempotent."""
    # lazy: lm_eval.tasks costs 2.9 s to import (measured on AMD EPYC, 2 cores)
    from lm_eval.tasks import TaskManager

    if getattr(TaskManager.__init__, "_alignez_tasks_dir", None) == tasks_dir:
        return
    original = TaskManager.__init__

    def __init__(self, *args, include_path=None, **kwargs):  # type: ignore[no-untyped-def]
        given = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        paths = [tasks_dir] + [p for p in given if str(p) != tasks_dir]
        original(self, *args, include_path=paths, **kwargs)

    __init__._alignez_tasks_dir = tasks_dir  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__  # type: ignore[method-assign]
