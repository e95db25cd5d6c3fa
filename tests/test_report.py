"""Leaderboard files from real judgments (loopback judge server), lm-eval's make_table on
results.json, the CLI, and W&B logging in offline mode."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import time
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
                         extra={"judge_check": check, "commands": ["alignez-eval judge ...", "alignez-eval report ..."],
                                "judge_agreement": {"summary": "agrees with the reference on 71% of 120 pairs"}})
    assert set(paths) == {"md", "csv", "png", "json", "html"} and all(p.is_file() for p in paths.values())
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
    assert "- **Judge agreement**: agrees with the reference on 71% of 120 pairs\n" in md
    # our length adjustment is named as ours everywhere, never as AlpacaEval 2's "LC win rate"
    assert "length-adjusted win rate (ours) [CI]" in md and "| LC win rate" not in md
    assert "length_adjusted_win_rate" in rows[0] and not any("lc_" in c for c in rows[0])
    assert 0 <= float(al["length_adjusted_win_rate"]) <= 100

    res = json.loads(paths["json"].read_text())
    assert res["results"]["alignez:alignez_fx"]["net,pairwise"] == pytest.approx(50.0)
    assert res["results"]["alignez:alignez_fx"]["gap_closed,pairwise"] == pytest.approx(40.0)
    assert res["results"]["alignez:alignez_fx"]["length_adjusted_win_rate,pairwise"] == pytest.approx(
        float(al["length_adjusted_win_rate"]))
    assert "lc_win_rate" not in paths["json"].read_text()
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


def _wandb_records(path: Path) -> list[object]:
    """Records of an offline run file. wandb >= 0.2x writes it from its Go core and ships no
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
    parsed = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        parsed.append(rec)
    return parsed


def _wandb_history(path: Path, wait_s: float = 60.0) -> dict[str, object]:
    """History items of an offline run, once the run's exit record is on disk: wandb-core writes
    the file from its own process, and on a loaded CI machine `finish()` has returned before the
    last records landed (CI saw a history without the report's metrics)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = _wandb_records(path)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "exit" in kinds, f"no exit record in {path} after {wait_s} s; record kinds: {sorted(set(kinds))}"
    history: dict[str, object] = {}
    for rec in records:
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
    assert "alignez:alignez_fx/net,pairwise" in history, sorted(history)
    assert history["alignez:alignez_fx/net,pairwise"] == pytest.approx(50.0)
    assert history["alignez:alignez_fx/gap_closed,pairwise"] == pytest.approx(40.0)
    assert "alignez:alignez_fx/length_adjusted_win_rate,pairwise" in history
    assert not any("lc_win_rate" in k for k in history)
    assert history["alignez/leaderboard/_type"] == "table-file"
    assert history["alignez/leaderboard_png/_type"] == "image-file"
    assert history["evaluation/eval_results/_type"] == "table-file"  # lm-eval's WandbLogger table
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))


def _legend_colours(ax) -> dict[str, tuple]:
    handles, labels = ax.get_legend_handles_labels()
    return {label: tuple(h.patches[0].get_facecolor()) for h, label in zip(handles, labels, strict=True)}


def test_png_keeps_one_colour_per_candidate_across_panels(tmp_path):
    # The tuned candidate first: it has a net-win bar but no gap bar, which shifted every other
    # candidate's colour by one between the two panels.
    from alignez_eval.report import build_report
    from alignez_eval.report.plots import leaderboard_figure

    with FakeJudgeServer() as srv:
        jdir = judge_runs(load_run(FIX / "base"), {"tuned": load_run(FIX / "tuned"),
                                                   "alignez": load_run(FIX / "alignez")},
                          fast_spec(srv.url), tmp_path / "judgments")
    fig = leaderboard_figure(build_report([jdir], tuned="tuned", n_boot=50), "fx")
    ax_gap, ax_net = fig.axes[:2]
    gap, net = _legend_colours(ax_gap), _legend_colours(ax_net)
    assert set(gap) == {"alignez"} and set(net) == {"tuned", "alignez"}
    assert gap["alignez"] == net["alignez"]
    assert net["tuned"] != net["alignez"]


def test_report_names_embedded_models_not_their_home_paths(tmp_path, monkeypatch):
    """A committed report must not carry the model cache's absolute path (it names the user's home)."""
    from lm_eval.utils import sanitize_model_name

    from alignez_eval.models import models_dir
    from alignez_eval.report import build_report
    from alignez_eval.report.plots import leaderboard_figure

    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    gemma, qwen = models_dir() / "gemma-3-270m", models_dir() / "qwen2.5-coder-1.5b-instruct"
    # lm-eval names a run's directory after `pretrained=`, so the baseline's name is a home path
    shutil.copytree(FIX / "base" / "base-model", Path("runs/base") / sanitize_model_name(str(gemma)))
    shutil.copytree(FIX / "alignez", "runs/alignez")
    shutil.copytree(FIX / "tuned", "runs/tuned")
    with FakeJudgeServer() as srv:
        judge_runs(load_run("runs/base"), {"alignez": load_run("runs/alignez"), "tuned": load_run("runs/tuned")},
                   fast_spec(srv.url), "judgments")
    other_machine = "/home/someone/.cache/alignez-eval/models/smollm2-135m-instruct"
    extra = {"judge_check": {"summary": f"hf:{qwen} (single, 1-9 grades): accuracy 94% over 16 pairs"},
             "settings": {"models": {"base": {"args": f"pretrained={gemma},dtype=bfloat16"},
                                     "tuned": {"args": f"pretrained={other_machine},dtype=bfloat16"}},
                          "judge": f"hf:{qwen},batch_size=8"}}
    paths = write_report("judgments", "share", out_root="reports", tuned="tuned", extra=extra, n_boot=50)
    texts = {k: paths[k].read_text() for k in ("md", "csv", "json")}
    for kind, text in texts.items():
        for leak in (str(tmp_path), "alignez-eval/models", "__models__", "/home/someone"):
            assert leak not in text, (kind, leak)
    md = texts["md"]
    assert "## Model: gemma-3-270m (baseline run `runs/base/gemma-3-270m`)" in md
    assert "hf:qwen2.5-coder-1.5b-instruct (single" in md and "judge=hf:qwen2.5-coder-1.5b-instruct,batch_size=8" in md
    assert "pretrained=gemma-3-270m,dtype=bfloat16" in md and "pretrained=smollm2-135m-instruct,dtype" in md
    assert "judgments/manifest.json" in md  # other paths as given: relative stays relative
    assert {r["model"] for r in csv.DictReader(paths["csv"].open())} == {"gemma-3-270m"}
    fig = leaderboard_figure(build_report(["judgments"], tuned="tuned", n_boot=20), "share")
    titles = [ax.get_title() for ax in fig.axes]
    assert all(t.startswith("gemma-3-270m: ") for t in titles), titles
