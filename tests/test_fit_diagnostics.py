"""A fit's diagnostics of its own data: pair quality, gate activity, the one-line verdict."""

from __future__ import annotations

import pytest
import torch

from alignez_eval.editing.random_edit import random_edit
from alignez_eval.fitting.diagnostics import data_verdict, gate_activity
from alignez_eval.judge.pair_quality import pair_quality
from tests.tiny import make_model

ANSWERS = ["Knead the dough, let it rise for an hour, then bake at 220 C.", "No.", "I will not say.",
           "Mix flour and water.", "Bread is food."]

def _records(pos: list[str], neg: list[str]) -> list[dict]:
    return [{"id": f"q{i}", "query": "How do I bake bread?", "answers": {"pos": p, "neg": n}}
            for i, (p, n) in enumerate(zip(pos, neg, strict=True))]

def test_identical_pairs_have_quality_one_half(tmp_path) -> None:
    # identical answers are ties without asking the judge (its model is never loaded: the path is bogus)
    q = pair_quality(_records(ANSWERS, ANSWERS), "hf:/nonexistent-judge", cache_path=tmp_path / "c.sqlite")
    assert q["quality"] == 0.5 and q["ties"] == len(ANSWERS) and q["ci95"] == [0.5, 0.5]

def test_pair_quality_of_swapped_pairs_is_its_complement(tiny_dir, tmp_path) -> None:
    """A single-mode judge scores each answer alone, so swapping help and harm mirrors every verdict."""
    neg = ANSWERS[1:] + ANSWERS[:1]
    judge = f"hf:{tiny_dir('llama', 2)},mode=single"
    a = pair_quality(_records(ANSWERS, neg), judge, cache_path=tmp_path / "c.sqlite")
    b = pair_quality(_records(neg, ANSWERS), judge, cache_path=tmp_path / "c.sqlite")
    assert a["judged"] == b["judged"] == len(ANSWERS)
    assert a["quality"] + b["quality"] == pytest.approx(1.0)
    assert (a["help_wins"], a["harm_wins"]) == (b["harm_wins"], b["help_wins"])

def _hand_gate_open(model, tok, edit, prompt: str, layer: int) -> float:
    """Share of directions with ⟨q̂,θ_help⟩ ≤ 0 and ⟨q̂,−θ_harm⟩ ≤ 0 at the prompt's last token."""
    got = {}

    def hook(_m, _a, out):
        got["x"] = out[0, -1].detach().double()
    h = model.model.layers[layer].mlp.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**tok(prompt, return_tensors="pt"))
    finally:
        h.remove()
    q = got["x"] / got["x"].norm()
    le = edit.layers[layer]
    keep = torch.cat([(-(le.harm.double() @ q)) <= 0, (le.help.double() @ q) <= 0])
    return float(keep.double().mean())

def test_gate_activity_equals_the_gate_by_hand() -> None:
    model, tok = make_model("llama", seed=1)
    edit = random_edit(model, k_harm=2, k_help=3, seed=2, gate="paper")
    prompts = ["How do I bake bread?", "Tell me a joke about cats, please.", "hi"]
    got = gate_activity(model, tok, edit, prompts)
    for layer in edit.layers:
        want = sum(_hand_gate_open(model, tok, edit, p, layer) for p in prompts) / len(prompts)
        assert got["open_by_layer"][str(layer)] == pytest.approx(want, abs=1e-4)
    flipped = gate_activity(model, tok, random_edit(model, k_harm=2, k_help=3, seed=2, gate="flipped"), prompts)
    for layer in edit.layers:  # no ⟨q̂,θ⟩ is exactly 0 here: the two gates split the directions
        assert got["open_by_layer"][str(layer)] + flipped["open_by_layer"][str(layer)] == pytest.approx(1.0, abs=1e-4)
    assert gate_activity(model, tok, random_edit(model, rule="add", component="block"), prompts) is None

@pytest.mark.parametrize("quality,ci,needle", [
    (0.41, [0.30, 0.52], "unlikely to help"),
    (0.75, [0.62, 0.86], "carry a real preference"),
    (0.58, [0.45, 0.70], "weak preference"),
])
def test_verdict_line_says_what_the_quality_means(quality, ci, needle) -> None:
    line = data_verdict({"quality": quality, "ci95": ci, "judged": 40, "judge": "j"},
                        {"layers_edited": [1, 2]}, {"gate": "paper", "open_mean": 0.5}, 4)
    assert line.startswith("data verdict: helpful beats harmful in") and needle in line
    assert "2 of 4 layers" in line and "paper gate keeps 50%" in line

