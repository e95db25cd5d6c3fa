"""What one `compare` is asked to do (`CompareConfig`), checked when it is built: before any model loads.

Its own module so that the compare pipeline and the judge and report steps it is composed of all
read it without importing each other.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError
from alignez_eval.judge.agreement import is_agreement_file, load_reference
from alignez_eval.judge.spec import JudgeSpec, parse_judge_spec
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.user_tasks import normalize_include_path


@dataclass
class CompareConfig:
    base: str
    tasks: list[str]
    judge: str
    name: str
    tuned: str | None = None
    methods: list[str] = field(default_factory=lambda: ["alignez"])
    limit: int | None = None
    # which `limit` prompts: "spread" (evenly over the task's order, so a category-sorted set such as
    # alignez_embedded keeps every category) or "first" (lm-eval's --limit)
    limit_mode: str = "spread"
    edit: dict[str, Any] = field(default_factory=dict)  # alpha, layers, n_layers, positions
    fit: dict[str, Any] = field(default_factory=dict)  # energy, keywords, component, gate, ... (fit kwargs)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    seed: int = 0
    work_dir: Path | None = None
    report_root: Path = Path("reports")
    # instruct models to edit with AlignEZ and compare with themselves unedited (Δ% vs unedited)
    edited_instruct: list[str] = field(default_factory=list)
    # a local judge's (hf, rm, scorer) inputs per forward pass, over the spec's own batch_size;
    # kept out of the judge string so that it never enters a judgment's cache key
    judge_batch_size: int | None = None
    judge_check: bool = True
    judge_check_n: int | None = None  # prompts of the judge check (default: all of its set)
    # The judge's agreement with a reference annotator, stated in the report header: a precomputed
    # agreement.json (`alignez-eval judge-agreement`), or reference annotations (AlpacaEval
    # annotations.json / JSONL) to measure it on here, with this judge (`judge_reference_limit` pairs).
    judge_reference: Path | None = None
    judge_reference_limit: int | None = None
    # directories of the user's own task YAMLs (lm-eval's --include_path), searched after ours
    include_path: tuple[str, ...] = ()
    # further systems on the main leaderboard, judged against the base like the rest: (label,
    # model_args, also_alignez). They use the base's prompt variant (e.g. the base with a LoRA
    # adapter, peft=DIR); also_alignez adds LABEL+alignez, fitted on that model's own generations.
    extra_systems: list[tuple[str, str, bool]] = field(default_factory=list)
    # (label, path): the base model with an edit read from a file of any format `load_edit` reads (a
    # llama.cpp / repeng control vector .gguf, an lm-eval steered .pt, an alignez-eval artifact)
    edit_files: list[tuple[str, str]] = field(default_factory=list)
    # (label, path): answers of a finished run of any engine (an lm-eval --output_path made with
    # --log_samples: vllm, local-completions, hf, ...; or an AlpacaEval model_outputs.json), judged as is
    external_runs: list[tuple[str, str]] = field(default_factory=list)
    command: str | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("compare needs at least one task (--tasks alignez_embedded)")
        for m in self.methods:
            parts.fit_method(m)
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {self.methods}")
        if self.limit_mode not in ("spread", "first"):
            raise ConfigError(f"limit mode {self.limit_mode!r}: use spread or first")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be a positive number of prompts, got {self.limit}")
        self.judge_spec()  # a bad --judge fails here, not after minutes of generation
        self._check_outside_systems()
        self.edit = parts.check_edit_settings(self.edit)  # the inference-time names parts.py derives
        self.fit = {k: v for k, v in self.fit.items() if v is not None}
        self.include_path = normalize_include_path(self.include_path)
        if self.judge_reference is not None:
            self.judge_reference = Path(self.judge_reference)
            if not is_agreement_file(self.judge_reference):
                load_reference(self.judge_reference)  # a bad file fails now, not after generation
        if self.work_dir is None:
            self.work_dir = Path("runs") / self.name
        self.work_dir = Path(self.work_dir)
        self.report_root = Path(self.report_root)
        if self.command is None:
            self.command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None

    def _check_outside_systems(self) -> None:
        taken = {"base", "tuned", *self.methods, *(label for label, _, _ in self.extra_systems)}
        for flag, items in (("--edit-file", self.edit_files), ("--external-run", self.external_runs)):
            for label, path in items:
                if not label or label in taken:
                    raise ConfigError(f"{flag} {label}={path}: the label {label!r} is empty or names another "
                                      "system; give each system its own LABEL=PATH")
                taken.add(label)
                if not Path(path).exists():
                    raise ConfigError(f"{flag} {label}={path}: no such file or directory")
        for label, path in self.edit_files:
            if Path(path).suffix.lower() not in (".gguf", ".pt", ".pth", ".safetensors"):
                raise ConfigError(f"--edit-file {label}={path}: expected a control vector (.gguf), an lm-eval "
                                  "steered file (.pt) or an alignez-eval artifact (.safetensors)")

    def judge_spec(self) -> JudgeSpec:
        return configured_judge(self.judge, self.judge_batch_size)


def configured_judge(judge: str, judge_batch_size: int | None) -> JudgeSpec:
    """`judge` parsed, with `judge_batch_size` applied to a local judge (an API judge has no batch
    size: it sends requests concurrently, `concurrency=`). Callers that check before building a
    CompareConfig (the demo, before preparing models) run this same check."""
    if judge_batch_size is not None and judge_batch_size < 1:
        raise ConfigError(f"judge batch size must be a positive number, got {judge_batch_size}")
    spec = parse_judge_spec(judge)
    if judge_batch_size is not None and spec.backend != "openai":
        spec = spec.replace(batch_size=judge_batch_size)
    return spec
