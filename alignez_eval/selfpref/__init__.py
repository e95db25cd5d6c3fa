"""Self-generated preference pairs: prompt templates (data), batched generation, cleaning, a resumable store."""

from alignez_eval.selfpref.generate import Sampling
from alignez_eval.selfpref.pipeline import SelfPrefSettings, degeneracy, self_generate
from alignez_eval.selfpref.templates import Keywords, parse_keywords

__all__ = ["Keywords", "Sampling", "SelfPrefSettings", "degeneracy", "parse_keywords", "self_generate"]
