"""Moved to `alignez_eval.shareable` (a leaf the judge and the report both import); this name stays
only until judge/spec.py imports it from there (issue 19, after the scorer backend is merged)."""

from alignez_eval.shareable import shareable, shareable_text

__all__ = ["shareable", "shareable_text"]
