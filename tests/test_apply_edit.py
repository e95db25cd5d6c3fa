"""apply_edit on a tiny random model against alignez-hf itself: greedy generate equals
generate_until, a forward equals the loglikelihood path, and the model is untouched afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance

from alignez_eval import apply_edit
from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.hooks import active_hook_count
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ConfigError
from model_adapters.alignez_hf import AlignEZHFLM

PROMPTS = ["Human: How do I bake bread?\nAssistant:", "hi", "def add(a, b):\n    return", "The quick brown fox"]
LL = [("The quick brown", " fox jumps over"), ("hi", " there"), ("def add(a, b):", " return a + b")]
MAX_NEW = 6


@pytest.fixture(scope="module")
def llama(tiny_dir) -> AlignEZHFLM:
    # batch_size = len(PROMPTS): generate_until pads all prompts into one batch, as we do below
    return AlignEZHFLM(pretrained=str(tiny_dir("llama")), device="cpu", batch_size=len(PROMPTS), edit="none")


@pytest.fixture(scope="module")
def edits(llama, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("apply_edits")
    plain, auto = d / "plain.safetensors", d / "auto.safetensors"
    random_edit(llama.model, k_harm=2, k_help=3, seed=11).save(plain)
    random_edit(llama.model, k_harm=2, k_help=2, seed=5, gate="paper", n_layers=2, default_layers="auto").save(auto)
    return {"plain": plain, "auto": auto}


def _adapter(lm: AlignEZHFLM, path: Path, settings: dict, run):
    lm.set_edit(edit=path, **settings)
    try:
        return run()
    finally:
        lm.set_edit(edit="none")


def _greedy(lm: AlignEZHFLM) -> list[str]:
    """model.generate on HFLM's own left-padded encoding, cut at EOS as generate_until cuts it."""
    ids, mask = lm.tok_batch_encode(PROMPTS)
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    texts = []
    for row in out[:, ids.shape[1]:].tolist():
        if lm.tokenizer.eos_token_id in row:
            row = row[: row.index(lm.tokenizer.eos_token_id)]
        texts.append(lm.tok_decode(row))
    return texts


def _gen_requests() -> list[Instance]:
    kw = {"until": ["<<never>>"], "max_gen_toks": MAX_NEW, "do_sample": False}
    return [Instance("generate_until", None, (p, dict(kw)), i) for i, p in enumerate(PROMPTS)]


def _continuation_logprob(lm: AlignEZHFLM, ctx: str, cont: str) -> float:
    c_enc, k_enc = lm._encode_pair(ctx, cont)
    inp = (c_enc + k_enc)[:-1]
    with torch.no_grad():
        logits = lm.model(torch.tensor([inp])).logits[0].double()
    logp = torch.log_softmax(logits[len(c_enc) - 1:], dim=-1)
    return float(logp[torch.arange(len(k_enc)), torch.tensor(k_enc)].sum())


def _untouched(model: torch.nn.Module) -> bool:
    return active_hook_count(model) == 0 and "forward" not in model.__dict__ and "generate" not in model.__dict__


@pytest.mark.parametrize("which,settings", [
    ("plain", dict(alpha=8.0, layers="1;3", positions="last")),
    ("plain", dict(alpha="8", layers="all", positions="all")),
    ("auto", dict(alpha=8.0, layers="auto", n_layers=2, gate="paper")),
    ("auto", dict(alpha=8.0)),  # the artifact's defaults: layers=auto with the paper's gate
])
def test_generate_equals_alignez_hf(llama, edits, which: str, settings: dict) -> None:
    lm = llama
    unedited = _greedy(lm)
    want = _adapter(lm, edits[which], settings, lambda: lm.generate_until(_gen_requests()))
    assert want != unedited  # the edit changes the generation, so the comparison means something
    with apply_edit(lm.model, edits[which], **settings) as handle:
        assert active_hook_count(lm.model) == 0  # hooks live only inside a call
        got = _greedy(lm)
    assert got == want
    if settings.get("layers", "auto") == "auto":
        assert [len(row) for row in handle.last_chosen_layers] == [2] * len(PROMPTS)
    assert _untouched(lm.model) and _greedy(lm) == unedited


def test_forward_equals_the_loglikelihood_path(llama, edits) -> None:
    lm = llama
    settings = dict(alpha=8.0, layers="1;3", positions="all")
    want = _adapter(lm, edits["plain"], settings,
                    lambda: [v for v, _ in lm.loglikelihood([Instance("loglikelihood", None, p, i)
                                                             for i, p in enumerate(LL)])])
    unedited = [_continuation_logprob(lm, c, k) for c, k in LL]
    handle = apply_edit(lm.model, Edit.load(edits["plain"]), **settings)
    try:
        got = [_continuation_logprob(lm, c, k) for c, k in LL]
    finally:
        handle.remove()
    assert got == pytest.approx(want, abs=1e-5)
    assert all(abs(g - u) > 1e-3 for g, u in zip(got, unedited, strict=True))
    handle.remove()  # idempotent
    assert _untouched(lm.model)
    assert [_continuation_logprob(lm, c, k) for c, k in LL] == unedited


@pytest.mark.parametrize("positions", ["all", "last"])
def test_forward_of_a_padded_batch_edits_each_rows_real_tokens(llama, edits, positions: str) -> None:
    """Right- and left-padded rows give the logits of each row alone: the edited positions follow
    the attention mask (`last` = each row's last real token, `all` = every real token)."""
    lm = llama
    rows = [lm.tok_encode(p) for p in PROMPTS[:2]]
    width = max(len(r) for r in rows)
    pad = lm.tokenizer.pad_token_id or 0
    with torch.no_grad():
        plain = [lm.model(torch.tensor([r])).logits[0] for r in rows]
        with apply_edit(lm.model, edits["plain"], alpha=8.0, layers="all", positions=positions):
            alone = [lm.model(torch.tensor([r])).logits[0] for r in rows]
            for side in ("right", "left"):
                ids = torch.tensor([r + [pad] * (width - len(r)) if side == "right" else [pad] * (width - len(r)) + r
                                    for r in rows])
                mask = (torch.arange(width)[None, :] < torch.tensor([[len(r)] for r in rows])).long()
                if side == "left":
                    mask = mask.flip(1)
                out = lm.model(input_ids=ids, attention_mask=mask).logits
                for b, r in enumerate(rows):
                    real = out[b, : len(r)] if side == "right" else out[b, width - len(r):]
                    torch.testing.assert_close(real, alone[b], atol=1e-4, rtol=1e-4)
    for b in range(len(rows)):
        if positions == "last":  # every position before the last is exactly unedited
            assert torch.equal(alone[b][:-1], plain[b][:-1])
        assert not torch.allclose(alone[b][-1], plain[b][-1])
    assert _untouched(lm.model)


def test_exit_restores_the_model_also_after_an_exception(llama, edits) -> None:
    lm = llama
    enc = lm.tok_batch_encode(PROMPTS)
    with torch.no_grad():
        before = lm.model(input_ids=enc[0], attention_mask=enc[1]).logits
    with pytest.raises(RuntimeError, match="boom"), apply_edit(lm.model, edits["auto"], alpha=4.0):
        h = lm.model.lm_head.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
        try:
            lm.model.generate(input_ids=enc[0], attention_mask=enc[1], max_new_tokens=2)
        finally:
            h.remove()
    assert _untouched(lm.model)
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=enc[0], attention_mask=enc[1]).logits, before)


@pytest.mark.parametrize("settings,match", [
    (dict(alpha="abc"), r"alpha='abc' must be a finite number \(e.g. alpha=1.0\)"),
    (dict(positions="middle"), r"positions='middle'; choose one of last\|all\|generated"),
    (dict(temperature=0.7), r"unknown edit setting\(s\) temperature"),
    (dict(layers="9"), r"layer 9 in layers='9' is outside this model's 4 layers"),  # needs the model
])
def test_bad_setting_fails_before_any_hook(llama, edits, settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_edit(llama.model, edits["plain"], **settings)
    assert _untouched(llama.model)


def test_a_second_edit_on_the_same_model_is_refused(llama, edits) -> None:
    with apply_edit(llama.model, edits["plain"]):
        with pytest.raises(ConfigError, match="already has an edit applied"):
            apply_edit(llama.model, edits["plain"], alpha=2.0)
    assert _untouched(llama.model)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_generate_reuses_the_prompt_cache_of_its_pre_pass(tiny_dir, arch: str) -> None:
    """With a q̂ pre-pass, apply_edit's generate starts from the pre-pass's prompt cache (one
    prefill, not two) and gives the tokens and scores of a full prefill. gpt2 is here for its
    absolute position embeddings: a pre-pass with other position ids than generate's own would
    show up as other scores."""
    from tiny import make_model

    model, tok = make_model(arch)
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    edit = random_edit(model, k_harm=2, k_help=2, seed=5, gate="paper", n_layers=2, default_layers="auto")
    lengths: list[int] = []
    h = model.base_model.register_forward_pre_hook(
        lambda m, a, kw: lengths.append((kw.get("input_ids") if kw.get("input_ids") is not None else a[0]).shape[1]),
        with_kwargs=True)
    out = {}
    try:
        for reuse in (False, True):
            lengths.clear()
            with torch.no_grad(), apply_edit(model, edit, alpha=4.0) as handle:
                handle.reuse_prompt_cache = reuse
                out[reuse] = model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False, output_scores=True,
                                            return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
            out[(reuse, "prefills")] = sum(n > 1 for n in lengths)
    finally:
        h.remove()
    assert torch.equal(out[True].sequences, out[False].sequences)
    for a, b in zip(out[True].scores, out[False].scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert out[(False, "prefills")] == 2 and out[(True, "prefills")] == 1
    assert active_hook_count(model) == 0
