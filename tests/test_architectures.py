"""Architecture resolution on tiny real models of every supported family."""

from __future__ import annotations

import pytest
import torch
from tiny import ARCHS, make_model
from transformers import AutoConfig, Gemma3ForConditionalGeneration

from alignez_eval.editing.architectures import find_components, find_layers, hidden_size, num_layers
from alignez_eval.errors import ArchitectureError

EXPECTED = {
    "llama": ("model.layers", "mlp"),
    "qwen2": ("model.layers", "mlp"),
    "gemma": ("model.layers", "mlp"),
    "gemma3_text": ("model.layers", "mlp"),
    "gpt2": ("transformer.h", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "mlp"),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_known_paths(arch: str) -> None:
    model, _ = make_model(arch)
    path, mlp = EXPECTED[arch]
    expected_layers = list(model.get_submodule(path))
    layers = find_layers(model)
    assert len(layers) == 4 and all(a is b for a, b in zip(layers, expected_layers, strict=True))
    mlps = find_components(model, "mlp")
    assert all(m is getattr(b, mlp) for m, b in zip(mlps, expected_layers, strict=True))
    assert all(a is b for a, b in zip(find_components(model, "block"), expected_layers, strict=True))
    assert hidden_size(model) == 32 and num_layers(model) == 4


def test_mlp_output_is_pre_residual_hidden_state() -> None:
    """Φ_l from the MLP hook has the residual-stream width and differs from the block output."""
    model, tok = make_model("llama")
    seen: dict[str, torch.Tensor] = {}
    mlp, block = find_components(model, "mlp")[1], find_components(model, "block")[1]
    h1 = mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("mlp", o))
    h2 = block.register_forward_hook(lambda m, i, o: seen.__setitem__("block", o))
    try:
        with torch.no_grad():
            model(**tok(["hello world"], return_tensors="pt"))
    finally:
        h1.remove()
        h2.remove()
    blk = seen["block"][0] if isinstance(seen["block"], tuple) else seen["block"]
    assert seen["mlp"].shape[-1] == 32 and blk.shape == seen["mlp"].shape
    assert not torch.allclose(seen["mlp"], blk)


def test_multimodal_language_model() -> None:
    cfg = AutoConfig.for_model(
        "gemma3",
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, vocab_size=300),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4,
    )
    model = Gemma3ForConditionalGeneration(cfg)
    layers = find_layers(model)
    assert len(layers) == 3
    assert all(a is b for a, b in zip(layers, model.model.language_model.layers, strict=True))
    assert hidden_size(model) == 32


class _PeftLikeLoraModel(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model


class _PeftLikeModel(torch.nn.Module):
    """The attribute layout of peft.PeftModelForCausalLM (peft is not a dependency): the HF model
    sits at .base_model.model and get_base_model() returns it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.base_model = _PeftLikeLoraModel(model)

    def get_base_model(self) -> torch.nn.Module:
        return self.base_model.model


def test_peft_layout_is_unwrapped() -> None:
    model, _ = make_model("gpt2")
    wrapped = _PeftLikeModel(model)
    assert all(a is b for a, b in zip(find_layers(wrapped), model.transformer.h, strict=True))
    assert hidden_size(wrapped) == 32


class _Odd(torch.nn.Module):
    """An unknown architecture: blocks under an unusual name, and no config to guess from."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Module()
        self.trunk.stack = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])
        self.trunk.other = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.ReLU()])


def test_guess_and_override() -> None:
    odd = _Odd()
    # A guess: the only homogeneous ModuleList.
    assert len(find_layers(odd)) == 3
    assert find_layers(odd, layers_path="trunk.stack")[0] is odd.trunk.stack[0]


def test_unknown_architecture_error_names_paths_and_fix() -> None:
    bare = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ArchitectureError) as err:
        find_layers(bare)
    msg = str(err.value)
    assert "model.layers" in msg and "transformer.h" in msg and "layers_path=" in msg
    with pytest.raises(ArchitectureError, match="layers_path='nope.x'"):
        find_layers(make_model("llama")[0], layers_path="nope.x")


def test_block_without_mlp() -> None:
    odd = _Odd()
    with pytest.raises(ArchitectureError, match="component=block"):
        find_components(odd, "mlp", layers_path="trunk.stack")
    assert len(find_components(odd, "block", layers_path="trunk.stack")) == 3
