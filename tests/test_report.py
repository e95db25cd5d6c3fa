"""Leaderboard files from real judgments (loopback judge server), lm-eval's make_table on
results.json, the CLI, and W&B logging in offline mode."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import matplotlib.image
import pytest
from lm_eval.utils import make_table
from test_judge_openai import FakeJudgeServer, fast_spec

from alignez_eval.cli import main as cli_main
from alignez_eval.judge import judge_check, judge_runs, load_run
from alignez_eval.report import write_report

FIX = Path(__file__).parent / "fixtures" / "runs"


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    with FakeJudgeServer() as srv:
        spec = fast_spec(srv.url)
        out = judge_runs(load_run(FIX / "base"), {"alignez": load_run(FIX / "alignez"),
                                                  "tuned": load_run(FIX / "tuned")}, spec, tmp / "judgments")
        check = judge_check(spec, n=3)
    return out, check, tmp


def test_report_files_figures_and_gap(judged):
    jdir, check, tmp = judged
    paths = write_report(jdir, "fx", out_root=tmp / "reports", tuned="tuned", n_boot=300,
                         extra={"judge_check": check, "commands": ["alignez-eval judge ...", "alignez-eval report ..."]})
    assert set(paths) == {"md", "csv", "png", "json"} and all(p.is_file() for p in paths.values())
    assert paths["md"].parent == tmp / "reports" / "fx"
    assert matplotlib.image.imread(paths["png"]).shape[0] > 100

    rows = list(csv.DictReader(paths["csv"].open()))
    by = {(r["candidate"], r["dataset"]): r for r in rows}
    # Fake judge prefers more "good" words. alignez vs base: q0 W, q1 W, q2 identical (T), q3 L, q4 W, q5 W
    al = by[("alignez", "alignez_fx")]
    assert (al["n"], al["wins"], al["ties"], al["losses"], al["errors"]) == ("6", "4", "1", "1", "0")
    assert float(al["net"]) == pytest.approx(100 * (4 - 1) / 6)
    assert float(al["swap_inconsistency"]) == 0.0 and al["mode"] == "pairwise"
    tu = by[("tuned", "alignez_fx")]
    assert (tu["n"], tu["wins"]) == ("5", "5")
    # gap on the docs judged for both (q0 q1 q2 q3 q5): alignez [1, 1, 0, -1, 1] -> net 40; tuned net 100
    assert float(al["gap_closed"]) == pytest.approx(40.0) and al["gap_status"] == "defined"
    assert float(al["gap_closed_lo"]) <= 40.0 <= float(al["gap_closed_hi"])
    assert float(by[("alignez", "average")]["gap_closed"]) == pytest.approx(40.0)

    md = paths["md"].read_text()
    assert "Judge mode behind every figure below" in md and "pairwise" in md
    assert check["summary"] in md
    assert "only in the baseline" in md  # tuned lacks q4: reported, not dropped silently
    assert "alignez-eval report ..." in md

    res = json.loads(paths["json"].read_text())
    assert res["results"]["alignez:alignez_fx"]["net,pairwise"] == pytest.approx(50.0)
    assert res["results"]["alignez:alignez_fx"]["gap_closed,pairwise"] == pytest.approx(40.0)
    table = make_table(res)
    assert "alignez:alignez_fx" in table and "gap_closed" in table and "pairwise" in table
    assert "50.0000" in table


def test_undefined_gap_is_stated_not_divided(judged):
    jdir, _check, tmp = judged
    paths = write_report(jdir, "fx-undef", out_root=tmp / "reports", tuned="tuned", n_boot=200, min_tuned_net=101)
    md = paths["md"].read_text()
    assert "undefined" in md and "below the minimum 101" in md
    res = json.loads(paths["json"].read_text())
    assert res["results"]["alignez:alignez_fx"]["gap_closed,pairwise"] == "undefined"
    assert "undefined" in make_table(res)
    rows = {(r["candidate"], r["dataset"]): r for r in csv.DictReader(paths["csv"].open())}
    assert rows[("alignez", "alignez_fx")]["gap_closed"] == ""


def test_report_cli(judged, capsys):
    jdir, check, tmp = judged
    check_file = tmp / "check.json"
    check_file.write_text(json.dumps(check))
    rc = cli_main(["report", "--judgments", str(jdir), "--name", "cli", "--out-root", str(tmp / "r"),
                   "--tuned", "tuned", "--judge-check", str(check_file), "--n-boot", "200"])
    assert rc == 0
    assert (tmp / "r" / "cli" / "leaderboard.md").is_file()
    assert check["summary"] in (tmp / "r" / "cli" / "leaderboard.md").read_text()
    assert cli_main(["report", "--judgments", str(jdir), "--tuned", "nobody", "--out-root", str(tmp / "r")]) == 1
    assert "--tuned 'nobody' is not a candidate" in capsys.readouterr().err


def _wandb_history(path: Path) -> dict[str, object]:
    """History items of an offline run file. wandb >= 0.2x writes it from its Go core and ships no
    Python reader: it is a LevelDB-style log (32 KiB blocks, 7-byte record headers) after a
    7-byte ':W&B' file header, each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            buf += chunk
        elif kind == 4:
            records.append(buf + chunk)
            buf = b""
    history: dict[str, object] = {}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            for item in rec.history.item:
                history[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return history


def test_wandb_offline_logs_table_and_figures(judged, tmp_path, monkeypatch):
    jdir, _check, _tmp = judged
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_report(jdir, "fx-wandb", out_root=tmp_path / "reports", tuned="tuned", n_boot=100, wandb=True)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = _wandb_history(next(runs[0].glob("*.wandb")))
    assert history["alignez:alignez_fx/net,pairwise"] == pytest.approx(50.0)
    assert history["alignez:alignez_fx/gap_closed,pairwise"] == pytest.approx(40.0)
    assert history["alignez/leaderboard/_type"] == "table-file"
    assert history["alignez/leaderboard_png/_type"] == "image-file"
    assert history["evaluation/eval_results/_type"] == "table-file"  # lm-eval's WandbLogger table
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))
