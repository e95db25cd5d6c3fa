"""One system × one task through lm-eval, written exactly as `lm_eval --output_path D --log_samples` would.

This follows `lm_eval._cli.run` (simple_evaluate → EvaluationTracker.save_results_aggregated →
save_results_samples per task), but with an already-loaded LM instance, so one base model serves
the unedited baseline and every edited variant without reloading weights. The judge then reads the
directory like any lm-eval run.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from alignez_eval.hashing import sha256_file
from alignez_eval.package import tasks_path

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _task_manager(include_defaults: bool, include_path: tuple[str, ...] = ()) -> Any:
    # lazy: lm_eval.tasks costs 2.9 s to import (measured on AMD EPYC, 2 cores)
    from lm_eval.tasks import TaskManager

    # The user's directories come after ours: lm-eval lets later paths override earlier ones.
    return TaskManager(include_path=[str(tasks_path()), *include_path], include_defaults=include_defaults)


def task_manager(tasks: tuple[str, ...] = (), include_path: tuple[str, ...] = ()) -> Any:
    """A TaskManager (cached) that knows `tasks`: ours (and `include_path`'s) alone when that is
    enough, since indexing lm-eval's thousands of built-in YAMLs takes 10-20 s on a small machine."""
    ours = _task_manager(False, tuple(include_path))
    if all(t in ours.all_tasks for t in tasks):
        return ours
    return _task_manager(True, tuple(include_path))


def generate_run(
    lm: Any,
    *,
    task: str,
    out_dir: Path,
    model_args: str,
    limit: int | None = None,
    doc_indices: list[int] | None = None,
    apply_chat_template: bool = False,
    gen_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    include_path: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Generate `task` with `lm` into `out_dir` (an lm-eval output_path). Returns a small summary.

    `model_args` is only recorded (the results JSON's `config.model_args` and the run's directory
    name); the model itself is `lm`. `doc_indices` selects documents by position (lm-eval's
    `samples=`) and excludes `limit`. `include_path`: directories of the user's own task YAMLs.
    """
    # lazy: lm-eval's evaluator pulls torch + transformers, seconds (measured on AMD EPYC, 2 cores)
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out_dir))
    results = simple_evaluate(
        model=lm,
        model_args=model_args,
        tasks=[task],
        limit=None if doc_indices is not None else limit,
        samples={task: list(doc_indices)} if doc_indices is not None else None,
        log_samples=True,
        evaluation_tracker=tracker,
        apply_chat_template=apply_chat_template,
        gen_kwargs=dict(gen_kwargs) if gen_kwargs else None,
        task_manager=task_manager((task,), tuple(include_path)),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        bootstrap_iters=0,
    )
    if results is None:  # a non-zero data-parallel rank: rank 0 writes the files
        return {"rank_result": None}
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    files = sorted(out_dir.rglob("samples_*.jsonl"))
    if not files:
        raise RuntimeError(f"lm-eval wrote no samples file under {out_dir} for task {task}")
    n = sum(1 for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip())
    metrics = {k: v for k, v in results.get("results", {}).get(task, {}).items() if isinstance(v, int | float)}
    return {
        "task": task,
        "n_samples": n,
        "samples_sha256": sha256_file(files[0]),
        "samples_file": str(files[0].relative_to(out_dir)),
        "metrics": json.loads(json.dumps(metrics, default=str)),
    }
