"""Inference overhead of the edit: lm-eval's `hf` vs our `alignez-hf` on the same loaded weights.

One process, one model object shared by an `HFLM` and an `AlignEZHFLM` (its hooks are installed
only inside its own calls, so the HFLM runs the plain model), the same prompts and requests.
Runs are interleaved pairwise (hf, alignez / alignez, hf alternately; configurations shuffled per
repeat) so that load drift on a shared machine hits both sides alike; the figure reported is the
median over repeats of the paired time ratio alignez/hf, with its IQR and min–max, and the
peak memory of each side. On CPU the ratio divides process CPU times (`--clock cpu`): a shared VM's
steal time lands in wall time at random and swamps a 3% effect; the wall ratio is reported beside it.

Workloads: generate_until at batch 1 and 8 (greedy, exactly --max-gen-toks new tokens: the stop
string never occurs and min_new_tokens holds EOS back, so an edit that changes the text cannot
change the amount of work) and loglikelihood at batch 8. Edits are random (`random_edit`) with
k directions in Θ_help and k in Θ_harm per layer (the v2 `neg_align` artifact has k of each).

    python bench/overhead.py                                   # embedded models, CPU, fp32
    python bench/overhead.py --model /path/to/hf-dir --grid core
    python bench/overhead.py --device cuda --dtype bfloat16 --tag gpu
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _common as C

logger = logging.getLogger("bench.overhead")

DEFAULT_MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
# A stop string no model emits: generation length is fixed by max_gen_toks (+ min_new_tokens).
NEVER = "\u2063\u2063\u2063"
CONTINUATION = " Here is a short, practical answer with the main steps and one example."
TARGET_RATIO = 1.03
TARGET_K = 16
TARGET_MEM = 1.05


@dataclass(frozen=True)
class Workload:
    name: str
    request: str  # generate_until | loglikelihood
    batch: int
    n_prompts: int


@dataclass(frozen=True)
class EditSetting:
    layers: str  # all | auto | off (edit=none: the A/A control, hf against hf through our wrapper)
    k: int
    positions: str  # last | all
    gate: str  # none | paper
    n_layers: int = 5

    @property
    def label(self) -> str:
        return f"layers={self.layers},k={self.k},positions={self.positions},gate={self.gate}"


# The A/A control: alignez-hf with edit=none calls straight through to HFLM, so its ratio to hf is
# the machine's noise floor (plus our wrapper's cost, which should be nil) under the same pairing.
AA = EditSetting("off", 0, "last", "none")


CLOCKS = {"cpu": "process CPU time", "wall": "wall time"}


def grid(name: str) -> list[EditSetting]:
    """Every grid carries the A/A control (edit=none). full: every layers × k × positions (gate
    none for layers=all: the hooks alone; gate paper for auto, the v2 default) plus the paper gate
    on all layers (18 points); target: the rows the target is judged on (layers=all, k = 1, 4, 16,
    positions last, and k=16 positions=all); bench: target + the v2 default (auto, paper gate);
    core: 7 points; min: the k=16 hooks and the v2 default; quick: for smoke tests."""
    target = [EditSetting("all", k, "last", "none") for k in (1, 4, 16)] + [EditSetting("all", 16, "all", "none")]
    auto = EditSetting("auto", 16, "last", "paper")
    if name == "full":
        out = [EditSetting(layers, k, pos, "none" if layers == "all" else "paper")
               for layers in ("all", "auto") for k in (1, 4, 16, 64) for pos in ("last", "all")]
        return out + [EditSetting("all", 16, "last", "paper"), AA]
    if name == "target":
        return [*target, AA]
    if name == "bench":
        return [*target, auto, AA]
    if name == "core":
        return [EditSetting("all", 1, "last", "none"), EditSetting("all", 16, "last", "none"),
                EditSetting("all", 64, "last", "none"), EditSetting("all", 16, "all", "none"),
                EditSetting("all", 16, "last", "paper"), auto, AA]
    if name == "min":
        return [EditSetting("all", 16, "last", "none"), auto, AA]
    if name == "quick":
        return [EditSetting("all", 4, "last", "none"), EditSetting("auto", 4, "all", "paper", n_layers=2), AA]
    raise SystemExit(f"unknown grid {name!r}; choose full, target, bench, core, min or quick")


def make_requests(workload: Workload, prompts: list[str], max_gen_toks: int) -> list[Any]:
    from lm_eval.api.instance import Instance

    texts = [f"Question: {p}\nAnswer:" for p in prompts[: workload.n_prompts]]
    if workload.request == "generate_until":
        kw = {"until": [NEVER], "max_gen_toks": max_gen_toks, "min_new_tokens": max_gen_toks, "do_sample": False}
        return [Instance("generate_until", {}, (t, dict(kw)), i) for i, t in enumerate(texts)]
    return [Instance("loglikelihood", {}, (t, CONTINUATION), i) for i, t in enumerate(texts)]


def run_workload(lm: Any, workload: Workload, requests: list[Any]) -> list[Any]:
    lm.batch_size_per_gpu = workload.batch
    if workload.request == "generate_until":
        return lm.generate_until(requests, disable_tqdm=True)
    return lm.loglikelihood(requests, disable_tqdm=True)


def edit_effect(workload: Workload, hf_out: list[Any], az_out: list[Any]) -> float:
    """Evidence the edit was really on: share of generations that changed, or the largest change
    of a loglikelihood."""
    if workload.request == "generate_until":
        return sum(a != b for a, b in zip(hf_out, az_out, strict=True)) / max(1, len(hf_out))
    return max(abs(a[0] - b[0]) for a, b in zip(hf_out, az_out, strict=True))


def bench_model(name: str, settings: list[EditSetting], workloads: list[Workload], args: argparse.Namespace,
                mem: C.PeakMemory, repeats: int) -> dict[str, Any]:
    from lm_eval.models.huggingface import HFLM
    from tqdm.auto import tqdm

    from alignez_eval.editing.random_edit import random_edit
    from model_adapters.alignez_hf import AlignEZHFLM

    model, tok, meta = C.load_model(name, args.dtype, args.device)
    hf = HFLM(pretrained=model, tokenizer=tok, batch_size=8)
    az = AlignEZHFLM(pretrained=model, tokenizer=tok, batch_size=8, edit="none")
    assert hf.model is az.model, "both sides must run the very same weights"
    edits = {k: random_edit(model, k_harm=k, k_help=k, seed=1000 + k, gate="none", n_layers=5)
             for k in sorted({s.k for s in settings if s.layers != AA.layers})}
    prompts = [p["instruction"] for p in C.load_prompts()]
    requests = {w.name: make_requests(w, prompts, args.max_gen_toks) for w in workloads}

    def timed(lm: Any, w: Workload) -> tuple[float, C.MemSample, list[Any]]:
        gc.collect()
        C.sync(args.device)
        with mem.measure() as sample:
            t0, c0 = time.perf_counter(), time.process_time()
            out = run_workload(lm, w, requests[w.name])
            C.sync(args.device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        return (dc if args.clock == "cpu" else dt), dt, sample[0], out

    def configure(s: EditSetting) -> None:
        if s.layers == AA.layers:
            az.set_edit(edit="none")
            return
        az.set_edit(edit=edits[s.k], layers=s.layers, positions=s.positions, gate=s.gate, n_layers=s.n_layers)

    # Warm-up (first-call costs: allocator, kernels, tokenizer caches), not recorded.
    for w in workloads:
        configure(settings[0])
        timed(hf, w)
        timed(az, w)

    rows: dict[tuple[str, EditSetting], dict[str, list[Any]]] = {}
    total = len(workloads) * len(settings) * repeats
    bar = tqdm(total=total, desc=f"overhead {meta['name']}", unit="pair", disable=args.no_progress)
    for r in range(repeats):
        for w in workloads:
            order = list(settings)
            random.Random(args.seed * 7919 + r * 31 + len(w.name)).shuffle(order)
            for j, s in enumerate(order):
                configure(s)
                rec = rows.setdefault((w.name, s), {"hf": [], "az": [], "wall_hf": [], "wall_az": [], "mem_hf": [],
                                                    "mem_az": [], "effect": []})
                first_hf = (r + j) % 2 == 0
                sides = [("hf", hf), ("az", az)] if first_hf else [("az", az), ("hf", hf)]
                outs: dict[str, list[Any]] = {}
                for side, lm in sides:
                    dt, wall, ms, out = timed(lm, w)
                    rec[side].append(dt)
                    rec["wall_" + side].append(wall)
                    rec["mem_" + side].append(ms)
                    outs[side] = out
                rec["effect"].append(edit_effect(w, outs["hf"], outs["az"]))
                bar.update(1)
    bar.close()
    az.set_edit(edit="none")

    out_rows = []
    for wname, s in [(w.name, s) for w in workloads for s in settings]:
        rec = rows[(wname, s)]
        ratios = [a / h for a, h in zip(rec["az"], rec["hf"], strict=True) if h > 0]
        wall_ratios = [a / h for a, h in zip(rec["wall_az"], rec["wall_hf"], strict=True) if h > 0]
        peak_hf = [m.peak_bytes for m in rec["mem_hf"] if m.peak_bytes is not None]
        peak_az = [m.peak_bytes for m in rec["mem_az"] if m.peak_bytes is not None]
        extra_hf = [m.peak_bytes - m.base_bytes for m in rec["mem_hf"] if m.peak_bytes is not None and m.base_bytes is not None]
        extra_az = [m.peak_bytes - m.base_bytes for m in rec["mem_az"] if m.peak_bytes is not None and m.base_bytes is not None]
        mib = 2**20
        med_peak_hf = C.summary(peak_hf)["median"] / mib if peak_hf else math.nan
        med_peak_az = C.summary(peak_az)["median"] / mib if peak_az else math.nan
        wl = next(w for w in workloads if w.name == wname)
        out_rows.append({
            "model": meta["name"], "workload": wname, "request": wl.request, "batch": wl.batch,
            "layers": s.layers, "k": s.k, "positions": s.positions, "gate": s.gate,
            "n_layers": s.n_layers if s.layers == "auto" else None,
            "ratio": C.rnd(C.summary(ratios)), "ratio_wall": C.rnd(C.summary(wall_ratios)),
            "hf_s": C.rnd(C.summary(rec["hf"])), "alignez_s": C.rnd(C.summary(rec["az"])),
            "peak_hf_mib": C.rnd(med_peak_hf, 1), "peak_alignez_mib": C.rnd(med_peak_az, 1),
            "peak_ratio": C.rnd(med_peak_az / med_peak_hf if med_peak_hf and math.isfinite(med_peak_hf) else math.nan),
            "extra_hf_mib": C.rnd(C.summary(extra_hf)["median"] / mib, 1) if extra_hf else None,
            "extra_alignez_mib": C.rnd(C.summary(extra_az)["median"] / mib, 1) if extra_az else None,
            "edit_effect": C.rnd(C.summary(rec["effect"])["median"]),
            "in_target": s.layers == "all" and s.gate == "none" and s.k <= TARGET_K,
        })
    return {"model": meta, "rows": out_rows, "targets": targets(out_rows)}


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratio ≤ 1.03 on every layers=all (no gate) row with k ≤ 16, per workload; peak ≤ +5% on all rows.

    `conclusive` says whether the median's confidence interval settles it: every in-target row's
    interval below the target (met), or some row's interval wholly above it (missed). The A/A
    row's interval is the noise floor the verdict is read against."""
    out: dict[str, Any] = {}
    for wname in dict.fromkeys(r["workload"] for r in rows):
        inr = [r for r in rows if r["workload"] == wname and r["in_target"]]
        if not inr:
            continue
        worst = max(inr, key=lambda r: r["ratio"]["median"])
        met = all(r["ratio"]["median"] <= TARGET_RATIO for r in inr)
        ci_hi = [r["ratio"].get("ci_hi", math.nan) for r in inr]
        ci_lo = [r["ratio"].get("ci_lo", math.nan) for r in inr]
        conclusive = all(h <= TARGET_RATIO for h in ci_hi) if met else any(lo > TARGET_RATIO for lo in ci_lo)
        aa = next((r for r in rows if r["workload"] == wname and r["layers"] == AA.layers), None)
        out[f"time_{wname}"] = {
            "target": f"median ratio <= {TARGET_RATIO} (layers=all, gate=none, k <= {TARGET_K})",
            "worst": worst["ratio"]["median"], "worst_setting": _setting(worst),
            "worst_ci": [worst["ratio"].get("ci_lo"), worst["ratio"].get("ci_hi")],
            "met": met, "conclusive": conclusive,
            "aa": None if aa is None else {k: aa["ratio"].get(k) for k in ("median", "ci_lo", "ci_hi")},
        }
    peaks = [r for r in rows if r["peak_ratio"] is not None and math.isfinite(r["peak_ratio"])]
    if peaks:
        worst = max(peaks, key=lambda r: r["peak_ratio"])
        out["memory"] = {"target": f"peak ratio <= {TARGET_MEM} (every row)", "worst": worst["peak_ratio"],
                         "worst_setting": f"{worst['workload']} {_setting(worst)}",
                         "met": all(r["peak_ratio"] <= TARGET_MEM for r in peaks)}
    return out


def _setting(r: dict[str, Any]) -> str:
    return f"layers={r['layers']} k={r['k']} positions={r['positions']} gate={r['gate']}"


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def to_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    workloads = ", ".join(f"{w['name']}: {w['n_prompts']} prompts" for w in s["workloads"])
    lines = [
        f"# Edit overhead: `alignez-hf` vs lm-eval `hf` ({report['machine']['device']})", "",
        C.machine_md(report["machine"], report["command"]), "",
        f"Settings: dtype {s['dtype']}, {_repeats_text(report)} interleaved repeats per cell, greedy generation of "
        f"exactly {s['max_gen_toks']} new tokens, prompts from tasks/data/embedded_prompts.jsonl "
        f"({workloads}). "
        "k = directions per basis (k in Θ_help and k in Θ_harm), random orthonormal, α = 1. "
        f"Ratio = alignez/hf {CLOCKS[s.get('clock', 'wall')]}, paired per repeat: median [IQR] (min–max); "
        "the wall-clock ratio's median is listed beside it. Peak memory: "
        f"{s['memory_kind']} (median over repeats; whole process, so weights included), and the "
        "increase over the memory in use just before the call (extra).", "",
    ]
    for m in report["models"]:
        meta = m["model"]
        lines += [f"## {meta['name']} ({meta['model_type']}, {meta['num_layers']} layers, d={meta['hidden_size']}, "
                  f"{meta['params_m']}M params, {meta['dtype']})", ""]
        for key, t in m["targets"].items():
            lines.append(f"- {verdict(t)} — {key}: {t['target']}; worst {t['worst']:.3f} {ci_text(t)} "
                         f"({t['worst_setting']}){aa_text(t)}")
        lines.append("")
        header = ["workload", "layers", "k", "positions", "gate", "ratio median [IQR] (min–max)", "95% CI", "wall ratio",
                  "hf s", "alignez s",
                  "peak hf MiB", "peak alignez MiB", "peak ratio", "extra hf/alignez MiB", "edit effect"]
        body = []
        for r in m["rows"]:
            q = r["ratio"]
            body.append([
                r["workload"], row_layers(r), r["k"] if r["layers"] != AA.layers else "–",
                r["positions"], r["gate"],
                f"**{q['median']:.3f}** [{q['q25']:.3f}, {q['q75']:.3f}] ({q['min']:.3f}–{q['max']:.3f})",
                f"{q['ci_lo']:.3f}–{q['ci_hi']:.3f}" if q.get("ci_lo") is not None else "–",
                f"{r['ratio_wall']['median']:.3f}" if r.get("ratio_wall") else "–",
                r["hf_s"]["median"], r["alignez_s"]["median"], r["peak_hf_mib"], r["peak_alignez_mib"],
                r["peak_ratio"], f"{_num(r['extra_hf_mib'])} / {_num(r['extra_alignez_mib'])}", r["edit_effect"],
            ])
        lines += [C.md_table(header, body), ""]
    lines += ["Edit effect: share of generations that differ from hf (generate_until) or the largest "
              "|Δ loglikelihood| (loglikelihood) — evidence the hooks were live. 95% CI: distribution-free "
              "interval of the median (order statistics; with fewer than 6 repeats it is min–max at its own, "
              "lower coverage). A verdict is *within noise* when that interval straddles the target; the "
              "edit=none (A/A) row is the same pairing with no edit, i.e. this machine's noise floor.", ""]
    return "\n".join(lines)


def _repeats_text(report: dict[str, Any]) -> str:
    per = [f"{m['repeats']} ({m['model']['name']})" for m in report["models"] if "repeats" in m]
    return ", ".join(per) if per else str(report["settings"]["repeats"])


def verdict(t: dict[str, Any]) -> str:
    word = "MET" if t["met"] else "MISSED"
    return word if t.get("conclusive", True) else f"{word} (within noise)"


def ci_text(t: dict[str, Any]) -> str:
    lo, hi = (t.get("worst_ci") or [None, None])[:2]
    return "" if lo is None or hi is None else f"(CI {lo:.3f}–{hi:.3f})"


def aa_text(t: dict[str, Any]) -> str:
    aa = t.get("aa")
    if not aa or aa.get("median") is None:
        return ""
    return f"; A/A control {aa['median']:.3f} (CI {aa['ci_lo']:.3f}–{aa['ci_hi']:.3f})"


def row_layers(r: dict[str, Any]) -> str:
    if r["layers"] == AA.layers:
        return "edit=none (A/A)"
    return r["layers"] + (f" (top {r['n_layers']})" if r["n_layers"] else "")


def _num(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.1f}"


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in report["models"]:
        for r in m["rows"]:
            flat = {k: v for k, v in r.items() if not isinstance(v, dict)}
            for key in ("ratio", "ratio_wall", "hf_s", "alignez_s"):
                for stat, v in r.get(key, {}).items():
                    flat[f"{key}_{stat}"] = v
            flat["dtype"] = m["model"]["dtype"]
            flat["device"] = m["model"]["device"]
            out.append(flat)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="embedded model name or HF directory (repeatable); "
                    f"default: {' '.join(DEFAULT_MODELS)}")
    ap.add_argument("--grid", action="append", help="full | bench | core | min | quick, once for all models or once "
                    "per --model (default: full for the first model, core for the others)")
    ap.add_argument("--repeats", type=int, action="append",
                    help="interleaved repeats per cell, once for all models or once per --model (default 5)")
    ap.add_argument("--max-gen-toks", type=int, default=16)
    ap.add_argument("--prompts-b1", type=int, default=1, help="prompts in the batch-1 generation workload")
    ap.add_argument("--prompts-b8", type=int, default=8, help="prompts in the batch-8 workloads")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) | bfloat16 (CUDA default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                    help="what the ratio divides: cpu = process CPU time (CPU default: on a shared VM it leaves out "
                    "time the hypervisor gave to other tenants, which wall time counts as noise), wall = elapsed "
                    "time (CUDA default; CPU time would miss the GPU's work). Both are recorded.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    ap.add_argument("--tag", default=None, help="report file stem suffix (default: the device type)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke mode: quick grid, 2 repeats, 4 new tokens, 2/4 prompts (for tests)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    C.setup_logging()
    if args.quick:
        args.repeats, args.max_gen_toks, args.prompts_b1, args.prompts_b8 = [2], 4, 2, 4
        args.grid = args.grid or ["quick"]
    models = args.model or DEFAULT_MODELS
    grids = args.grid or ["full"] + ["core"] * (len(models) - 1)
    if len(grids) == 1:
        grids = grids * len(models)
    if len(grids) != len(models):
        raise SystemExit("--grid: give one grid, or one per --model")
    repeats = args.repeats or [5]
    if len(repeats) == 1:
        repeats = repeats * len(models)
    if len(repeats) != len(models) or min(repeats) < 1:
        raise SystemExit("--repeats: give one positive count, or one per --model")
    args.dtype = C.DTYPES[args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")]
    args.clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    C.set_threads(args.threads)
    workloads = [Workload("gen_b1", "generate_until", 1, args.prompts_b1),
                 Workload("gen_b8", "generate_until", 8, args.prompts_b8),
                 Workload("ll_b8", "loglikelihood", 8, args.prompts_b8)]
    machine = C.machine_info(args.device)
    mem = C.PeakMemory(args.device)
    t0 = time.perf_counter()
    results = []
    for name, g, n in zip(models, grids, repeats, strict=True):
        logger.info("model %s, grid %s, %d repeats", name, g, n)
        results.append(bench_model(name, grid(g), workloads, args, mem, n) | {"grid": g, "repeats": n})
    machine["loadavg_end"] = C.loadavg()
    report = {
        "bench": "overhead", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": C.command_line(),
        "machine": machine, "wall_s": round(time.perf_counter() - t0, 1),
        "settings": {"dtype": args.dtype, "device": args.device, "repeats": repeats, "clock": args.clock,
                     "max_gen_toks": args.max_gen_toks, "workloads": [asdict(w) for w in workloads],
                     "memory_kind": mem.kind, "seed": args.seed, "continuation": CONTINUATION,
                     "targets": {"ratio": TARGET_RATIO, "k_max": TARGET_K, "peak_ratio": TARGET_MEM}},
        "models": results,
    }
    stem = f"overhead_{args.tag or args.device.split(':')[0]}"
    report["stem"] = stem
    C.write_json(args.out / f"{stem}.json", report)
    C.write_csv(args.out / f"{stem}.csv", csv_rows(report))
    C.atomic_write(args.out / f"{stem}.md", to_markdown(report))
    for m in results:
        for key, t in m["targets"].items():
            logger.info("%s %s: %s (worst %.3f %s, %s)%s", m["model"]["name"], key, verdict(t), t["worst"],
                        ci_text(t), t["worst_setting"], aa_text(t))
    logger.info("wrote %s.{json,csv,md} in %.0fs", args.out / stem, report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
