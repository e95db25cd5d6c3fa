"""alignez-eval: AlignEZ training-free self-alignment inside lm-evaluation-harness."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
