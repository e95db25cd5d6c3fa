"""`judge-agreement`: reference files, the agreement figures against a hand computation, the CLI on a
real loopback judge server (and a tiny hf judge), resume from the cache, bad files, leaderboard line.

tests/fixtures/agreement/annotations.json was written for these tests in AlpacaEval's
annotations.json shape (not copied from AlpacaEval). The loopback judge prefers the answer with more
"good" words (tests/test_judge_openai.py); instructions marked [biasA] get "A" whatever the order.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from pathlib import Path

import pytest
from test_judge_openai import FakeJudgeServer, fast_spec

from alignez_eval.cli import main as cli_main
from alignez_eval.errors import DataError
from alignez_eval.judge.agreement import (
    agreement_figures,
    agreement_summary_line,
    is_agreement_file,
    load_reference,
    parse_preference,
)
from alignez_eval.judge.agreement_run import judge_agreement, select_pairs
from alignez_eval.judge.cache import JudgmentCache
from alignez_eval.judge.engine import Judge, PairItem

FIX = Path(__file__).parent / "fixtures" / "agreement" / "annotations.json"
RUNS = Path(__file__).parent / "fixtures" / "runs"


class BiasedJudgeServer(FakeJudgeServer):
    """The loopback judge, except that it answers "A" in both orders for [biasA] instructions."""

    def handle(self, h, body: bytes) -> None:
        user = json.loads(body)["messages"][-1]["content"]
        if "[biasA]" in user.split("\n")[1] and "assistant A's answer" in user:
            with self.lock:
                self.hits[hashlib.sha256(body).hexdigest()] += 1
            content = json.dumps({"helpfulness": {"rationale": "first", "choice": "A"}, "overall": "A"})
            payload = {"choices": [{"message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 7}}
            return self._send(h, 200, json.dumps(payload).encode())
        return super().handle(h, body)


def cli_spec(url: str, mode: str = "pairwise") -> str:
    return f"openai:fake-judge@{url},api_key_env=ALIGNEZ_TEST_NO_KEY,timeout_s=10,max_retries=2,mode={mode}"


# -- preferences and files ----------------------------------------------------------------------------
@pytest.mark.parametrize("value,label", [
    (1, "1"), (2, "2"), (1.0, "1"), (2.0, "2"), ("1", "1"), ("2", "2"), ("2.0", "2"), (" 1 ", "1"),
    (0, "tie"), (0.0, "tie"), ("0", "tie"), (1.5, "tie"), ("1.5", "tie"),
    (1.25, "1"), ("1.49", "1"), (1.75, "2"), (1.51, "2"),
    (None, None), (float("nan"), None), ("NaN", None), ("null", None),
])
def test_every_preference_encoding(value, label):
    assert parse_preference(value) == label


@pytest.mark.parametrize("value", ["two", "", 3, -1, 0.5, 2.5, True, [1], {"p": 1}])
def test_bad_preferences_are_refused(value):
    with pytest.raises(ValueError):
        parse_preference(value)


def test_json_list_and_jsonl_read_the_same(tmp_path):
    ref = load_reference(FIX)
    assert ref.format == "json" and ref.n_rows == 10 and ref.null_rows == [6]
    assert [p.label for p in ref.pairs] == ["1", "2", "2", "1", "tie", "tie", "2", "2", "1"]
    assert [p.row for p in ref.pairs] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert ref.pairs[2].preference == "2" and ref.pairs[0].generator_2 == "m1" and ref.pairs[0].dataset == "helpful_base"
    jl = tmp_path / "annotations.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in json.loads(FIX.read_text())) + "\n\n")
    ref2 = load_reference(jl)
    assert ref2.format == "jsonl" and ref2.pairs == ref.pairs and ref2.null_rows == [6]
    assert ref.sha256 == hashlib.sha256(FIX.read_bytes()).hexdigest()


def test_selection_limit_max_chars_generators():
    ref = load_reference(FIX)
    pairs, counts = select_pairs(ref, generators=["m2"], max_chars=15)
    # m2 rows 4 5 7 8 9 (6 is null); row 9's output_2 has 23 characters
    assert [p.row for p in pairs] == [4, 5, 7, 8]
    assert counts == {"rows": 10, "skipped_null_preference": 1, "filtered_by_generator": 4,
                      "skipped_max_chars": 1, "selected": 4}
    first, c1 = select_pairs(ref, limit=3, limit_mode="first")
    assert [p.row for p in first] == [0, 1, 2] and c1["dropped_by_limit"] == 6
    rand, _ = select_pairs(ref, limit=3, seed=1)
    again, _ = select_pairs(ref, limit=3, seed=1)
    assert [p.row for p in rand] == [p.row for p in again] and len(rand) == 3
    assert [p.row for p in rand] == sorted(p.row for p in rand)  # kept in file order
    with pytest.raises(Exception, match="no such generator_2"):
        select_pairs(ref, generators=["m9"])


# -- figures by hand ----------------------------------------------------------------------------------
# The fixture's 9 rated pairs (row 6 is null), with the loopback judge's verdicts ("good" counts) and
# lengths in characters (L = the longer answer; = for equal lengths):
#   row  ref  judge  L     note
#   0    1    1      1     agree, ref picked the longer
#   1    2    2      1     agree, ref picked the shorter
#   2    2    1      2     miss,  ref picked the longer
#   3    1    1      2     agree, ref picked the shorter
#   4    tie  2      2     ref tie
#   5    tie  tie    =     identical answers: tie without a call
#   7    2    tie    1     [biasA]: the orders disagree -> tie (a miss), ref picked the shorter
#   8    2    2      =     agree, equal lengths
#   9    1    1      2     agree, ref picked the shorter
REF = ["1", "2", "2", "1", "tie", "tie", "2", "2", "1"]
JUDGE = ["1", "2", "1", "1", "2", "tie", "tie", "2", "1"]
LEN1 = [22, 36, 9, 9, 5, 10, 14, 4, 10]
LEN2 = [10, 10, 20, 10, 10, 10, 4, 4, 23]
CONSISTENT = [True, True, True, True, True, None, False, True, True]
BY_HAND = {
    # reference decisive: rows 0 1 2 3 7 8 9 (7); the judge matches 0 1 3 8 9
    "agreement": (5 / 7, 7),
    # judge decisive: rows 0 1 2 3 4 8 9 (7); the reference matches 0 1 3 8 9
    "agreement_judge_decisive": (5 / 7, 7),
    "judge_tie_rate": (2 / 9, 9),  # rows 5 7
    "reference_tie_rate": (2 / 9, 9),  # rows 4 5
    # p_o = 6/9 (rows 0 1 3 5 8 9); reference 1/2/tie = 3/4/2, judge = 4/3/2 ->
    # p_e = (3*4 + 4*3 + 2*2) / 81 = 28/81; kappa = (54/81 - 28/81) / (1 - 28/81) = 26/53
    "kappa": (26 / 53, 9),
    "swap_consistency": (7 / 8, 8),  # row 5 has no orders; row 7's disagree
    # longer wins: on the reference's 7 decisive pairs it matches rows 0 and 2 only (row 8: its tie)
    "length_baseline": (2 / 7, 7),
    "reference_picks_longer": (2 / 6, 6),  # rows 0 2 of 0 1 2 3 7 9 (row 8 has equal lengths)
    "judge_picks_longer": (2 / 6, 6),  # rows 0 4 of 0 1 2 3 4 9
    "agreement_ref_longer": (1 / 2, 2),  # rows 0 (agree) 2 (miss)
    "agreement_ref_shorter": (3 / 4, 4),  # rows 1 3 9 agree, 7 misses
    "length_balanced": ((1 / 2 + 3 / 4) / 2, 6),
}


def test_figures_match_a_hand_computation():
    res = agreement_figures(REF, JUDGE, LEN1, LEN2, CONSISTENT, n_boot=500, seed=0)
    assert res["n"] == 9 and res["counts"]["equal_length"] == 2
    for name, (value, n) in BY_HAND.items():
        fig = res["figures"][name]
        assert fig["value"] == pytest.approx(value), name
        assert fig["n"] == n, name
        lo, hi = fig["ci"]
        assert lo <= value + 1e-12 and value - 1e-12 <= hi and lo < hi, name
    again = agreement_figures(REF, JUDGE, LEN1, LEN2, CONSISTENT, n_boot=500, seed=0)
    assert again == res  # seeded


def test_figures_edge_cases():
    # a perfect annotator: agreement 1, kappa 1; no orders -> swap consistency undefined
    res = agreement_figures(["1", "2", "tie"], ["1", "2", "tie"], [3, 1, 2], [1, 3, 2], n_boot=50)
    f = res["figures"]
    assert f["agreement"]["value"] == 1 and f["kappa"]["value"] == pytest.approx(1)
    assert f["swap_consistency"]["value"] is None and f["swap_consistency"]["ci"] == [None, None]
    # the length-only annotator as the judge: length-balanced exactly 50%
    ref, l1, l2 = ["1", "1", "2", "2"], [9, 2, 2, 9], [2, 9, 9, 2]
    judge = ["1", "2", "2", "1"]  # always the longer one
    assert agreement_figures(ref, judge, l1, l2, n_boot=0)["figures"]["length_balanced"]["value"] == 0.5
    # everything one class for both: kappa undefined, not a division error
    assert agreement_figures(["1", "1"], ["1", "1"], [1, 2], [2, 1], n_boot=0)["figures"]["kappa"]["value"] is None


# -- the command on a real loopback judge ------------------------------------------------------------
def test_cli_pairwise_end_to_end_then_resume_with_no_call(tmp_path, capsys):
    out = tmp_path / "agree"
    with BiasedJudgeServer() as srv:
        rc = cli_main(["judge-agreement", "--judge", cli_spec(srv.url), "--reference", str(FIX),
                       "--out", str(out), "--n-boot", "500"])
        assert rc == 0
        # 8 pairs that differ, both orders each; the identical pair (row 5) makes no call
        assert srv.total == 16 and len(srv.hits) == 16
        first = json.loads((out / "agreement.json").read_text())
        assert first["stats"]["calls"] == 16
        rc = cli_main(["judge-agreement", "--judge", cli_spec(srv.url), "--reference", str(FIX),
                       "--out", str(out), "--n-boot", "500"])
        assert rc == 0 and srv.total == 16  # resumed from DIR/cache.sqlite: no call at all
    res = json.loads((out / "agreement.json").read_text())
    assert res["stats"]["calls"] == 0 and res["stats"]["cache_hits"] == 16
    for name, (value, n) in BY_HAND.items():
        assert res["overall"]["figures"][name]["value"] == pytest.approx(value), name
        assert res["overall"]["figures"][name]["n"] == n, name
    assert res["overall"]["figures"] == first["overall"]["figures"]
    assert res["counts"] == {"rows": 10, "skipped_null_preference": 1, "selected": 9, "identical": 1,
                             "judge_errors": 0, "judged": 9}
    # per generator_2: m1 rows 0-3 (3 of 4 agree), m2 rows 4 5 7 8 9 (decisive 7 8 9: 2 of 3)
    assert res["per_generator"]["m1"]["figures"]["agreement"]["value"] == pytest.approx(3 / 4)
    assert res["per_generator"]["m2"]["figures"]["agreement"]["value"] == pytest.approx(2 / 3)
    assert res["reference"]["sha256"] == hashlib.sha256(FIX.read_bytes()).hexdigest()
    assert res["mode"] == "pairwise" and res["settings"]["n_boot"] == 500

    pairs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert [p["row"] for p in pairs] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert [p["judge_label"] for p in pairs] == JUDGE and [p["reference_label"] for p in pairs] == REF
    assert [p["len_output_1"] for p in pairs] == LEN1 and [p["len_output_2"] for p in pairs] == LEN2
    row7 = pairs[6]
    assert row7["order_labels"] == {"AB": "1", "BA": "2"} and row7["inconsistent"] is True
    assert pairs[5]["identical"] is True and pairs[5]["judge_verdict"] == "tie"
    assert pairs[1]["reference_preference"] == 2.0 and pairs[0]["length_label"] == "1"

    md = (out / "agreement.md").read_text()
    assert "| agreement | 71% [" in md and "m1 (n=4)" in md and "swap consistency" in md
    printed = capsys.readouterr().out
    assert "agreement 71% [" in printed and "length-only baseline 29% [" in printed and "0 judge calls" in printed


def test_single_mode_and_the_shared_cache_convention(tmp_path):
    cache = tmp_path / "shared.sqlite"
    with BiasedJudgeServer() as srv:
        spec = fast_spec(srv.url, mode="single", timeout_s=10.0)
        res = judge_agreement(spec, FIX, tmp_path / "single", cache_path=cache, n_boot=200)
        # one grade per distinct (instruction, answer): 8 differing pairs x 2 answers
        assert srv.total == 16
        f = res["overall"]["figures"]
        assert f["swap_consistency"]["value"] is None  # n/a in single mode
        # grades are 1 + "good" count (margin 0.5): same as pairwise except row 7 (no position bias
        # in single mode: output_1 has 3 "good" -> output_1), which the reference gives to output_2
        assert f["agreement"]["value"] == pytest.approx(5 / 7) and f["judge_tie_rate"]["value"] == pytest.approx(1 / 9)
        # The lead's measurement runs judge output_1 as the baseline and output_2 as the candidate:
        # the same judgments, found in the same cache, without a call.
        rows = json.loads(FIX.read_text())
        items = [PairItem(family=r["generator_2"], doc_id=str(i), instruction=r["instruction"],
                          baseline=r["output_1"], candidate=r["output_2"]) for i, r in enumerate(rows)
                 if r["preference"] is not None]
        with JudgmentCache(cache) as c:
            judge = Judge(spec, c)
            records = judge.judge_pairs(items)
        assert judge.stats["calls"] == 0 and srv.total == 16
        wins = {r["doc_id"]: r["verdict"] for r in records}
        pairs = {p["row"]: p for p in map(json.loads, (tmp_path / "single" / "pairs.jsonl").read_text().splitlines())}
        assert all(wins[str(row)] == p["judge_verdict"] for row, p in pairs.items())
    assert pairs[0]["grades"] == {"output_1": 3.0, "output_2": 2.0}


def test_hf_tiny_pairwise_judge_and_resume(tiny_dir, tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in json.loads(FIX.read_text())[:4]) + "\n")
    spec = f"hf:{tiny_dir('qwen2', 3)},dtype=float32,mode=pairwise,batch_size=8"
    assert cli_main(["judge-agreement", "--judge", spec, "--reference", str(ref), "--out", str(tmp_path / "a"),
                     "--n-boot", "100"]) == 0
    res = json.loads((tmp_path / "a" / "agreement.json").read_text())
    assert res["stats"]["calls"] == 8 and res["counts"]["judged"] == 4 and res["mode"] == "pairwise"
    pairs = [json.loads(x) for x in (tmp_path / "a" / "pairs.jsonl").read_text().splitlines()]
    for p in pairs:
        assert p["judge_label"] in ("1", "2", "tie") and set(p["order_labels"]) == {"AB", "BA"}
        assert -1 <= p["score"] <= 1
    with sqlite3.connect(tmp_path / "a" / "cache.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == 8
    assert cli_main(["judge-agreement", "--judge", spec, "--reference", str(ref), "--out", str(tmp_path / "a"),
                     "--n-boot", "100", "--margin", "0.2"]) == 0
    again = json.loads((tmp_path / "a" / "agreement.json").read_text())
    assert again["stats"]["calls"] == 0 and again["margin"] == 0.2  # a margin re-reads cached probabilities


# -- bad input ----------------------------------------------------------------------------------------
BAD = {
    "not_json.json": ("[{\"instruction\": \"x\",", "not valid JSON"),
    "plain.txt": ("instruction,output_1,output_2,preference\n", "neither a JSON list nor JSONL"),
    "missing.jsonl": ('{"instruction": "a", "output_1": "b", "output_2": "c", "preference": 1}\n'
                      '{"instruction": "a", "output_1": "b", "output_2": "c"}\n', "row 1 (line 2): missing preference"),
    "pref.json": ('[{"instruction": "a", "output_1": "b", "output_2": "c", "preference": "two"}]',
                  "row 0: preference 'two' is not a number"),
    "range.json": ('[{"instruction": "a", "output_1": "b", "output_2": "c", "preference": 3}]', "outside 1..2"),
    "brokenline.jsonl": ('{"instruction": "a", "output_1": "b", "output_2": "c", "preference": 1}\n{"instr\n',
                         "row 1 (line 2): not a JSON object"),
    "notext.json": ('[{"instruction": "a", "output_1": null, "output_2": "c", "preference": 1}]',
                    "row 0: output_1 is NoneType, not text"),
    "empty.json": ("[]", "holds no pairs"),
    "object.json": ('{\n  "format": "alignez-eval-judge-agreement/1",\n  "overall": {}\n}\n', "holds one JSON object"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_reference_file_one_clear_error(name, tmp_path, capsys):
    text, needle = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_reference(path)
    rc = cli_main(["judge-agreement", "--judge", "openai:x@http://127.0.0.1:9/v1", "--reference", str(path),
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert str(path) in err and needle in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


# -- the leaderboard line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def judged_and_agreement(tmp_path_factory):
    from alignez_eval.judge import judge_runs, load_run

    tmp = tmp_path_factory.mktemp("agree-report")
    with FakeJudgeServer() as srv:
        spec = fast_spec(srv.url, timeout_s=10.0)
        jdir = judge_runs(load_run(RUNS / "base"), {"alignez": load_run(RUNS / "alignez")}, spec, tmp / "judgments")
        judge_agreement(spec, FIX, tmp / "agree", n_boot=200)
    return jdir, tmp


def test_report_states_the_agreement_in_the_header(judged_and_agreement, capsys):
    jdir, tmp = judged_and_agreement
    agreement = tmp / "agree" / "agreement.json"
    assert is_agreement_file(agreement) and not is_agreement_file(FIX)
    line = agreement_summary_line(agreement)
    assert line.startswith("openai:fake-judge (pairwise") and "9 pairs" in line and "length-only baseline" in line
    assert "length-balanced" in line and "judge ties" in line and "annotations.json" in line
    rc = cli_main(["report", "--judgments", str(jdir), "--name", "agr", "--out-root", str(tmp / "reports"),
                   "--n-boot", "100", "--judge-reference", str(agreement)])
    assert rc == 0
    md = (tmp / "reports" / "agr" / "leaderboard.md").read_text()
    assert f"- **Judge agreement**: {line}\n" in md
    assert md.index("**Judge check**") < md.index("**Judge agreement")
    assert "--judge-reference" in md  # the command, in the provenance
    # an annotations file is not a precomputed agreement: one clear error
    capsys.readouterr()
    rc = cli_main(["report", "--judgments", str(jdir), "--name", "agr2", "--out-root", str(tmp / "reports"),
                   "--judge-reference", str(FIX)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "judge-agreement" in err


def test_agreement_of_another_judge_is_flagged(judged_and_agreement, tmp_path):
    from alignez_eval.report import write_report

    jdir, tmp = judged_and_agreement
    other = json.loads((tmp / "agree" / "agreement.json").read_text())
    other["judge_identity"] = {**other["judge_identity"], "model": "another-judge"}
    other["judge_description"] = "openai:another-judge (pairwise)"
    paths = write_report(jdir, "x", out_root=tmp_path, n_boot=50, extra={"judge_agreement": other})
    md = paths["md"].read_text()
    assert "openai:another-judge" in md and "measured with a different judge" in md
    assert not math.isnan(float(other["overall"]["figures"]["agreement"]["value"]))


# -- compare --judge-reference --------------------------------------------------------------------------
def test_compare_measures_the_agreement_with_its_judge_then_reuses_it(tiny_dir, tmp_path, monkeypatch):
    from alignez_eval.pipeline.compare import CompareConfig, run_compare

    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    ref = tmp_path / "ref.jsonl"
    ref.write_text("\n".join(json.dumps(r) for r in json.loads(FIX.read_text())[:3]) + "\n")

    def cfg(reference: Path) -> CompareConfig:
        # base vs tuned only (no edit method: no fit), two prompts, a tiny hf judge
        return CompareConfig(base=f"pretrained={tiny_dir('llama')}", tuned=f"pretrained={tiny_dir('qwen2', 1)}",
                             tasks=["alignez_embedded"], judge=f"hf:{tiny_dir('llama', 2)},dtype=float32",
                             name="agr", methods=[], limit=2, gen_kwargs={"max_gen_toks": 4}, batch_size=2,
                             work_dir=tmp_path / "runs", report_root=tmp_path / "reports", judge_check=False,
                             command="test", judge_reference=reference)

    res = run_compare(cfg(ref))
    assert "judge-agreement/judge" in res.cache.ran
    step = next((tmp_path / "runs").rglob("agreement.json"))
    measured = json.loads(step.read_text())
    assert measured["counts"]["judged"] == 3 and measured["stats"]["calls"] == 6  # single mode: 2 grades a pair
    md = res.report["md"].read_text()
    assert f"- **Judge agreement**: {agreement_summary_line(measured)}\n" in md
    assert "measured with a different judge" not in md  # the compare's own judge

    again = run_compare(cfg(ref))
    assert "judge-agreement/judge" in again.cache.skipped and not again.cache.ran

    # a precomputed agreement.json is read, not re-measured
    res3 = run_compare(cfg(step))
    assert "judge-agreement/judge" not in res3.cache.ran + res3.cache.skipped
    assert agreement_summary_line(measured) in res3.report["md"].read_text()


def test_compare_refuses_a_bad_reference_before_any_work(tmp_path):
    from alignez_eval.pipeline.compare import CompareConfig

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output_1": "b", "output_2": "c", "preference": "maybe"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl row 0 \(line 1\): preference"):
        CompareConfig(base="pretrained=x", tasks=["alignez_embedded"], judge="hf:x", name="n",
                      judge_reference=bad, work_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
