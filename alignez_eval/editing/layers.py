"""Layer specifications: `auto`, `all`, `3;5;7`, `3+5+7`, `10-20`, `-6--1`, and mixes (`1-3;7`).

lm-eval splits `--model_args` on commas, so a list can never be written `3,5,7` there: `;` or `+`
separate items (commas are still accepted when a spec is passed from Python). Ranges are
inclusive; negative indices count from the end (`-1` is the last layer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from alignez_eval.errors import ConfigError

AUTO = "auto"
ALL = "all"

_INT = r"[+-]?\d+"
_RANGE_RE = re.compile(rf"^({_INT})-({_INT})$")
_INT_RE = re.compile(rf"^{_INT}$")
# What a stray list item looks like after lm-eval split `layers=3,5,7` or `layers=1-3,7-9` on commas.
_STRAY_RE = re.compile(rf"^{_INT}(-{_INT})?$")

SYNTAX = ("layers=auto | all | probe:K | 3;5;7 | 3+5+7 | 10-20 | -6--1 "
          "(inclusive ranges, negatives count from the end)")
_PROBE_RE = re.compile(r"^probe:(\d+)$")


def _resolve(i: int, num_layers: int, spec: object) -> int:
    j = i + num_layers if i < 0 else i
    if not 0 <= j < num_layers:
        raise ConfigError(
            f"layer {i} in layers={spec!r} is outside this model's {num_layers} layers "
            f"(valid: 0..{num_layers - 1} or -{num_layers}..-1); pass layers within that range, "
            "or layers=auto|all"
        )
    return j


def parse_layers(spec: str | int | Iterable[int] | None, num_layers: int) -> str | tuple[int, ...]:
    """Return "auto" or the sorted, de-duplicated absolute layer indices the spec names
    ("all" → every layer)."""
    if spec is None:
        return AUTO
    if isinstance(spec, bool):
        raise ConfigError(f"layers={spec!r} is not a layer spec; use {SYNTAX}")
    if isinstance(spec, float) and spec.is_integer():
        spec = int(spec)  # lm-eval's CLI parser turns `layers=-1` into -1.0
    if isinstance(spec, int):
        return (_resolve(spec, num_layers, spec),)
    if not isinstance(spec, str):
        try:
            items = [int(i) if isinstance(i, float) and i.is_integer() else i for i in spec]
        except TypeError:
            items = []
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in items) or not items:
            raise ConfigError(f"layers={spec!r} is not a list of layer indices; use {SYNTAX}")
        return tuple(sorted({_resolve(i, num_layers, spec) for i in items}))
    text = spec.strip().strip("'\"").strip().lower()
    if text == AUTO:
        return AUTO
    if text == ALL:
        return tuple(range(num_layers))
    out: set[int] = set()
    parts = [p.strip() for p in re.split(r"[;+,\s]+", text) if p.strip()]
    if not parts:
        raise ConfigError(f"layers={spec!r} is empty; use {SYNTAX}")
    for part in parts:
        if _INT_RE.match(part):
            out.add(_resolve(int(part), num_layers, spec))
            continue
        m = _RANGE_RE.match(part)
        if not m:
            raise ConfigError(f"cannot read {part!r} in layers={spec!r}; use {SYNTAX}")
        lo, hi = (_resolve(int(g), num_layers, spec) for g in m.groups())
        if lo > hi:
            raise ConfigError(f"range {part!r} in layers={spec!r} runs backwards ({lo} > {hi}); write {hi}-{lo}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def resolve_probe(spec: Any, ranking: Iterable[int] | None, fitted: Iterable[int]) -> Any:
    """`probe:K` → the K fitted layers with the best held-out probe accuracy, from the ranking the fit
    stored in the artifact (`fit["probe_ranking"]`, best first), as an explicit `i;j;k` spec. Any
    other spec is returned unchanged."""
    if not isinstance(spec, str):
        return spec
    m = _PROBE_RE.match(spec.strip().strip("'\"").strip().lower())
    if not m:
        return spec
    k = int(m.group(1))
    if k < 1:
        raise ConfigError(f"layers={spec!r}: K must be ≥ 1")
    if not ranking:
        raise ConfigError(f"layers={spec!r} needs the probe ranking a fit stores in the artifact, and this "
                          "artifact has none; re-fit it with `alignez-eval fit`, or pass explicit layers")
    fitted_set = set(fitted)
    best = [int(i) for i in ranking if int(i) in fitted_set][:k]
    if not best:
        raise ConfigError(f"layers={spec!r}: none of the probe-ranked layers has fitted directions")
    return format_layers(sorted(best))


def format_layers(layers: str | Iterable[int]) -> str:
    """The spec back as a string lm-eval's parser leaves intact (`3;5;7`)."""
    if isinstance(layers, str):
        return layers
    return ";".join(str(i) for i in layers)


def check_no_split_layer_list(kwargs: Mapping[str, Any]) -> None:
    """lm-eval turns `layers=3,5,7` into layers=3 plus keyword arguments named "5" and "7" with
    empty values. Catch that before the stray keys reach `from_pretrained`."""
    stray = [k for k in kwargs if isinstance(k, str) and _STRAY_RE.match(k.strip())]
    if stray:
        first = kwargs.get("layers")
        if isinstance(first, float) and first.is_integer():
            first = int(first)
        written = ",".join([str(first)] + stray) if first is not None else ",".join(stray)
        fixed = ";".join([str(first)] + stray) if first is not None else ";".join(stray)
        raise ConfigError(
            f"model_args contain bare items {stray}: lm-eval splits --model_args on commas, so "
            f"`layers={written}` arrived as separate arguments. Write `layers={fixed}` "
            f"(or with '+' instead of ';'); syntax: {SYNTAX}"
        )
