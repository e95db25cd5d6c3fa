"""Judging candidate runs against a baseline: pairing, backends, prompts, cache, verdicts.

Public API (used by `compare` and `demo`):
  load_run(path) -> Run
  parse_judge_spec(spec) -> JudgeSpec
  judge_runs(baseline, candidates, spec, out_dir, cache_path=None) -> Path
  judge_check(spec, prompts=None, n=None) -> dict
"""

from __future__ import annotations

from alignez_eval.judge.check import judge_check
from alignez_eval.judge.runner import judge_runs, load_judgments
from alignez_eval.judge.runs import Run, Sample, load_run, pair_runs, task_family
from alignez_eval.judge.spec import JudgeSpec, parse_judge_spec

__all__ = [
    "JudgeSpec",
    "Run",
    "Sample",
    "judge_check",
    "judge_runs",
    "load_judgments",
    "load_run",
    "pair_runs",
    "parse_judge_spec",
    "task_family",
]
