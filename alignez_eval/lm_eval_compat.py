"""Registering `alignez-hf` with lm-eval 0.4.13 and finding our task directory."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_NAME = "alignez-hf"
MODEL_TARGET = "model_adapters.alignez_hf:AlignEZHFLM"


def register() -> type:
    """Make `alignez-hf` resolvable in this process and return its class. lm-eval's built-ins are
    registered first: `get_model` fills the registry only while it is empty, so registering ours
    into an empty registry would hide `hf` and every other built-in."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model

    import model_adapters.alignez_hf  # noqa: F401  — @register_model runs here

    return get_model(MODEL_NAME)


def tasks_dir() -> str | None:
    """The packaged task YAMLs (alignez_eval.tasks_path() when present, else the repo's tasks/)."""
    try:
        from alignez_eval import tasks_path  # provided by the tasks module
    except ImportError:
        tasks_path = None
    if tasks_path is not None:
        try:
            return str(tasks_path())
        except Exception as exc:  # fall back to the checkout's directory
            logger.debug("alignez_eval.tasks_path() failed: %s", exc)
    repo_tasks = Path(__file__).resolve().parent.parent / "tasks"
    if repo_tasks.is_dir() and next(repo_tasks.rglob("*.yaml"), None) is not None:
        return str(repo_tasks)
    return None
