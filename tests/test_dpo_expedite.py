"""dpo-expedite end to end on tiny random models: split, 2 DPO adapters (1 step each), compare with
the DPO systems and DPO+AlignEZ on the held-out prompts, preference accuracy for every system."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("trl")

from alignez_eval.dpo.data import prompt_key, read_pairs  # noqa: E402
from alignez_eval.dpo.expedite import ExpediteConfig, run_expedite  # noqa: E402
from alignez_eval.dpo.train import DPOSettings  # noqa: E402
from alignez_eval.errors import ConfigError  # noqa: E402

FIT = {"answer_tokens": 6, "char_tokens": 6, "min_pairs": 1, "gen_batch_size": 4}


@pytest.mark.slow
def test_expedite_end_to_end(tiny_dir, tmp_path):
    rows = [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: good answer {i}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: bad {i}"} for i in range(14)]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = ExpediteConfig(
        model=str(tiny_dir("llama")), pref_data=pool, judge=f"hf:{tiny_dir('llama', 2)},dtype=float32",
        tuned=f"pretrained={tiny_dir('qwen2', 1)}", pool=8, shares=["25%", "100%"], eval_pairs=3, eval_prompts=3,
        dpo=DPOSettings(lora_r=2, batch_size=2, max_steps=1, max_length=160), max_gen_toks=6, batch_size=4,
        fit=dict(FIT), work_dir=tmp_path / "runs", report_root=tmp_path / "reports", judge_check=False)
    import dataclasses

    first = run_expedite(dataclasses.replace(cfg, judge_enabled=False))  # fits, generations, margins only
    assert "report" not in first and set(first["accuracy"]) == {"base", "alignez", "dpo-25pct",
                                                                 "dpo-25pct+alignez", "dpo-100pct", "tuned"}
    assert "Not judged" in first["summary"]["md"].read_text(encoding="utf-8")
    out = run_expedite(cfg)
    assert out["accuracy"] == first["accuracy"]
    table = list(csv.DictReader(out["summary"]["csv"].open(encoding="utf-8")))
    systems = [r["system"] for r in table]
    assert systems == ["base", "alignez", "dpo-25pct", "dpo-25pct+alignez", "dpo-100pct", "tuned"]
    for r in table[1:]:
        assert r["n_judged"] == "3" and r["net"] != "" and r["n_pairs"] == "3"
        assert 0.0 <= float(r["pref_acc"]) <= 1.0
    acc = out["accuracy"]
    assert acc["base"]["accuracy"] == 0.0  # the base never beats itself
    # the DPO adapters and the edit each change the margins
    assert acc["dpo-100pct"]["mean_margin_gain"] != 0.0 and acc["alignez"]["mean_margin_gain"] != 0.0
    assert acc["dpo-25pct+alignez"]["mean_margin"] != acc["dpo-25pct"]["mean_margin"]
    # the adapters were trained on 2 and 8 training pairs, none from a held-out prompt
    man = {k: json.loads((tmp_path / "runs" / "adapters" / k / "dpo_manifest.json").read_text())
           for k in ("dpo-25pct", "dpo-100pct")}
    assert man["dpo-25pct"]["n_pairs"] == 2 and man["dpo-100pct"]["n_pairs"] == 8
    assert man["dpo-25pct"]["pair_ids"] == man["dpo-100pct"]["pair_ids"][:2]
    held = {ln for ln in (tmp_path / "runs" / "tasks" / "dpo_heldout.jsonl").read_text().splitlines()}
    held_q = {prompt_key(p) for p in read_pairs(pool) if any(p.id in h for h in held)}
    trained = {prompt_key(p) for p in read_pairs(pool) if p.id in man["dpo-100pct"]["pair_ids"]}
    assert held_q and trained.isdisjoint(held_q)
    md = out["summary"]["md"].read_text(encoding="utf-8")
    assert "dpo-25pct+alignez" in md and out["summary"]["png"].stat().st_size > 0
    # a rerun trains, generates, judges and scores nothing
    again = run_expedite(cfg)
    assert again["accuracy"] == out["accuracy"]


def test_shares_must_grow():
    with pytest.raises(ConfigError, match="small to large"):
        ExpediteConfig(model="m", pref_data="p", judge="j", pool=100, shares=["25%", "5%"])
    with pytest.raises(ConfigError, match="not among"):
        ExpediteConfig(model="m", pref_data="p", judge="j", pool=100, shares=["5%"], edit_shares=["25%"])
