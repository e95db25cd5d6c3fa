"""Cost of fitting an edit, stage by stage, for 32 and 128 queries.

Runs the real pipeline (`alignez_eval.fitting.run_fit`, self-generated pairs, method v2) on a fresh
cache directory and reads the stage timings it records (characteristics, answers, activations,
probe, subspaces/SVD, total). Two stages the pipeline does not time on their own are measured by
wrapping the functions it calls: the per-layer cosine filter (`cosine_keep`) and the model
fingerprint; whatever remains (JSON/cache writes, bookkeeping) is "other". The activation capture
is checked to be batched: the model's forward passes during `capture` are counted and compared
with ceil(texts / act_batch_size). A second identical call shows the cost of a cache hit.

Target: everything after generation ≤ 10% of the fit.

    python bench/fit_cost.py                                 # smollm2-135m-instruct, 32 and 128 queries
    python bench/fit_cost.py --answer-tokens 200 --char-tokens 50 --queries 32 128
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

logger = logging.getLogger("bench.fit_cost")

TARGET_AFTER_GEN = 0.10
STAGES = ["characteristics", "answers", "activations", "filtering", "probe", "svd", "fingerprint", "other"]


def bench_queries(n: int) -> list[dict[str, str]]:
    """n distinct queries: the 100 embedded prompts, then the same prompts asked for brevity."""
    base = C.load_prompts()
    out = [{"id": p["id"], "instruction": p["instruction"]} for p in base]
    i = 0
    while len(out) < n:
        p = base[i % len(base)]
        out.append({"id": f"{p['id']}-brief{i // len(base)}", "instruction": f"In two or three sentences: {p['instruction']}"})
        i += 1
    return out[:n]


class Instrument:
    """Wraps functions `run_fit` calls by module-level name, to time or count them."""

    def __init__(self, model: Any = None) -> None:
        self.seconds: dict[str, float] = {}
        self.capture_calls: list[dict[str, int]] = []
        self._undo: list[tuple[Any, str, Any]] = []
        self.model = model
        # positions (batch × length, padding included) through the model, by kind of forward
        self.positions = {"prefill": 0, "decode": 0, "activations": 0}
        self._in_capture = False
        self._handle: Any = None

    def _count(self, _m: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is None or not hasattr(ids, "shape") or ids.dim() != 2:
            return
        kind = "activations" if self._in_capture else ("decode" if ids.shape[1] == 1 else "prefill")
        self.positions[kind] += int(ids.numel())

    def _timed(self, module: Any, name: str, stage: str) -> None:
        orig = getattr(module, name)

        @functools.wraps(orig)
        def wrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0

        setattr(module, name, wrapper)
        self._undo.append((module, name, orig))

    def _counted_capture(self, module: Any) -> None:
        orig = module.capture

        @functools.wraps(orig)
        def wrapper(model: Any, tokenizer: Any, texts: list[str], **kw: Any) -> Any:
            calls = [0]
            handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
            self._in_capture = True
            try:
                return orig(model, tokenizer, texts, **kw)
            finally:
                self._in_capture = False
                handle.remove()
                bs = int(kw.get("batch_size", 16))
                self.capture_calls.append({"texts": len(texts), "batch_size": bs, "forward_passes": calls[0],
                                           "expected_batched": math.ceil(len(texts) / bs)})

        module.capture = wrapper
        self._undo.append((module, "capture", orig))

    def __enter__(self) -> Instrument:
        import alignez_eval.fitting.activations as activations_stage
        import alignez_eval.fitting.layer_fit as layer_stage
        import alignez_eval.fitting.run as run_mod

        self._timed(layer_stage, "cosine_keep", "filtering")
        self._timed(run_mod, "model_fingerprint", "fingerprint")
        self._counted_capture(activations_stage)
        if self.model is not None:
            self._handle = self.model.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, orig in reversed(self._undo):
            setattr(module, name, orig)
        if self._handle is not None:
            self._handle.remove()


def stage_table(timings: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
    t = {
        "characteristics": timings.get("generate_characteristics", 0.0),
        "answers": timings.get("generate_answers", 0.0),
        "activations": timings.get("activations", 0.0),
        "filtering": extra.get("filtering", 0.0),
        "probe": timings.get("probe", 0.0),
        "svd": timings.get("subspaces", 0.0),
        "fingerprint": extra.get("fingerprint", 0.0),
    }
    total = float(timings.get("total", sum(t.values())))
    t["other"] = max(0.0, total - sum(t.values()))
    t["total"] = total
    return t


def run_one(model: Any, tok: Any, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from alignez_eval.fitting import FitSettings, run_fit

    queries = bench_queries(n)
    settings = FitSettings(method="v2", char_tokens=args.char_tokens, answer_tokens=args.answer_tokens,
                           gen_batch_size=args.gen_batch_size, act_batch_size=args.act_batch_size,
                           min_pairs=args.min_pairs, cos_threshold=args.cos_threshold, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-fit-") as cache:
        with Instrument(model) as inst:
            t0 = time.perf_counter()
            result = run_fit(model, tok, queries, settings, cache_dir=cache, progress=not args.no_progress)
            wall = time.perf_counter() - t0
        assert not result.cache_hit, "the first fit on a fresh cache cannot be a cache hit"
        t1 = time.perf_counter()
        again = run_fit(model, tok, queries, settings, cache_dir=cache, progress=False)
        hit_s = time.perf_counter() - t1
    stages = stage_table(result.timings, inst.seconds)
    gen = stages["characteristics"] + stages["answers"]
    after = stages["total"] - gen
    counts = result.report["fit"]["counts"]
    cap = inst.capture_calls[0] if inst.capture_calls else None
    return {
        "queries": n,
        "stages_s": C.rnd(stages, 3),
        "wall_s": round(wall, 3),
        "generation_s": round(gen, 3),
        "after_generation_s": round(after, 3),
        "after_generation_share": round(after / stages["total"], 4) if stages["total"] > 0 else math.nan,
        "target_met": stages["total"] > 0 and after / stages["total"] <= TARGET_AFTER_GEN,
        "activation_capture": cap,
        # Where the time goes per position: on CPU a decode position (batch × 1 token) costs several
        # prefill positions, so the activation pass's share depends on that ratio, not on batching.
        "positions": dict(inst.positions),
        "ms_per_position": {
            "generation": round(1e3 * gen / max(1, inst.positions["prefill"] + inst.positions["decode"]), 3),
            "activations": round(1e3 * stages["activations"] / max(1, inst.positions["activations"]), 3),
        },
        "activations_batched": bool(cap and cap["forward_passes"] == cap["expected_batched"]),
        "cache_hit_s": round(hit_s, 3),
        "cache_hit": bool(again.cache_hit),
        "pairs_kept": counts.get("kept_text"),
        "layers_edited": len(counts.get("layers_edited", [])),
        "degeneracy_rate": result.report["fit"]["degeneracy"].get("rate"),
    }


def to_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    m = report["model"]
    lines = [
        "# Fit cost per stage (method v2, self-generated pairs)", "",
        C.machine_md(report["machine"], report["command"]), "",
        f"Model {m['name']} ({m['model_type']}, {m['num_layers']} layers, {m['params_m']}M params, {m['dtype']}). "
        f"Generation: {s['char_tokens']} characteristic tokens + {s['answer_tokens']} answer tokens at most per "
        f"side, sampled (T=0.7, top-p 0.9), batch {s['gen_batch_size']} queries ({2 * s['gen_batch_size']} prompts); "
        f"activations batch {s['act_batch_size']} texts. Fresh cache per size; one run per size (a fit is "
        "minutes long, so load drift averages out within it). Queries: the 100 embedded prompts, then the same "
        "asked for brevity.", "",
    ]
    for r in report["runs"]:
        verdict = "MET" if r["target_met"] else "MISSED"
        lines.append(f"- {verdict} — {r['queries']} queries: after generation {r['after_generation_s']:.1f} s = "
                     f"{100 * r['after_generation_share']:.1f}% of the fit (target ≤ {100 * TARGET_AFTER_GEN:.0f}%)")
    lines.append("")
    header = ["stage"] + [f"{r['queries']} queries: s" for r in report["runs"]] + [f"{r['queries']}: %" for r in report["runs"]]
    body = []
    for st in [*STAGES, "total"]:
        row: list[Any] = [st]
        row += [f"{r['stages_s'][st]:.2f}" for r in report["runs"]]
        row += [f"{100 * r['stages_s'][st] / r['stages_s']['total']:.1f}" if r["stages_s"]["total"] else "–"
                for r in report["runs"]]
        body.append(row)
    lines += [C.md_table(header, body), ""]
    lines.append("Activation capture (one batched pass per batch of texts, LM head skipped):")
    for r in report["runs"]:
        c = r["activation_capture"] or {}
        lines.append(f"- {r['queries']} queries: {c.get('texts')} texts → {c.get('forward_passes')} forward passes "
                     f"(expected {c.get('expected_batched')} for batch {c.get('batch_size')}): "
                     f"{'batched' if r['activations_batched'] else 'NOT batched as expected'}")
    lines.append("")
    if all("positions" in r for r in report["runs"]):
        lines.append("Positions through the model (batch × length, padding included) and time per position:")
        for r in report["runs"]:
            p, ms = r["positions"], r["ms_per_position"]
            lines.append(f"- {r['queries']} queries: generation {p['prefill']} prefill + {p['decode']} decode positions, "
                         f"{ms['generation']:.2f} ms each; activations {p['activations']} positions, "
                         f"{ms['activations']:.2f} ms each")
        lines.append("")
    lines.append("Cache hit (second identical call, no generation, no activations): " + ", ".join(
        f"{r['queries']} queries {r['cache_hit_s']:.2f} s" + ("" if r["cache_hit"] else " (NOT a hit)")
        for r in report["runs"]))
    lines.append("")
    lines.append("Pairs kept / layers edited / degeneracy rate: " + "; ".join(
        f"{r['queries']}: {r['pairs_kept']} / {r['layers_edited']} / {r['degeneracy_rate']}" for r in report["runs"]))
    return "\n".join(lines) + "\n"


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in report["runs"]:
        for st in [*STAGES, "total"]:
            rows.append({"model": report["model"]["name"], "queries": r["queries"], "stage": st,
                         "seconds": r["stages_s"][st],
                         "share": round(r["stages_s"][st] / r["stages_s"]["total"], 4) if r["stages_s"]["total"] else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    ap.add_argument("--queries", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--char-tokens", type=int, default=50)
    ap.add_argument("--answer-tokens", type=int, default=200)
    ap.add_argument("--gen-batch-size", type=int, default=16)
    ap.add_argument("--act-batch-size", type=int, default=16)
    ap.add_argument("--min-pairs", type=int, default=4)
    ap.add_argument("--cos-threshold", type=float, default=0.8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke mode: 4 and 8 queries, 4+6 tokens, loose filter")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    C.setup_logging()
    if args.quick:
        args.queries, args.char_tokens, args.answer_tokens = [4, 8], 4, 6
        args.gen_batch_size, args.act_batch_size, args.min_pairs, args.cos_threshold = 4, 4, 1, 1.0
    C.set_threads(args.threads)
    machine = C.machine_info(args.device)
    model, tok, meta = C.load_model(args.model, args.dtype, args.device)
    t0 = time.perf_counter()
    runs = []
    for n in args.queries:
        logger.info("fit on %d queries", n)
        runs.append(run_one(model, tok, n, args))
        logger.info("%d queries: %s", n, runs[-1]["stages_s"])
    machine["loadavg_end"] = C.loadavg()
    report = {
        "bench": "fit_cost", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": C.command_line(),
        "machine": machine, "model": meta, "wall_s": round(time.perf_counter() - t0, 1),
        "settings": {k: getattr(args, k) for k in ("char_tokens", "answer_tokens", "gen_batch_size",
                                                   "act_batch_size", "min_pairs", "cos_threshold", "seed")}
        | {"method": "v2", "target_after_generation_share": TARGET_AFTER_GEN},
        "runs": runs,
    }
    stem = f"fit_cost_{args.tag or args.device.split(':')[0]}"
    report["stem"] = stem
    C.write_json(args.out / f"{stem}.json", report)
    C.write_csv(args.out / f"{stem}.csv", csv_rows(report))
    C.atomic_write(args.out / f"{stem}.md", to_markdown(report))
    logger.info("wrote %s.{json,csv,md} in %.0fs", args.out / stem, report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
