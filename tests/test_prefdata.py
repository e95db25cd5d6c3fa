"""Ground-truth preference pairs: plain, HH-RLHF transcripts, UltraFeedback message lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.fitting.prefdata import load_pref_pairs, parse_row, split_hh
from alignez_eval.selfpref.templates import activation_text


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plain_rows(tmp_path):
    p = _write(tmp_path / "p.jsonl", [
        {"prompt": "How to boil an egg?", "chosen": "Boil 8 minutes.", "rejected": "No idea.", "id": "e1"},
        {"prompt": "Capital of France?", "chosen": " Paris. ", "rejected": "Lyon"},
    ])
    recs = load_pref_pairs(p)
    assert [r["query"] for r in recs] == ["How to boil an egg?", "Capital of France?"]
    assert recs[0]["answers"] == {"pos": "Boil 8 minutes.", "neg": "No idea."}
    assert recs[1]["answers"]["pos"] == "Paris."
    assert recs[0]["id"] == "e1" and recs[1]["id"].startswith("p-")
    assert all(r["status"] == "kept" and r["source"] == "pref-data:plain" for r in recs)


def test_hh_transcripts_single_and_multi_turn(tmp_path):
    single = {
        "chosen": "\n\nHuman: How do I make tea?\n\nAssistant: Steep leaves in hot water.",
        "rejected": "\n\nHuman: How do I make tea?\n\nAssistant: Why would you?",
    }
    multi = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\n\nAssistant: Honey never spoils.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\n\nAssistant: No.",
    }
    recs = load_pref_pairs(_write(tmp_path / "hh.jsonl", [single, multi]))
    assert recs[0]["query"] == "How do I make tea?"
    assert recs[0]["answers"] == {"pos": "Steep leaves in hot water.", "neg": "Why would you?"}
    assert recs[1]["query"] == "Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact."
    assert recs[1]["answers"] == {"pos": "Honey never spoils.", "neg": "No."}
    # the activation frame reproduces the dialogue
    text, _ = activation_text(recs[1]["query"], recs[1]["answers"]["pos"])
    assert text == "Human: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a fact.\nAssistant: Honey never spoils."
    assert recs[0]["source"] == "pref-data:hh"
    assert split_hh("\n\nHuman: a\n\nAssistant: b") == ("\n\nHuman: a", "b")


def test_real_hh_rlhf_rows():
    # Verbatim harmless-base test rows (tests/fixtures/datasets/README.md): multi-turn context,
    # an empty chosen reply, and a row whose chosen transcript has an extra turn glued in.
    recs = load_pref_pairs(Path(__file__).parent / "fixtures" / "datasets" / "hh_rlhf_test.jsonl")
    assert [r["line"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert [r["reason"] for r in recs] == [None, None, None, "empty", "prompt_mismatch", None]
    assert [r["status"] for r in recs].count("kept") == 4
    assert recs[2]["query"] == "Hello, How are you?"
    assert recs[2]["answers"] == {"pos": "Hello, I’m doing quite well.",
                                  "neg": "Hello, I am doing well. What is your name?"}
    # the prompt is everything before the last "\n\nAssistant:"; earlier turns stay in the query
    assert recs[1]["query"].startswith("How can I sneak snacks into the movie theater?\n\nAssistant: I’m not sure")
    assert recs[1]["query"].endswith("\n\nHuman: No, those concession prices are a rip off.")
    assert recs[1]["answers"]["pos"] == "What does the price of popcorn have to do with it?"
    # a reply that opens with a bare "Human:" is still the answer, not a new turn
    assert recs[0]["answers"]["pos"].startswith("Human:  insulting a foreign exchange student")
    # the same opening turn in two rows is two pairs (different dialogues), with distinct ids
    assert recs[5]["query"].startswith("How can I sneak snacks") and recs[5]["id"] != recs[1]["id"]


def test_ultrafeedback_message_lists_and_json_array(tmp_path):
    row = {
        "prompt": "Write a haiku about rain.",
        "prompt_id": "abc",
        "chosen": [{"role": "user", "content": "Write a haiku about rain."},
                   {"role": "assistant", "content": "Soft rain on the roof"}],
        "rejected": [{"role": "user", "content": "Write a haiku about rain."},
                     {"role": "assistant", "content": "Rain is wet."}],
        "score_chosen": 8.0, "score_rejected": 3.0,
    }
    no_prompt = dict(row)
    no_prompt.pop("prompt")
    no_prompt["prompt_id"] = "def"
    p = tmp_path / "uf.json"
    p.write_text(json.dumps([row, no_prompt]))
    recs = load_pref_pairs(p)
    assert recs[0]["id"] == "abc" and recs[0]["source"] == "pref-data:messages"
    assert recs[0]["query"] == "Write a haiku about rain."
    assert recs[0]["answers"] == {"pos": "Soft rain on the roof", "neg": "Rain is wet."}
    assert recs[1]["query"] == "Write a haiku about rain."  # from the messages before the answer


def test_limit_counts_usable_pairs_and_drops_are_recorded(tmp_path):
    rows = [
        {"prompt": "a", "chosen": "x", "rejected": "x"},  # identical → dropped
        {"prompt": "b", "chosen": "", "rejected": "y"},  # empty → dropped
        {"prompt": "c", "chosen": "yes", "rejected": "no"},
        {"prompt": "d", "chosen": "yes", "rejected": "no"},
        {"prompt": "e", "chosen": "yes", "rejected": "no"},
    ]
    recs = load_pref_pairs(_write(tmp_path / "l.jsonl", rows), limit=2)
    assert [r["query"] for r in recs] == ["a", "b", "c", "d"]
    assert [r["reason"] for r in recs] == ["identical", "empty", None, None]
    assert sum(r["status"] == "kept" for r in recs) == 2


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pref_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_pref_pairs(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        load_pref_pairs(tmp_path / "bad.jsonl")
    _write(tmp_path / "nofield.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(DataError, match=r"nofield.jsonl:1: needs 'chosen' and 'rejected'"):
        load_pref_pairs(tmp_path / "nofield.jsonl")
    _write(tmp_path / "noturn.jsonl", [{"chosen": "b", "rejected": "c"}])
    with pytest.raises(DataError, match="prompt"):
        load_pref_pairs(tmp_path / "noturn.jsonl")
    _write(tmp_path / "same.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "b"}])
    with pytest.raises(DataError, match="no usable pair"):
        load_pref_pairs(tmp_path / "same.jsonl")
    with pytest.raises(ConfigError):
        load_pref_pairs(tmp_path / "same.jsonl", limit=0)
    with pytest.raises(ValueError, match="both be strings"):
        parse_row({"chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]})
