"""load_queries on JSONL files: ids, fields, and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.queries import load_queries, query_id


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_and_stable_ids(tmp_path: Path) -> None:
    p = _write(tmp_path / "q.jsonl", [
        json.dumps({"instruction": "How do tides work?", "category": "explanation"}),
        json.dumps({"query": "Write a haiku about rain.", "id": 7}),
        "",
        json.dumps({"prompt": "What is 17*23?", "extra": 1}),
    ])
    rows = load_queries(str(p))
    assert [r["instruction"] for r in rows] == ["How do tides work?", "Write a haiku about rain.", "What is 17*23?"]
    assert [r["category"] for r in rows] == ["explanation", "", ""]
    assert rows[1]["id"] == "7"
    assert rows[0]["id"] == query_id("How do tides work?")
    assert rows[2]["extra"] == 1
    # Same text, same id, in a different file and position.
    p2 = _write(tmp_path / "q2.jsonl", [json.dumps({"prompt": "What is 17*23?"})])
    assert load_queries(str(p2))[0]["id"] == rows[2]["id"]
    assert len(load_queries(str(p), limit=2)) == 2


def test_jsonl_duplicate_texts_get_distinct_ids(tmp_path: Path) -> None:
    p = _write(tmp_path / "q.jsonl", [json.dumps({"instruction": "Hi"})] * 3)
    ids = [r["id"] for r in load_queries(str(p))]
    assert len(set(ids)) == 3 and ids[0] == query_id("Hi")


def test_jsonl_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_queries(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="is empty"):
        load_queries(str(_write(tmp_path / "empty.jsonl", [""])))
    bad = _write(tmp_path / "bad.jsonl", [json.dumps({"instruction": "ok"}), "{not json"])
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_queries(str(bad))
    nofield = _write(tmp_path / "nofield.jsonl", [json.dumps({"text": "x"})])
    with pytest.raises(DataError, match=r":1: no non-empty instruction"):
        load_queries(str(nofield))
    dup = _write(tmp_path / "dup.jsonl", [json.dumps({"id": "a", "instruction": "x"}),
                                          json.dumps({"id": "a", "instruction": "y"})])
    with pytest.raises(DataError, match="already used on line 1"):
        load_queries(str(dup))
    with pytest.raises(ConfigError, match="positive"):
        load_queries(str(dup), limit=0)
