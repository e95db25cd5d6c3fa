"""Prompt templates and keyword presets for self-generated preference pairs.

The wording lives in `templates.json` (data, versioned with the package) so that what the model was
asked is visible and recorded with every artifact; this module only fills it in.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alignez_eval.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@functools.lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    """The packaged template data (read once)."""
    text = resources.files("alignez_eval.selfpref").joinpath("templates.json").read_text(encoding="utf-8")
    return json.loads(text)


def fill(template: str, **fields: str) -> str:
    """Substitute `{name}` placeholders of the *template* only: a query that itself contains braces
    (code, JSON) is inserted verbatim, which `str.format` would choke on or re-expand."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in fields:
            raise KeyError(f"template placeholder {{{name}}} has no value")
        return fields[name]

    return _PLACEHOLDER.sub(repl, template)


@dataclass(frozen=True)
class Keywords:
    """The (positive, negative) persona pair, e.g. ("helpful", "useless")."""

    pos: str
    neg: str
    name: str = ""

    def as_list(self) -> list[str]:
        return [self.pos, self.neg]


def keyword_presets() -> dict[str, tuple[str, str]]:
    return {k: (v[0], v[1]) for k, v in templates()["keywords"].items()}


def parse_keywords(spec: str) -> Keywords:
    """A preset name (helpful | harmless | humor) or a user pair "POS/NEG" such as "concise/verbose"."""
    spec = (spec or "").strip()
    presets = keyword_presets()
    if spec in presets:
        pos, neg = presets[spec]
        return Keywords(pos, neg, spec)
    if "/" in spec:
        pos, _, neg = spec.partition("/")
        pos, neg = pos.strip(), neg.strip()
        if pos and neg and "/" not in neg:
            return Keywords(pos, neg, f"{pos}/{neg}")
    raise ConfigError(
        f"keywords {spec!r} is neither a preset ({', '.join(presets)}) nor a POS/NEG pair; "
        "pass e.g. --keywords helpful or --keywords 'concise/rambling'"
    )


def characteristics_prompts(query: str, kw: Keywords) -> tuple[str, str]:
    t = templates()["characteristics"]
    return fill(t["pos"], q=query, kw_pos=kw.pos), fill(t["neg"], q=query, kw_neg=kw.neg)


def answer_prompts(query: str, kw: Keywords, pos_characteristics: str, neg_characteristics: str) -> tuple[str, str]:
    """The paired answer prompts; an empty characteristic falls back to "be {kw}" (lab code)."""
    t = templates()
    fb = t["fallback_characteristics"]
    pos_c = pos_characteristics.strip() or fill(fb, kw=kw.pos)
    neg_c = neg_characteristics.strip() or fill(fb, kw=kw.neg)
    return (
        fill(t["answers"]["pos"], q=query, kw_pos=kw.pos, pos_characteristics=pos_c),
        fill(t["answers"]["neg"], q=query, kw_neg=kw.neg, neg_characteristics=neg_c),
    )


def base_frame(prompt: str) -> str:
    """The plain dialogue frame for base models (no chat template)."""
    return fill(templates()["base_frame"], prompt=prompt.rstrip())


def activation_text(query: str, answer: str) -> tuple[str, int]:
    """"Human: {q}\\nAssistant: {answer}" and the character offset where the answer starts."""
    frame = templates()["activation_frame"]
    prefix = fill(frame.split("{answer}")[0], q=query)
    return prefix + answer, len(prefix)


def turn_markers() -> tuple[str, ...]:
    return tuple(templates()["turn_markers"])
