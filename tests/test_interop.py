"""Edits of other tools: GGUF control vectors (llama.cpp / repeng) and lm-eval `steered` files, read and
applied here, checked against each tool's own formula on tiny models; export of additive edits."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter
from lm_eval.models.hf_steered import SteeredModel, steer
from transformers import AutoConfig

from alignez_eval import apply_edit
from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.interop import export_refusal, load_edit, write_control_vector
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ArtifactError
from tests.tiny import make_model

IDS = torch.tensor([[3, 9, 14, 2, 7, 11], [5, 5, 8, 1, 12, 4]])


@pytest.fixture(scope="module")
def llama():
    model, _ = make_model("llama", seed=3)
    return model.to(torch.float64)


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _write_repeng_gguf(path: Path, directions: dict[int, np.ndarray], hint: str = "llama") -> Path:
    """A control vector written the way repeng's ControlVector.export_gguf writes one."""
    w = GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", hint)
    w.add_uint32("controlvector.layer_count", len(directions))
    for layer, v in directions.items():
        w.add_tensor(f"direction.{layer}", v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _hooked(model, per_block: dict[int, torch.Tensor]):
    """llama.cpp's control vector by hand: add v_N to block N's output at every position."""
    def add(v, module, args, output):
        if isinstance(output, tuple):
            return (output[0] + v, *output[1:])
        return output + v
    return [model.model.layers[i].register_forward_hook(partial(add, v)) for i, v in per_block.items()]


def test_gguf_control_vector_equals_llama_cpp_formula(llama, tmp_path) -> None:
    d = llama.config.hidden_size
    g = np.random.default_rng(0)
    dirs = {1: g.standard_normal(d), 3: g.standard_normal(d)}
    path = _write_repeng_gguf(tmp_path / "cv.gguf", dirs)
    scale = 0.7
    handles = _hooked(llama, {i: scale * torch.tensor(v.astype(np.float32), dtype=torch.float64)
                              for i, v in dirs.items()})
    try:
        want = _logits(llama)
    finally:
        for h in handles:
            h.remove()
    with apply_edit(llama, path, alpha=scale):  # llama.cpp's --control-vector-scaled cv.gguf 0.7
        got = _logits(llama)
    assert not torch.allclose(want, _logits(llama))  # the vector changes the logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    # --control-vector-layer-range 3 3: only block 3's direction
    handles = _hooked(llama, {3: scale * torch.tensor(dirs[3].astype(np.float32), dtype=torch.float64)})
    try:
        want3 = _logits(llama)
    finally:
        for h in handles:
            h.remove()
    with apply_edit(llama, path, alpha=scale, layers="3"):
        torch.testing.assert_close(_logits(llama), want3, rtol=0, atol=1e-10)
    edit = load_edit(path, llama)
    assert edit.meta.positions == "all" and edit.meta.rule == "add" and edit.meta.component == "block"
    assert edit.meta.fit["source"]["model_hint"] == "llama"


def test_gguf_for_another_model_is_refused_with_the_shapes(llama, tmp_path) -> None:
    d = llama.config.hidden_size
    with pytest.raises(ArtifactError, match=f"hidden size is {d}"):
        load_edit(_write_repeng_gguf(tmp_path / "wide.gguf", {1: np.ones(d + 1)}), llama)
    with pytest.raises(ArtifactError, match="block 9"):
        load_edit(_write_repeng_gguf(tmp_path / "deep.gguf", {9: np.ones(d)}), llama)


def _steered_hooks(cfg: dict) -> dict:
    """lm-eval's own hook functions for a steered config (as SteeredModel.__init__ builds them)."""
    hooks = {}
    for hp, info in cfg.items():
        v = info["steering_vector"].to(torch.float64)
        if info["action"] == "add":
            hooks[hp] = partial(SteeredModel.add, vector=v * info["steering_coefficient"], head_index=None)
        else:
            b = info.get("bias")
            hooks[hp] = partial(SteeredModel.clamp, direction=v / torch.norm(v), value=info["steering_coefficient"],
                                bias=None if b is None else b.to(torch.float64), head_index=None)
    return hooks


@pytest.mark.parametrize("kind", ["add-blocks", "clamp-mlp"])
def test_steered_file_equals_lm_eval_steer(llama, tmp_path, kind: str) -> None:
    d = llama.config.hidden_size
    g = torch.Generator().manual_seed(1)
    if kind == "add-blocks":
        cfg = {f"layers.{i}": {"steering_vector": torch.randn(d, generator=g), "steering_coefficient": c,
                               "action": "add", "bias": None, "head_index": None} for i, c in ((0, 2.0), (2, -1.5))}
    else:
        cfg = {f"layers.{i}.mlp": {"steering_vector": torch.randn(1, d, generator=g), "steering_coefficient": c,
                                   "action": "clamp", "bias": torch.randn(d, generator=g), "head_index": None}
               for i, c in ((1, 3.0), (3, -0.5))}
    path = tmp_path / f"{kind}.pt"
    torch.save(cfg, path)
    with steer(llama, _steered_hooks(cfg)):
        want = _logits(llama)
    with apply_edit(llama, path):
        got = _logits(llama)
    assert not torch.allclose(want, _logits(llama))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)  # the artifact stores coefficient·v in float32
    edit = load_edit(path, llama)
    assert edit.meta.rule == ("add" if kind == "add-blocks" else "clamp")
    assert edit.meta.component == ("block" if kind == "add-blocks" else "mlp")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_with_code_is_refused_and_not_run(llama, tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"layers.1": {"steering_vector": torch.zeros(4), "action": _Payload(marker)}}, path)
    assert not marker.exists()
    with pytest.raises(ArtifactError, match="refused.*weights_only=True"):
        load_edit(path, llama)
    assert not marker.exists()


def test_steered_errors_name_the_problem(llama, tmp_path) -> None:
    d = llama.config.hidden_size
    v = torch.ones(d)
    bad = {"layers.1.self_attn": {"steering_vector": v, "steering_coefficient": 1.0, "action": "add"}}
    torch.save(bad, tmp_path / "hp.pt")
    with pytest.raises(ArtifactError, match=r"\['layers.1.self_attn'\].*layers\.0"):
        load_edit(tmp_path / "hp.pt", llama)
    torch.save({"layers.1": {"steering_vector": v, "action": "add", "head_index": 2}}, tmp_path / "head.pt")
    with pytest.raises(ArtifactError, match="attention head 2"):
        load_edit(tmp_path / "head.pt", llama)
    mixed = {"layers.1": {"steering_vector": v, "action": "add"}, "layers.2.mlp": {"steering_vector": v, "action": "add"}}
    torch.save(mixed, tmp_path / "mixed.pt")
    with pytest.raises(ArtifactError, match="split"):
        load_edit(tmp_path / "mixed.pt", llama)


def test_export_then_import_is_the_identity(llama, tmp_path) -> None:
    caa = random_edit(llama, rule="add", component="block", layers=[1, 2, 3], seed=4, steer_scale=3.0)
    caa.save(tmp_path / "caa.safetensors")
    caa = Edit.load(tmp_path / "caa.safetensors")
    write_control_vector(caa, tmp_path / "caa.gguf", alpha=1.0, model_type="llama")
    back = load_edit(tmp_path / "caa.gguf", llama)
    assert sorted(back.layers) == [1, 2, 3]
    for i in (1, 2, 3):
        assert torch.equal(back.layers[i].steer, caa.layers[i].steer)
    with apply_edit(llama, tmp_path / "caa.safetensors", positions="all"):
        want = _logits(llama)
    with apply_edit(llama, tmp_path / "caa.gguf"):  # positions=all is the control vector's default
        torch.testing.assert_close(_logits(llama), want, rtol=0, atol=0)
    # llama.cpp reads what gguf writes: the file says what repeng's files say
    r = GGUFReader(str(tmp_path / "caa.gguf"))
    assert sorted(t.name for t in r.tensors) == ["direction.1", "direction.2", "direction.3"]


def test_export_of_an_mlp_shift_is_a_block_shift_where_the_mlp_joins_the_residual(llama, tmp_path) -> None:
    caa = random_edit(llama, rule="add", component="mlp", layers=[2], seed=5, steer_scale=2.0)
    write_control_vector(caa, tmp_path / "mlp.gguf", alpha=1.5, model_type="llama")
    with apply_edit(llama, caa, alpha=1.5, positions="all"):
        want = _logits(llama)
    with apply_edit(llama, tmp_path / "mlp.gguf"):  # the file holds 1.5·steer rounded to float32
        torch.testing.assert_close(_logits(llama), want, rtol=0, atol=1e-6)
    assert "post_feedforward" not in (export_refusal(caa, "llama") or "")
    assert "model type 'gemma3'" in (export_refusal(caa, "gemma3") or "")


def test_export_refuses_alignez_and_layer_zero_saying_why(llama, tmp_path) -> None:
    alignez = random_edit(llama, rule="alignez", layers=[1, 2], seed=6)
    with pytest.raises(ArtifactError, match="not one vector per layer.*changes with every hidden state"):
        write_control_vector(alignez, tmp_path / "a.gguf")
    zero = random_edit(llama, rule="add", component="block", layers=[0, 1], seed=7)
    with pytest.raises(ArtifactError, match="block 0"):
        write_control_vector(zero, tmp_path / "z.gguf")
    # the artifact's default layers (as alignez-hf applies them), or --layers, decide what is exported
    write_control_vector(zero, tmp_path / "one.gguf", layers="1")
    assert sorted(load_edit(tmp_path / "one.gguf", llama).layers) == [1]
    caa = random_edit(llama, rule="add", component="block", layers=[0, 1, 2, 3], seed=7, default_layers="2;3")
    write_control_vector(caa, tmp_path / "default.gguf")
    assert sorted(load_edit(tmp_path / "default.gguf", llama).layers) == [2, 3]
    assert not (tmp_path / "a.gguf").exists() and not (tmp_path / "z.gguf").exists()
    with pytest.raises(ArtifactError, match="no vector"):
        write_control_vector(zero, tmp_path / "x.gguf", layers="1-2")


def test_alignez_hf_with_a_steered_file_generates_what_lm_eval_steered_does(tiny_dir, tmp_path) -> None:
    """The same .pt through lm-eval's own `steered` model and through alignez-hf edit=FILE: same answers."""
    from lm_eval.api.instance import Instance

    from model_adapters.alignez_hf import AlignEZHFLM

    path = str(tiny_dir("llama"))
    d = AutoConfig.from_pretrained(path).hidden_size
    g = torch.Generator().manual_seed(8)
    cfg = {f"layers.{i}": {"steering_vector": torch.randn(d, generator=g), "steering_coefficient": 4.0,
                           "action": "add", "bias": None, "head_index": None} for i in (1, 2)}
    torch.save(cfg, tmp_path / "s.pt")
    prompts = ["Human: How do I bake bread?\nAssistant:", "The quick brown fox"]
    reqs = [Instance("generate_until", {}, (p, {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": False}), i)
            for i, p in enumerate(prompts)]
    theirs = SteeredModel(pretrained=path, steer_path=str(tmp_path / "s.pt"), device="cpu",
                          batch_size=2).generate_until(reqs)
    ours = AlignEZHFLM(pretrained=path, edit=str(tmp_path / "s.pt"), device="cpu", batch_size=2)
    assert ours.edit_plan is not None and ours.edit_plan.config.positions == "all"
    assert ours.generate_until(reqs) == theirs
    ours.set_edit(edit="none")
    assert ours.generate_until(reqs) != theirs  # the steering changes these answers


def test_export_edit_command_writes_and_refuses(llama, tmp_path, capsys) -> None:
    from alignez_eval import cli

    random_edit(llama, rule="add", component="block", layers=[2], seed=9).save(tmp_path / "caa.safetensors")
    assert cli.main(["export-edit", str(tmp_path / "caa.safetensors"), "-o", str(tmp_path / "caa.gguf"),
                     "--alpha", "2"]) == 0
    back = load_edit(tmp_path / "caa.gguf", llama)
    assert torch.equal(back.layers[2].steer, 2 * Edit.load(tmp_path / "caa.safetensors").layers[2].steer)
    random_edit(llama, rule="alignez", layers=[2], seed=9).save(tmp_path / "a.safetensors")
    assert cli.main(["export-edit", str(tmp_path / "a.safetensors"), "-o", str(tmp_path / "a.gguf")]) != 0
    assert "not one vector per layer" in capsys.readouterr().err
