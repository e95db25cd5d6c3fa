"""Edit hooks on a model split across two execution devices (device_map / parallelize=True).

A real split is built with accelerate's own `dispatch_model` (the hooks `from_pretrained(device_map=…)`
installs), alternating layers between `cpu` and a second device. On CPU-only torch the second device
is `lazy` (the LazyTensor TorchScript backend that ships with every torch wheel): unlike `meta`, which
only propagates shapes (and lets e.g. `meta @ cpu` through silently), it computes real values on
CPU and refuses every op that mixes a lazy tensor with a non-scalar CPU one, as CUDA does with
CPU tensors. The same test runs with `cuda` as the second device where a GPU is present
(bench/gpu.sh runs it).

Each case is checked against the same edit on the unsplit model: equal generations and logits, and
an edit that changes them at all.
"""

from __future__ import annotations

import functools
import importlib

import pytest
import torch
from tiny import make_model

from alignez_eval.editing.gates import capture_query_states, query_gates
from alignez_eval.editing.hooks import active_hook_count, edit_session
from alignez_eval.editing.plan import EditConfig, prepare_plan
from alignez_eval.editing.positions import GenerationPositions, SpanPositions, loglikelihood_span
from alignez_eval.editing.random_edit import random_edit


@functools.cache
def _lazy_backend() -> str | None:
    """Register the LazyTensor TorchScript backend once per process (a second init raises);
    None where it works, else why not."""
    try:
        importlib.import_module("torch._lazy.ts_backend").init()
    except Exception as exc:  # a torch build without the LazyTensor backend
        return str(exc)
    return None


def _second_device(name: str) -> str:
    if name == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        return "cuda:0"
    why = _lazy_backend()
    if why is not None:
        pytest.skip(f"torch lazy backend unavailable: {why}")
    return "lazy"


def _split(model: torch.nn.Module, other: str, first_on_other: bool) -> torch.nn.Module:
    """Layers alternate between cpu and `other`; embeddings, norm and head where `first_on_other`
    says, so the inputs and the attention mask live on the other device than some layers either way."""
    from accelerate import dispatch_model

    n = len(model.model.layers)
    edge = other if first_on_other else "cpu"
    device_map = {"model.embed_tokens": edge, "model.rotary_emb": edge, "model.norm": edge, "lm_head": edge}
    for i in range(n):
        device_map[f"model.layers.{i}"] = other if i % 2 else "cpu"
    # main_device="cpu": cpu entries execute on cpu (with a GPU main device accelerate would treat
    # them as offloaded weights executing on the GPU, i.e. no split at all).
    return dispatch_model(model, device_map=device_map, main_device="cpu")


CASES = [
    # (rule, positions, layers, gate)
    ("alignez", "last", "all", "none"),
    ("alignez", "all", "all", "none"),
    ("alignez", "generated", "all", "none"),
    ("alignez", "all", "all", "paper"),
    ("alignez", "last", "auto", "paper"),
    ("projection", "all", "auto", "none"),
    ("add", "all", "all", "none"),
]


def _plan(model, rule: str, positions: str, layers: str, gate: str):
    edit = random_edit(model, k_harm=2, k_help=2, seed=3, rule=rule, layers=range(4), steer_scale=2.0, gate=gate)
    return prepare_plan(edit, EditConfig(alpha=3.0, layers=layers, positions=positions, n_layers=2), model)


def _generate(model, tok, plan, positions: str) -> torch.Tensor:
    tok.padding_side = "left"
    enc = tok(["Human: How do I bake bread?", "hi", "The quick brown fox"], return_tensors="pt", padding=True)
    gates = None
    if plan is not None and plan.needs_query_states:
        qpos = torch.full((3,), enc["input_ids"].shape[1] - 1)
        gates = query_gates(plan, capture_query_states(model, plan, lambda: model(**enc), qpos))

    def run() -> torch.Tensor:
        return model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                              pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)

    with torch.no_grad():
        if plan is None:
            out = run()
        else:
            with edit_session(model, plan, GenerationPositions(positions), gates):
                out = run()
    return torch.stack([s.cpu() for s in out.logits])


def _loglikelihood_logits(model, tok, plan, positions: str) -> torch.Tensor:
    """Right-padded rows with per-row context/continuation spans, as lm-eval's loglikelihood sends them."""
    tok.padding_side = "right"
    rows = [("Human: How do I bake", " bread?"), ("hi", " there friend")]
    ids = [tok(c)["input_ids"] + tok(x)["input_ids"] for c, x in rows]
    conts = [len(tok(x)["input_ids"]) for _, x in rows]
    width = max(len(r) for r in ids) - 1
    inp = torch.tensor([(r[:-1] + [0] * width)[:width] for r in ids])
    spans = [loglikelihood_span(positions, len(r) - 1, c) for r, c in zip(ids, conts, strict=True)]
    starts, ends = torch.tensor([s for s, _ in spans]), torch.tensor([e for _, e in spans])
    with torch.no_grad():
        gates = None
        if plan.needs_query_states:
            qpos = torch.tensor([len(r) - 1 - c for r, c in zip(ids, conts, strict=True)])
            gates = query_gates(plan, capture_query_states(model, plan, lambda: model(inp), qpos))
        with edit_session(model, plan, SpanPositions(starts, ends), gates):
            return model(inp).logits.cpu()


@pytest.mark.parametrize("first_on_other", [False, True], ids=["inputs-on-cpu", "inputs-on-other"])
@pytest.mark.parametrize("rule,positions,layers,gate", CASES)
@pytest.mark.parametrize("device", ["lazy", "cuda"])
def test_edit_on_split_model_equals_unsplit(device: str, rule: str, positions: str, layers: str, gate: str,
                                            first_on_other: bool) -> None:
    other = _second_device(device)
    ref_model, tok = make_model("llama")
    ref_plan = _plan(ref_model, rule, positions, layers, gate)
    want_gen = _generate(ref_model, tok, ref_plan, positions)
    unedited = _generate(ref_model, tok, None, positions)
    assert (want_gen - unedited).abs().max() > 1e-3  # the edit does something measurable

    split_model, _ = make_model("llama")
    split = _split(split_model, other, first_on_other)
    devices = {p.device.type for p in split.parameters()}
    assert devices == {"cpu", torch.device(other).type}
    plan = _plan(split, rule, positions, layers, gate)
    # bases wait where their layer runs, not on the device of the model's first parameter
    assert [plan.help[i].device.type for i in range(4)] == ["cpu", torch.device(other).type] * 2
    got_gen = _generate(split, tok, plan, positions)
    torch.testing.assert_close(got_gen, want_gen, atol=2e-4, rtol=1e-4)

    torch.testing.assert_close(_loglikelihood_logits(split, tok, plan, positions),
                               _loglikelihood_logits(ref_model, tok, ref_plan, positions), atol=2e-4, rtol=1e-4)
    assert active_hook_count(split) == 0



@pytest.mark.parametrize("device", ["lazy", "cuda"])
def test_edit_with_offloaded_layers(device: str, tmp_path) -> None:
    """Offloaded modules keep their weights on `meta` between calls and run on the main device
    (here: disk offload running on cpu, and the rest of the layers on a second device). No basis
    may be put on `meta`, including when the model's first parameter is an offloaded one."""
    from accelerate import dispatch_model

    other = _second_device(device)
    ref_model, tok = make_model("llama")
    want = _generate(ref_model, tok, _plan(ref_model, "alignez", "all", "all", "paper"), "all")
    model, _ = make_model("llama")
    device_map = {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": "disk" if i < 2 else other for i in range(4)})
    split = dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
    assert next(split.parameters()).device.type == "meta"
    assert split.model.layers[0].mlp.up_proj.weight.device.type == "meta"
    plan = _plan(split, "alignez", "all", "all", "paper")
    assert "meta" not in {t.device.type for t in plan.help.values()}
    torch.testing.assert_close(_generate(split, tok, plan, "all"), want, atol=2e-4, rtol=1e-4)
