"""EditConfig: one clear error per bad value of every setting, strings read as typed values, defaults
from the dataclass fields, and no torch needed to check settings."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from alignez_eval.editing import config as config_module
from alignez_eval.editing.config import EDIT_SETTINGS, EditConfig
from alignez_eval.errors import ConfigError

LAYER_SYNTAX = r"use layers=auto \| all \| probe:K"

BAD = [
    ("alpha", "abc", r"^alpha='abc' must be a finite number \(e.g. alpha=1.0\)$"),
    ("alpha", "nan", r"^alpha=nan must be a finite number \(e.g. alpha=1.0\)$"),
    ("alpha", "inf", r"^alpha=inf must be a finite number"),
    ("alpha", True, r"^alpha=True must be a finite number"),
    ("alpha", None, r"^alpha=None must be a finite number"),
    ("alpha", [1.0], r"^alpha=\[1.0\] must be a finite number"),
    ("layers", "x", rf"cannot read 'x' in layers='x'; {LAYER_SYNTAX}"),
    ("layers", "3,x", rf"cannot read 'x' in layers='3,x'; {LAYER_SYNTAX}"),
    ("layers", "5-2", r"range '5-2' in layers='5-2' runs backwards"),
    ("layers", True, rf"layers=True is not a layer spec; {LAYER_SYNTAX}"),
    ("layers", 1.5, rf"layers=1.5 is not a list of layer indices; {LAYER_SYNTAX}"),
    ("layers", "probe:0", r"layers='probe:0': K must be ≥ 1"),
    ("n_layers", "x", r"^n_layers='x' must be a positive integer \(e.g. n_layers=3\)$"),
    ("n_layers", "0", r"^n_layers=0 must be a positive integer"),
    ("n_layers", -2, r"^n_layers=-2 must be a positive integer"),
    ("n_layers", 2.5, r"^n_layers=2.5 must be a positive integer"),
    ("n_layers", True, r"^n_layers=True must be a positive integer"),
    ("positions", "x", r"^positions='x'; choose one of last\|all\|generated$"),
    ("component", "attn", r"^component='attn'; choose one of mlp\|block$"),
    ("gate", "x", r"^gate='x'; choose one of paper\|flipped\|none$"),
]


@pytest.mark.parametrize("name,value,match", BAD)
def test_every_bad_value_names_the_setting_and_the_allowed_values(name: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        EditConfig.from_mapping({name: value})
    assert "\n" not in str(info.value)


def test_every_setting_has_a_bad_value_case() -> None:
    assert {name for name, _, _ in BAD} == set(EDIT_SETTINGS)


def test_unknown_settings_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown edit setting\(s\) colour, temperature; the settings are "
                                          r"alpha, layers, n_layers, positions, component, gate"):
        EditConfig.from_mapping({"alpha": 1.0, "temperature": 0.7, "colour": "red"})


@pytest.mark.parametrize("text,typed", [
    ({"alpha": "1.5"}, {"alpha": 1.5}),
    ({"alpha": "-2"}, {"alpha": -2.0}),
    ({"alpha": 2}, {"alpha": 2.0}),
    ({"layers": "0,5,10"}, {"layers": "0,5,10"}),
    ({"layers": 3}, {"layers": "3"}),
    ({"layers": -1.0}, {"layers": "-1"}),  # lm-eval's parser turns layers=-1 into -1.0 on some paths
    ({"layers": [3, 5]}, {"layers": "3;5"}),
    ({"layers": "none"}, {"layers": None}),
    ({"layers": "auto"}, {"layers": "auto"}),
    ({"layers": "probe:2"}, {"layers": "probe:2"}),
    ({"n_layers": "3"}, {"n_layers": 3}),
    ({"n_layers": 3.0}, {"n_layers": 3}),
    ({"n_layers": "none"}, {"n_layers": None}),
    ({"positions": " ALL "}, {"positions": "all"}),
    ({"component": "none"}, {"component": None}),
    ({"component": "Block"}, {"component": "block"}),
    ({"gate": "artifact"}, {"gate": None}),
    ({"gate": "none"}, {"gate": "none"}),
    ({"gate": None}, {"gate": "none"}),  # lm-eval's parser hands gate=none over as None
    ({"gate": "paper"}, {"gate": "paper"}),
])
def test_strings_coerce_to_the_same_config_as_typed_values(text: dict, typed: dict) -> None:
    assert EditConfig.from_mapping(text) == EditConfig(**typed)


def test_defaults_come_from_the_fields() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(EditConfig)}
    assert tuple(defaults) == EDIT_SETTINGS == EditConfig.names()
    assert EditConfig.from_mapping({}) == EditConfig() == EditConfig(**defaults)
    # positions: None = the artifact's (last for fits made here, all for imported control vectors)
    assert defaults["alpha"] == 1.0 and defaults["positions"] is None


def test_every_setting_has_help_and_a_coercion() -> None:
    for name in EDIT_SETTINGS:
        assert config_module.setting_help(name)
    assert set(config_module._COERCE) == set(EDIT_SETTINGS)
    assert config_module.setting_choices("positions") == ("last", "all", "generated")


def test_checking_settings_needs_no_torch() -> None:
    code = ("import sys; from alignez_eval.editing.config import EditConfig; "
            "EditConfig.from_mapping({'alpha': '2', 'layers': '1-3'}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _compare_args(*argv: str) -> argparse.Namespace:
    from alignez_eval.commands import compare

    p = argparse.ArgumentParser()
    compare.configure(p)
    return p.parse_args(["--base", "pretrained=x", "--tasks", "t", "--judge", "hf:j", "--name", "n", *argv])


def test_compare_flags_come_from_the_fields_and_are_checked_by_editconfig() -> None:
    from alignez_eval.commands.compare import edit_settings
    from alignez_eval.pipeline.parts import EDIT_ARG_KEYS, SET_EDIT_SETTINGS

    assert SET_EDIT_SETTINGS == tuple(s for s in EDIT_SETTINGS if s != "component")
    assert set(SET_EDIT_SETTINGS) < set(EDIT_ARG_KEYS)
    assert edit_settings(_compare_args()) == {}
    got = edit_settings(_compare_args("--alpha", "1.5", "--n_layers", "3", "--layers", "auto", "--gate", "none",
                                      "--positions", "all"))
    assert got == {"alpha": 1.5, "n_layers": 3, "layers": "auto", "gate": "none", "positions": "all"}
    with pytest.raises(ConfigError, match=r"^alpha='abc' must be a finite number \(e.g. alpha=1.0\)$"):
        edit_settings(_compare_args("--alpha", "abc"))
    with pytest.raises(ConfigError, match=r"^n_layers=0 must be a positive integer"):
        edit_settings(_compare_args("--n-layers", "0"))
    with pytest.raises(SystemExit):  # argparse lists the choices EditConfig declares
        _compare_args("--positions", "middle")


def test_compare_judge_batch_size_applies_to_local_judges_only() -> None:
    from alignez_eval.errors import ConfigError
    from alignez_eval.pipeline.compare_config import CompareConfig

    def cfg(judge: str, size: int | None) -> CompareConfig:
        return CompareConfig(base="pretrained=x", tasks=["t"], judge=judge, name="n", judge_batch_size=size)

    assert cfg("scorer:alpaca-gpt4-smollm2", 8).judge_spec().options.batch_size == 8
    assert cfg("hf:j,batch_size=2", None).judge_spec().options.batch_size == 2
    assert cfg("hf:j,batch_size=2", 6).judge_spec().options.batch_size == 6
    api = cfg("openai:gpt-4o-mini,concurrency=3", 8).judge_spec()  # no batch size: requests run concurrently
    assert api.options.concurrency == 3
    with pytest.raises(ConfigError, match="judge batch size must be a positive number"):
        cfg("hf:j", 0)
