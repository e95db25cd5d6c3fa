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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from alignez_eval.editing.layers import SYNTAX, format_layers, parse_layers, resolve_probe
from alignez_eval.errors import ConfigError
from alignez_eval.settings import Settings, setting

POSITIONS = ("last", "all", "generated")
COMPONENTS = ("mlp", "block")
GATES = ("paper", "flipped", "none")
# `gate=none` reaches from_mapping as Python None through lm-eval's string parser, so "use the
# artifact's gate" needs its own word.
ARTIFACT = "artifact"
# Deeper than any model: the syntax check of a layer spec runs without a model, so only the
# syntax can fail there; the range is checked against the model in prepare_plan.
_SYNTAX_DEPTH = 1 << 16


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



@dataclass(frozen=True)
class EditConfig(Settings):
    """User-facing settings. `None` means "what the artifact says". Read from loose values by
    `Settings.from_mapping`, each field through its own coercer below."""

    KIND: ClassVar[str] = "edit"

    alpha: float = setting(1.0, "boost scale α of the helpful directions", coerce=_alpha)
    layers: str | None = setting(None, f"edited layers: {SYNTAX.removeprefix('layers=')}", coerce=_layers)
    n_layers: int | None = setting(None, "top-n layers per query for layers=auto", coerce=_n_layers)
    positions: str | None = setting(None, "which positions are edited (default: the artifact's; last for fits "
                                    "made here, all for imported control vectors)", choices=POSITIONS,
                                    coerce=_component)
    component: str | None = setting(None, "where the edit applies (must match the artifact's)",
                                    choices=COMPONENTS, coerce=_component)
    gate: str | None = setting(None, "query-conditional direction filter", choices=GATES, coerce=_gate)

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, numbers.Real) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha):
            raise ConfigError(f"alpha={self.alpha!r} must be a finite number (e.g. alpha=1.0)")
        object.__setattr__(self, "layers", _layer_spec(self.layers))
        if self.n_layers is not None and (
            not isinstance(self.n_layers, int) or isinstance(self.n_layers, bool) or self.n_layers < 1
        ):
            raise ConfigError(f"n_layers={self.n_layers!r} must be a positive integer (e.g. n_layers=3)")
        for name in ("positions", "component", "gate"):
            value, choices = getattr(self, name), self.choices_of(name) or ()
            if value is not None and value not in choices:
                raise ConfigError(f"{name}={value!r}; choose one of {'|'.join(choices)}")

    # from_mapping (Settings) reads strings as lm-eval's parser hands them over: "1.5" is a number,
    # "none" means the artifact's value — except `gate`, where none is a gate of its own (no
    # filter) and `gate=artifact` asks for the artifact's.


EDIT_SETTINGS: tuple[str, ...] = EditConfig.names()


def setting_help(name: str) -> str:
    return EditConfig.help_of(name)


def setting_choices(name: str) -> tuple[str, ...] | None:
    return EditConfig.choices_of(name)


# each setting's reader, as its field declares it
_COERCE: dict[str, Callable[[Any], Any]] = {name: EditConfig.meta(name)["coerce"] for name in EDIT_SETTINGS}


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


