"""One system's answers as the judge reads them: `Sample` (one answer to one doc) and `Run` (all of
them, keyed by (task family, doc id)). A leaf both readers build on: `runs` (lm-eval output
directories) and `alpaca_eval` (AlpacaEval model_outputs.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_SUFFIX = "_base"


def task_family(task: str) -> str:
    """`alignez_x_base` and `alignez_x` are the same dataset in two prompt formats."""
    return task[: -len(BASE_SUFFIX)] if task.endswith(BASE_SUFFIX) else task


@dataclass(frozen=True)
class Sample:
    task: str
    family: str
    doc_id: str  # doc["id"] when present (stable across task variants), else lm-eval's doc_id
    instruction: str
    answer: str
    prompt: str
    dataset: str = ""  # the doc's own `dataset` field (AlpacaEval's subsets), when it has one

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.doc_id)


@dataclass
class Run:
    """One system's answers: (family, doc id) -> Sample, plus where they came from."""

    name: str
    path: Path
    samples: dict[tuple[str, str], Sample]
    files: dict[str, Path] = field(default_factory=dict)  # task -> samples file used
    model_name: str | None = None
    notes: list[str] = field(default_factory=list)  # what a reader should know (timestamps chosen, fallbacks)
    source: str = "lm-eval"  # or "alpaca_eval": an AlpacaEval model_outputs.json, paired by instruction

    @property
    def tasks(self) -> list[str]:
        return sorted(self.files)

    @property
    def families(self) -> list[str]:
        return sorted({k[0] for k in self.samples})

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.source,
            "path": str(self.path),
            "model_name": self.model_name,
            "tasks": self.tasks,
            "files": {t: str(p) for t, p in self.files.items()},
            "n_samples": len(self.samples),
            "notes": list(self.notes),
        }
