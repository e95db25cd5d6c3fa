"""Inference-time edit settings: one dataclass, its defaults, and how text becomes it.

`EditConfig` is the single source of the settings (α, layers, n_layers, positions, component,
gate): their names (`EDIT_SETTINGS`), defaults, help text and allowed values live on its fields.
lm-eval model_args, CLI flags, sweep YAML and wandb configs hand the settings over as strings or
loosely typed scalars; `EditConfig.from_mapping` turns those into a checked config, so a bad value
fails where it was written, before any model loads.

No torch here: the CLI and sweep configs import this to validate at parse time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from alignez_eval.editing.layers import SYNTAX, format_layers, parse_layers, resolve_probe
from alignez_eval.errors import ConfigError

POSITIONS = ("last", "all", "generated")
COMPONENTS = ("mlp", "block")
GATES = ("paper", "flipped", "none")
# `gate=none` reaches from_mapping as Python None through lm-eval's string parser, so "use the
# artifact's gate" needs its own word.
ARTIFACT = "artifact"
# Deeper than any model: the syntax check of a layer spec runs without a model, so only the
# syntax can fail there; the range is checked against the model in prepare_plan.
_SYNTAX_DEPTH = 1 << 16


@dataclass(frozen=True)
class EditConfig:
    """User-facing settings. `None` means "what the artifact says"."""

    alpha: float = field(default=1.0, metadata={"help": "boost scale α of the helpful directions"})
    layers: str | None = field(default=None, metadata={"help": f"edited layers: {SYNTAX.removeprefix('layers=')}"})
    n_layers: int | None = field(default=None, metadata={"help": "top-n layers per query for layers=auto"})
    positions: str = field(default="last", metadata={"help": "which positions are edited", "choices": POSITIONS})
    component: str | None = field(default=None, metadata={
        "help": "where the edit applies (must match the artifact's)", "choices": COMPONENTS})
    gate: str | None = field(default=None, metadata={
        "help": "query-conditional direction filter", "choices": GATES})

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, numbers.Real) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha):
            raise ConfigError(f"alpha={self.alpha!r} must be a finite number (e.g. alpha=1.0)")
        object.__setattr__(self, "layers", _layer_spec(self.layers))
        if self.n_layers is not None and (
            not isinstance(self.n_layers, int) or isinstance(self.n_layers, bool) or self.n_layers < 1
        ):
            raise ConfigError(f"n_layers={self.n_layers!r} must be a positive integer (e.g. n_layers=3)")
        for name in ("positions", "component", "gate"):
            value, choices = getattr(self, name), setting_choices(name) or ()
            if (value is not None or name == "positions") and value not in choices:
                raise ConfigError(f"{name}={value!r}; choose one of {'|'.join(choices)}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> EditConfig:
        """A checked config from loosely typed settings (strings, numbers, None); an absent setting
        takes its default. Strings are read as lm-eval's parser would hand them over: "1.5" is a
        number, "none" means the artifact's value — except `gate`, where none is a gate of its own
        (no filter) and `gate=artifact` asks for the artifact's."""
        unknown = sorted(set(mapping) - set(EDIT_SETTINGS))
        if unknown:
            raise ConfigError(f"unknown edit setting(s) {', '.join(unknown)}; the settings are "
                              f"{', '.join(EDIT_SETTINGS)}")
        return cls(**{name: _COERCE[name](value) for name, value in mapping.items()})


EDIT_SETTINGS: tuple[str, ...] = EditConfig.names()


def setting_help(name: str) -> str:
    return str(_field(name).metadata["help"])


def setting_choices(name: str) -> tuple[str, ...] | None:
    return _field(name).metadata.get("choices")


def _field(name: str) -> Any:
    return next(f for f in fields(EditConfig) if f.name == name)


def _layer_spec(value: Any) -> str | None:
    """A layer spec checked for syntax, as the string lm-eval keeps intact (3 → "3", [3, 5] → "3;5")."""
    if value is None:
        return None
    if isinstance(value, str):
        # probe:K is resolved against the artifact's ranking later; a one-layer stand-in checks K
        parse_layers(resolve_probe(value, (0,), (0,)), _SYNTAX_DEPTH)
        return value
    parse_layers(value, _SYNTAX_DEPTH)  # names the problem for bools, fractions, mixed lists
    if isinstance(value, numbers.Real):
        return str(int(value))
    return format_layers(int(i) for i in value)


def is_none(value: Any) -> bool:
    """`none` as lm-eval's model_args parser, a CLI or a YAML may hand it over (None, "none", "")."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", ""))


def _alpha(value: Any) -> Any:
    # Anything that is no number stays as it is, for __post_init__ to name it and the fix.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value


def _layers(value: Any) -> Any:
    return None if is_none(value) else value


def _n_layers(value: Any) -> Any:
    if is_none(value):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # lm-eval's parser and YAML may hand over 3.0
    return value


def _word(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _component(value: Any) -> Any:
    return None if is_none(value) else _word(value)


def _gate(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == ARTIFACT:
        return None
    return "none" if is_none(value) else _word(value)


_COERCE: dict[str, Callable[[Any], Any]] = {
    "alpha": _alpha, "layers": _layers, "n_layers": _n_layers, "positions": _word,
    "component": _component, "gate": _gate,
}
