"""`alignez-eval run ARGS…` = `lm_eval run ARGS…` with alignez-hf registered and our tasks on the
include path. Every argument is lm-eval's own; see `lm_eval run --help`."""

from __future__ import annotations

import logging
import sys

from alignez_eval.editing.layers import SYNTAX
from alignez_eval.errors import ConfigError

logger = logging.getLogger(__name__)

# lm-eval's top-level subcommands; a bare `lm_eval --model …` is `lm_eval run --model …`.
_LM_EVAL_SUBCOMMANDS = ("run", "ls", "validate")


def check_model_args(argv: list[str]) -> None:
    """lm-eval splits --model_args on top-level commas and would stop at `layers=3,5,7` with
    "expected `key=value`, got '5'". Say what to write instead."""
    values: list[str] = []
    for i, a in enumerate(argv):
        if a in ("--model_args", "-a"):
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-"):
                values.append(argv[j])
                j += 1
        elif a.startswith("--model_args="):
            values.append(a.split("=", 1)[1])
    for value in values:
        if value.lstrip().startswith("{"):
            continue  # JSON
        from lm_eval._cli.utils import split_top_level

        parts = split_top_level(value)
        for k, part in enumerate(parts):
            if "=" not in part and part.strip().lstrip("+-").replace("-", "").isdigit():
                prev = next((p for p in reversed(parts[:k]) if "=" in p), "")
                raise ConfigError(
                    f"--model_args {value!r}: {part!r} is not key=value — lm-eval splits model_args on "
                    f"commas, so a layer list cannot use them (after {prev!r}). Write layers=3;5;7 or "
                    f"layers=3+5+7; syntax: {SYNTAX}"
                )


def build_argv(argv: list[str]) -> list[str]:
    """lm-eval's argv: `run` is inserted when no lm-eval subcommand is given."""
    argv = list(argv)
    if not argv or argv[0] not in _LM_EVAL_SUBCOMMANDS + ("-h", "--help"):
        argv = ["run", *argv]
    return argv


def add_tasks_dir(tasks_dir: str) -> None:
    """Put our tasks on every TaskManager's include path, before the user's --include_path (later
    paths override earlier ones, so a user's task of the same name wins). lm-eval 0.4.13's CLI
    takes a single --include_path string and does not split it, hence this instead of argv."""
    from lm_eval.tasks import manager

    cls = manager.TaskManager
    if getattr(cls.__init__, "_alignez_tasks_dir", None) == tasks_dir:
        return
    original = cls.__init__

    def __init__(self, *args, include_path=None, **kwargs):  # type: ignore[no-untyped-def]
        given = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        paths = [tasks_dir] + [p for p in given if str(p) != tasks_dir]
        original(self, *args, include_path=paths, **kwargs)

    __init__._alignez_tasks_dir = tasks_dir  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    check_model_args(argv)
    from alignez_eval.lm_eval_compat import register, tasks_dir

    register()
    from lm_eval.__main__ import cli_evaluate

    ours = tasks_dir()
    if ours is not None:
        add_tasks_dir(ours)
    full = build_argv(argv)
    logger.debug("lm_eval %s", " ".join(full))
    old = sys.argv
    sys.argv = ["lm_eval", *full]
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse errors and lm-eval's own exits
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = old
    return 0
