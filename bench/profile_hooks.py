"""Where the edit's time goes: one overhead.py workload under torch.profiler, hf and alignez-hf
on the same weights, with the operator table of each and the difference in operator calls.

    python bench/profile_hooks.py --workload gen_b1 --k 16 --layers all
    python bench/profile_hooks.py --workload ll_b8 --k 16 --out reports/bench/profile_ll_b8.txt

The extra operator calls per decoding step (alignez minus hf, divided by steps) are the hook's
dispatch count; their self CPU time is what the edit costs beyond the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as C
import overhead as O


def profile(lm: Any, w: O.Workload, requests: list[Any], rounds: int) -> tuple[Any, float]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    O.run_workload(lm, w, requests)  # warm
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(rounds):
            O.run_workload(lm, w, requests)
        dt = time.perf_counter() - t0
    return prof, dt / rounds


def hook_share(az: Any, w: O.Workload, requests: list[Any], rounds: int) -> dict[str, float]:
    """Time spent inside the edit hooks themselves, as a share of the whole call (no profiler: each
    hook is wrapped in a perf_counter pair, ~0.4 µs). Unlike a wall-time ratio against hf, this
    isolates the edit's own cost from run-to-run noise, so a before/after change is visible."""
    import alignez_eval.editing.hooks as H

    spent = [0.0, 0]
    orig = H._make_hook

    def timed_make(*a: Any, **kw: Any) -> Any:
        hook = orig(*a, **kw)

        def wrapped(m: Any, i: Any, o: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return hook(m, i, o)
            finally:
                spent[0] += time.perf_counter() - t0
                spent[1] += 1

        return wrapped

    H._make_hook = timed_make
    try:
        O.run_workload(az, w, requests)  # warm
        spent[:] = [0.0, 0]
        t0 = time.perf_counter()
        for _ in range(rounds):
            O.run_workload(az, w, requests)
        total = time.perf_counter() - t0
    finally:
        H._make_hook = orig
    return {"share": spent[0] / total, "us_per_call": 1e6 * spent[0] / max(1, spent[1]), "calls": spent[1],
            "seconds": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--workload", default="gen_b1", choices=["gen_b1", "gen_b8", "ll_b8"])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--positions", default="last")
    ap.add_argument("--gate", default="none")
    ap.add_argument("--max-gen-toks", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the text report here")
    ap.add_argument("--hook-share", action="store_true",
                    help="instead of the profiler tables: the share of the call spent inside the edit hooks")
    args = ap.parse_args(argv)
    C.setup_logging()
    C.set_threads(args.threads)
    from lm_eval.models.huggingface import HFLM

    from alignez_eval.editing.random_edit import random_edit
    from model_adapters.alignez_hf import AlignEZHFLM

    model, tok, meta = C.load_model(args.model, args.dtype)
    w = {"gen_b1": O.Workload("gen_b1", "generate_until", 1, 2), "gen_b8": O.Workload("gen_b8", "generate_until", 8, 8),
         "ll_b8": O.Workload("ll_b8", "loglikelihood", 8, 8)}[args.workload]
    requests = O.make_requests(w, [p["instruction"] for p in C.load_prompts()], args.max_gen_toks)
    hf = HFLM(pretrained=model, tokenizer=tok, batch_size=8)
    az = AlignEZHFLM(pretrained=model, tokenizer=tok, batch_size=8,
                     edit=random_edit(model, k_harm=args.k, k_help=args.k, seed=1000 + args.k, gate="none"),
                     layers=args.layers, positions=args.positions, gate=args.gate, n_layers=5)
    if args.hook_share:
        r = hook_share(az, w, requests, args.rounds)
        text = (f"hook share: {args.workload} {meta['name']} ({meta['dtype']}, {C.set_threads(args.threads)} thr) "
                f"k={args.k} layers={args.layers} positions={args.positions} gate={args.gate}: "
                f"{100 * r['share']:.2f}% of {r['seconds']:.1f} s inside {r['calls']} hook calls "
                f"({r['us_per_call']:.1f} µs each)")
        print(text)
        if args.out:
            C.atomic_write(args.out, text + "\n")
        return 0
    prof_hf, t_hf = profile(hf, w, requests, args.rounds)
    prof_az, t_az = profile(az, w, requests, args.rounds)
    ka_hf, ka_az = prof_hf.key_averages(), prof_az.key_averages()
    calls_hf = Counter({e.key: e.count for e in ka_hf})
    calls_az = Counter({e.key: e.count for e in ka_az})
    self_hf = {e.key: e.self_cpu_time_total for e in ka_hf}
    self_az = {e.key: e.self_cpu_time_total for e in ka_az}
    steps = (args.max_gen_toks * (w.n_prompts // w.batch) if w.request == "generate_until" else 1) * args.rounds
    extra = sorted(((calls_az[k] - calls_hf.get(k, 0), k) for k in calls_az if calls_az[k] != calls_hf.get(k, 0)),
                   reverse=True)
    lines = [
        f"# profile: {args.workload} {meta['name']} ({meta['dtype']}), k={args.k} layers={args.layers} "
        f"positions={args.positions} gate={args.gate}",
        C.machine_md({**C.machine_info("cpu"), "loadavg_end": C.loadavg()}, C.command_line()),
        f"wall per round (under the profiler): hf {t_hf:.3f} s, alignez {t_az:.3f} s, ratio {t_az / t_hf:.3f}",
        f"model forwards (decoding steps or batches) per measurement: {steps}",
        "",
        "## extra operator calls (alignez − hf), per forward, with the self CPU time difference",
    ]
    for d, k in extra[: args.top]:
        dt = (self_az.get(k, 0) - self_hf.get(k, 0)) / 1e3
        lines.append(f"{k:45s} {d / steps:8.1f} calls/forward   Δself {dt:9.1f} ms total")
    lines += ["", "## alignez-hf operators by self CPU time", ka_az.table(sort_by="self_cpu_time_total", row_limit=args.top),
              "## hf operators by self CPU time", ka_hf.table(sort_by="self_cpu_time_total", row_limit=args.top)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        C.atomic_write(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
