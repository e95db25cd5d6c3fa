"""AlpacaEval model_outputs.json as a RUN (paired by exact instruction text) and `export` back to it.

The tiny files here are written in AlpacaEval's format (a JSON list of {instruction, output,
generator, dataset}); the lm-eval side is tests/fixtures/runs (instructions in make_fixtures.py)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from test_judge_openai import FakeJudgeServer, fast_spec

from alignez_eval.cli import main as cli_main
from alignez_eval.errors import DataError
from alignez_eval.judge import judge_runs, load_judgments, load_run, pair_runs
from alignez_eval.judge.alpaca_eval import alpaca_eval_rows
from alignez_eval.queries import query_id

FIX = Path(__file__).parent / "fixtures" / "runs"

# The fixture base run asks q0..q5; this file answers q0, q1, q2, q3, q5 and one instruction the run
# does not ask (like phi-2's 803 rows against the others' 805).
ROWS = [
    {"instruction": "How do I bake bread?", "output": "Flour, water, yeast, salt; knead, prove, bake. good good",
     "generator": "ref-model", "dataset": "helpful_base"},
    {"instruction": "Explain recursion.", "output": "Solving a problem by smaller copies of itself. good",
     "generator": "ref-model", "dataset": "koala"},
    {"instruction": "Name a prime number.", "output": "Seven is prime. good good", "generator": "ref-model",
     "dataset": "oasst"},
    {"instruction": "What causes the seasons?", "output": "The tilt.", "generator": "ref-model", "dataset": "vicuna"},
    {"instruction": "Write a haiku about rain.", "output": "Rain taps the window / good good good",
     "generator": "ref-model", "dataset": "selfinstruct"},
    {"instruction": "Who wrote Hamlet?", "output": "Shakespeare.", "generator": "ref-model", "dataset": "oasst"},
]


def write(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def ref_file(tmp_path: Path) -> Path:
    return write(tmp_path / "model_outputs.json", ROWS)


def test_model_outputs_file_loads_as_a_run(ref_file: Path) -> None:
    run = load_run(ref_file)
    assert run.source == "alpaca_eval" and run.name == "ref-model" and run.model_name == "ref-model"
    assert len(run.samples) == 6 and run.families == ["alpaca_eval"]
    s = run.samples[("alpaca_eval", query_id("Explain recursion."))]  # the id our alpaca_eval task gives it
    assert (s.instruction, s.answer, s.dataset) == ("Explain recursion.", ROWS[1]["output"], "koala")
    assert load_run(ref_file, name="mine").name == "mine"
    assert run.describe()["format"] == "alpaca_eval"


@pytest.mark.parametrize("rows, match", [
    ([], "empty list"),
    ([ROWS[0], ROWS[1], dict(ROWS[0], output="other")], "row 2 repeats the instruction of row 0"),
    ([ROWS[0], dict(ROWS[0], instruction=ROWS[0]["instruction"] + " ")], "differ only in surrounding whitespace"),
    ([ROWS[0], {"instruction": "x"}], "row 1 has output None"),
    ([{"output": "y"}], "row 0 has no instruction text"),
    (["just a string"], "row 0 is str"),
])
def test_bad_model_outputs_name_the_row_and_the_fix(tmp_path: Path, rows: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_run(write(tmp_path / "model_outputs.json", rows))


def test_a_json_that_is_neither_format_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="not readable JSON"):
        load_run(bad)


def test_lm_eval_run_pairs_with_model_outputs_by_instruction(ref_file: Path, caplog) -> None:
    base, ref = load_run(FIX / "base"), load_run(ref_file)
    with caplog.at_level(logging.WARNING):
        p = pair_runs(base, ref)
    assert p.by == "instruction"
    assert [k[1] for k in p.keys] == ["q0", "q1", "q2", "q3", "q5"]  # baseline keys
    assert p.missing == [("alignez_fx", "q4")]  # asked by the run, not answered in the file
    assert p.extra == [("alpaca_eval", query_id("Who wrote Hamlet?"))]
    assert ref.samples[p.candidate_key(("alignez_fx", "q3"))].answer == "The tilt."
    assert p.summary()["paired_by"] == "instruction"
    assert "5 paired by instruction, 1 docs only in the baseline, 1 only in the candidate" in caplog.text
    # and the other way round: the file as the baseline
    q = pair_runs(ref, base)
    assert len(q.keys) == 5 and len(q.missing) == 1 and q.extra == [("alignez_fx", "q4")]
    assert base.samples[q.candidate_key(q.keys[0])].instruction == ref.samples[q.keys[0]].instruction


def test_an_instruction_asked_by_two_docs_of_the_run_is_an_error(tmp_path: Path, ref_file: Path) -> None:
    # the same prompts under two tasks of one lm-eval run: no single partner for the file's row
    run_dir = tmp_path / "two_tasks"
    shutil.copytree(FIX / "alignez" / "base-model-alignez", run_dir)
    src = next(run_dir.glob("samples_alignez_fx_base_*.jsonl"))
    shutil.copy(src, run_dir / src.name.replace("alignez_fx_base", "alignez_gx_base"))
    with pytest.raises(DataError, match="asks the instruction 'How do I bake bread.' in 2 docs"):
        pair_runs(load_run(run_dir), load_run(ref_file))


def test_judge_an_lm_eval_run_against_published_outputs(tmp_path: Path, ref_file: Path, capsys) -> None:
    with FakeJudgeServer() as srv:
        spec = fast_spec(srv.url)
        out = judge_runs(load_run(FIX / "base"), {"ref": load_run(ref_file)}, spec, tmp_path / "j1")
        manifest, records = load_judgments(out)
        pairing = manifest["candidates"]["ref"]["pairing"]
        assert (pairing["paired"], pairing["paired_by"]) == (5, "instruction")
        assert pairing["missing_in_candidate"] == [["alignez_fx", "q4"]]
        assert len(pairing["extra_in_candidate"]) == 1
        by_doc = {r["doc_id"]: r for r in records["ref"]}
        assert sorted(by_doc) == ["q0", "q1", "q2", "q3", "q5"]
        # the fake judge prefers more "good" words: base q5 "Rain falls down." vs the file's 3 goods
        assert by_doc["q5"]["verdict"] == "win" and by_doc["q2"]["identical"]

        # the CLI, with the file as the baseline and a named lm-eval candidate
        cli_spec = f"openai:fake-judge@{srv.url},api_key_env=ALIGNEZ_TEST_NO_KEY,timeout_s=5"
        rc = cli_main(["judge", "--baseline", str(ref_file), "--candidate", f"alignez={FIX / 'alignez'}",
                       "--judge", cli_spec, "--out", str(tmp_path / "j2")])
    assert rc == 0
    assert "alignez vs ref-model:" in capsys.readouterr().out
    manifest, records = load_judgments(tmp_path / "j2")
    assert {r["family"] for r in records["alignez"]} == {"alpaca_eval"}
    assert manifest["candidates"]["alignez"]["pairing"]["paired"] == 5


def test_export_writes_model_outputs_that_load_and_pair_back(tmp_path: Path, capsys) -> None:
    out = tmp_path / "model_outputs.json"
    assert cli_main(["export", str(FIX / "base"), "--format", "alpaca_eval", "-o", str(out)]) == 0
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [set(r) for r in rows] == [{"instruction", "output", "generator", "dataset"}] * 6
    assert rows[0] == {"instruction": "How do I bake bread?", "output": "Mix flour and water. good",
                       "generator": "base-model", "dataset": "alignez_fx"}
    assert "6 rows of base-model" in capsys.readouterr().out
    p = pair_runs(load_run(FIX / "base"), load_run(out))
    assert len(p.keys) == 6 and not p.missing and not p.extra

    assert cli_main(["export", str(FIX / "base"), "--generator", "gemma-base", "-o", str(out)]) == 0
    assert {r["generator"] for r in json.loads(out.read_text(encoding="utf-8"))} == {"gemma-base"}


def test_export_keeps_alpaca_subsets_and_refuses_duplicate_instructions(tmp_path: Path, ref_file: Path,
                                                                       capsys) -> None:
    # a round trip through our Run keeps AlpacaEval's own `dataset` field
    assert alpaca_eval_rows(load_run(ref_file)) == ROWS
    run_dir = tmp_path / "two_tasks"
    shutil.copytree(FIX / "alignez" / "base-model-alignez", run_dir)
    src = next(run_dir.glob("samples_alignez_fx_base_*.jsonl"))
    shutil.copy(src, run_dir / src.name.replace("alignez_fx_base", "alignez_gx_base"))
    out = tmp_path / "o.json"
    assert cli_main(["export", str(run_dir), "-o", str(out)]) == 1
    assert "export one task with --task NAME" in capsys.readouterr().err and not out.exists()
    assert cli_main(["export", str(run_dir), "--task", "alignez_gx", "-o", str(out)]) == 0
    assert {r["dataset"] for r in json.loads(out.read_text(encoding="utf-8"))} == {"alignez_gx"}
    assert cli_main(["export", str(run_dir), "--task", "nope", "-o", str(out)]) == 1
    assert "has no task nope" in capsys.readouterr().err


def test_export_names_an_embedded_model_run_by_its_registry_name(tmp_path: Path, monkeypatch) -> None:
    from lm_eval.utils import sanitize_model_name

    from alignez_eval.models import models_dir

    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    run_dir = tmp_path / "runs" / sanitize_model_name(str(models_dir() / "gemma-3-270m"))
    shutil.copytree(FIX / "base" / "base-model", run_dir)
    out = tmp_path / "o.json"
    assert cli_main(["export", str(run_dir.parent), "-o", str(out)]) == 0
    assert {r["generator"] for r in json.loads(out.read_text(encoding="utf-8"))} == {"gemma-3-270m"}


def test_judge_limit_is_a_seeded_sample_shared_by_every_candidate(tmp_path: Path, ref_file: Path, capsys) -> None:
    from alignez_eval.judge.runner import sample_keys

    keys = [("f", f"q{i}") for i in range(10)]
    a, b = sample_keys(keys, 4, seed=1), sample_keys(list(reversed(keys)), 4, seed=1)
    assert len(a) == 4 and set(a) == set(b) and a == sorted(a)  # same docs whatever the input order
    assert sample_keys(keys, 4, seed=2) != a and sample_keys(keys, None) == keys
    with pytest.raises(DataError, match="judges nothing"):
        sample_keys(keys, 0)
    with FakeJudgeServer() as srv:
        cli_spec = f"openai:fake-judge@{srv.url},api_key_env=ALIGNEZ_TEST_NO_KEY,timeout_s=5"
        rc = cli_main(["judge", "--baseline", str(ref_file), "--candidate", f"alignez={FIX / 'alignez'}",
                       "--judge", cli_spec, "--out", str(tmp_path / "j"), "--limit", "3", "--seed", "5"])
    assert rc == 0
    assert "5 paired, 3 judged" in capsys.readouterr().out
    manifest, records = load_judgments(tmp_path / "j")
    p = manifest["candidates"]["alignez"]["pairing"]
    assert (p["paired"], p["judged"], p["limit"], p["seed"]) == (5, 3, 3, 5) and len(records["alignez"]) == 3
