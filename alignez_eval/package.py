"""What this installed package is: its version and where its task YAMLs are.

A leaf (it imports only `errors`, itself a leaf): every module that records the version or needs
the task directory imports it from here, never from the package root, whose lazy `fit` /
`apply_edit` would otherwise close an import circle through the whole fitting and editing code.
"""

from __future__ import annotations

from pathlib import Path

from alignez_eval.errors import ConfigError

__version__ = "0.1.0"  # == pyproject.toml's [project] version (tests/test_import_graph.py checks)


def tasks_path() -> str:
    """Directory holding the packaged lm-eval task YAMLs: pass it as `lm_eval --include_path`.

    `alignez_eval/tasks` links to the repository's top-level `tasks/`; a wheel carries the files
    themselves there. A checkout without symlink support falls back to the top-level directory.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if candidate.is_dir() and next(candidate.rglob("*.yaml"), None) is not None:
            return str(candidate.resolve())
    raise ConfigError(f"no task YAMLs found under {here / 'tasks'}; reinstall alignez-eval "
                      "(`pip install --force-reinstall alignez-eval`) or restore the tasks/ directory")
