"""alignez-eval: AlignEZ training-free self-alignment inside lm-evaluation-harness."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "apply_edit", "fit", "tasks_path"]


def tasks_path() -> str:
    """Directory holding the packaged lm-eval task YAMLs: pass it as `lm_eval --include_path`.

    `alignez_eval/tasks` links to the repository's top-level `tasks/`; a wheel carries the files
    themselves there. A checkout without symlink support falls back to the top-level directory.
    """
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if candidate.is_dir() and next(candidate.rglob("*.yaml"), None) is not None:
            return str(candidate.resolve())
    from alignez_eval.errors import ConfigError

    raise ConfigError(f"no task YAMLs found under {here / 'tasks'}; reinstall alignez-eval "
                      "(`pip install --force-reinstall alignez-eval`) or restore the tasks/ directory")


def __getattr__(name: str):  # PEP 562: `alignez_eval.fit(...)` without importing torch up front
    if name == "fit":  # the plain function alignez_eval.fitting.run.fit, imported on first use
        from alignez_eval.fitting.run import fit

        return fit
    if name == "apply_edit":  # alignez_eval.apply.apply_edit: an edit on any causal LM outside lm-eval
        from alignez_eval.apply import apply_edit

        return apply_edit
    raise AttributeError(f"module 'alignez_eval' has no attribute {name!r}")
