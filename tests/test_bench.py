"""Smoke tests of the benchmark scripts: each runs for real in --quick mode on a tiny random model
(a real subprocess, a real loopback HTTP server for the judge) and writes its report. Timings are
not asserted — only the reports' structure, that ratios/rates are finite and positive, and the
facts that do not depend on speed (hooks live, activations batched, cache hits, concurrency bound).
"""

from __future__ import annotations

import csv
import json
import math
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import _common as C  # noqa: E402


def _run(script: str, *args: str, timeout: int = 300) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _pos(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_machine(rep: dict, script: str) -> None:
    m = rep["machine"]
    assert m["cpu_count"] >= 1 and m["torch_threads"] >= 1 and m["torch"] == torch.__version__
    assert script in rep["command"] and rep["stem"]


# ---------------------------------------------------------------------------------------------
# helpers, against independent computations
# ---------------------------------------------------------------------------------------------
def test_summary_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12):
        xs = rng.lognormal(size=n).tolist()
        s = C.summary(xs)
        assert s["median"] == pytest.approx(float(np.median(xs)))
        assert s["q25"] == pytest.approx(float(np.percentile(xs, 25)))
        assert s["q75"] == pytest.approx(float(np.percentile(xs, 75)))
        assert (s["min"], s["max"], s["n"]) == (min(xs), max(xs), n)
    assert math.isnan(C.summary([])["median"])


def test_peak_memory_sees_a_large_allocation() -> None:
    mem = C.PeakMemory("cpu")
    if not mem.available:
        pytest.skip("no /proc/self/clear_refs here")
    with mem.measure() as sample:
        # Fresh pages straight from the kernel: a 64 MiB tensor can instead be served from heap
        # memory an earlier test in this process freed but glibc kept resident (CI: RSS unchanged).
        buf = mmap.mmap(-1, 64 * 2**20)
        for offset in range(0, len(buf), mmap.PAGESIZE):
            buf[offset] = 1  # touched, so resident
        buf.close()  # unmapped before the peak is read: what is measured is the peak, not the RSS
    s = sample[0]
    assert s.peak_bytes - s.base_bytes >= 48 * 2**20
    with mem.measure() as small:
        pass
    assert small[0].peak_bytes - small[0].base_bytes < 48 * 2**20  # the peak was reset in between


def test_grids_and_target_verdicts() -> None:
    import overhead as O

    full = O.grid("full")
    assert len(full) == len(set(full)) == 18
    assert {(s.layers, s.k, s.positions) for s in full} >= {
        (layers, k, pos) for layers in ("all", "auto") for k in (1, 4, 16, 64) for pos in ("last", "all")}
    assert set(O.grid("target")) <= set(O.grid("bench")) <= set(full) and set(O.grid("min")) <= set(O.grid("bench"))
    assert all(O.AA in O.grid(g) for g in ("full", "target", "bench", "core", "min", "quick"))
    # the target grid holds every in-target setting of the full grid (layers=all, gate=none, k <= 16)
    in_full = {s for s in full if s.layers == "all" and s.gate == "none" and s.k <= O.TARGET_K}
    assert {s for s in O.grid("target") if s != O.AA} == {s for s in in_full if s.positions == "last" or s.k == 16}

    def row(wl: str, k: int, ratio: float, peak: float, layers: str = "all", gate: str = "none",
            ci: tuple[float, float] = (0.9, 1.1)) -> dict:
        return {"workload": wl, "layers": layers, "k": k, "positions": "last", "gate": gate,
                "ratio": {"median": ratio, "ci_lo": ci[0], "ci_hi": ci[1]}, "peak_ratio": peak,
                "in_target": layers == "all" and gate == "none" and k <= O.TARGET_K}

    rows = [row("gen_b1", 1, 1.01, 1.0, ci=(1.0, 1.02)), row("gen_b1", 16, 1.029, 1.01, ci=(1.02, 1.03)),
            row("gen_b1", 64, 1.5, 1.0), row("gen_b1", 0, 1.001, 1.0, layers="off"),
            row("ll_b8", 16, 1.031, 1.0), row("ll_b8", 16, 1.9, 1.06, layers="auto", gate="paper"),
            row("gen_b8", 4, 1.2, 1.0, ci=(1.1, 1.3))]
    t = O.targets(rows)
    g1 = t["time_gen_b1"]
    assert g1["met"] and g1["worst"] == 1.029 and g1["conclusive"]  # k=64 and the A/A row are outside it
    assert g1["aa"]["median"] == 1.001 and O.verdict(g1) == "MET"
    ll = t["time_ll_b8"]
    assert not ll["met"] and ll["worst"] == 1.031 and not ll["conclusive"]  # auto is outside it; CI straddles
    assert O.verdict(ll) == "MISSED (within noise)" and ll["aa"] is None
    assert not t["time_gen_b8"]["met"] and t["time_gen_b8"]["conclusive"]  # interval wholly above 1.03
    assert not t["memory"]["met"] and t["memory"]["worst"] == 1.06  # memory counts every row


def test_median_interval_is_distribution_free() -> None:
    import _common as C

    lo, hi, cov = C.median_ci(list(range(15)))
    assert (lo, hi) == (3, 11) and cov == pytest.approx(0.9648, abs=1e-4)  # binomial(15, 1/2) order statistics
    assert C.median_ci([5.0, 1.0, 3.0, 2.0, 4.0]) == (1.0, 5.0, 0.9375)  # n < 6: min–max at its own coverage
    # coverage is real: over many samples of a known median, the 15-point interval covers it ≥ 95%
    import random

    rng = random.Random(0)
    hits = sum(lo <= 0 <= hi for lo, hi, _ in (C.median_ci([rng.gauss(0, 1) for _ in range(15)]) for _ in range(2000)))
    assert hits / 2000 > 0.95


# ---------------------------------------------------------------------------------------------
# the scripts
# ---------------------------------------------------------------------------------------------
def test_overhead_quick(tiny_dir, tmp_path: Path) -> None:
    _run("overhead.py", "--model", str(tiny_dir("llama")), "--quick", "--out", str(tmp_path), "--no-progress")
    rep = json.loads((tmp_path / "overhead_cpu.json").read_text())
    _check_machine(rep, "overhead.py")
    (model,) = rep["models"]
    rows = model["rows"]
    assert {(r["workload"], r["layers"]) for r in rows} == {
        (w, layers) for w in ("gen_b1", "gen_b8", "ll_b8") for layers in ("all", "auto", "off")}
    for r in rows:
        q = r["ratio"]
        assert q["n"] == 2 and all(_pos(q[k]) for k in ("median", "q25", "q75", "min", "max"))
        assert q["min"] <= q["q25"] <= q["median"] <= q["q75"] <= q["max"]
        assert _pos(r["hf_s"]["median"]) and _pos(r["alignez_s"]["median"])
        assert _pos(r["peak_ratio"]) and _pos(r["peak_hf_mib"])
        assert q["ci_lo"] <= q["median"] <= q["ci_hi"]
        if r["request"] == "loglikelihood":
            # the hooks really changed the model's output, and edit=none (A/A) changed nothing
            assert (r["edit_effect"] > 0) == (r["layers"] != "off")
    assert set(model["targets"]) == {"time_gen_b1", "time_gen_b8", "time_ll_b8", "memory"}
    assert all(isinstance(t["met"], bool) and _pos(t["worst"]) for t in model["targets"].values())
    with open(tmp_path / "overhead_cpu.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    md = (tmp_path / "overhead_cpu.md").read_text()
    assert "ratio median" in md and ("MET" in md or "MISSED" in md) and rep["command"] in md


def test_fit_cost_quick(tiny_dir, tmp_path: Path) -> None:
    _run("fit_cost.py", "--model", str(tiny_dir("llama")), "--quick", "--out", str(tmp_path), "--no-progress")
    rep = json.loads((tmp_path / "fit_cost_cpu.json").read_text())
    _check_machine(rep, "fit_cost.py")
    assert [r["queries"] for r in rep["runs"]] == [4, 8]
    for r in rep["runs"]:
        st = r["stages_s"]
        assert set(st) == {"characteristics", "answers", "activations", "filtering", "probe", "svd", "fingerprint",
                           "other", "total"}
        assert all(v >= 0 for v in st.values()) and _pos(st["total"])
        assert sum(v for k, v in st.items() if k != "total") == pytest.approx(st["total"], abs=0.01)
        assert 0 < r["after_generation_share"] < 1 and isinstance(r["target_met"], bool)
        cap = r["activation_capture"]
        assert cap["texts"] == 2 * r["pairs_kept"] and cap["forward_passes"] == cap["expected_batched"] == \
            math.ceil(cap["texts"] / cap["batch_size"])
        assert r["activations_batched"] and r["cache_hit"]
    assert (tmp_path / "fit_cost_cpu.md").read_text().count("queries") >= 2


def test_judge_throughput_quick(tiny_dir, tmp_path: Path) -> None:
    _run("judge_throughput.py", "--hf-model", str(tiny_dir("llama")), "--hf-dtype", "float32", "--quick",
         "--out", str(tmp_path), "--no-progress")
    rep = json.loads((tmp_path / "judge_throughput_cpu.json").read_text())
    _check_machine(rep, "judge_throughput.py")
    hf = rep["hf"]
    assert [r["batch_size"] for r in hf["rows"]] == [1, 4]
    assert all(_pos(r["per_s"]["median"]) and r["judgments"] == 6 and r["errors"] == 0 for r in hf["rows"])
    assert hf["cache_rerun"]["judgments"] == 0 and hf["cache_rerun"]["cache_hits"] == 6
    oa = rep["openai"]
    assert [r["concurrency"] for r in oa["rows"]] == [1, 4]
    for r in oa["rows"]:
        assert r["errors"] == 0 and r["judgments"] == r["server_hits"] == 8 and _pos(r["per_s"])
        assert 1 <= r["max_in_flight"] <= r["concurrency"] and r["bound_held"]
    assert oa["rows"][1]["max_in_flight"] > 1  # requests really overlapped
    assert oa["cache_rerun"]["judgments"] == 0 and oa["cache_rerun"]["server_hits"] == 0


def test_run_all_summary_keeps_notes(tmp_path: Path) -> None:
    rep = {"bench": "judge_throughput", "stem": "judge_throughput_cpu", "command": "python bench/judge_throughput.py",
           "machine": C.machine_info("cpu"), "settings": {},
           "openai": {"latency_s": 0.1, "rows": [
               {"concurrency": 8, "per_s": 70.0, "ideal_per_s": 80.0, "max_in_flight": 8, "bound_held": True}],
               "cache_rerun": {"seconds": 0.001, "server_hits": 0}}}
    C.write_json(tmp_path / "judge_throughput_cpu.json", rep)
    (tmp_path / "README.md").write_text("old\n<!-- notes -->\nhand-written finding\n<!-- /notes -->\nstale\n")
    _run("run_all.py", "--summary-only", "--out", str(tmp_path))
    text = (tmp_path / "README.md").read_text()
    assert "hand-written finding" in text and "stale" not in text
    assert "openai judge concurrency bound" in text and "8≤8" in text
    assert "Not run: no CUDA GPU" in text
