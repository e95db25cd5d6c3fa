"""The `rm` backend with a tiny random sequence-classification reward model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import make_tokenizer
from transformers import AutoConfig, AutoModelForSequenceClassification

from alignez_eval.errors import ConfigError
from alignez_eval.judge import judge_runs, load_run, parse_judge_spec
from alignez_eval.judge.runner import load_judgments

FIX = Path(__file__).parent / "fixtures" / "runs"


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    tok = make_tokenizer()
    cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=512, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reward_model_scores_each_answer_once_and_compares(rm_dir, tmp_path):
    spec = parse_judge_spec(f"rm:{rm_dir},dtype=float32,batch_size=3")
    assert spec.mode == "single" and spec.margin == 0.0
    base, alignez, tuned = load_run(FIX / "base"), load_run(FIX / "alignez"), load_run(FIX / "tuned")
    out = judge_runs(base, {"alignez": alignez, "tuned": tuned}, spec, tmp_path / "j")
    manifest, records = load_judgments(out)
    assert manifest["stats"]["calls"] == 16  # N+1 scorings per doc
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    tok = make_tokenizer()
    for r in records["tuned"]:
        for side in ("baseline", "candidate"):
            text = tok.apply_chat_template([{"role": "user", "content": r["instruction"]},
                                            {"role": "assistant", "content": r[side]}], tokenize=False)
            with torch.no_grad():  # unpadded, one at a time: the batched scores must agree
                ref = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
            assert r["judgments"][side]["grade"] == pytest.approx(ref, abs=1e-4)
        diff = r["judgments"]["candidate"]["grade"] - r["judgments"]["baseline"]["grade"]
        assert r["verdict"] == ("win" if diff > 0 else "lose" if diff < 0 else "tie")


def test_reward_model_refuses_pairwise_mode(rm_dir):
    with pytest.raises(ConfigError, match="mode=single"):
        parse_judge_spec(f"rm:{rm_dir},mode=pairwise")
