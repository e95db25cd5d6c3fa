"""Preference accuracy through alignez-hf's loglikelihood, against a hand computation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignez_eval.dpo.data import PrefPair
from alignez_eval.dpo.prefacc import pair_margins, preference_accuracy
from model_adapters.alignez_hf import AlignEZHFLM

PAIRS = [
    PrefPair("a", "How do I bake bread?", "Mix flour, water, salt and yeast.", "The quick brown fox.", 1),
    PrefPair("b", "What is 2 + 3?", "print(add(2, 3))", "ignore the question.", 2),
    PrefPair("c", "Be kind?", "be clear, correct and kind.", "Pretend you are useless.", 3),
    PrefPair("d", "Fox?", "The quick brown fox jumps over the lazy dog.", "0123456789", 4),
    PrefPair("e", "Help me.", "You are a helpful assistant.", "def add(a, b):", 5),
]


def hand_margin(model, tok, p: PrefPair) -> float:
    """log p(answer | prompt) summed over the answer's tokens, by hand: the tokens of prompt+answer
    after the prompt's tokens, each scored by the logits one position earlier."""
    out = []
    for answer in (p.chosen, p.rejected):
        ctx = tok(p.prompt, add_special_tokens=False).input_ids
        full = tok(p.prompt + " " + answer, add_special_tokens=False).input_ids
        assert full[: len(ctx)] == ctx
        ids = torch.tensor([full])
        with torch.no_grad():
            logp = model(ids).logits[0].double().log_softmax(-1)
        out.append(sum(float(logp[t - 1, full[t]]) for t in range(len(ctx), len(full))))
    return out[0] - out[1]


def test_margins_and_accuracy_match_a_hand_computation(tiny_dir):
    base_dir, other_dir = tiny_dir("llama", 0), tiny_dir("llama", 1)
    tok = AutoTokenizer.from_pretrained(base_dir)
    hand_base = [hand_margin(AutoModelForCausalLM.from_pretrained(base_dir).eval(), tok, p) for p in PAIRS]
    hand_other = [hand_margin(AutoModelForCausalLM.from_pretrained(other_dir).eval(), tok, p) for p in PAIRS]
    base = pair_margins(AlignEZHFLM(pretrained=str(base_dir), edit="none", device="cpu", batch_size=3), PAIRS,
                        progress=False)
    other = pair_margins(AlignEZHFLM(pretrained=str(other_dir), edit="none", device="cpu", batch_size=3), PAIRS,
                         progress=False)
    assert base == pytest.approx(hand_base, abs=1e-4) and other == pytest.approx(hand_other, abs=1e-4)
    acc = preference_accuracy(other, base)
    wins = sum(o > b for o, b in zip(hand_other, hand_base, strict=True))
    assert 0 < wins < len(PAIRS)  # the fixture discriminates: neither all nor none
    assert acc.accuracy == wins / len(PAIRS) and acc.n == len(PAIRS)
    assert acc.ci[0] <= acc.accuracy <= acc.ci[1]
    assert acc.mean_margin_gain == pytest.approx(sum(o - b for o, b in zip(hand_other, hand_base, strict=True)) / 5,
                                                abs=1e-4)
    assert preference_accuracy(base, base).accuracy == 0.0  # the base never beats itself
    with pytest.raises(ValueError):
        preference_accuracy(other[:2], base)


def test_an_edit_moves_the_margins(tiny_dir, tmp_path):
    from alignez_eval.fitting.outputs import write_outputs
    from alignez_eval.fitting.run import run_fit
    from alignez_eval.fitting.settings import FitSettings

    base_dir = tiny_dir("llama", 0)
    lm = AlignEZHFLM(pretrained=str(base_dir), edit="none", device="cpu", batch_size=3)
    unedited = pair_margins(lm, PAIRS, progress=False)
    queries = [{"id": f"q{i}", "instruction": f"Explain how to do task number {i} step by step."} for i in range(6)]
    res = run_fit(lm.model, lm.tokenizer, queries, FitSettings(char_tokens=6, answer_tokens=12, min_pairs=2),
                  cache_dir=None, progress=False)
    edit = write_outputs(res, tmp_path / "e.safetensors")["edit"]
    lm.set_edit(str(edit), layers="all", alpha=4.0, gate="none", positions="all")
    edited = pair_margins(lm, PAIRS, progress=False)
    assert max(abs(a - b) for a, b in zip(edited, unedited, strict=True)) > 1e-4
    lm.set_edit("none")
    assert pair_margins(lm, PAIRS, progress=False) == pytest.approx(unedited, abs=1e-9)


def test_truncate_pairs_keeps_prompt_plus_answer_within_max_length(tiny_dir):
    from alignez_eval.dpo.prefacc import truncate_pairs

    tok = AutoTokenizer.from_pretrained(tiny_dir("llama"))
    long = PrefPair("x", "Fox?", "The quick brown fox jumps over the lazy dog. " * 20, "0123456789 " * 30, 1)
    short = PAIRS[0]
    cut_long, cut_short = truncate_pairs([long, short], tok, 120)
    assert cut_short == short  # already fits: untouched
    room = 120 - len(tok(long.prompt, add_special_tokens=False).input_ids)
    for text, full in ((cut_long.chosen, long.chosen), (cut_long.rejected, long.rejected)):
        assert full.startswith(text) and len(text) < len(full)
        assert room - 2 <= len(tok(" " + text, add_special_tokens=False).input_ids) <= room
