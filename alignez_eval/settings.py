"""One settings mechanism for every group of user settings (the edit's `EditConfig`, the fit's
`FitSettings`, the judge's `JudgeSpec` and its per-backend options): a frozen dataclass whose
fields say, once, their default, help text and allowed values (and, for a command line, their
group and flag), and one reader, `Settings.from_mapping`, that turns loosely typed values (CLI
strings, lm-eval model_args, YAML, wandb configs) into a checked object before any model loads.

    @dataclass(frozen=True)
    class MySettings(Settings):
        KIND = "my"
        alpha: float = setting(1.0, "boost scale")
        mode: str = setting("a", "what to do", choices=("a", "b"))

A field is read by its own `coerce` when it has one, else by its type hint (int, float, bool, str,
and `X | None`, where "none"/"null"/"" mean None). Checks of allowed values and ranges stay in the
class's `__post_init__`, so a settings object built directly is checked the same way.

A leaf: it imports only `errors`, so the CLI can build its flags from settings without torch.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, field, fields
from typing import Any, ClassVar

from alignez_eval.errors import ConfigError

_NONE_WORDS = ("none", "null", "")


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None, group: str | None = None,
            flag: str | None = None, cli: bool = True, coerce: Callable[[Any], Any] | None = None) -> Any:
    """A settings field. `choices` are shown in help and checked by the class; `group`/`flag`/`cli`
    place it on a command line (`flag` overrides `--field-name`; `cli=False`: it comes from elsewhere
    on the command line); `coerce` reads a loose value instead of the type hint."""
    return field(default=default, metadata={"help": help, "choices": choices, "group": group, "flag": flag,
                                            "cli": cli, "coerce": coerce})


class Settings:
    """Base of a frozen settings dataclass (see the module docstring)."""

    KIND: ClassVar[str] = ""  # named in messages: "unknown edit setting(s) …"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def meta(cls, name: str) -> Mapping[str, Any]:
        return next(f for f in fields(cls) if f.name == name).metadata  # type: ignore[arg-type]

    @classmethod
    def help_of(cls, name: str) -> str:
        return str(cls.meta(name)["help"])

    @classmethod
    def choices_of(cls, name: str) -> tuple[str, ...] | None:
        return cls.meta(name).get("choices")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Any:
        """A checked object from loosely typed values (a setting absent takes its default; names may
        use dashes for underscores, as flags do)."""
        return cls(**cls.typed_values(values))

    @classmethod
    def typed_values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` as the fields' types say (not yet checked by `__post_init__`); one ConfigError
        naming an unknown setting and the known ones."""
        given = {str(k).replace("-", "_"): v for k, v in values.items()}
        known = cls.names()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(f"unknown {cls.KIND + ' ' if cls.KIND else ''}setting(s) {', '.join(unknown)}; "
                              f"the settings are {', '.join(known)}")
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        for name, raw in given.items():
            coerce = cls.meta(name).get("coerce")
            out[name] = coerce(raw) if coerce is not None else coerce_to(name, raw, hints[name])
        return out

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` read as `from_mapping` reads them (no changes: this object)."""
        if not changes:
            return self
        return type(self).from_mapping({**asdict(self), **changes})  # type: ignore[call-overload]


def coerce_to(name: str, raw: Any, hint: Any) -> Any:
    """`raw` as the type hint `hint` says: "0.9" → 0.9, "3" → 3 (not "2.5"), "yes" → True, "none" → None
    for an optional field; one ConfigError naming the setting otherwise."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in _NONE_WORDS):
        if not optional:
            raise ConfigError(f"{name} needs a value")
        return None
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            t = str(raw).strip().lower()
            if t in ("1", "true", "yes", "on"):
                return True
            if t in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError(raw)
            return int(f)
        if base is float:
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {base.__name__}") from exc
    return str(raw).strip()

