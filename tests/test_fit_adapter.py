"""`alignez-hf fit=...`: fitting on the evaluation's own prompts inside lm-eval, cached."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance
from test_fit import Counter

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.fitting.on_the_fly import queries_from_requests
from model_adapters.alignez_hf import AlignEZHFLM

DOCS = [{"instruction": f"Explain how to do task number {i} step by step.", "category": "regular"} for i in range(4)]
GEN_KW = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}
FIT_ARGS = dict(fit_char_tokens=6, fit_answer_tokens=10, fit_min_pairs=2, fit_probe_folds=2)


def requests(docs=DOCS):
    return [Instance("generate_until", d, (f"Human: {d['instruction']}\nAssistant:", dict(GEN_KW)), i)
            for i, d in enumerate(docs)]


def test_queries_come_from_doc_instructions_else_contexts():
    reqs = requests() + [Instance("loglikelihood", {"question": "q"}, ("Context A", " cont"), 9),
                         Instance("loglikelihood", {"question": "q"}, ("Context A", " other"), 10)]
    qs = queries_from_requests(reqs)
    assert [q["instruction"] for q in qs] == [d["instruction"] for d in DOCS] + ["Context A"]
    assert qs[0]["category"] == "regular" and qs[0]["id"].startswith("q-")


def test_fit_self_fits_on_the_evaluation_prompts_and_reuses_the_cache(tiny_dir, tmp_path):
    out = tmp_path / "self.safetensors"
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", batch_size=4, fit="self",
                     fit_cache_dir=str(tmp_path / "cache"), fit_out=str(out), fit_gate=None, **FIT_ARGS)
    assert lm.edit_plan is None  # nothing is fitted before the requests arrive
    outs = lm.generate_until(requests())
    assert len(outs) == 4
    plan = lm.edit_plan
    assert plan is not None and plan.edit.meta.method == "v2" and plan.gate == "none"
    pairs = [json.loads(ln) for ln in out.with_name("self.pairs.jsonl").read_text().splitlines()]
    assert [p["query"] for p in pairs] == [d["instruction"] for d in DOCS]
    assert lm.get_model_info()["alignez_edit"]["method"] == "v2"
    # a second evaluation with the same model, prompts and settings reuses the fit
    lm2 = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", batch_size=4, fit="self",
                      fit_cache_dir=str(tmp_path / "cache"), fit_gate=None, **FIT_ARGS)
    with Counter(lm2.model) as c:
        edit = lm2._fit_edit(requests())
    assert c.generate == 0 and c.forward == 0
    assert edit.sha256 == plan.edit.sha256


def test_fit_from_a_query_file_with_a_baseline_method(tiny_dir, tmp_path):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", batch_size=4, fit=str(qfile),
                     fit_method="caa", fit_top_k=2, fit_cache_dir=str(tmp_path / "cache"), **FIT_ARGS)
    lm.generate_until(requests(DOCS[:1]))
    plan = lm.edit_plan
    assert plan.rule.name == "add" and len(plan.layers) == 2


def test_bad_fit_args_are_clear(tiny_dir, tmp_path):
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", fit="self", fit_method="v7",
                     fit_cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown method 'v7'"):
        lm.generate_until(requests())
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", fit="self", fit_colour="red",
                     fit_cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown fit setting\(s\) colour"):
        lm.generate_until(requests())
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", fit=str(tmp_path / "none.jsonl"),
                     fit_cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        lm.generate_until(requests())
