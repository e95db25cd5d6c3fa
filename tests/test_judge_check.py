"""judge-check: the degradations, the packaged prompt set, scoring, and the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_judge_openai import FakeJudgeServer

from alignez_eval.cli import main as cli_main
from alignez_eval.degrade import gibberish, loop, truncate_midway
from alignez_eval.judge import judge_check, parse_judge_spec
from alignez_eval.judge.check import build_check_items, load_check_prompts
from alignez_eval.judge.spec import JudgeSpec

GOOD = "First sentence here. Second sentence is longer than the first one. Third one ends it."


def test_packaged_prompts():
    prompts = load_check_prompts()
    assert len(prompts) == 24 and len({p["id"] for p in prompts}) == 24
    assert all(50 <= len(p["answer"].split()) <= 120 for p in prompts)


def test_degradations():
    t = truncate_midway(GOOD)
    assert GOOD.startswith(t) and len(t.split()) < len(GOOD.split()) * 0.5 and not t.endswith(".")
    looped = loop(GOOD)
    assert looped.count("First sentence here.") >= 3 and "Second" not in looped
    g = gibberish(GOOD, seed=1)
    assert Counter(g.split()) == Counter(GOOD.split()) and g != GOOD
    assert gibberish(GOOD, seed=1) == g  # seeded
    prompts = load_check_prompts()[:6]
    items = build_check_items(prompts)
    assert len(items) == 24
    swapped = [it for it in items if dict(it.meta)["degradation"] == "swapped"]
    for it, p in zip(swapped, prompts, strict=True):
        assert it.baseline == p["answer"].strip() and it.candidate != it.baseline
        assert it.candidate in {q["answer"].strip() for q in prompts}


def test_judge_check_scores_and_cli(tmp_path):
    # The loopback judge prefers more "good" words: put them in the good answers only, except for
    # one prompt whose answer the 'swapped' degradation hands to another prompt.
    prompts = [{"id": f"p{i}", "instruction": f"Question {i}?",
                "answer": f"Answer {i} is good good and complete. It explains everything well."}
               for i in range(4)]
    with FakeJudgeServer() as srv:
        spec = {"backend": "openai", "model": "fake", "base_url": srv.url, "api_key_env": "ALIGNEZ_TEST_NO_KEY",
                "timeout_s": 5, "max_retries": 1, "backoff_base_s": 0.01}
        res = judge_check(spec, prompts=prompts)
        # By the judge's rule: truncated keeps one "good" of two -> the good answer wins; looped
        # repeats the first sentence (two "good"s) 3x -> the degraded answer wins; swapped has the
        # same count and gibberish the same words -> ties. Ties and losses both count as failures.
        assert res["counts"]["truncated"] == {"win": 0, "tie": 0, "lose": 4, "error": 0}
        assert res["counts"]["looped"] == {"win": 4, "tie": 0, "lose": 0, "error": 0}
        assert res["accuracy"] == {"truncated": 1.0, "looped": 0.0, "swapped": 0.0, "gibberish": 0.0}
        assert res["overall_accuracy"] == 0.25
        assert res["swap_consistency"] == 1.0 and res["errors"] == 0
        assert res["stats"]["calls"] == 2 * 16
        prompts[0]["answer"] = "No magic words at all in this one. None whatsoever, really."
        res2 = judge_check(spec, prompts=prompts)
        # p2 is swapped with p0's answer (no "good"): right; p0 gets p2's answer: wrong
        assert res2["counts"]["swapped"] == {"win": 1, "tie": 2, "lose": 1, "error": 0}

        pfile = tmp_path / "p.jsonl"
        pfile.write_text("".join(json.dumps(p) + "\n" for p in prompts))
        out = tmp_path / "check.json"
        rc = cli_main(["judge-check", "--judge", f"openai:fake@{srv.url},api_key_env=ALIGNEZ_TEST_NO_KEY",
                       "--prompts", str(pfile), "--n", "3", "--out", str(out)])
        assert rc == 0
        saved = json.loads(out.read_text())
        assert saved["n_prompts"] == 3 and set(saved["accuracy"]) == {"truncated", "looped", "swapped", "gibberish"}


def test_spec_parsing():
    s = parse_judge_spec("openai:gpt-4o-mini@http://127.0.0.1:8080/v1,concurrency=8,mode=single,margin=1")
    assert (s.backend, s.model, s.options.base_url, s.options.concurrency, s.mode, s.margin, s.scale) == (
        "openai", "gpt-4o-mini", "http://127.0.0.1:8080/v1", 8, "single", 1.0, 10)
    # the local judge's defaults, chosen by agreement with GPT-4 (README "Judge agreement")
    h = parse_judge_spec("hf:qwen2.5-coder-1.5b-instruct")
    assert (h.mode, h.prompt, h.margin, h.length_debias, h.output_format) == (
        "pairwise", "pairwise_anchored", 0.0, 0.05, "label")
    g = parse_judge_spec("hf:qwen2.5-coder-1.5b-instruct,mode=single")
    assert (g.prompt, g.scale, g.margin, g.length_debias) == ("single", 9, 0.5, 0.0)
    assert parse_judge_spec("hf:x,prompt=pairwise,margin=0.05").margin == 0.05
    assert parse_judge_spec("openai:m@http://h/v1").length_debias == 0.0
    assert parse_judge_spec("hf:x,length_debias=0").length_debias == 0.0  # an explicit 0 is kept
    assert isinstance(parse_judge_spec(h), JudgeSpec)
    # margins do not change the cache identity; prompts and models do
    assert parse_judge_spec("hf:x,margin=2").identity_hash() == parse_judge_spec("hf:x").identity_hash()
    assert parse_judge_spec("hf:y").identity_hash() != parse_judge_spec("hf:x").identity_hash()
    from alignez_eval.errors import ConfigError

    for bad in ("nope:x", "hf:x,batch_size=zero", "hf:x,colour=red", "hf:x,mode=both", "hf:x,batch_size=0"):
        with pytest.raises(ConfigError):
            parse_judge_spec(bad)
    for mapping, match in (({"backend": "nope", "model": "m"}, "judge backend 'nope' is unknown; use one of"),
                           ({"backend": "nope"}, "judge backend 'nope' is unknown"),
                           ({"backend": "hf"}, "needs at least backend and model"),
                           ({"model": "m"}, "needs at least backend and model")):
        with pytest.raises(ConfigError, match=match):
            parse_judge_spec(mapping)


def test_backend_settings_are_nested_and_checked_per_backend(tmp_path):
    from alignez_eval.errors import ConfigError
    from alignez_eval.judge.spec import HFOptions, OpenAIOptions, ScorerOptions

    h = parse_judge_spec("hf:x,batch_size=8,prefix_cache=0,margin=0.1")
    assert isinstance(h.options, HFOptions) and (h.options.batch_size, h.options.prefix_cache, h.margin) == (8, 0, 0.1)
    assert isinstance(parse_judge_spec("scorer:alpaca-gpt4-smollm2").options, ScorerOptions)
    # a setting of another backend is named with its owner, not silently ignored
    with pytest.raises(ConfigError, match=r"concurrency do not apply to the scorer backend \(concurrency belong to the openai"):
        parse_judge_spec("scorer:alpaca-gpt4-smollm2,concurrency=4")
    with pytest.raises(ConfigError, match="dtype do not apply to the scorer backend"):
        parse_judge_spec("scorer:alpaca-gpt4-smollm2,dtype=bfloat16")  # the head fixes its feature dtype
    with pytest.raises(ConfigError, match="its settings are backend, model, mode"):
        parse_judge_spec("openai:m,colour=red")
    # YAML may nest the backend's settings under its name; flat and nested read the same
    f = tmp_path / "j.yaml"
    f.write_text("backend: openai\nmodel: m\nmode: single\nopenai:\n  concurrency: 2\n  temperature: none\n"
                 "  extra_body: {reasoning_effort: low}\n")
    nested = parse_judge_spec(f)
    flat = parse_judge_spec({"backend": "openai", "model": "m", "mode": "single", "concurrency": "2",
                             "temperature": "none", "extra_body": {"reasoning_effort": "low"}})
    assert nested == flat and nested.options == OpenAIOptions(concurrency=2, temperature=None,
                                                             extra_body={"reasoning_effort": "low"})
    assert nested.identity_hash() == flat.identity_hash()
    # a manifest's record reads back as the same spec
    assert parse_judge_spec(nested.public_dict()) == nested
    with pytest.raises(ConfigError, match="extra_body must be a mapping"):
        parse_judge_spec("openai:m,extra_body=x")


def test_with_overrides_takes_the_new_modes_defaults_and_keeps_a_preloaded_model():
    from alignez_eval.judge.spec import with_overrides

    marker = object()
    h = parse_judge_spec("hf:x,batch_size=8").using(marker, marker)
    s = with_overrides(h, mode="single")
    assert (s.mode, s.prompt, s.margin, s.length_debias, s.options.batch_size) == ("single", "single", 0.5, 0.0, 8)
    assert s.model_obj is marker and s.tokenizer_obj is marker
    assert with_overrides(h, margin=0.3).margin == 0.3 and with_overrides(h) is h


def test_spec_yaml_file(tmp_path):
    f = tmp_path / "judge.yaml"
    f.write_text("backend: openai\nmodel: m\nbase_url: http://127.0.0.1:1/v1\nconcurrency: 2\n")
    s = parse_judge_spec(str(f))
    assert (s.backend, s.options.concurrency, s.mode) == ("openai", 2, "pairwise")
