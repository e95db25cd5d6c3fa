"""Run the CPU benchmark set (`make bench`) and rewrite reports/bench/README.md from the results.

Each benchmark runs in its own process (one model in memory at a time, its own peak RSS), one after
the other: overhead.py (SmolLM2-135M-Instruct bench grid, gemma-3-270m min grid; `--long` adds the
15-repeat target rows and the full grid), fit_cost.py (32 queries; `--long`: 128) and
judge_throughput.py. The README is then rebuilt from every
reports/bench/*.json present (a GPU report from bench/gpu.sh included); text between the
`<!-- notes -->` markers is kept as written.

    python bench/run_all.py                  # everything, ~10-15 min on 2 cores
    python bench/run_all.py --only judge     # one benchmark, then the README
    python bench/run_all.py --summary-only   # only rebuild the README from the JSON files
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import overhead as O

logger = logging.getLogger("bench.run_all")

HERE = Path(__file__).resolve().parent
NOTES_START, NOTES_END = "<!-- notes -->", "<!-- /notes -->"

# The CPU set (`make bench`), sized to stay under 15 minutes on 2 shared cores. One intra-op thread:
# with colleagues' jobs on the same 2 cores, 2 threads were seen to slow generation 2-6x and to
# make timings swing by as much (idle spinning at OpenMP barriers); 1 thread is slower but steady.
THREADS = ["--threads", "1"]
CPU_SET: dict[str, list[str]] = {
    "overhead": ["overhead.py", "--model", "smollm2-135m-instruct", "--grid", "bench", "--repeats", "5",
                 "--model", "gemma-3-270m", "--grid", "min", "--repeats", "3", "--max-gen-toks", "16", *THREADS],
    "fit": ["fit_cost.py", "--model", "smollm2-135m-instruct", "--queries", "32", "--char-tokens", "50",
            "--answer-tokens", "200", *THREADS],
    "judge": ["judge_throughput.py", "--hf-model", "smollm2-135m-instruct", "--concurrency", "1", "8", "32",
              "--latency", "0.1", *THREADS],
}
# The long set (`--long`, ~50-75 min here): the target rows with 15 repeats (a 95% interval of the
# median narrow enough to read a 3% target on this noisy VM), the full grid, the 128-query fit.
LONG_SET: dict[str, list[str]] = {
    "overhead_target": ["overhead.py", "--model", "smollm2-135m-instruct", "--grid", "target", "--repeats", "15",
                        "--max-gen-toks", "16", "--tag", "cpu_target", *THREADS],
    "overhead_full": ["overhead.py", "--model", "smollm2-135m-instruct", "--grid", "full", "--repeats", "3",
                      "--max-gen-toks", "16", "--tag", "cpu_full", *THREADS],
    "fit_128": ["fit_cost.py", "--model", "smollm2-135m-instruct", "--queries", "128", "--char-tokens", "50",
                "--answer-tokens", "200", "--tag", "cpu_128q", *THREADS],
}
SETS = {**CPU_SET, **LONG_SET}


def run_set(names: list[str], out: Path, extra: list[str]) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for name in names:
        cmd = [sys.executable, str(HERE / SETS[name][0]), *SETS[name][1:], "--out", str(out), "--no-progress",
               *extra]
        logger.info("running %s", " ".join(cmd[1:]))
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=C.REPO)
        done[name] = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("%s: exit %d after %.0f s", name, rc, done[name]["seconds"])
    return done


# ---------------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------------
def _load(out: Path, stem: str) -> dict[str, Any] | None:
    p = out / f"{stem}.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def overhead_section(rep: dict[str, Any], title: str) -> list[str]:
    lines = [f"### {title}", "", C.machine_md(rep["machine"], rep["command"]),
             f"- wall time {rep['wall_s']:.0f} s; full table: [{rep_stem(rep)}.md]({rep_stem(rep)}.md)", ""]
    for m in rep["models"]:
        meta = m["model"]
        lines.append(f"**{meta['name']}** ({meta['dtype']}, grid {m.get('grid')}):")
        lines.append("")
        for key, t in m["targets"].items():
            lines.append(f"- {key}: {_verdict(t['met'])}{'' if t.get('conclusive', True) else ' (within noise)'} — "
                         f"{t['target']}; worst {t['worst']:.3f} {O.ci_text(t)} ({t['worst_setting']}){O.aa_text(t)}")
        lines.append("")
        rows = []
        for r in m["rows"]:
            q = r["ratio"]
            ci = f"{q['ci_lo']:.3f}–{q['ci_hi']:.3f}" if q.get("ci_lo") is not None else "–"
            rows.append([r["workload"], O.row_layers(r), r["k"] if r["layers"] != O.AA.layers else "–", r["positions"],
                         r["gate"], f"{q['median']:.3f} [{q['q25']:.3f}–{q['q75']:.3f}]", ci, _fmt(r["peak_ratio"])])
        lines += [C.md_table(["workload", "layers", "k", "positions", "gate", "time ratio median [IQR]", "95% CI",
                              "peak ratio"], rows), ""]
    return lines


def rep_stem(rep: dict[str, Any]) -> str:
    return str(rep.get("stem") or rep["bench"])


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def fit_section(rep: dict[str, Any]) -> list[str]:
    s, m = rep["settings"], rep["model"]
    lines = [f"### Fit cost (`bench/fit_cost.py`, {rep_stem(rep)})", "", C.machine_md(rep["machine"], rep["command"]),
             f"- model {m['name']} ({m['dtype']}); v2, {s['char_tokens']}+{s['answer_tokens']} generated tokens at most; "
             f"full table: [{rep_stem(rep)}.md]({rep_stem(rep)}.md)", ""]
    for r in rep["runs"]:
        lines.append(f"- {r['queries']} queries: total {r['stages_s']['total']:.1f} s, generation {r['generation_s']:.1f} s, "
                     f"after generation {r['after_generation_s']:.1f} s = {100 * r['after_generation_share']:.1f}% — "
                     f"target ≤ 10% {_verdict(r['target_met'])}; activations "
                     f"{'one batched pass per batch' if r['activations_batched'] else 'NOT batched'} "
                     f"({(r['activation_capture'] or {}).get('forward_passes')} forwards for "
                     f"{(r['activation_capture'] or {}).get('texts')} texts); cache hit {r['cache_hit_s']:.2f} s")
    stages = ["characteristics", "answers", "activations", "filtering", "probe", "svd", "fingerprint", "other", "total"]
    rows = [[st] + [f"{r['stages_s'][st]:.2f}" for r in rep["runs"]] for st in stages]
    lines += ["", C.md_table(["stage (s)"] + [f"{r['queries']} queries" for r in rep["runs"]], rows), ""]
    return lines


def judge_section(rep: dict[str, Any]) -> list[str]:
    lines = ["### Judge throughput (`bench/judge_throughput.py`)", "", C.machine_md(rep["machine"], rep["command"]),
             f"- full table: [{rep_stem(rep)}.md]({rep_stem(rep)}.md)", ""]
    hf = rep.get("hf")
    if hf:
        m = hf["model"]
        lines.append(f"- hf judge {m['name']} ({m['dtype']}, CPU), pairwise label probabilities: " + ", ".join(
            f"batch {r['batch_size']}: {r['per_s']['median']:.2f} judgments/s" for r in hf["rows"])
            + f"; cache-hit re-run {1000 * hf['cache_rerun']['seconds']:.1f} ms for "
              f"{hf['cache_rerun']['cache_hits']} judgments ({hf['cache_rerun']['judgments']} calls)")
    oa = rep.get("openai")
    if oa:
        lines.append(f"- openai backend, loopback server with {oa['latency_s']:.2f} s latency: " + ", ".join(
            f"concurrency {r['concurrency']}: {r['per_s']:.1f}/s (ideal {r['ideal_per_s']:.0f}, max in flight "
            f"{r['max_in_flight']})" for r in oa["rows"])
            + f"; cache-hit re-run {1000 * oa['cache_rerun']['seconds']:.1f} ms, "
              f"{oa['cache_rerun']['server_hits']} requests to the server")
    return [*lines, ""]


def build_readme(out: Path, run_info: dict[str, Any] | None) -> str:
    old = (out / "README.md").read_text(encoding="utf-8") if (out / "README.md").is_file() else ""
    notes = ""
    if NOTES_START in old and NOTES_END in old:
        notes = old.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0].strip("\n")
    ovs = {p.stem: _load(out, p.stem) for p in sorted(out.glob("overhead_*.json"))}
    fits = [r for r in (_load(out, p.stem) for p in sorted(out.glob("fit_cost_*.json"))) if r]
    judges = [r for r in (_load(out, p.stem) for p in sorted(out.glob("judge_throughput_*.json"))) if r]
    ovs = {k: v for k, v in ovs.items() if v}
    lines = [
        "# Benchmarks", "",
        "Generated by `bench/run_all.py` from the JSON files in this directory (edit only the notes block).",
        "Re-run everything with `make bench` (CPU set), or one part with `python bench/run_all.py --only "
        "overhead|fit|judge`; `bench/gpu.sh` adds the CUDA overhead report where a GPU exists.", "",
    ]
    if run_info:
        lines += [f"Last `run_all.py`: {run_info['created']}, {run_info['total_s']:.0f} s of benchmarks ("
                  + ", ".join(f"{k} {v['seconds']:.0f} s, exit {v['rc']}" for k, v in run_info["runs"].items()) + ").", ""]
    lines += ["## Targets", ""]
    tgt_rows = []
    for rep in ovs.values():
        where = "GPU" if rep["machine"].get("gpu") else "CPU"
        for m in rep["models"]:
            for key, t in m["targets"].items():
                tgt_rows.append([f"overhead {key} ({where}, {m['model']['name']}, {m['model']['dtype']}, "
                                 f"{rep['machine'].get('torch_threads')} thr, grid {m.get('grid')})", t["target"],
                                 f"{t['worst']:.3f} {O.ci_text(t)} ({t['worst_setting']}){O.aa_text(t)}",
                                 O.verdict(t)])
    for fit in fits:
        for r in fit["runs"]:
            tgt_rows.append([f"fit {r['queries']} queries ({fit['model']['name']})", "after generation ≤ 10% of fit",
                             f"{100 * r['after_generation_share']:.1f}%", "met" if r["target_met"] else "MISSED"])
            tgt_rows.append([f"fit {r['queries']} queries: activations batched", "one pass per batch of texts",
                             f"{(r['activation_capture'] or {}).get('forward_passes')} passes / "
                             f"{(r['activation_capture'] or {}).get('texts')} texts",
                             "met" if r["activations_batched"] else "MISSED"])
    for judge in judges:
        if not judge.get("openai"):
            continue
        ok = all(r["bound_held"] for r in judge["openai"]["rows"])
        tgt_rows.append(["openai judge concurrency bound", "max in flight ≤ concurrency",
                         ", ".join(f"{r['max_in_flight']}≤{r['concurrency']}" for r in judge["openai"]["rows"]),
                         "met" if ok else "MISSED"])
    lines += [C.md_table(["what", "target", "measured (worst)", "verdict"], tgt_rows) if tgt_rows else "(no results yet)", ""]
    lines += ["## Notes", "", NOTES_START, notes, NOTES_END, "", "## Results", ""]
    for stem, rep in ovs.items():
        gpu = rep["machine"].get("gpu")
        title = (f"Edit overhead, GPU {gpu['name']} (`bench/gpu.sh`)" if gpu
                 else f"Edit overhead, CPU (`bench/overhead.py`, {stem})")
        lines += overhead_section(rep, title)
    if not any(rep["machine"].get("gpu") for rep in ovs.values()):
        lines += ["### Edit overhead, GPU (`bench/gpu.sh`)", "",
                  "Not run: no CUDA GPU was available where these results were produced. `bench/gpu.sh` writes "
                  "overhead_gpu.{json,csv,md} (bf16, embedded models, GPU name recorded) and rebuilds this file.", ""]
    for fit in fits:
        lines += fit_section(fit)
    for judge in judges:
        lines += judge_section(judge)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(SETS), help="run only these benchmarks")
    ap.add_argument("--long", action="store_true", help="also the long set: full overhead grid, 128-query fit")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild README.md from the JSON results")
    ap.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    ap.add_argument("extra", nargs="*", help="arguments after -- go to every benchmark script")
    args = ap.parse_args(argv)
    C.setup_logging()
    run_info = None
    t0 = time.perf_counter()
    if not args.summary_only:
        names = args.only or (list(CPU_SET) + (list(LONG_SET) if args.long else []))
        runs = run_set(names, args.out, args.extra)
        run_info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs,
                    "total_s": round(time.perf_counter() - t0, 1), "loadavg_end": C.loadavg()}
        prev_path = args.out / "run_all.json"
        if args.only and prev_path.is_file():  # a partial re-run updates its entries, keeps the others
            prev = json.loads(prev_path.read_text(encoding="utf-8"))
            merged = {**prev.get("runs", {}), **runs}
            run_info["runs"] = merged
            run_info["total_s"] = round(sum(v["seconds"] for v in merged.values()), 1)
        C.write_json(prev_path, run_info)
    else:
        p = args.out / "run_all.json"
        run_info = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    C.atomic_write(args.out / "README.md", build_readme(args.out, run_info))
    logger.info("wrote %s", args.out / "README.md")
    failed = [k for k, v in (run_info or {}).get("runs", {}).items() if v["rc"] != 0] if not args.summary_only else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
