"""Fitting on a LoRA adapter model: equal to fitting on the adapter merged into the weights; the
artifact records the adapter; alignez-hf warns when an artifact meets another model or adapter."""

from __future__ import annotations

import logging

import pytest

peft = pytest.importorskip("peft")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from alignez_eval.adapters import adapter_identity, fitted_elsewhere, mark, model_adapter  # noqa: E402
from alignez_eval.commands.fit import load_model  # noqa: E402
from alignez_eval.errors import ConfigError  # noqa: E402
from alignez_eval.fitting.run import run_fit  # noqa: E402
from alignez_eval.fitting.settings import FitSettings  # noqa: E402

QUERIES = [{"id": f"q{i}", "instruction": f"Explain how to do task number {i} step by step."} for i in range(6)]
FAST = FitSettings(char_tokens=6, answer_tokens=12, gen_batch_size=6, min_pairs=2, top_k=2)


@pytest.fixture(scope="module")
def lora(tiny_dir, tmp_path_factory):
    """(base dir, a random LoRA adapter dir on q/v/down, the same adapter merged and saved)."""
    base = tiny_dir("llama")
    root = tmp_path_factory.mktemp("lora")
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(1)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")
    wrapped = peft.get_peft_model(model, cfg)
    with torch.no_grad():  # a clearly non-zero update
        for n, p in wrapped.named_parameters():
            if "lora_" in n:
                p.mul_(3.0)
    wrapped.save_pretrained(root / "adapter")
    merged = wrapped.merge_and_unload()
    merged.save_pretrained(root / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "merged")
    return base, root / "adapter", root / "merged"


def _tensors(edit):
    return {(i, k): getattr(le, k) for i, le in edit.layers.items() for k in ("harm", "help")}


def test_fit_on_adapter_equals_fit_on_merged_weights(lora):
    base, adapter, merged = lora
    tok = AutoTokenizer.from_pretrained(base)
    unmerged = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    mark(unmerged, adapter_identity(adapter))
    on_adapter = run_fit(unmerged, tok, QUERIES, FAST, cache_dir=None, progress=False)
    on_merged = run_fit(AutoModelForCausalLM.from_pretrained(merged).eval(), tok, QUERIES, FAST, cache_dir=None,
                        progress=False)
    on_base = run_fit(AutoModelForCausalLM.from_pretrained(base).eval(), tok, QUERIES, FAST, cache_dir=None,
                      progress=False)
    assert [r["answers"] for r in on_adapter.pairs] == [r["answers"] for r in on_merged.pairs]
    a, m, b = _tensors(on_adapter.edit), _tensors(on_merged.edit), _tensors(on_base.edit)
    assert a.keys() == m.keys() and a
    for k in a:
        assert torch.allclose(a[k], m[k], atol=1e-4), k
    # the adapter matters: the base model's own fit is another edit
    assert a.keys() != b.keys() or any(a[k].shape != b[k].shape or not torch.allclose(a[k], b[k], atol=1e-3)
                                       for k in a)
    ident = on_adapter.edit.meta.fit["model_identity"]["adapter"]
    assert ident == {"name": "adapter", "sha256": adapter_identity(adapter)["sha256"]}
    assert "adapter" not in on_merged.edit.meta.fit["model_identity"]


def test_fit_cli_loads_the_adapter_merged(lora):
    base, adapter, merged = lora
    model, tok = load_model({"pretrained": str(base), "peft": str(adapter), "device": "cpu"})
    ref = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = tok("Explain how to bake bread.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)
    assert model_adapter(model) == adapter_identity(adapter)
    with pytest.raises(ConfigError, match="not a PEFT adapter directory"):
        load_model({"pretrained": str(base), "peft": str(base)})


def test_adapter_identity_follows_the_weights(lora, tmp_path):
    import shutil

    _, adapter, _ = lora
    copy = shutil.copytree(adapter, tmp_path / "adapter")
    assert adapter_identity(copy) == adapter_identity(adapter)
    data = bytearray((copy / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "adapter_model.safetensors").write_bytes(bytes(data))
    assert adapter_identity(copy)["sha256"] != adapter_identity(adapter)["sha256"]


def test_alignez_hf_warns_when_the_artifact_was_fitted_elsewhere(lora, tmp_path, caplog):
    from alignez_eval.fitting.outputs import write_outputs
    from model_adapters.alignez_hf import AlignEZHFLM

    base, adapter, _ = lora
    tok = AutoTokenizer.from_pretrained(base)
    on_base = run_fit(AutoModelForCausalLM.from_pretrained(base).eval(), tok, QUERIES, FAST, cache_dir=None,
                      progress=False)
    base_edit = write_outputs(on_base, tmp_path / "base.safetensors")["edit"]
    lm = AlignEZHFLM(pretrained=str(base), peft=str(adapter), edit="none", device="cpu", batch_size=2)
    assert lm.adapter == adapter_identity(adapter)
    with caplog.at_level(logging.WARNING):
        lm.set_edit(str(base_edit))
    assert "does not belong to this model" in caplog.text and "fitted with no adapter" in caplog.text
    # fitted on the loaded adapter model itself (as compare does): no warning
    on_lm = run_fit(lm.model, lm.tokenizer, QUERIES, FAST, cache_dir=None, progress=False)
    assert on_lm.edit.meta.fit["model_identity"]["adapter"] == lm.adapter
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        lm.set_edit(on_lm.edit)
    assert "does not belong" not in caplog.text
    # and the plain model refuses nothing but is told about the adapter the artifact needs
    assert "fitted with adapter adapter" in fitted_elsewhere(on_lm.edit.meta.fit["model_identity"],
                                                            AutoModelForCausalLM.from_pretrained(base), None)
