"""The `hf` judge backend with a tiny random chat model: mechanics, not judgment quality."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from tiny import make_model

from alignez_eval.errors import ConfigError
from alignez_eval.judge import judge_check, judge_runs, load_run, parse_judge_spec
from alignez_eval.judge.backends.base import JudgeRequest
from alignez_eval.judge.backends.hf import HFBackend, chat_text
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem
from alignez_eval.judge.runner import load_judgments
from alignez_eval.judge.verdicts import pairwise_verdict

FIX = Path(__file__).parent / "fixtures" / "runs"


def long_context(model):
    # The tiny tokenizer spends ~1 token per character, so judge prompts run to ~1000 tokens,
    # beyond the tiny config's 512 (the backend would warn about it).
    model.config.max_position_embeddings = 4096
    return model


@pytest.fixture(scope="module")
def tiny():
    model, tok = make_model("qwen2", seed=3)
    return long_context(model), tok


def _items() -> list[PairItem]:
    return [PairItem("t", str(i), f"Question {i}: how?", f"base answer {i} " * (i + 1), f"cand {i} good")
            for i in range(4)]


def test_label_probabilities_are_normalised_fp32_and_match_a_direct_forward(tiny):
    model, tok = tiny
    backend = HFBackend(parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "pairwise"}).using(model, tok))
    reqs = [JudgeRequest(key=str(i), kind="pair", order="AB", instruction=f"Q{i}?", answer_a="a " * i,
                         answer_b="the other answer") for i in range(1, 4)]
    out = dict((r.key, res) for r, res in backend.run(reqs))
    for req in reqs:
        res = out[req.key]
        assert set(res["probs"]) == {"A", "B", "tie"}
        assert sum(res["probs"].values()) == pytest.approx(1.0, abs=1e-6)
        assert 0 < res["label_mass"] <= 1
        # independent: the chat text + prefill through the model, unpadded, softmax over label ids
        msgs = backend.prompt.messages("label", instruction=req.instruction, answer_a=req.answer_a,
                                       answer_b=req.answer_b)
        text, _ = chat_text(tok, msgs)
        ids = tok(text + backend.prefill, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, -1].double()
        label_ids = [tok.convert_tokens_to_ids(c) for c in ("A", "B", "C")]
        ref = torch.softmax(logits[label_ids], -1)
        got = torch.tensor([res["probs"][k] for k in ("A", "B", "tie")], dtype=torch.float64)
        assert torch.allclose(got, ref, atol=1e-5)
        assert res["label"] == ["A", "B", "tie"][int(ref.argmax())]


def test_batched_equals_unbatched_with_left_padding(tiny):
    model, tok = tiny
    reqs = [JudgeRequest(key=str(i), kind="grade", order="single", instruction="Say something" + "!" * i,
                         answer_a="word " * (3 * i + 1)) for i in range(5)]
    got = {}
    for bs, pc in ((1, 1), (5, 1), (5, 0)):
        spec = parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "single", "batch_size": bs,
                                 "prefix_cache": pc})
        backend = HFBackend(spec.using(model, tok))
        got[bs, pc] = {r.key: res for r, res in backend.run(reqs)}
        assert (backend._prefix_key is not None) == bool(pc)  # the shared prompt prefix was cached
    for key in got[1, 1]:
        # batch of 1 with the prefix cache == padded batch with it == padded batch without it
        assert got[1, 1][key]["grade"] == pytest.approx(got[5, 1][key]["grade"], abs=1e-4)
        assert got[5, 0][key]["grade"] == pytest.approx(got[5, 1][key]["grade"], abs=1e-4)
    got = {1: got[1, 1]}
    for key in got[1]:
        p = got[1][key]["probs"]
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-6)
        assert got[1][key]["grade"] == pytest.approx(sum(int(g) * v for g, v in p.items()))
        assert 1.0 <= got[1][key]["grade"] <= 9.0


def test_pairwise_runs_both_orders_and_averages_probabilities(tiny, tmp_path):
    model, tok = tiny
    spec = parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "pairwise", "margin": 0.0,
                              "length_debias": 0.0}).using(model, tok)
    judge = Judge(spec, JudgmentCache(tmp_path / "c.sqlite"))
    recs = judge.judge_pairs(_items())
    orders = [o for (o,) in sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT judge_order FROM judgments")]
    assert sorted(orders) == ["AB"] * 4 + ["BA"] * 4
    for r in recs:
        ab, ba = r["judgments"]["AB"], r["judgments"]["BA"]
        assert ab["probs"] != ba["probs"]  # the answers really swapped places
        expected = pairwise_verdict(ab, ba, use_probs=True, margin=0.0)
        assert r["verdict"] == expected["verdict"] and r["score"] == pytest.approx(expected["score"])
        assert r["score"] == pytest.approx((ab["probs"]["B"] + ba["probs"]["A"]) / 2
                                           - (ab["probs"]["A"] + ba["probs"]["B"]) / 2)
    assert judge.stats["calls"] == 8
    again = Judge(spec, JudgmentCache(tmp_path / "c.sqlite"))
    assert [r["verdict"] for r in again.judge_pairs(_items())] == [r["verdict"] for r in recs]
    assert again.stats["calls"] == 0


def test_single_mode_from_a_saved_model_dir_grades_n_plus_one(tmp_path):
    model, tok = make_model("qwen2")
    path = tmp_path / "judge-model"
    long_context(model).save_pretrained(path)
    tok.save_pretrained(path)
    spec = parse_judge_spec(f"hf:{path},mode=single,dtype=float32,batch_size=8")
    assert spec.mode == "single" and spec.scale == 9
    base, alignez, tuned = load_run(FIX / "base"), load_run(FIX / "alignez"), load_run(FIX / "tuned")
    out = judge_runs(base, {"alignez": alignez, "tuned": tuned}, spec, tmp_path / "j")
    manifest, records = load_judgments(out)
    # 6 baseline + 5 alignez (one identical answer skipped) + 5 tuned gradings
    assert manifest["stats"]["calls"] == 16
    rows = sqlite3.connect(out / "cache.sqlite").execute("SELECT judge_order FROM judgments").fetchall()
    assert rows == [("single",)] * 16
    for recs in records.values():
        for r in recs:
            if r["identical"]:
                assert r["verdict"] == "tie" and r["judgments"] == {}
                continue
            g_b, g_c = r["judgments"]["baseline"]["grade"], r["judgments"]["candidate"]["grade"]
            assert r["score"] == pytest.approx(g_c - g_b)
            assert r["verdict"] == ("win" if g_c - g_b > 0.5 else "lose" if g_b - g_c > 0.5 else "tie")
    # the baseline's answer to q0 was graded once and reused for both candidates
    q0 = [next(r for r in records[c] if r["doc_id"] == "q0") for c in ("alignez", "tuned")]
    assert q0[0]["judgments"]["baseline"] == q0[1]["judgments"]["baseline"]


def test_grades_that_share_a_first_token_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="scale=9"):
        HFBackend(parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "single", "scale": 10}).using(model, tok))


def test_judge_check_mechanics(tiny):
    model, tok = tiny
    spec = parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "pairwise"}).using(model, tok)
    prompts = [{"id": "a", "instruction": "Name a colour.", "answer": "Blue is a colour. So is red, and green."},
               {"id": "b", "instruction": "Add 2 and 3.", "answer": "2 plus 3 is 5. Five is the answer."},
               {"id": "c", "instruction": "Say hi.", "answer": "Hi there, how are you today?"}]
    res = judge_check(spec, prompts=prompts, n=2)
    assert res["n_prompts"] == 2 and sum(sum(c.values()) for c in res["counts"].values()) == 8
    assert set(res["accuracy"]) == {"truncated", "looped", "swapped", "gibberish"}
    assert 0 <= res["swap_consistency"] <= 1 and 0 <= res["first_position_rate"] <= 1
    assert res["stats"]["calls"] == 16  # 8 pairs x 2 orders


@pytest.mark.parametrize("arch", ["gemma3_text", "gpt2"])
def test_sliding_window_and_context_limit(arch, caplog):
    # gemma3_text's tiny config has a 64-token sliding window and rotary positions (over-long
    # inputs: a warning); gpt2's a learned 512-position table (over-long inputs: errors).
    model, tok = make_model(arch)
    reqs = [JudgeRequest(key=str(i), kind="grade", order="single", instruction="Say hi" + "!" * i,
                         answer_a="word " * (2 * i + 1)) for i in range(3)]
    got = {}
    for pc, bs in ((0, 1), (1, 3)):
        spec = parse_judge_spec({"backend": "hf", "model": "tiny", "mode": "single", "prefix_cache": pc,
                                 "batch_size": bs})
        got[pc] = {r.key: res for r, res in HFBackend(spec.using(model, tok)).run(reqs)}
    ok = [k for k, res in got[1].items() if res["error"] is None]
    too_long = [k for k, res in got[1].items() if res["error"] is not None]
    if arch == "gpt2":
        assert ok and too_long  # the tiny chat prompt is ~500 tokens: the longer requests overflow 512
        assert all("exceeds the judge's context of 512" in got[1][k]["error"] for k in too_long)
    else:
        assert len(ok) == 3 and "exceed the judge's trained context of 512" in caplog.text
    for k in ok:
        assert got[1][k]["grade"] == pytest.approx(got[0][k]["grade"], abs=1e-4)
