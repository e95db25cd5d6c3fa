"""The alignez-hf model type end to end on tiny random models: baseline equivalence with `hf`,
edited results against a hand-written edited forward, padding invariance, reconfiguration."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from alignez_eval.editing.artifact import Edit, EditMeta, LayerEdit
from alignez_eval.editing.hooks import active_hook_count
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ArtifactError, ConfigError
from model_adapters.alignez_hf import AlignEZHFLM

PROMPTS = ["Human: How do I bake bread?\nAssistant:", "hi", "def add(a, b):\n    return", "The quick brown fox"]
LL = [
    ("The quick brown", " fox jumps over"),
    ("def add(a, b):", " return a + b"),
    ("Human: How do I bake bread?\nAssistant:", " Mix flour"),
    ("hi", " there"),
    ("You are a helpful assistant.", " Your answer"),
]
GEN_KW = {"until": ["<<never>>"], "max_gen_toks": 6, "do_sample": False}


def gen_requests(prompts=PROMPTS, kw=GEN_KW):
    return [Instance("generate_until", None, (p, dict(kw)), i) for i, p in enumerate(prompts)]


def ll_requests(pairs=LL):
    return [Instance("loglikelihood", None, pair, i) for i, pair in enumerate(pairs)]


@pytest.fixture(scope="module")
def llama(tiny_dir):
    path = tiny_dir("llama")
    lm = AlignEZHFLM(pretrained=str(path), device="cpu", batch_size=3, edit="none")
    hf = HFLM(pretrained=str(path), device="cpu", batch_size=3)
    return path, lm, hf


@pytest.fixture(scope="module")
def rand_path(llama, tmp_path_factory) -> Path:
    _, lm, _ = llama
    p = tmp_path_factory.mktemp("edits") / "rand.safetensors"
    random_edit(lm.model, k_harm=2, k_help=3, seed=11).save(p)
    return p


# ---- baseline equivalence ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3_text", "qwen2"])
def test_edit_none_reproduces_hf(tiny_dir, arch: str) -> None:
    path = str(tiny_dir(arch))
    ours = AlignEZHFLM(pretrained=path, device="cpu", batch_size=3, edit="none")
    ref = HFLM(pretrained=path, device="cpu", batch_size=3)
    assert ours.loglikelihood(ll_requests()) == ref.loglikelihood(ll_requests())
    assert ours.generate_until(gen_requests()) == ref.generate_until(gen_requests())
    assert active_hook_count(ours.model) == 0


def test_alpha_zero_empty_harm_equals_hf(llama, tmp_path) -> None:
    _, lm, hf = llama
    p = tmp_path / "zero.safetensors"
    random_edit(lm.model, k_harm=0, k_help=3, seed=2).save(p)
    lm.set_edit(edit=p, alpha=0.0, layers="all", positions="all")
    try:
        assert lm.loglikelihood(ll_requests()) == hf.loglikelihood(ll_requests())
        assert lm.generate_until(gen_requests()) == hf.generate_until(gen_requests())
    finally:
        lm.set_edit(edit=None)


def test_random_edit_changes_outputs_and_set_edit_reconfigures(llama, rand_path) -> None:
    _, lm, hf = llama
    model_before = lm.model
    base_ll, base_gen = hf.loglikelihood(ll_requests()), hf.generate_until(gen_requests())
    lm.set_edit(edit=rand_path, alpha=30.0, layers="all")
    try:
        ll, gen = lm.loglikelihood(ll_requests()), lm.generate_until(gen_requests())
        diffs = [abs(a[0] - b[0]) for a, b in zip(ll, base_ll, strict=True)]
        assert min(diffs) > 1e-3, diffs
        assert sum(g != b for g, b in zip(gen, base_gen, strict=True)) >= 2, (gen, base_gen)
        info = lm.get_model_info()["alignez_edit"]
        assert info["alpha"] == 30.0 and info["layers"] == "0;1;2;3" and info["positions"] == "last"
        assert info["sha256"] == Edit.load(rand_path).sha256 and info["method"] == "random"
        assert lm.get_model_info()["alignez_edit_sha256"] == info["sha256"]
        # reconfigure without reloading: weaker alpha, another layer set
        lm.set_edit(alpha=1.0, layers="2")
        assert lm.edit_plan is not None and lm.edit_plan.layers == (2,)
        ll_weak = lm.loglikelihood(ll_requests())
        assert ll_weak != ll
        assert lm.model is model_before
    finally:
        lm.set_edit(edit="none")
    assert lm.loglikelihood(ll_requests()) == base_ll
    assert lm.get_model_info()["alignez_edit"]["edit"] == "none"
    assert active_hook_count(lm.model) == 0


# ---- edited results against a hand-written edited forward ---------------------------------------
def _hand_forward(model, edit: Edit, layers, alpha, ids: list[int], edit_from: int, keeps=None):
    """Logits of `ids` with every chosen layer's MLP output edited (float64 formula) at positions
    >= edit_from; full recompute, no cache, no hooks module."""
    def make(i):
        h = edit.layers[i].harm.double()
        p = edit.layers[i].help.double()
        kh = torch.ones(h.shape[0], dtype=torch.float64) if keeps is None else torch.tensor(keeps[i][0])
        kp = torch.ones(p.shape[0], dtype=torch.float64) if keeps is None else torch.tensor(keeps[i][1])

        def hook(_m, _a, out):
            x = out.double()
            delta = -(torch.relu(x @ h.T) * kh) @ h + alpha * (torch.tanh(x @ p.T) * kp) @ p
            delta[:, :edit_from] = 0
            return (x + delta).to(out.dtype)

        return hook

    hs = [model.model.layers[i].mlp.register_forward_hook(make(i)) for i in layers]
    try:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].double()
    finally:
        for h in hs:
            h.remove()


def _hand_loglikelihood(lm, edit, layers, alpha, positions, ctx, cont, keeps=None):
    c_enc, k_enc = lm._encode_pair(ctx, cont)
    inp = (c_enc + k_enc)[:-1]
    first = len(c_enc) - 1  # the last context token
    edit_from = {"last": first, "all": 0, "generated": first + 1}[positions]
    logits = _hand_forward(lm.model, edit, layers, alpha, inp, edit_from, keeps)
    logp = torch.log_softmax(logits[first:], dim=-1)
    return float(logp[torch.arange(len(k_enc)), torch.tensor(k_enc)].sum())


def _hand_greedy(lm, edit, layers, alpha, positions, prompt, n, keeps=None):
    ids = lm.tok_encode(prompt)
    p = len(ids)
    edit_from = {"last": p - 1, "all": 0, "generated": p}[positions]
    for _ in range(n):
        nxt = int(_hand_forward(lm.model, edit, layers, alpha, ids, edit_from, keeps)[-1].argmax())
        ids.append(nxt)
        if nxt == lm.tokenizer.eos_token_id:
            break
    return lm.tok_decode(ids[p:])


@pytest.mark.parametrize("positions", ["last", "all", "generated"])
def test_edited_results_match_hand_computation(llama, rand_path, positions: str) -> None:
    _, lm, _ = llama
    edit = Edit.load(rand_path)
    lm.set_edit(edit=rand_path, alpha=8.0, layers="1;3", positions=positions)
    try:
        got_ll = lm.loglikelihood(ll_requests())
        got_gen = lm.generate_until(gen_requests())
    finally:
        lm.set_edit(edit=None)
    for (ctx, cont), (value, _) in zip(LL, got_ll, strict=True):
        assert value == pytest.approx(_hand_loglikelihood(lm, edit, [1, 3], 8.0, positions, ctx, cont), abs=2e-4)
    want = [_hand_greedy(lm, edit, [1, 3], 8.0, positions, p, GEN_KW["max_gen_toks"]) for p in PROMPTS]
    assert got_gen == want


def test_auto_layers_and_gate_match_hand_computation(llama, tmp_path) -> None:
    _, lm, _ = llama
    p = tmp_path / "auto.safetensors"
    random_edit(lm.model, k_harm=2, k_help=2, seed=5, gate="paper", n_layers=2, default_layers="auto").save(p)
    edit = Edit.load(p)
    lm.set_edit(edit=p, alpha=8.0)
    try:
        got_gen = lm.generate_until(gen_requests())
        got_ll = lm.loglikelihood(ll_requests())
        chosen_last = lm.last_chosen_layers
        usage = lm.get_model_info()["alignez_edit"]["auto_layer_usage"]
    finally:
        lm.set_edit(edit=None)

    def choose(ids):
        phis = {}
        hs = [lm.model.model.layers[i].mlp.register_forward_hook(
            lambda m, a, o, i=i: phis.__setitem__(i, o[0, -1].double())) for i in range(4)]
        with torch.no_grad():
            lm.model(torch.tensor([ids]))
        for h in hs:
            h.remove()
        scores, keeps = [], {}
        for i in range(4):
            q = phis[i] / phis[i].norm()
            h, pp = edit.layers[i].harm.double(), edit.layers[i].help.double()
            ch, cp = h @ q, pp @ q
            keeps[i] = ((-ch <= 0).double().numpy(), (cp <= 0).double().numpy())
            scores.append(float(((ch * (-ch <= 0)) @ h + (cp * (cp <= 0)) @ pp).norm()))
        return sorted(np.argsort(scores)[::-1][:2].tolist()), keeps

    want_gen = []
    for prompt in PROMPTS:
        layers, keeps = choose(lm.tok_encode(prompt))
        want_gen.append(_hand_greedy(lm, edit, layers, 8.0, "last", prompt, GEN_KW["max_gen_toks"], keeps))
    assert got_gen == want_gen
    want_usage = Counter(i for pr in PROMPTS for i in choose(lm.tok_encode(pr))[0])
    for (ctx, cont), (value, _) in zip(LL, got_ll, strict=True):
        layers, keeps = choose(lm._encode_pair(ctx, cont)[0])
        want_usage.update(layers)
        want = _hand_loglikelihood(lm, edit, layers, 8.0, "last", ctx, cont, keeps)
        assert value == pytest.approx(want, abs=2e-4)
    assert usage == {str(k): v for k, v in sorted(want_usage.items())}
    assert all(len(row) == 2 for row in chosen_last)


@pytest.mark.parametrize("settings", [
    dict(layers="all", positions="last"), dict(layers="all", positions="all"),
    dict(layers="auto", gate="paper", n_layers=2),
])
def test_left_padding_invariance(llama, rand_path, settings) -> None:
    """A prompt alone and inside a padded batch gives the same generation with the edit on."""
    path, _, _ = llama
    alone = AlignEZHFLM(pretrained=str(path), device="cpu", batch_size=1, edit=rand_path, alpha=8.0, **settings)
    batched = AlignEZHFLM(pretrained=str(path), device="cpu", batch_size=4, edit=rand_path, alpha=8.0, **settings)
    short = "hi"
    res_alone = alone.generate_until(gen_requests([short]))
    res_batch = batched.generate_until(gen_requests([PROMPTS[0], short, PROMPTS[2], PROMPTS[3]]))
    assert res_batch[1] == res_alone[0]
    # loglikelihood: right padding in a batch vs alone
    assert batched.loglikelihood(ll_requests([LL[3]]))[0][0] == pytest.approx(
        batched.loglikelihood(ll_requests())[3][0], abs=1e-5)


def test_ambiguous_rows_are_split_into_rounds(llama, rand_path) -> None:
    """Same tokens, different context/continuation split: each request is edited by its own split."""
    _, lm, _ = llama
    ctx_ids = lm.tok_encode("The quick brown fox jumps")
    assert len(ctx_ids) >= 4
    full = lm.tok_decode(ctx_ids)
    a_ctx, a_cont = lm.tok_decode(ctx_ids[:2]), lm.tok_decode(ctx_ids[2:])
    b_ctx, b_cont = lm.tok_decode(ctx_ids[:3]), lm.tok_decode(ctx_ids[3:])
    assert a_ctx + a_cont == b_ctx + b_cont == full
    lm.set_edit(edit=rand_path, alpha=8.0, layers="all", positions="last")
    try:
        together = lm.loglikelihood(ll_requests([(a_ctx, a_cont), (b_ctx, b_cont)]))
        alone_a = lm.loglikelihood(ll_requests([(a_ctx, a_cont)]))
        alone_b = lm.loglikelihood(ll_requests([(b_ctx, b_cont)]))
    finally:
        lm.set_edit(edit=None)
    assert together[0][0] == pytest.approx(alone_a[0][0], abs=1e-5)
    assert together[1][0] == pytest.approx(alone_b[0][0], abs=1e-5)


# ---- hooks are always removed ------------------------------------------------------------------
def test_no_hook_left_after_exception_in_generate(llama, rand_path) -> None:
    _, lm, _ = llama
    lm.set_edit(edit=rand_path, layers="auto", gate="paper")

    def explode(*_):
        raise RuntimeError("boom inside generate")

    h = lm.model.lm_head.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            lm.generate_until(gen_requests())
        with pytest.raises(RuntimeError, match="boom"):
            lm.loglikelihood(ll_requests())
    finally:
        h.remove()
        lm.set_edit(edit=None)
    assert active_hook_count(lm.model) == 0


# ---- configuration errors ----------------------------------------------------------------------
def test_comma_mistake_in_model_args(tiny_dir) -> None:
    with pytest.raises(ConfigError, match="layers=1;2;3"):
        AlignEZHFLM.create_from_arg_string(f"pretrained={tiny_dir('llama')},layers=1,2,3")


def test_mismatched_artifact_is_refused(tiny_dir, tmp_path) -> None:
    p = tmp_path / "other.safetensors"
    Edit(meta=EditMeta(method="v2", rule="alignez", component="mlp", hidden_size=16, num_layers=4),
         layers={0: LayerEdit(harm=torch.zeros(0, 16), help=torch.eye(16)[:1])}).save(p)
    with pytest.raises(ArtifactError, match="hidden size 16.*hidden size 32"):
        AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", edit=str(p))


@pytest.mark.parametrize("alpha", ["abc", True])
def test_alpha_not_a_number_is_refused_before_weights_load(tmp_path, alpha) -> None:
    # pretrained does not exist: the alpha check must come first (it used to be a raw ValueError
    # from float(alpha), and only after loading the weights)
    with pytest.raises(ConfigError, match=rf"alpha={alpha!r} must be a finite number"):
        AlignEZHFLM.create_from_arg_string(f"pretrained={tmp_path / 'no_model'},edit=none,alpha={alpha}")


def test_alpha_not_a_number_through_simple_evaluate(llama, tiny_dir) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    fixture_tasks = Path(__file__).parent / "fixtures" / "tasks"
    with pytest.raises(ConfigError, match=r"alpha='abc' must be a finite number \(e.g. alpha=1.0\)"):
        simple_evaluate(model="alignez-hf", model_args=f"pretrained={tiny_dir('llama')},edit=none,alpha=abc",
                        tasks=["alignez_fixture_gen"], limit=1, device="cpu",
                        task_manager=TaskManager(include_path=str(fixture_tasks)))
    _, lm, _ = llama
    with pytest.raises(ConfigError, match="alpha='abc'"):
        lm.set_edit(alpha="abc")


def test_nan_artifact_is_refused(llama, tmp_path) -> None:
    _, lm, _ = llama
    edit = random_edit(lm.model, seed=2)
    edit.layers[2].harm[1, 0] = float("inf")
    path = tmp_path / "inf.safetensors"
    edit.save(path)
    with pytest.raises(ArtifactError, match=r"layer.2.harm has 1 non-finite value"):
        lm.set_edit(edit=str(path))
    with pytest.raises(ArtifactError, match=r"layer.2.harm has 1 non-finite value"):
        lm.set_edit(edit=edit)  # an in-memory Edit is checked as well
    lm.set_edit(edit="none")


def test_artifact_default_layers_outside_the_model_name_the_file(llama, tmp_path) -> None:
    _, lm, _ = llama
    edit = random_edit(lm.model, seed=2, default_layers="9")
    path = tmp_path / "nine.safetensors"
    edit.save(path)
    with pytest.raises(ConfigError, match=rf"layer 9 in layers='9' is outside this model's 4 layers.*"
                                          rf"default layers='9' stored in {path}; pass layers= to override"):
        lm.set_edit(edit=str(path))
    lm.set_edit(edit=str(path), layers="1-2")
    assert lm.edit_plan is not None and lm.edit_plan.layers == (1, 2)
    lm.set_edit(edit="none")


def test_fit_seam_names_an_unknown_fit_spec(tiny_dir) -> None:
    # The seam is wired to alignez_eval.fitting.on_the_fly (tests/test_fit_adapter.py covers fitting itself).
    lm = AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", fit="selfgen")
    with pytest.raises(ConfigError, match="fit=selfgen: unknown task 'selfgen'.*fit=self"):
        lm.generate_until(gen_requests())


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3_text", "qwen2"])
def test_prompt_cache_reuse_equals_a_full_prefill(tiny_dir, tmp_path, arch: str) -> None:
    """With a q̂ pre-pass (layers=auto + gate), generate starts from the pre-pass's prompt cache:
    the same tokens as a fresh full prefill, and the edited generate never re-reads the prompt."""
    lm = AlignEZHFLM(pretrained=str(tiny_dir(arch)), device="cpu", batch_size=4, edit="none")
    p = tmp_path / "auto.safetensors"
    random_edit(lm.model, k_harm=2, k_help=2, seed=9, gate="paper", n_layers=2, default_layers="auto").save(p)
    lengths: list[int] = []
    first = next(iter(lm.model.base_model.modules()))  # the decoder; its forwards see every step's length
    h = first.register_forward_pre_hook(
        lambda m, a, kw: lengths.append((kw.get("input_ids") if kw.get("input_ids") is not None else a[0]).shape[1]),
        with_kwargs=True)
    out = {}
    try:
        for reuse in (False, True):
            lm.set_edit(edit=p, alpha=8.0)
            lm.reuse_prompt_cache = reuse
            lengths.clear()
            out[reuse] = lm.generate_until(gen_requests())
            out[(reuse, "lengths")] = list(lengths)
    finally:
        h.remove()
        lm.set_edit(edit=None)
    assert out[True] == out[False]
    assert any(s != "" for s in out[True])
    full = out[(False, "lengths")]
    reused = out[(True, "lengths")]
    # without reuse: pre-pass prefill (cut short), full prefill, decode steps; with reuse: one
    # pre-pass over the prompt, then only 1-token forwards
    assert sum(n > 1 for n in full) == 2 * sum(n > 1 for n in reused)
    assert len(reused) == len(full)
    assert active_hook_count(lm.model) == 0
