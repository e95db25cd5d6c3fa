"""What a compare is made of: the models to load (lazily, one at a time), the systems (a model with or
without an edit method) and the comparisons they form, the task variants of each dataset, and which
of its prompts are used."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.generate import task_manager
from alignez_eval.pipeline.user_tasks import broken_yaml_hint

logger = logging.getLogger(__name__)

BASE_SUFFIX = "_base"


@dataclass
class ModelEntry:
    """One model to load: `key` names it in step names; `chat` picks the task variant."""

    key: str
    args: dict[str, str]
    chat: bool
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def load_args(self) -> dict[str, str]:
        return {k: v for k, v in self.args.items() if k not in parts.EDIT_ARG_KEYS}


@dataclass
class System:
    """One column of the leaderboard: a model, with or without an edit method."""

    name: str
    model: str  # a key of the pipeline's models; "" for an external run (no model is loaded for it)
    method: str | None = None
    edit_file: str | None = None  # an edit read from a file (control vector, steered .pt, artifact)
    run: str | None = None  # answers of a finished run, judged as they are


@dataclass
class Comparison:
    """One judged group → one report: a baseline system and its candidates."""

    name: str
    baseline: str
    candidates: list[str]
    tuned: str | None = None


class ModelSlot:
    """Loads a model on first use only; `close()` frees it before the next one is loaded."""

    def __init__(self, entry: ModelEntry, batch_size: int, stats: dict[str, int]) -> None:
        self.entry, self.batch_size, self.stats = entry, batch_size, stats
        self._lm: Any = None

    def get(self) -> Any:
        if self._lm is None:
            self._lm = parts.load_lm(self.entry.load_args, self.batch_size)
            self.stats["model_loads"] = self.stats.get("model_loads", 0) + 1
            self.stats[f"loads:{self.entry.key}"] = self.stats.get(f"loads:{self.entry.key}", 0) + 1
        return self._lm

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def close(self) -> None:
        if self._lm is not None:
            lm, self._lm = self._lm, None
            parts.free(lm)



def has_chat_template(pretrained: str) -> bool:
    # lazy: transformers costs 2.8 s to import (measured on AMD EPYC, 2 cores)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(pretrained)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use a chat template"
        logger.warning("could not read the tokenizer of %s (%s); using the base prompt variant", pretrained, exc)
        return False
    return bool(getattr(tok, "chat_template", None))


def task_variants(tasks: list[str], include_path: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    """dataset -> (base-model variant, chat variant). A task without a `_base` twin serves both."""
    known = set(task_manager(tuple(tasks), include_path).all_tasks)
    out: dict[str, tuple[str, str]] = {}
    for t in tasks:
        chat = t[: -len(BASE_SUFFIX)] if t.endswith(BASE_SUFFIX) and t[: -len(BASE_SUFFIX)] in known else t
        if chat not in known:
            pool = sorted(n for n in known if n.startswith("alignez") or include_path)
            close = difflib.get_close_matches(chat, pool, n=4)
            where = " ".join(["$(alignez-eval tasks-path)", *include_path])
            raise ConfigError(f"unknown task {t!r}{broken_yaml_hint(chat, include_path)}; " + (
                f"did you mean {', '.join(close)}?" if close else
                f"list tasks with `lm_eval ls tasks --include_path {where}`" + (
                    "" if include_path else " or add your own with --include_path DIR")))
        base = chat + BASE_SUFFIX if chat + BASE_SUFFIX in known else chat
        out[chat] = (base, chat)
    return out


def select_positions(n: int, limit: int | None, mode: str) -> list[int]:
    """Positions of the `limit` documents used, out of `n` (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    if mode == "first":
        return list(range(limit))
    return sorted({(i * n) // limit for i in range(limit)})


def model_label(args: dict[str, str]) -> str:
    p = args.get("pretrained", "model").rstrip("/")
    return Path(p).name or p

