"""The hooks against an independent computation: captured activations before and after each edit
hook, the paper's formula applied by hand in float64, position masks derived from first principles."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import make_model

from alignez_eval.editing.config import EditConfig
from alignez_eval.editing.gates import capture_query_states, query_gates
from alignez_eval.editing.hooks import active_hook_count, edit_session
from alignez_eval.editing.layers import check_no_split_layer_list, parse_layers
from alignez_eval.editing.plan import prepare_plan
from alignez_eval.editing.positions import GenerationPositions, SpanPositions, loglikelihood_span
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ConfigError


def hand_delta(x: np.ndarray, harm: np.ndarray, help_: np.ndarray, alpha: float,
               harm_keep: np.ndarray | None = None, help_keep: np.ndarray | None = None) -> np.ndarray:
    """Σ over directions, one vector at a time: −ReLU(⟨x,θ⟩)θ for Θ_harm, +α tanh(⟨x,θ⟩)θ for Θ_help."""
    out = np.zeros_like(x, dtype=np.float64)
    for j, th in enumerate(harm.astype(np.float64)):
        k = 1.0 if harm_keep is None else harm_keep[j]
        out -= k * np.maximum(x @ th, 0.0)[..., None] * th
    for j, th in enumerate(help_.astype(np.float64)):
        k = 1.0 if help_keep is None else help_keep[j]
        out += k * alpha * np.tanh(x @ th)[..., None] * th
    return out


class Recorder:
    """Per-forward (x before the edit hook, y after it) at one component."""

    def __init__(self) -> None:
        self.before: list[np.ndarray] = []
        self.after: list[np.ndarray] = []

    def pre(self, _m, _a, out):  # registered before the session → runs before the edit hook
        self.before.append((out[0] if isinstance(out, tuple) else out).detach().double().numpy())

    def post(self, _m, _a, out):  # registered inside the session → runs after it
        self.after.append((out[0] if isinstance(out, tuple) else out).detach().double().numpy())


def _component(model: torch.nn.Module, arch: str, component: str, layer: int) -> torch.nn.Module:
    # Written out per architecture instead of via architectures.find_components, to stay independent.
    block = model.transformer.h[layer] if arch == "gpt2" else model.model.layers[layer]
    return block.mlp if component == "mlp" else block


def _run_recorded(model, arch, component, layers, plan, rule, run, gates=None):
    recs = {i: Recorder() for i in layers}
    handles = [_component(model, arch, component, i).register_forward_hook(recs[i].pre) for i in layers]
    try:
        with edit_session(model, plan, rule, gates):
            handles += [_component(model, arch, component, i).register_forward_hook(recs[i].post) for i in layers]
            with torch.no_grad():
                result = run()
    finally:
        for h in handles:
            h.remove()
    return recs, result


def _check(rec: Recorder, expected_masks: list[np.ndarray], harm, help_, alpha, keeps=None) -> float:
    """y == x + hand_delta(x) where the mask is set, y == x elsewhere. Returns max |delta| seen."""
    assert len(rec.before) == len(rec.after) == len(expected_masks)
    biggest = 0.0
    for x, y, mask in zip(rec.before, rec.after, expected_masks, strict=True):
        if keeps is None:
            d = hand_delta(x, harm, help_, alpha)
        else:
            d = np.stack([hand_delta(x[b], harm, help_, alpha, keeps[0][b], keeps[1][b]) for b in range(x.shape[0])])
        want = x + d * mask[..., None]
        np.testing.assert_allclose(y, want, atol=2e-5, rtol=1e-4)
        biggest = max(biggest, float(np.abs(d * mask[..., None]).max(initial=0.0)))
        np.testing.assert_array_equal(y[~mask], x[~mask])  # untouched positions are bit-identical
    return biggest


@pytest.mark.parametrize("arch,component", [("llama", "mlp"), ("llama", "block"), ("gpt2", "mlp"), ("gpt2", "block")])
@pytest.mark.parametrize("positions", ["last", "all", "generated"])
def test_generation_hooks_match_formula(arch: str, component: str, positions: str) -> None:
    model, tok = make_model(arch)
    edit = random_edit(model, k_harm=2, k_help=2, seed=3, component=component, layers=[1, 3])
    plan = prepare_plan(edit, EditConfig(alpha=3.0, layers="1;3", positions=positions), model)
    tok.padding_side = "left"
    enc = tok(["Human: How do I bake bread?", "hi"], return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool().numpy()
    assert not mask[1, 0]  # the second row is left-padded
    steps = 4

    def run():
        return model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                              pad_token_id=tok.pad_token_id)

    recs, _ = _run_recorded(model, arch, component, [1, 3], plan, GenerationPositions(positions), run)
    prompt_len = enc["input_ids"].shape[1]
    prefill = np.zeros((2, prompt_len), dtype=bool)
    if positions == "last":
        prefill[:, -1] = True
    elif positions == "all":
        prefill = mask.copy()
    expected = [prefill] + [np.ones((2, 1), dtype=bool)] * (steps - 1)
    for i in (1, 3):
        assert recs[i].before[0].shape[1] == prompt_len and recs[i].before[1].shape[1] == 1
        big = _check(recs[i], expected, edit.layers[i].harm.numpy(), edit.layers[i].help.numpy(), 3.0)
        assert big > 1e-3  # the edit did something measurable
    assert active_hook_count(model) == 0


@pytest.mark.parametrize("component", ["mlp", "block"])
@pytest.mark.parametrize("positions", ["last", "all", "generated"])
def test_loglikelihood_spans_match_formula(component: str, positions: str) -> None:
    model, _ = make_model("qwen2" if component == "mlp" else "llama")
    arch = "llama"  # same attribute layout for qwen2
    edit = random_edit(model, seed=4, component=component, layers=[0, 2])
    plan = prepare_plan(edit, EditConfig(alpha=2.0, layers="0;2", positions=positions), model)
    # two right-padded rows: (inplen, contlen) = (7, 3) and (5, 1)
    rows = [(7, 3), (5, 1)]
    inps = torch.zeros(2, 7, dtype=torch.long)
    inps[0, :7] = torch.arange(10, 17)
    inps[1, :5] = torch.arange(20, 25)
    spans = [loglikelihood_span(positions, i, c) for i, c in rows]
    want_spans = {"last": [(4, 7), (4, 5)], "all": [(0, 7), (0, 5)], "generated": [(5, 7), (5, 5)]}[positions]
    assert spans == want_spans
    rule = SpanPositions(torch.tensor([s for s, _ in spans]), torch.tensor([e for _, e in spans]))
    recs, _ = _run_recorded(model, arch, component, [0, 2], plan, rule, lambda: model(inps))
    mask = np.zeros((2, 7), dtype=bool)
    for b, (s, e) in enumerate(spans):
        mask[b, s:e] = True
    for i in (0, 2):
        big = _check(recs[i], [mask], edit.layers[i].harm.numpy(), edit.layers[i].help.numpy(), 2.0)
        assert big > 1e-4


def test_query_gates_and_auto_layers_by_hand() -> None:
    """layers=auto + the paper's gate: q̂ from an unedited pass, keep θ with ⟨q̂,θ⟩ ≤ 0 (−θ for harm
    directions, which point towards harmful), top-n layers
    by ‖Σ kept ⟨q̂,θ⟩θ‖ — all recomputed here with numpy."""
    model, tok = make_model("llama")
    edit = random_edit(model, k_harm=3, k_help=3, seed=7, gate="paper", n_layers=2, default_layers="auto")
    plan = prepare_plan(edit, EditConfig(alpha=4.0), model)
    assert plan.layers == "auto" and plan.gate == "paper" and plan.n_layers == 2
    tok.padding_side = "left"
    enc = tok(["Human: How do I bake bread?", "def add(a, b):", "hi"], return_tensors="pt", padding=True)
    last = torch.full((3,), enc["input_ids"].shape[1] - 1)
    states = capture_query_states(model, plan, lambda: model(**enc), last)
    # independent capture of Φ_l at the last token
    phis = {}
    hs = [model.model.layers[i].mlp.register_forward_hook(
        lambda m, a, o, i=i: phis.__setitem__(i, o[:, -1].detach().double().numpy())) for i in range(4)]
    with torch.no_grad():
        model(**enc)
    for h in hs:
        h.remove()
    gates = query_gates(plan, states)
    scores = np.zeros((3, 4))
    keeps = {}
    for i in range(4):
        q = phis[i] / np.linalg.norm(phis[i], axis=1, keepdims=True)
        h, p = edit.layers[i].harm.double().numpy(), edit.layers[i].help.double().numpy()
        ch, cp = q @ h.T, q @ p.T
        kh, kp = (-ch <= 0).astype(float), (cp <= 0).astype(float)  # harm gated on −θ
        keeps[i] = (kh, kp)
        scores[:, i] = np.linalg.norm((ch * kh) @ h + (cp * kp) @ p, axis=1)
    top = np.argsort(-scores, axis=1)[:, :2]
    for b in range(3):
        assert sorted(gates.chosen[b]) == sorted(top[b].tolist())
        for i in range(4):
            on = float(i in top[b])
            np.testing.assert_allclose(gates.harm[i][b].numpy(), keeps[i][0][b] * on)
            np.testing.assert_allclose(gates.help[i][b].numpy(), keeps[i][1][b] * on)
    # and the hooks apply exactly those per-row gates
    used = gates.layers_in_use()
    recs, _ = _run_recorded(model, "llama", "mlp", list(used), plan, GenerationPositions("last"),
                            lambda: model.generate(**enc, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                                                   pad_token_id=tok.pad_token_id), gates)
    for i in used:
        on = np.array([float(i in top[b]) for b in range(3)])[:, None]
        keep_i = (keeps[i][0] * on, keeps[i][1] * on)
        prefill = np.zeros((3, enc["input_ids"].shape[1]), dtype=bool)
        prefill[:, -1] = True
        _check(recs[i], [prefill, np.ones((3, 1), dtype=bool)], edit.layers[i].harm.numpy(),
               edit.layers[i].help.numpy(), 4.0, keep_i)


class _TupleBlock(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.mlp = torch.nn.Linear(d, d)

    def forward(self, x):
        return (x + self.mlp(x), "extra")


class _TupleModel(torch.nn.Module):
    """A decoder whose blocks return tuples, as transformers 4 did."""

    def __init__(self, d: int = 6, n: int = 2) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=d, num_hidden_layers=n)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_TupleBlock(d) for _ in range(n)])

    def forward(self, x):
        extras = []
        for blk in self.model.layers:
            x, extra = blk(x)
            extras.append(extra)
        return x, extras


def test_tuple_outputs_are_edited_and_rest_kept() -> None:
    torch.manual_seed(0)
    model = _TupleModel()
    edit = random_edit(model, k_harm=1, k_help=1, seed=2, component="block")
    plan = prepare_plan(edit, EditConfig(alpha=1.0, layers="all", positions="all"), model)
    x = torch.randn(2, 3, 6)
    with torch.no_grad():
        ref, _ = model(x)
        with edit_session(model, plan, SpanPositions(torch.zeros(2, dtype=torch.long), torch.full((2,), 3))):
            out, extras = model(x)
    assert extras == ["extra", "extra"]
    # by hand: apply the formula after each block
    h = x.double().numpy()
    for i, blk in enumerate(model.model.layers):
        with torch.no_grad():
            h = h + blk.mlp(torch.tensor(h, dtype=torch.float32)).double().numpy()
        h = h + hand_delta(h, edit.layers[i].harm.numpy(), edit.layers[i].help.numpy(), 1.0)
    np.testing.assert_allclose(out.double().numpy(), h, atol=1e-5)
    assert not torch.allclose(out, ref)


def test_hooks_removed_after_exception() -> None:
    model, tok = make_model("llama")
    plan = prepare_plan(random_edit(model), EditConfig(layers="all"), model)
    before = active_hook_count(model)

    class Boom(RuntimeError):
        pass

    def explode(*_):
        raise Boom

    h = model.lm_head.register_forward_hook(explode)
    try:
        with pytest.raises(Boom), edit_session(model, plan, GenerationPositions("last")):
            assert active_hook_count(model) == before + 1 + 1 + 4  # boom + pre-hook + 4 layers
            model.generate(**tok(["hi"], return_tensors="pt"), max_new_tokens=3)
    finally:
        h.remove()
    assert active_hook_count(model) == before == 0


def test_alpha_zero_empty_harm_is_identity() -> None:
    model, tok = make_model("gpt_neox")
    edit = random_edit(model, k_harm=0, k_help=3, seed=1)
    plan = prepare_plan(edit, EditConfig(alpha=0.0, layers="all", positions="all"), model)
    enc = tok(["Human: How do I bake bread?"], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits
        with edit_session(model, plan, GenerationPositions("all")):
            got = model(**enc).logits
    assert torch.equal(ref, got)


# ---- plans and specs ---------------------------------------------------------------------------
def test_plan_validation() -> None:
    model, _ = make_model("llama")
    edit = random_edit(model, layers=[1, 2])
    with pytest.raises(ConfigError, match=r"layers \[3\] have no fitted directions.*fitted: 1;2"):
        prepare_plan(edit, EditConfig(layers="-1"), model)
    assert prepare_plan(edit, EditConfig(layers="all"), model).layers == (1, 2)
    with pytest.raises(ConfigError, match="component=block but the artifact was fitted on the mlp"):
        prepare_plan(edit, EditConfig(component="block"), model)
    proj = random_edit(model, rule="projection", k_harm=1, k_help=1)
    with pytest.raises(ConfigError, match="gate=paper applies to the alignez rule only"):
        prepare_plan(proj, EditConfig(gate="paper"), model)
    add = random_edit(model, rule="add")
    with pytest.raises(ConfigError, match="layers=auto"):
        prepare_plan(add, EditConfig(layers="auto"), model)
    with pytest.raises(ConfigError, match="positions="):
        EditConfig(positions="middle")
    with pytest.raises(ConfigError, match="alpha="):
        EditConfig(alpha=float("nan"))


def test_projection_and_add_rules_in_hooks() -> None:
    model, tok = make_model("llama")
    enc = tok(["hello there"], return_tensors="pt")
    for rule in ("projection", "add"):
        edit = random_edit(model, rule=rule, k_harm=1, k_help=1, layers=[2], steer_scale=0.5)
        plan = prepare_plan(edit, EditConfig(alpha=2.0, layers="2", positions="all"), model)
        recs, _ = _run_recorded(model, "llama", "mlp", [2], plan, GenerationPositions("all"), lambda: model(**enc))
        x, y = recs[2].before[0], recs[2].after[0]
        h, p = edit.layers[2].harm.double().numpy()[0], edit.layers[2].help.double().numpy()[0]
        if rule == "projection":
            z = x - (x @ h)[..., None] * h
            want = z + 2.0 * (z @ p)[..., None] * p
        else:
            want = x + 2.0 * edit.layers[2].steer.double().numpy()
        np.testing.assert_allclose(y, want, atol=1e-5)


@pytest.mark.parametrize("spec,want", [
    ("auto", "auto"), ("all", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)), ("3;5;7", (3, 5, 7)), ("3+5+7", (3, 5, 7)),
    ("2-4", (2, 3, 4)), ("-1", (9,)), (-1, (9,)), (-1.0, (9,)), ("-3--1", (7, 8, 9)), ("1-2;8", (1, 2, 8)),
    ([3, 5, 7], (3, 5, 7)), ("7;3;3", (3, 7)), (" '2+3' ", (2, 3)), (None, "auto"), ("3,5", (3, 5)),
])
def test_parse_layers(spec, want) -> None:
    assert parse_layers(spec, 10) == want


@pytest.mark.parametrize("spec,match", [
    ("10", "outside this model's 10 layers"), ("-11", "outside"), ("5-2", "runs backwards"), ("a-b", "cannot read"),
    ("12", r"pass layers within that range, or layers=auto\|all"),
    ("", "empty"), (True, "not a layer spec"), ([1.5], "not a list"),
])
def test_parse_layers_errors(spec, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_layers(spec, 10)


def test_comma_mistake_is_caught() -> None:
    with pytest.raises(ConfigError, match=r"layers=3;5;7"):
        check_no_split_layer_list({"layers": 3, "5": "", "7": "", "pretrained": "x"})
    with pytest.raises(ConfigError, match=r"layers=1-3;7-9"):
        check_no_split_layer_list({"layers": "1-3", "7-9": ""})
    check_no_split_layer_list({"layers": "3;5;7", "alpha": 1.0})


@pytest.mark.parametrize("gate", ["paper", "flipped"])
def test_gate_keeps_both_halves_of_a_neg_align_pair(gate: str) -> None:
    """With the fit's default v2 reading Θ_harm = −Θ_help, the gate must keep or drop a direction's
    removal and boost together (it is evaluated on the helpful-oriented sign)."""
    model, tok = make_model("llama")
    edit = random_edit(model, k_harm=0, k_help=3, seed=3, gate=gate, n_layers=4, default_layers="all")
    for le in edit.layers.values():
        le.harm = -le.help.clone()
    plan = prepare_plan(edit, EditConfig(), model)
    tok.padding_side = "left"
    enc = tok(["Human: How do I bake bread?", "def add(a, b):", "hi"], return_tensors="pt", padding=True)
    last = torch.full((3,), enc["input_ids"].shape[1] - 1)
    gates = query_gates(plan, capture_query_states(model, plan, lambda: model(**enc), last))
    kept = 0.0
    for i in plan.hook_layers:
        assert torch.equal(gates.harm[i], gates.help[i])
        kept += float(gates.help[i].sum())
    assert 0 < kept < 3 * 3 * len(plan.hook_layers)  # the gate really selects


# ---- the fused hot path (FusedAlignEZ itself is tested in test_rules.py) -----------------
@pytest.mark.parametrize("positions", ["last", "all"])
def test_edit_under_autograd_builds_a_new_tensor_and_backpropagates(positions: str) -> None:
    """With autograd on, the hook must not write into the component's output in place."""
    model, tok = make_model("llama")
    plan = prepare_plan(random_edit(model, k_harm=2, k_help=2, seed=5), EditConfig(alpha=2.0, layers="all"), model)
    enc = tok(["Human: How do I bake bread?"], return_tensors="pt")
    with torch.no_grad(), edit_session(model, plan, GenerationPositions(positions)):
        ref = model(**enc).logits
    with edit_session(model, plan, GenerationPositions(positions)):
        out = model(**enc).logits
        out.float().pow(2).mean().backward()
    torch.testing.assert_close(out.detach(), ref)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)


def test_prepass_stops_after_the_last_candidate_layer() -> None:
    """The q̂ pre-pass never reaches the LM head (nor layers past the last fitted one)."""
    model, tok = make_model("llama")
    edit = random_edit(model, k_harm=2, k_help=2, seed=6, gate="paper", layers=[0, 1], default_layers="auto")
    plan = prepare_plan(edit, EditConfig(), model)
    seen: list[str] = []
    hs = [model.lm_head.register_forward_hook(lambda *_: seen.append("lm_head")),
          model.model.layers[3].register_forward_hook(lambda *_: seen.append("layer3"))]
    enc = tok(["Human: hi", "Human: How do I bake bread?"], return_tensors="pt", padding=True)
    try:
        states = capture_query_states(model, plan, lambda: model(**enc), torch.full((2,), enc["input_ids"].shape[1] - 1))
    finally:
        for h in hs:
            h.remove()
    assert sorted(states) == [0, 1] and seen == []
    assert active_hook_count(model) == 0
