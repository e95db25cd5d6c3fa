"""Sweep configs: validation, grid/random expansion, the seeded split, native wandb emission."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from alignez_eval.errors import ConfigError
from alignez_eval.pipeline.sweep_config import (
    load_sweep,
    parse_sweep,
    point_name,
    split_ids,
    substitute,
    wandb_sweep_config,
)

BASE = {"base": "pretrained=/m", "tasks": ["alignez_embedded"], "judge": "hf:/j"}


def test_grid_is_the_cartesian_product_with_fixed_settings() -> None:
    cfg = parse_sweep({**BASE, "fixed": {"method": "alignez"},
                       "parameters": {"alpha": [0.5, 1.0, 2.0], "n_layers": {"values": [1, 3]}}})
    pts = cfg.points()
    assert len(pts) == 6
    assert {(p["alpha"], p["n_layers"]) for p in pts} == {(a, n) for a in (0.5, 1.0, 2.0) for n in (1, 3)}
    assert all(p["method"] == "alignez" for p in pts)
    assert point_name(pts[0]) == "alpha=0.5,method=alignez,n_layers=1"


def test_random_search_is_seeded_distinct_and_in_range() -> None:
    raw = {**BASE, "search": "random", "n_points": 5, "seed": 3,
           "parameters": {"alpha": {"min": 0.1, "max": 4.0, "distribution": "log_uniform_values"},
                          "n_layers": {"min": 1, "max": 6}, "method": ["alignez", "caa"]}}
    a, b = parse_sweep(raw).points(), parse_sweep(raw).points()
    assert a == b and len(a) == 5
    assert len({point_name(p) for p in a}) == 5
    for p in a:
        assert 0.1 <= p["alpha"] <= 4.0 and isinstance(p["n_layers"], int) and 1 <= p["n_layers"] <= 6
        assert p["method"] in ("alignez", "caa")
    assert parse_sweep({**raw, "seed": 4}).points() != a


@pytest.mark.parametrize("bad, match", [
    ({"parameters": {"temperature": [1]}}, "unknown sweep parameter"),
    ({"parameters": {"alpha": {"min": 0, "max": 1}}}, "grid search needs value lists"),
    ({"parameters": {"alpha": []}}, "empty value list"),
    ({"parameters": {"alpha": [1]}, "search": "bayes"}, "grid or random"),
    ({"parameters": {"alpha": [1]}, "search": "random"}, "n_points"),
    ({"parameters": {"alpha": [1]}, "fixed": {"alpha": 2}}, "both fixed and searched"),
    ({"parameters": {"alpha": [1]}, "metric": "gap_closed"}, "needs a `tuned` model"),
    ({"parameters": {"alpha": [1]}, "colour": "red"}, "unknown key"),
])
def test_bad_configs_name_the_fix(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_sweep({**BASE, **bad})
    with pytest.raises(ConfigError, match="missing `tasks`"):
        parse_sweep({"base": "x", "judge": "hf:/j", "parameters": {"alpha": [1]}})


def test_judge_is_optional_and_checked_at_parse_time() -> None:
    from alignez_eval.defaults import DEFAULT_JUDGE

    raw = {"base": "x", "tasks": ["t"], "parameters": {"alpha": [1]}}
    assert parse_sweep(raw).judge == DEFAULT_JUDGE
    # an agent's copy keeps ${model:…} unexpanded; the spec is still checked
    assert parse_sweep({**raw, "judge": "hf:${model:qwen2.5-coder-1.5b-instruct},batch_size=8"}).judge.startswith("hf:")
    for judge, match in (("hf:x,concurrency=2", "judge: judge setting.s. concurrency do not apply to the hf"),
                         ("scorer:no-such-head", "judge: scorer head 'no-such-head' is neither"),
                         ("hf:x,mode=both", "judge: judge mode 'both' is unknown")):
        with pytest.raises(ConfigError, match=match):
            parse_sweep({**raw, "judge": judge})


def test_split_is_seeded_disjoint_and_stable_under_reordering() -> None:
    ids = [f"q{i}" for i in range(40)]
    sweep, held = split_ids(ids, 0.5, seed=0)
    assert len(held) == 20 and len(sweep) == 20 and not set(sweep) & set(held)
    assert set(sweep) | set(held) == set(ids)
    assert sweep == [i for i in ids if i in set(sweep)]  # original order kept
    assert split_ids(list(reversed(ids)), 0.5, 0)[1] == [i for i in reversed(ids) if i in set(held)]
    assert split_ids(ids, 0.5, seed=1)[1] != held
    with pytest.raises(ConfigError, match="at least 4"):
        split_ids(ids[:3], 0.5, 0)


def test_substitution_and_native_wandb_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_URL", "http://127.0.0.1:9/v1")
    assert substitute("openai:${env:JUDGE_URL}") == "openai:http://127.0.0.1:9/v1"
    from alignez_eval.dtypes import fast_dtype

    assert substitute("pretrained=x,dtype=${dtype:auto}") == f"pretrained=x,dtype={fast_dtype('cpu')}"
    assert substitute("dtype=${dtype:float16}") == "dtype=float16"
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        substitute("${env:NOPE_NOT_SET}")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "s", "judge": "openai:${env:JUDGE_URL}",
                                    "fixed": {"method": "alignez"},
                                    "parameters": {"alpha": [1, 2], "n_layers": [1, 3]}}))
    cfg = load_sweep(path)
    assert cfg.judge == "openai:http://127.0.0.1:9/v1"
    native = wandb_sweep_config(cfg, path)
    assert native["method"] == "grid" and native["program"] == "alignez-eval"
    assert native["command"][:3] == ["${env}", "${program}", "sweep-agent"]
    assert native["command"][-1] == str(path.resolve())
    assert native["parameters"] == {"alpha": {"values": [1, 2]}, "n_layers": {"values": [1, 3]},
                                    "method": {"value": "alignez"}}
    assert native["metric"] == {"name": "sweep/net_win", "goal": "maximize"}


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parent.parent / "sweeps"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_sweep(path, resolve=False)
        assert cfg.points(), path
    demo = load_sweep(root / "demo_alpha_layers.yaml", resolve=False)
    assert {p.name for p in demo.params} == {"alpha", "n_layers"} and demo.search == "grid"


@pytest.mark.parametrize("yaml_params,match", [
    ("parameters: {alpha: [0.5, abc]}", r"parameter alpha: alpha='abc' must be a finite number \(e.g. alpha=1.0\)"),
    ("parameters: {alpha: [1.0]}\nfixed: {positions: middle}",
     r"fixed setting positions: positions='middle'; choose one of last\|all\|generated"),
    ("parameters: {n_layers: {min: 0, max: 3}}\nsearch: random\nn_points: 2",
     r"parameter n_layers: n_layers=0 must be a positive integer"),
    ("parameters: {layers: ['1-2', '3,x']}", r"parameter layers: cannot read 'x' in layers='3,x'"),
    ("parameters: {gate: [paper, sometimes]}", r"parameter gate: gate='sometimes'; choose one of paper\|flipped\|none"),
])
def test_bad_edit_value_in_yaml_fails_at_load(tmp_path: Path, yaml_params: str, match: str) -> None:
    """A bad inference-time value fails when the YAML is read (the models are never loaded: the
    paths below do not exist), with the file, the setting and its allowed values named."""
    path = tmp_path / "bad.yaml"
    path.write_text("base: pretrained=/no/such/model\ntasks: [alignez_embedded]\njudge: hf:/no/such/judge\n"
                    + yaml_params + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"sweep config {re.escape(str(path))}: {match}"):
        load_sweep(path)


def test_good_edit_values_in_yaml_are_kept_as_written() -> None:
    cfg = parse_sweep({**BASE, "fixed": {"gate": "none", "layers": "auto"},
                       "parameters": {"alpha": ["1.5", 2], "positions": ["last", "all"]}})
    assert {(p["alpha"], p["positions"]) for p in cfg.points()} == {
        ("1.5", "last"), ("1.5", "all"), (2, "last"), (2, "all")}
