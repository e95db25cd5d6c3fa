"""Preference files for DPO and the pool split (no TRL needed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from alignez_eval.dpo.data import BASE_PREAMBLE, count_of, frame, prompt_key, read_pairs, split_pool, take
from alignez_eval.errors import ConfigError, DataError


def hh(q: str, a: str, prior: str = "") -> str:
    return f"{prior}\n\nHuman: {q}\n\nAssistant: {a}"


def pool_rows(n_prompts: int = 30) -> list[dict]:
    rows = []
    for i in range(n_prompts):
        q = f"question {i}?"
        rows.append({"chosen": hh(q, f"good {i}"), "rejected": hh(q, f"bad {i}")})
        if i % 3 == 0:  # a second pair on the same prompt, and a multi-turn pair starting with it
            rows.append({"chosen": hh(q, f"fine {i}"), "rejected": hh(q, f"worse {i}")})
            prior = hh(q, f"first reply {i}")
            rows.append({"chosen": hh("and then?", f"ok {i}", prior), "rejected": hh("and then?", f"no {i}", prior)})
    return rows


def write_jsonl(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_hh_gz_and_plain_jsonl(tmp_path):
    pairs = read_pairs(write_jsonl(tmp_path / "p.jsonl.gz", pool_rows(4), gz=True))
    assert len(pairs) == 4 + 2 * 2 and pairs[0].query == "question 0?" and pairs[0].chosen == "good 0"
    assert pairs[2].query == "question 0?\n\nAssistant: first reply 0\n\nHuman: and then?"
    assert not pairs[2].single_turn and pairs[0].single_turn
    plain = read_pairs(write_jsonl(tmp_path / "q.jsonl", [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}]))
    assert plain[0].prompt == frame("Hi?") == BASE_PREAMBLE + "Human: Hi?\n\nAssistant:"


def test_the_frame_is_the_base_task_variants_frame():
    import importlib.util

    from alignez_eval import tasks_path

    spec = importlib.util.spec_from_file_location("alignez_task_utils", Path(tasks_path()) / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert utils.base_prompt({"instruction": "Why?"}) == frame("Why?")


@pytest.mark.parametrize("content, what", [
    ("", "is empty"),
    ('{"chosen": "x"}\n', ":1: needs 'chosen' and 'rejected'"),
    ('{"chosen": "a", "rejected": "b"}\n', ":1: string chosen/rejected need a 'prompt'"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\nnot json\n', ":2: not valid JSON"),
    ('{"prompt": "p", "chosen": "same", "rejected": "same"}\n', "no usable pair"),
])
def test_a_bad_preference_file_is_one_clear_error(tmp_path, content, what):
    f = tmp_path / "bad.jsonl"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_pairs(f)
    assert what in str(e.value) and "expected one JSON object per line" in str(e.value)


def test_missing_and_corrupt_gz_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        read_pairs(tmp_path / "x.jsonl.gz")


def test_the_pool_split_leaks_no_prompt(tmp_path):
    pairs = read_pairs(write_jsonl(tmp_path / "p.jsonl", pool_rows(30)))
    split = split_pool(pairs, n_train=12, n_eval_pairs=10, n_eval_prompts=6, seed=3)
    assert split.describe() == {"train": 12, "eval_pairs": 10, "eval_prompts": 6}
    train_keys = {prompt_key(p) for p in split.train}
    held = {prompt_key(p) for p in split.eval_pairs + split.eval_prompts}
    assert train_keys.isdisjoint(held)
    # the multi-turn pair that opens with an evaluation prompt is never trained on
    assert all(p.single_turn for p in split.eval_prompts)
    # deterministic in the seed, different across seeds
    again = split_pool(pairs, n_train=12, n_eval_pairs=10, n_eval_prompts=6, seed=3)
    assert [p.id for p in again.train] == [p.id for p in split.train]
    other = split_pool(pairs, n_train=12, n_eval_pairs=10, n_eval_prompts=6, seed=4)
    assert [p.id for p in other.train] != [p.id for p in split.train]
    with pytest.raises(DataError, match="too small"):
        split_pool(pairs, n_train=100, n_eval_pairs=10, n_eval_prompts=6)


def test_shares_are_nested_prefixes():
    items = list(range(200))
    assert take(items, "1%") == [0, 1] and take(items, "5%") == items[:10] and take(items, 0.25) == items[:50]
    assert count_of("7", 200) == 7 and count_of("0.5%", 100) == 1
    for bad in ("0%", "150%", "abc", "0", "500"):
        with pytest.raises(ConfigError):
            count_of(bad, 200)
