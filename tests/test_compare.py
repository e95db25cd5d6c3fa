"""compare end to end on tiny random models (base, tuned, judge), offline, and its step cache.

The second run must make no generation and no judge call: counted by wrapping the real
`GenerationMixin.generate` (every lm-eval generation and self-generation goes through it) and by
the judge's own call counter and SQLite cache size.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from transformers.generation.utils import GenerationMixin

from alignez_eval import cli
from alignez_eval.dtypes import fast_dtype
from alignez_eval.errors import ConfigError
from alignez_eval.pipeline.compare import CompareConfig, run_compare, select_positions

FIT = {"answer_tokens": 6, "char_tokens": 6, "min_pairs": 1, "gen_batch_size": 4}


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = GenerationMixin.generate

    def counting(self, *args, **kwargs):  # the real generate, counted
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", counting)
    return calls


def _cfg(tiny_dir, tmp_path: Path, methods: list[str], **kw) -> CompareConfig:
    return CompareConfig(
        base=f"pretrained={tiny_dir('llama')}", tuned=f"pretrained={tiny_dir('qwen2', 1)}",
        tasks=["alignez_embedded"], judge=f"hf:{tiny_dir('llama', 2)}", name="tiny",  # judge dtype auto
        methods=methods, limit=4, gen_kwargs={"max_gen_toks": 6}, batch_size=4, fit=dict(FIT),
        work_dir=tmp_path / "runs" / "tiny", report_root=tmp_path / "reports", judge_check_n=2,
        command="test", **kw)


def _cache_rows(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                   for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"))


def test_compare_end_to_end_then_fully_cached(tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              generate_calls: list[int], capsys) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    res = run_compare(_cfg(tiny_dir, tmp_path, ["alignez", "caa"]))
    out = tmp_path / "reports" / "tiny"
    assert set(res.report) == {"md", "csv", "png", "json", "html"}
    for kind in ("md", "csv", "png", "json", "html"):
        assert res.report[kind].parent == out and res.report[kind].stat().st_size > 0
    md = (out / "leaderboard.md").read_text()
    for needle in ("gap closed", "alignez", "caa", "tuned", "Judge check", "alignez-eval=", "`test`"):
        assert needle in md, needle
    results = json.loads((out / "results.json").read_text())
    assert {"alignez:alignez_embedded", "caa:alignez_embedded", "tuned:alignez_embedded"} <= set(results["results"])
    # 4 generation steps (base, tuned, base+alignez, base+caa), 2 fits sharing one self-generation pass
    assert res.stats["generations"] == 4 and res.stats["fits"] == 2
    assert res.stats["loads:base"] == 1 and res.stats["loads:tuned"] == 1 and res.stats["judge_loads"] == 1
    assert res.stats["judge_calls"] > 0 and generate_calls
    # each run dir is an lm-eval output dir: results JSON carrying the edit config + samples
    gen_alignez = res.gens[("alignez", "alignez_embedded")].path
    rjson = json.loads(next(gen_alignez.rglob("results_*.json")).read_text())
    assert rjson["config"]["alignez_edit"]["method"] == "v2"
    steps = json.loads((res.cache.root / "manifest.json").read_text())["steps"].values()
    fit_meta = next(v["meta"] for v in steps if v["name"] == "base-alignez/alignez_embedded")
    assert rjson["config"]["alignez_edit_sha256"] == fit_meta["edit_sha256"]
    samples = next(gen_alignez.rglob("samples_alignez_embedded_base_*.jsonl")).read_text().splitlines()
    assert len(samples) == 4
    rows_before = _cache_rows(tmp_path / "runs" / "tiny" / "judge_cache.sqlite")
    report_bytes = {k: p.read_bytes() for k, p in res.report.items()}

    # second run through the CLI: nothing is generated, fitted, loaded or judged
    n_gen = len(generate_calls)
    argv = ["compare", "--base", f"pretrained={tiny_dir('llama')}", "--tuned", f"pretrained={tiny_dir('qwen2', 1)}",
            "--tasks", "alignez_embedded", "--judge", f"hf:{tiny_dir('llama', 2)},dtype={fast_dtype('cpu')}", "--name", "tiny",
            "--methods", "alignez,caa", "--limit", "4", "--gen-kwargs", "max_gen_toks=6", "--batch-size", "4",
            "--work-dir", str(tmp_path / "runs" / "tiny"), "--report-root", str(tmp_path / "reports"),
            "--fit-arg", ",".join(f"{k}={v}" for k, v in FIT.items()), "--judge-check-n", "2"]
    assert cli.main(argv) == 0
    assert len(generate_calls) == n_gen
    last = json.loads((tmp_path / "runs" / "tiny" / "last_run.json").read_text())
    assert [s for s in last["ran"] if not s.startswith("report/")] == []
    assert last["stats"].get("model_loads") == 0 and "judge_calls" not in last["stats"]
    assert _cache_rows(tmp_path / "runs" / "tiny" / "judge_cache.sqlite") == rows_before
    printed = capsys.readouterr().out
    assert "Leaderboard: tiny" in printed and str(out) in printed
    assert (out / "leaderboard.csv").read_bytes() == report_bytes["csv"]
    log = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["log"]
    assert any(e["event"] == "skipped" and e["kind"] == "gen" for e in log)

    # adding one candidate runs only its fit + generation, and judges only its new answers
    res3 = run_compare(_cfg(tiny_dir, tmp_path, ["alignez", "caa", "iti"]))
    gen_fit = [s for s in res3.cache.ran if s.split("/")[0] in ("gen", "fit")]
    assert gen_fit == ["fit/base-iti/alignez_embedded", "gen/iti/alignez_embedded_base"]
    assert "gen/base/alignez_embedded_base" in res3.cache.skipped
    assert res3.stats["loads:base"] == 1 and "loads:tuned" not in res3.stats
    # single mode grades each distinct answer once: at most the 4 new answers (fewer when a tiny
    # model's answer repeats one already graded)
    assert "judge/tiny" in res3.cache.ran and res3.stats["judge_calls"] <= 4
    assert "iti" in (out / "leaderboard.md").read_text()


def test_select_positions_and_bad_config(tiny_dir, tmp_path: Path) -> None:
    assert select_positions(100, 4, "spread") == [0, 25, 50, 75]
    assert select_positions(100, 4, "first") == [0, 1, 2, 3]
    assert select_positions(3, 10, "spread") == [0, 1, 2]
    with pytest.raises(ConfigError, match="unknown method"):
        _cfg(tiny_dir, tmp_path, ["alignez", "dpo"])
    with pytest.raises(ConfigError, match="unknown task"):
        run_compare(CompareConfig(base=f"pretrained={tiny_dir('llama')}", tasks=["alignez_embeded"], judge="hf:x",
                                  name="x", work_dir=tmp_path / "w"))
    # a bad judge spec fails when the config is built: before any model loads or generates
    for bad in ("hf", "hf:x,mode=bogus", "nobackend:x"):
        with pytest.raises(ConfigError):
            CompareConfig(base="pretrained=x", tasks=["alignez_embedded"], judge=bad, name="x",
                          work_dir=tmp_path / "bad-judge")
    assert not (tmp_path / "bad-judge").exists()


def test_a_truncated_cached_output_of_each_kind_is_recomputed(tiny_dir, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """An artifact, a samples file, judgments and a report cut short on disk: the next run does not
    call them "unchanged", it recomputes exactly those steps (and says so), and ends as the first did."""
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    first = run_compare(_cfg(tiny_dir, tmp_path, ["alignez"]))
    board = (tmp_path / "reports" / "tiny" / "leaderboard.csv").read_bytes()
    steps = json.loads((first.cache.root / "manifest.json").read_text())["steps"].values()
    by_kind = {}
    for s in steps:
        by_kind.setdefault(s["kind"], s)
    victims = {
        "fit": "edit.safetensors",
        "gen": "samples_",
        "judge": ".jsonl",
        "report": ".json",
    }
    cut = {}
    for kind, marker in victims.items():
        d = first.cache.root / by_kind[kind]["path"]
        f = next(p for p in sorted(d.rglob("*")) if p.is_file() and marker in p.name and p.name != "step.json")
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        cut[kind] = f"{kind}/{by_kind[kind]['name']}"
    with caplog.at_level("WARNING", logger="alignez_eval.pipeline.steps"):
        again = run_compare(_cfg(tiny_dir, tmp_path, ["alignez"]))
    for kind, step in cut.items():
        assert step in again.cache.ran, (kind, again.cache.ran)
    assert "does not match its recorded sha256" in caplog.text and "recomputing" in caplog.text
    assert (tmp_path / "reports" / "tiny" / "leaderboard.csv").read_bytes() == board
    # the recomputed artifact is the same edit (same sha256), so the steps keyed on it still match
    log = json.loads((first.cache.root / "manifest.json").read_text())["log"]
    assert {f"{e['kind']}/{e['name']}" for e in log if e["event"] == "recomputed"} >= set(cut.values())
