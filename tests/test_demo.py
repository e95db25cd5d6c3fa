"""`alignez-eval demo`: its sizing contract, and (integration) a miniature run on the real offline models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from alignez_eval import cli
from alignez_eval.commands import demo


def test_demo_defaults_fit_the_cpu_budget() -> None:
    p = argparse.ArgumentParser()
    demo.configure(p)
    args = p.parse_args([])
    # findings: >= 48 prompts for a usable CI on a net win; batch >= 16; dtype decided per machine (bf16 only where fast)
    assert demo.DEFAULT_LIMIT >= 48 and args.limit is None and not args.full
    assert args.batch_size >= 16 and demo.DEFAULT_FIT["gen_batch_size"] >= 16 and args.dtype == "auto"
    assert args.methods == "alignez,caa"


@pytest.mark.integration
def test_demo_miniature_on_real_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["demo", "--limit", "4", "--max-gen-toks", "12", "--judge-check-n", "1",
                   "--fit-arg", "answer_tokens=12,char_tokens=8,min_pairs=1", "--work-dir", str(tmp_path / "runs"),
                   "--report-root", str(tmp_path / "reports")])
    assert rc == 0
    out = capsys.readouterr().out
    report = tmp_path / "reports" / "demo"
    assert "Leaderboard: demo" in out and f"report: {report}" in out
    for f in ("leaderboard.md", "leaderboard.csv", "leaderboard.png", "results.json"):
        assert (report / f).stat().st_size > 0
    md = (report / "leaderboard.md").read_text()
    assert "alignez" in md and "caa" in md and "tuned" in md and "Judge check" in md
    timing = json.loads((tmp_path / "runs" / "demo_timing.json").read_text())
    assert timing["steps_run"] >= 8 and timing["compare_s"] > 0


@pytest.mark.parametrize("argv, match", [(["--judge-batch-size", "0"], "judge batch size must be a positive number"),
                                         (["--judge", "scorer:no-such-head"], "scorer head 'no-such-head'")])
def test_a_bad_judge_fails_before_any_model_is_prepared(argv: list[str], match: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a model preparation would fail fast, not download
    assert cli.main(["demo", *argv, "--work-dir", str(tmp_path / "runs")]) != 0
    assert match in capsys.readouterr().err
    assert not (tmp_path / "home" / "models").exists()
