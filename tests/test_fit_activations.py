"""Φ_l capture: batched + padded reads equal one-text-at-a-time forwards, for both padding sides."""

from __future__ import annotations

import pytest
import torch
from tiny import make_model

from alignez_eval.editing.architectures import find_components
from alignez_eval.errors import DataError
from alignez_eval.fitting.capture import capture, last_real_index, load_activations, save_activations
from alignez_eval.selfpref.templates import activation_text

TEXTS = [activation_text("How do I bake bread?", "Mix flour, water, salt and yeast.")[0],
         activation_text("Hi", "Hello.")[0],
         activation_text("What is 2+2?", "4")[0]]


def _reference(model, tok, text, component="mlp"):
    """Φ of every layer at every position for one unpadded text (independent hook code)."""
    comps = find_components(model, component)
    got = {}
    handles = [c.register_forward_hook(
        lambda m, i, o, k=k: got.__setitem__(k, (o[0] if isinstance(o, tuple) else o).detach().float()))
        for k, c in enumerate(comps)]
    try:
        with torch.no_grad():
            model(**tok(text, return_tensors="pt"))
    finally:
        for h in handles:
            h.remove()
    return torch.stack([got[k][0] for k in range(len(comps))])  # (L, T, d)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch,component", [("llama", "mlp"), ("gpt2", "block")])
def test_last_token_read_matches_unpadded_forward(arch, component, side):
    model, tok = make_model(arch)
    tok.padding_side = side
    acts = capture(model, tok, TEXTS, component=component, batch_size=3, progress=False)
    assert acts.shape == (3, 4, 32) and acts.dtype == torch.float32
    for i, t in enumerate(TEXTS):
        ref = _reference(model, tok, t, component)[:, -1]
        assert torch.allclose(acts[i], ref, atol=1e-4), (arch, side, i)
    assert tok.padding_side == side


def test_mean_read_averages_the_answer_tokens():
    model, tok = make_model("llama")
    starts = []
    for t in TEXTS:
        starts.append(t.index("Assistant: ") + len("Assistant: "))
    acts = capture(model, tok, TEXTS, read="mean", answer_starts=starts, batch_size=2, progress=False)
    for i, t in enumerate(TEXTS):
        ref = _reference(model, tok, t)
        enc = tok(t, return_offsets_mapping=True)
        sel = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if b > a and b > starts[i]]
        assert sel, "the answer has tokens"
        assert torch.allclose(acts[i], ref[:, sel].mean(1), atol=1e-4)


def test_last_real_index_both_sides():
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_real_index(right).tolist() == [1, 3]
    assert last_real_index(left).tolist() == [3, 3]


def test_activation_file_refuses_another_hidden_size(tmp_path):
    p = tmp_path / "acts.safetensors"
    save_activations(p, {"phi": torch.zeros(2, 4, 48)}, {"texts": "x"})
    tensors, meta = load_activations(p, 48, 4)
    assert meta == {"texts": "x"} and tensors["phi"].shape == (2, 4, 48)
    with pytest.raises(DataError, match="hidden size 48.*hidden size 32"):
        load_activations(p, 32, 4)
