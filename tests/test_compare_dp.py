"""compare under `accelerate launch` with two CPU (gloo) processes: rank 0 fits once while rank 1
waits, both generate their share, rank 0 judges and reports; the answers equal a single-process
run at batch size 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alignez_eval.pipeline.compare import CompareConfig, run_compare

pytestmark = pytest.mark.slow

FIT_ARGS = "answer_tokens=6,char_tokens=6,min_pairs=1,gen_batch_size=4"


def answers(work: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for f in work.glob("gen/*/*/samples_*.jsonl"):
        system = f.parent.parent.name.split("_alignez_")[0]
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            assert rec["doc"]["id"] not in out.setdefault(system, {})  # each doc once
            out[system][rec["doc"]["id"]] = rec["resps"][0][0]
    return out


def test_two_gloo_processes_match_single_process(tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists() and shutil.which("accelerate") is None:
        pytest.skip("accelerate's launcher is not installed")
    base, tuned, judge = tiny_dir("llama"), tiny_dir("qwen2", 1), tiny_dir("llama", 2)
    common = ["--base", f"pretrained={base}", "--tuned", f"pretrained={tuned}", "--tasks", "alignez_embedded",
              "--judge", f"hf:{judge},dtype=float32", "--methods", "alignez", "--limit", "5",
              "--gen-kwargs", "max_gen_toks=6", "--batch-size", "1", "--fit-arg", FIT_ARGS, "--no-judge-check",
              "--report-root", str(tmp_path / "reports")]
    env = {**os.environ, "ALIGNEZ_HOME": str(tmp_path / "home_dp"), "ACCELERATE_USE_CPU": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "alignez_eval", "compare", *common,
         "--name", "dp", "--work-dir", str(tmp_path / "dp")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "data parallel: rank 1 of 2" in log and "data parallel: rank 0 of 2" in log
    assert "rank 1: waiting for rank 0 to finish step fit/base-alignez/alignez_embedded" in log
    events = json.loads((tmp_path / "dp" / "manifest.json").read_text())["log"]
    assert [e["name"] for e in events if e["kind"] == "fit" and e["event"] == "ran"] == ["base-alignez/alignez_embedded"]
    assert (tmp_path / "reports" / "dp" / "leaderboard.md").exists()
    assert log.count("Leaderboard: dp") == 1  # rank 0 alone prints the report

    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home_single"))
    run_compare(CompareConfig(
        base=f"pretrained={base}", tuned=f"pretrained={tuned}", tasks=["alignez_embedded"],
        judge=f"hf:{judge},dtype=float32", name="single", methods=["alignez"], limit=5,
        gen_kwargs={"max_gen_toks": 6}, batch_size=1, fit=dict(kv.split("=") for kv in FIT_ARGS.split(",")),
        judge_check=False, work_dir=tmp_path / "single", report_root=tmp_path / "reports"))
    dp, single = answers(tmp_path / "dp"), answers(tmp_path / "single")
    assert set(dp) == {"base", "tuned", "alignez"} and all(len(v) == 5 for v in dp.values())
    assert dp == single
