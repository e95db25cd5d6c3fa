"""sweep on tiny random models in offline wandb mode: one run per point with its metrics, a summary
run, the base model loaded once, the best point reported on prompts the sweep never saw."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignez_eval import cli
from alignez_eval.pipeline.sweep import SweepPipeline, point_metrics, rank_points
from alignez_eval.pipeline.sweep_config import load_sweep


def wandb_records(path: Path):
    """Records of an offline `.wandb` file (LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 0 and n == 0:
            continue
        buf += chunk
        if kind in (1, 4):  # full record, or last fragment
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def run_info(run_dir: Path) -> dict:
    info: dict = {"config": {}, "summary": {}}
    for rec in wandb_records(next(run_dir.glob("*.wandb"))):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info.update(name=rec.run.display_name, group=rec.run.run_group, job_type=rec.run.job_type)
            info["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update if i.key != "_wandb"})
        elif kind == "summary":
            info["summary"].update({i.key: json.loads(i.value_json) for i in rec.summary.update if i.key})
    return info


def test_sweep_2x2_offline(tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny_sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny_sweep", "base": f"pretrained={tiny_dir('llama')}", "tuned": f"pretrained={tiny_dir('qwen2', 1)}",
        "tasks": ["alignez_embedded"], "judge": f"hf:{tiny_dir('llama', 2)},dtype=float32", "limit": 8,
        "heldout": 0.5, "seed": 0, "metric": "net_win", "batch_size": 4, "gen_kwargs": {"max_gen_toks": 6},
        "fixed": {"method": "alignez", "layers": "auto", "min_pairs": 1},
        "fit": {"answer_tokens": 6, "char_tokens": 6, "gen_batch_size": 4},
        "parameters": {"alpha": [0.5, 2.0], "n_layers": [1, 2]},
    }))
    cfg = load_sweep(config)
    pipe = SweepPipeline(cfg, work_dir=tmp_path / "runs" / "sweep", report_root=tmp_path / "reports")
    sweep_ids = set(pipe.splits["sweep"]["alignez_embedded"])
    held_ids = set(pipe.splits["heldout"]["alignez_embedded"])
    assert len(sweep_ids) == 4 and len(held_ids) == 4 and not sweep_ids & held_ids
    res = pipe.run()

    assert len(res.points) == 4
    assert res.stats["loads:base"] == 1 and res.stats["loads:tuned"] == 1  # one load for every point
    assert res.stats["fits"] == 1  # alpha and n_layers are inference-time: one artifact serves all points
    runs = sorted((tmp_path / "runs" / "sweep" / "wandb").glob("offline-run-*"))
    infos = [run_info(r) for r in runs]
    points = [i for i in infos if i["job_type"] == "sweep-point"]
    summary = [i for i in infos if i["job_type"] == "sweep-summary"]
    assert len(points) == 4 and len(summary) == 1 and all(i["group"] == "tiny_sweep" for i in infos)
    assert {(i["config"]["alpha"], i["config"]["n_layers"]) for i in points} == {(0.5, 1), (0.5, 2), (2.0, 1), (2.0, 2)}
    by_name = {r.name: r for r in res.points}
    for i in points:
        r = by_name[i["name"]]
        for key in ("net_win", "net_win_lo", "net_win_hi", "win_rate", "len_candidate", "n"):
            assert i["summary"][f"sweep/{key}"] == pytest.approx(r.metrics[key]), key
        assert r.metrics["n"] == 4  # judged on the sweep split only
    # the best point was chosen on the sweep split and reported on the held-out split
    assert res.best is rank_points(res.points, "net_win")[0]
    assert summary[0]["summary"]["heldout/n"] == 4 and summary[0]["config"]["best"] == res.best.point
    report = tmp_path / "reports" / "tiny_sweep"
    assert {p.name for p in report.iterdir()} >= {"leaderboard.md", "leaderboard.csv", "leaderboard.png", "results.json"}
    held = point_metrics({"csv": report / "leaderboard.csv"}, res.best.name)
    assert held["n"] == 4 and held == {k: v for k, v in res.heldout.items()}
    judged_docs = {json.loads(line)["doc_id"] for p in (tmp_path / "runs" / "sweep" / "judge").glob(
        "tiny_sweep_heldout*/*.jsonl") for line in p.read_text().splitlines()}
    assert judged_docs == held_ids
    summ = json.loads((tmp_path / "runs" / "sweep" / "sweep_summary.json").read_text())
    assert [r["point"] for r in summ["ranking"]] == [r.name for r in rank_points(res.points, "net_win")]

    # the same sweep again: every step cached, still one summary, four more point runs logged
    res2 = SweepPipeline(load_sweep(config), work_dir=tmp_path / "runs" / "sweep",
                         report_root=tmp_path / "reports").run()
    assert [s for s in res2.ran if not s.startswith("report/")] == [] and res2.stats["model_loads"] == 0

    # what `wandb agent` runs for one point: the program reads the point from wandb.config (the agent
    # passes it as WANDB_SWEEP_PARAM_PATH); every step it needs is cached by now
    from wandb.sdk.lib import config_util

    params = tmp_path / "agent_point.yaml"
    config_util.save_config_file_from_dict(str(params), {"alpha": {"value": 2.0}, "n_layers": {"value": 2}})
    env = {**os.environ, "WANDB_SWEEP_PARAM_PATH": str(params), "WANDB_MODE": "offline",
           "ALIGNEZ_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    before = set((tmp_path / "runs" / "sweep" / "wandb").glob("offline-run-*"))
    proc = subprocess.run([sys.executable, "-m", "alignez_eval", "sweep-agent", "--config", str(config),
                           "--work-dir", str(tmp_path / "runs" / "sweep")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    new = sorted(set((tmp_path / "runs" / "sweep" / "wandb").glob("offline-run-*")) - before)
    assert len(new) == 1
    agent = run_info(new[0])
    assert agent["config"]["alpha"] == 2.0 and agent["config"]["n_layers"] == 2 and agent["name"] == "alpha=2,n_layers=2"
    assert agent["summary"]["sweep/net_win"] == pytest.approx(by_name["alpha=2,n_layers=2"].metrics["net_win"])


def test_emit_native_wandb_sweep(tmp_path: Path, capsys) -> None:
    out = tmp_path / "native.yaml"
    src = Path(__file__).resolve().parent.parent / "sweeps" / "demo_alpha_layers.yaml"
    assert cli.main(["sweep", "--config", str(src), "--emit-wandb-sweep", str(out)]) == 0
    native = yaml.safe_load(out.read_text())
    assert native["program"] == "alignez-eval"
    assert native["command"] == ["${env}", "${program}", "sweep-agent", "--config", str(src.resolve())]
    assert native["parameters"]["alpha"] == {"values": [0.5, 1.0, 2.0]}
    assert native["parameters"]["method"] == {"value": "alignez"}
    assert "9 points" in capsys.readouterr().out
