"""`alignez-eval run ARGS…` = `lm_eval run ARGS…` with alignez-hf registered and our tasks on the
include path. Every argument is lm-eval's own; see `lm_eval run --help`."""

from __future__ import annotations

import logging
import sys

from alignez_eval.editing.layers import SYNTAX
from alignez_eval.errors import ConfigError
from alignez_eval.lm_eval_compat import add_tasks_dir, cli_evaluate, split_top_level, tasks_dir

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


def main(argv: list[str]) -> int:
    check_model_args(argv)
    # here, not at the top: the adapter imports torch and lm-eval (seconds), which `alignez-eval
    # --help` and every other command would otherwise pay
    from model_adapters.alignez_hf import register

    register()
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
    except ValueError as exc:
        missing = _missing_tasks(exc)
        if missing is None:
            raise
        raise ConfigError(
            f"no task named {missing} (nor a YAML file of that name); list the available tasks with "
            "`alignez-eval run ls tasks` (add --include_path DIR to include your own task YAMLs)"
        ) from exc
    finally:
        sys.argv = old
    return 0


def _missing_tasks(exc: ValueError) -> str | None:
    """The task names of lm-eval's "Tasks not found: a, b" (lm_eval.config.evaluate_config), else None."""
    text = str(exc)
    prefix = "Tasks not found: "
    return text[len(prefix):].strip() if text.startswith(prefix) else None
