"""alignez-eval: AlignEZ training-free self-alignment inside lm-evaluation-harness."""

from __future__ import annotations

from alignez_eval.package import __version__, tasks_path

__all__ = ["__version__", "apply_edit", "fit", "tasks_path"]


def __getattr__(name: str):  # PEP 562: `alignez_eval.fit(...)` without importing torch up front
    if name == "fit":  # the plain function alignez_eval.fitting.run.fit, imported on first use
        from alignez_eval.fitting.run import fit

        return fit
    if name == "apply_edit":  # alignez_eval.apply.apply_edit: an edit on any causal LM outside lm-eval
        from alignez_eval.apply import apply_edit

        return apply_edit
    raise AttributeError(f"module 'alignez_eval' has no attribute {name!r}")
