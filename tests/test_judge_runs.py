"""Reading lm-eval run directories and pairing samples across runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from alignez_eval.errors import DataError
from alignez_eval.judge import load_run, pair_runs, task_family

FIX = Path(__file__).parent / "fixtures" / "runs"


def test_task_family_strips_base_suffix():
    assert task_family("alignez_helpful_base") == "alignez_helpful"
    assert task_family("alignez_helpful") == "alignez_helpful"
    assert task_family("alignez_base_x") == "alignez_base_x"


def test_genuine_lm_eval_output_loads():
    # lmeval_tiny/ was written by lm-eval 0.4.13 itself (simple_evaluate + EvaluationTracker).
    for given in (FIX / "lmeval_tiny", FIX / "lmeval_tiny" / "tiny-llama",
                  next((FIX / "lmeval_tiny" / "tiny-llama").glob("results_*.json"))):
        run = load_run(given)
        assert run.tasks == ["fx_qa_base"]
        assert run.model_name == "tiny-llama"
        assert sorted(k[1] for k in run.samples) == ["q1", "q2", "q3"]
        s = run.samples[("fx_qa", "q2")]
        assert s.instruction == "Explain recursion."
        assert s.prompt == "Human: Explain recursion.\nAssistant:"
        raw = [json.loads(x) for x in next(run.path.glob("samples_*.jsonl")).read_text().splitlines()]
        assert s.answer == raw[1]["filtered_resps"][0]


def test_newest_timestamp_is_used_and_noted(caplog):
    with caplog.at_level(logging.INFO):
        run = load_run(FIX / "base")
    assert run.samples[("alignez_fx", "q0")].answer == "Mix flour and water. good"
    assert run.files["alignez_fx_base"].name.endswith("2026-01-02T10-00-00.000001.jsonl")
    assert any("newest" in n for n in run.notes)
    # a results JSON pins its own timestamp
    old = load_run(FIX / "base" / "base-model" / "results_2026-01-01T10-00-00.000001.json")
    assert old.samples[("alignez_fx", "q0")].answer == "An outdated answer."


def test_pairing_across_base_and_chat_variants_reports_missing_and_extra():
    base, tuned = load_run(FIX / "base"), load_run(FIX / "tuned")
    p = pair_runs(base, tuned)
    assert [k[1] for k in p.keys] == ["q0", "q1", "q2", "q3", "q5"]
    assert p.missing == [("alignez_fx", "q4")]
    assert p.extra == [("alignez_fx", "q6")]
    assert p.summary()["paired"] == 5


def test_doc_id_fallback_warns(tmp_path, caplog):
    d = tmp_path / "m"
    d.mkdir()
    rec = {"doc_id": 3, "doc": {"question": "hi"}, "arguments": {"gen_args_0": {"arg_0": "Q: hi\nA:"}},
           "resps": [["x"]], "filtered_resps": ["x"], "filter": "none"}
    (d / "samples_alignez_t_2026-01-01T00-00-00.1.jsonl").write_text(json.dumps(rec) + "\n")
    with caplog.at_level(logging.WARNING):
        run = load_run(d)
    assert ("alignez_t", "3") in run.samples
    assert run.samples[("alignez_t", "3")].instruction == "Q: hi\nA:"  # no doc["instruction"]: the prompt
    assert any("doc_id" in r.message for r in caplog.records)


def test_bad_runs_raise_errors_that_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="--log_samples"):
        load_run(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "nope")
    both = tmp_path / "both" / "m"
    both.mkdir(parents=True)
    for task in ("alignez_fx", "alignez_fx_base"):
        shutil.copy(next((FIX / "tuned" / "tuned-model").glob("samples_*.jsonl")),
                    both / f"samples_{task}_2026-01-01T00-00-00.1.jsonl")
    with pytest.raises(DataError, match="two prompt formats"):
        load_run(both)
