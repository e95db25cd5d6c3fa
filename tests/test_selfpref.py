"""Self-generated preference pairs: templates, cleaning, batched generation, resumable store."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import make_model

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.selfpref import SelfPrefSettings, degeneracy, self_generate
from alignez_eval.selfpref.clean import (
    clean_characteristics,
    collapse_repeats,
    cut_at_turn,
    is_echo,
    judge_pair,
    near_identical,
)
from alignez_eval.selfpref.generate import Sampling, frame, generate_texts, uses_chat_template
from alignez_eval.selfpref.store import PairStore
from alignez_eval.selfpref.templates import (
    activation_text,
    answer_prompts,
    characteristics_prompts,
    fill,
    parse_keywords,
)

QUERIES = [
    {"id": f"q{i}", "instruction": f"How do I do task number {i} well?", "category": "c"} for i in range(5)
]
FAST = dict(char_tokens=6, answer_tokens=10, batch_size=2)


# ---- templates ------------------------------------------------------------------------------
def test_prompts_are_the_lab_wording_and_keep_braces_in_queries():
    kw = parse_keywords("helpful")
    q = 'Format {"a": {b}} as YAML'
    pos, neg = characteristics_prompts(q, kw)
    assert pos == q + "\nYou are a helpful assistant. Your answer to this query should: "
    assert neg == q + "\nPretend you are a useless assistant. Your response to this query should: "
    apos, aneg = answer_prompts(q, kw, "be clear", "")
    assert apos == "You are a helpful assistant. Your answer should be clear.\n" + q + " "
    # an empty characteristic falls back to "be {kw}"
    assert aneg == "Pretend you are a useless assistant. Your answer should be useless.\n" + q
    assert fill("{x}-{x}", x="{y}") == "{y}-{y}"


def test_keyword_presets_and_custom_pairs():
    assert parse_keywords("harmless").as_list() == ["safety-first", "malicious"]
    assert parse_keywords("humor").as_list() == ["humorous", "dull and boring"]
    assert parse_keywords("concise / rambling").as_list() == ["concise", "rambling"]
    for bad in ("", "nice", "a/", "/b", "a/b/c"):
        with pytest.raises(ConfigError, match="POS/NEG"):
            parse_keywords(bad)


def test_activation_text_offsets_point_at_the_answer():
    text, start = activation_text("What?", "An answer.")
    assert text == "Human: What?\nAssistant: An answer."
    assert text[start:] == "An answer."


# ---- cleaning -------------------------------------------------------------------------------
def test_cut_at_turn_markers():
    assert cut_at_turn(" Sure, bake it.\nHuman: thanks\nAssistant: ok") == "Sure, bake it."
    assert cut_at_turn("Assistant: Sure.\nUser: more") == "Sure."
    assert cut_at_turn("Fine<end_of_turn>junk") == "Fine"
    assert cut_at_turn("Sure.\nassistant: You are a helpful assistant.") == "Sure."
    assert cut_at_turn("no marker here") == "no marker here"


def test_collapse_repeated_list_items_sentences_and_loops():
    text, n = collapse_repeats("1. Be a good listener. 2. Be a good listener. 3. Be kind. 4. Be a good listener.")
    assert text == "1. Be a good listener. 2. Be kind."
    assert n == 2
    text, n = collapse_repeats("- tip one\n- tip two\n- tip one")
    assert text == "- tip one\n- tip two" and n == 1
    text, n = collapse_repeats("I am a bot. I am a bot. I am a bot. I am a bot.")
    assert text == "I am a bot." and n >= 1
    text, n = collapse_repeats("Pay 1000000 dollars, then leave.")
    assert text == "Pay 1000000 dollars, then leave." and n == 0


def test_characteristics_are_one_line_without_final_full_stop():
    c, n = clean_characteristics("be clear.\nbe clear.\nHuman: next")
    assert c == "be clear" and n == 1


def test_echo_and_near_identical_flags():
    q = "How do I bake bread at home?"
    assert is_echo("How do I bake bread at home?", q)
    assert is_echo("how do i bake bread at home", q)
    assert is_echo("How do I bake bread at home? Yes.", q)
    assert not is_echo("Mix flour, water, salt and yeast; knead and bake at 230 C.", q)
    assert near_identical("Mix flour and water, then bake.", "Mix flour and water; then bake!")
    assert not near_identical("Mix flour and water, then bake.", "I refuse to help with that.")
    f = judge_pair(q, "Mix flour.", "")
    assert f.drop_reason == "empty" and f.degenerate
    f = judge_pair(q, "Mix flour!", "mix flour")
    assert f.drop_reason == "identical" and f.near_identical
    f = judge_pair(q, "Mix flour, water and yeast.", q, repeats_removed=1)
    assert f.drop_reason is None and f.echo_neg and not f.echo_pos and f.loops_collapsed and f.degenerate
    assert not f.echo_instruction
    f = judge_pair(q, "You are a helpful assistant. Your answer should be kind.", "No.", keywords=("helpful", "useless"))
    assert f.echo_instruction and f.degenerate
    assert not judge_pair(q, "I am a helpful person.", "No.", keywords=("helpful", "useless")).echo_instruction


def test_degeneracy_rates():
    recs = [
        {"flags": {"degenerate": True, "echo_pos": False, "echo_neg": True, "near_identical": False,
                   "loops_collapsed": True}, "reason": None},
        {"flags": {"degenerate": True, "echo_pos": False, "echo_neg": False, "near_identical": True,
                   "loops_collapsed": False}, "reason": "identical"},
        {"flags": {"degenerate": False, "echo_pos": False, "echo_neg": False, "near_identical": False,
                   "loops_collapsed": False}, "reason": None},
        {"flags": {"degenerate": False, "echo_pos": False, "echo_neg": False, "near_identical": False,
                   "loops_collapsed": False}, "reason": None},
    ]
    d = degeneracy(recs)
    assert d["rate"] == 0.5 and d["echo_neg"] == 0.25 and d["near_identical"] == 0.25
    assert d["dropped_identical"] == 1 and d["dropped_empty"] == 0


# ---- generation -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return make_model("llama")


def test_frames_chat_template_or_plain_dialogue(tiny):
    _, tok = tiny
    assert uses_chat_template(tok, "auto")
    assert frame(tok, "Hi ", True) == "<|user|>Hi <|end|><|assistant|>"
    assert frame(tok, "Hi ", False) == "Human: Hi\nAssistant:"
    assert not uses_chat_template(tok, "no")
    with pytest.raises(ConfigError):
        uses_chat_template(tok, "maybe")


def test_left_padded_batch_equals_one_by_one_greedy(tiny):
    """Left padding must not change what each prompt generates (greedy, so comparable)."""
    model, tok = tiny
    greedy = Sampling(do_sample=False)
    prompts = ["Hi", "How do I bake bread at home with yeast and flour?", "2+2?"]
    batched = generate_texts(model, tok, prompts, 8, greedy, seed=0, chat=False)
    single = [generate_texts(model, tok, [p], 8, greedy, seed=0, chat=False)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored


def test_self_generate_writes_one_record_per_query_in_order(tiny, tmp_path):
    model, tok = tiny
    store = tmp_path / "pairs.jsonl"
    recs, stats = self_generate(model, tok, QUERIES, SelfPrefSettings(**FAST), store, model_id="tiny",
                                progress=False)
    assert [r["id"] for r in recs] == [q["id"] for q in QUERIES]
    assert stats.generated == 5 and stats.resumed == 0
    for r in recs:
        assert r["keywords"] == ["helpful", "useless"]
        assert set(r["answers"]) == {"pos", "neg"} and set(r["characteristics"]) == {"pos", "neg"}
        assert r["status"] in ("kept", "dropped")
        assert len(r["raw"]["answers"]) == 2
    lines = store.read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "header"
    assert json.loads(lines[0])["sampling"]["seed"] == 0
    assert sum(json.loads(ln)["kind"] == "pair" for ln in lines) == 5


def test_generation_is_reproducible_with_the_seed_and_leaves_the_global_rng_alone(tiny, tmp_path):
    model, tok = tiny
    torch.manual_seed(123)
    state = torch.get_rng_state()
    self_generate(model, tok, QUERIES[:1], SelfPrefSettings(**FAST), None, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    a, _ = self_generate(model, tok, QUERIES[:2], SelfPrefSettings(**FAST), None, progress=False)
    b, _ = self_generate(model, tok, QUERIES[:2], SelfPrefSettings(**FAST), None, progress=False)
    c, _ = self_generate(model, tok, QUERIES[:2], SelfPrefSettings(**FAST, sampling=Sampling(seed=1)), None,
                         progress=False)
    assert [r["raw"] for r in a] == [r["raw"] for r in b]
    assert [r["raw"] for r in a] != [r["raw"] for r in c]


class _Interrupt(Exception):
    pass


def _counting_generate(model):
    calls = {"n": 0}
    real = model.generate

    def generate(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    model.generate = generate
    return calls, real


def test_resume_after_an_interrupted_run_regenerates_nothing_finished(tiny, tmp_path):
    model, tok = tiny
    store = tmp_path / "pairs.jsonl"
    settings = SelfPrefSettings(**FAST)

    def stop_after_first(batch, recs):
        if batch == 0:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        self_generate(model, tok, QUERIES, settings, store, model_id="tiny", on_batch=stop_after_first,
                      progress=False)
    first = {json.loads(ln)["id"]: json.loads(ln) for ln in store.read_text().splitlines()[1:]}
    assert sorted(first) == ["q0", "q1"]
    # A write torn by a kill is dropped on reopen.
    with store.open("a") as fh:
        fh.write('{"kind": "pair", "id": "q2", "quer')
    calls, real = _counting_generate(model)
    try:
        recs, stats = self_generate(model, tok, QUERIES, settings, store, model_id="tiny", progress=False)
    finally:
        model.generate = real
    assert stats.resumed == 2 and stats.generated == 3
    assert calls["n"] == 2 * 2  # two batches left (q2,q3 | q4), characteristics + answers each
    by_id = {r["id"]: r for r in recs}
    for qid in ("q0", "q1"):
        assert by_id[qid]["raw"] == first[qid]["raw"]  # not regenerated
    ids = [json.loads(ln).get("id") for ln in store.read_text().splitlines()[1:]]
    assert ids == ["q0", "q1", "q2", "q3", "q4"]
    # A third run generates nothing at all.
    calls, real = _counting_generate(model)
    try:
        _, stats = self_generate(model, tok, QUERIES, settings, store, model_id="tiny", progress=False)
    finally:
        model.generate = real
    assert calls["n"] == 0 and stats.resumed == 5


def test_store_refuses_a_file_from_other_settings(tmp_path):
    p = tmp_path / "s.jsonl"
    PairStore(p, {"keywords": ["helpful", "useless"]})
    with pytest.raises(DataError, match="other settings"):
        PairStore(p, {"keywords": ["humorous", "dull and boring"]})


def test_bad_queries_fail_before_generating(tiny):
    model, tok = tiny
    with pytest.raises(DataError, match="no queries"):
        self_generate(model, tok, [], SelfPrefSettings(**FAST), None, progress=False)
    long_q = {"id": "long", "instruction": "bake bread " * 400}
    calls, real = _counting_generate(model)
    try:
        with pytest.raises(DataError, match=r"'long'.*context of 512"):
            self_generate(model, tok, [QUERIES[0], long_q], SelfPrefSettings(**FAST), None, progress=False)
    finally:
        model.generate = real
    assert calls["n"] == 0
    with pytest.raises(DataError, match="twice"):
        self_generate(model, tok, [QUERIES[0], QUERIES[0]], SelfPrefSettings(**FAST), None, progress=False)


def test_settings_validation():
    with pytest.raises(ConfigError):
        SelfPrefSettings(keywords="nice")
    with pytest.raises(ConfigError):
        SelfPrefSettings(answer_tokens=0)
