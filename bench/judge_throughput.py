"""Judge throughput: judgments per second of the `hf` backend (batched) and of the `openai` backend
against a loopback server with a fixed artificial latency, at concurrency 1, 8 and 32; and the time
of a re-run that finds every judgment in the cache.

A judgment is one backend request (one order of a pair): pairwise mode asks both orders, so a
pair costs two. The loopback server (its own process) sleeps `--latency` seconds per request, answers a valid
pairwise JSON verdict and records how many requests were in flight at once, which shows the
concurrency bound holding (max in flight ≤ concurrency). With N requests and latency L the ideal
rate is min(c, N)/L; "efficiency" is measured/ideal.

Pairs: the embedded prompts, each with two answers made of other prompts' text (deterministic,
~40-80 words): the judge's cost depends on lengths, not on the answers' quality.

    python bench/judge_throughput.py                        # hf judge smollm2-135m-instruct (bf16) + openai
    python bench/judge_throughput.py --hf-model qwen2.5-coder-0.5b-instruct --latency 0.2
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _common as C

logger = logging.getLogger("bench.judge_throughput")

KEY_ENV = "ALIGNEZ_BENCH_JUDGE_KEY"


def _serve(latency: float, hits: Any, in_flight: Any, max_in_flight: Any, port_q: Any) -> None:
    """The server process: OpenAI-compatible /chat/completions on 127.0.0.1 that waits `latency` s
    per request and answers a valid pairwise verdict, counting requests in shared memory."""

    def bump(counter: Any, by: int) -> None:
        with counter.get_lock():
            counter.value += by

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would
        # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms
        # to every response — an artefact of http.server, not of the backend under test.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 — http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            bump(hits, 1)
            with in_flight.get_lock():
                in_flight.value += 1
                with max_in_flight.get_lock():
                    max_in_flight.value = max(max_in_flight.value, in_flight.value)
            try:
                req = json.loads(body)
                user = req["messages"][-1]["content"]
                time.sleep(latency)
                verdict: dict[str, Any] = {a: {"rationale": "bench", "choice": "tie"} for a in
                                           ("helpfulness", "clarity", "factuality", "depth", "engagement", "safety")}
                verdict["overall"] = "A" if len(user) % 2 else "B"
                payload = json.dumps({
                    "id": "bench", "object": "chat.completion", "model": req.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(verdict)},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 60},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                bump(in_flight, -1)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_q.put(httpd.server_address[1])
    httpd.serve_forever()


class LatencyServer:
    """The loopback judge server in its own process (spawned), so that its request handling does not
    compete with the client for the GIL: what is measured is the client."""

    def __init__(self, latency: float) -> None:
        ctx = mp.get_context("spawn")
        self.latency = latency
        self._hits, self._in_flight, self._max = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
        self._port_q = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(latency, self._hits, self._in_flight, self._max, self._port_q),
                                daemon=True)
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def hits(self) -> int:
        return int(self._hits.value)

    @property
    def max_in_flight(self) -> int:
        return int(self._max.value)

    def reset(self) -> None:
        with self._hits.get_lock():
            self._hits.value = 0
        with self._max.get_lock():
            self._max.value = 0

    def __enter__(self) -> LatencyServer:
        self.proc.start()
        self.port = int(self._port_q.get(timeout=60))
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(timeout=10)


def make_items(n_pairs: int) -> list[Any]:
    from alignez_eval.judge.engine import PairItem

    prompts = [p["instruction"] for p in C.load_prompts()]
    m = len(prompts)
    items = []
    for i in range(n_pairs):
        base = " ".join(prompts[(i + j) % m] for j in (1, 2, 3))
        cand = " ".join(prompts[(i + j) % m] for j in (4, 5))
        items.append(PairItem(family="bench", doc_id=f"b{i}", instruction=prompts[i % m], baseline=base,
                              candidate=cand))
    return items


def timed_judge(spec: Any, items: list[Any], cache_path: Path | None, backend: Any = None) -> dict[str, Any]:
    from alignez_eval.judge.cache import JudgmentCache
    from alignez_eval.judge.engine import Judge

    cache = JudgmentCache(cache_path) if cache_path is not None else None
    try:
        judge = Judge(spec, cache, backend=backend)
        t0 = time.perf_counter()
        records = judge.judge_pairs(items, desc="bench")
        dt = time.perf_counter() - t0
    finally:
        if cache is not None:
            cache.close()
    errors = sum(1 for r in records if r["verdict"] == "error")
    calls = int(judge.stats["calls"])
    return {"seconds": round(dt, 4), "judgments": calls, "cache_hits": int(judge.stats["cache_hits"]),
            "errors": errors, "per_s": round(calls / dt, 3) if dt > 0 and calls else None}


def bench_hf(args: argparse.Namespace, items: list[Any], tmp: Path) -> dict[str, Any]:
    from alignez_eval.judge.backends.hf import HFBackend
    from alignez_eval.judge.spec import parse_judge_spec

    model, tok, meta = C.load_model(args.hf_model, args.hf_dtype, args.device)
    runs: dict[int, list[dict[str, Any]]] = {bs: [] for bs in args.hf_batch}

    def spec_for(bs: int) -> Any:
        return parse_judge_spec({"backend": "hf", "model": meta["name"], "mode": "pairwise", "batch_size": bs,
                                 "dtype": meta["dtype"], "max_answer_tokens": 256}).using(model, tok)

    backends = {bs: HFBackend(spec_for(bs)) for bs in args.hf_batch}
    timed_judge(spec_for(args.hf_batch[0]), items[:2], None, backends[args.hf_batch[0]])  # warm-up
    for r in range(args.repeats):
        for bs in (args.hf_batch if r % 2 == 0 else list(reversed(args.hf_batch))):  # interleaved
            runs[bs].append(timed_judge(spec_for(bs), items, None, backends[bs]))
    out_rows = []
    for bs, rs in runs.items():
        rates = [x["per_s"] for x in rs if x["per_s"]]
        out_rows.append({"batch_size": bs, "judgments": rs[0]["judgments"], "per_s": C.rnd(C.summary(rates), 3),
                         "seconds": C.rnd(C.summary([x["seconds"] for x in rs]), 3),
                         "errors": sum(x["errors"] for x in rs)})
    # Cache-hit re-run: first pass fills an on-disk cache, the second (a new Judge) must find it all.
    bs = max(args.hf_batch)
    cache_path = tmp / "hf.sqlite"
    fill = timed_judge(spec_for(bs), items, cache_path, backends[bs])
    again = timed_judge(spec_for(bs), items, cache_path, backends[bs])
    return {"model": meta, "mode": "pairwise (label probabilities, both orders)", "max_answer_tokens": 256,
            "rows": out_rows, "cache_fill": fill, "cache_rerun": again}


def bench_openai(args: argparse.Namespace, items: list[Any], tmp: Path) -> dict[str, Any]:
    from alignez_eval.judge.spec import parse_judge_spec

    os.environ.setdefault(KEY_ENV, "bench")
    rows = []
    with LatencyServer(args.latency) as server:
        def spec_for(c: int) -> Any:
            return parse_judge_spec({"backend": "openai", "model": "bench-judge", "base_url": server.url,
                                     "api_key_env": KEY_ENV, "concurrency": c, "max_retries": 0,
                                     "timeout_s": 30.0, "mode": "pairwise"})

        timed_judge(spec_for(1), items[:1], None)  # warm-up: imports, first connection
        for c in args.concurrency:
            server.reset()
            res = timed_judge(spec_for(c), items, None)
            n = res["judgments"]
            ideal = min(c, n) / args.latency if n else None
            rows.append({"concurrency": c, **res, "server_hits": server.hits,
                         "max_in_flight": server.max_in_flight, "bound_held": server.max_in_flight <= c,
                         "ideal_per_s": round(ideal, 3) if ideal else None,
                         "efficiency": round(res["per_s"] / ideal, 3) if ideal and res["per_s"] else None})
        c = max(args.concurrency)
        cache_path = tmp / "openai.sqlite"
        server.reset()
        fill = timed_judge(spec_for(c), items, cache_path)
        server.reset()
        again = timed_judge(spec_for(c), items, cache_path)
        again["server_hits"] = server.hits
    return {"latency_s": args.latency, "rows": rows, "cache_fill": fill, "cache_rerun": again}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = ["# Judge throughput", "", C.machine_md(report["machine"], report["command"]), "",
             f"Pairwise, both orders: hf {s['pairs']} pairs → {2 * s['pairs']} judgments per run, openai "
             f"{s['openai_pairs']} pairs → {2 * s['openai_pairs']} judgments per run; answers are other prompts' text "
             "(deterministic). hf rates are medians over interleaved repeats.", ""]
    hf = report.get("hf")
    if hf:
        m = hf["model"]
        lines += [f"## hf backend — judge {m['name']} ({m['params_m']}M params, {m['dtype']}, {m['device']}), "
                  f"{hf['mode']}, answers cut at {hf['max_answer_tokens']} tokens", ""]
        lines.append(C.md_table(
            ["batch size", "judgments", "judgments/s median [IQR]", "seconds median", "errors"],
            [[r["batch_size"], r["judgments"],
              f"**{r['per_s']['median']:.2f}** [{r['per_s']['q25']:.2f}, {r['per_s']['q75']:.2f}]",
              f"{r['seconds']['median']:.2f}", r["errors"]] for r in hf["rows"]]))
        f, a = hf["cache_fill"], hf["cache_rerun"]
        lines += ["", f"Cache: filling run {f['seconds']:.2f} s ({f['judgments']} judgments); re-run "
                  f"{1000 * a['seconds']:.1f} ms with {a['judgments']} judge calls and {a['cache_hits']} cache hits.", ""]
    oa = report.get("openai")
    if oa:
        lines += [f"## openai backend — loopback server, fixed latency {oa['latency_s']:.3f} s per request", ""]
        lines.append(C.md_table(
            ["concurrency", "judgments", "seconds", "judgments/s", "ideal min(c,N)/L", "efficiency", "max in flight",
             "bound held", "errors"],
            [[r["concurrency"], r["judgments"], f"{r['seconds']:.2f}", f"**{r['per_s']:.2f}**",
              f"{r['ideal_per_s']:.1f}", f"{r['efficiency']:.2f}", r["max_in_flight"],
              "yes" if r["bound_held"] else "NO", r["errors"]] for r in oa["rows"]]))
        f, a = oa["cache_fill"], oa["cache_rerun"]
        lines += ["", f"Cache: filling run {f['seconds']:.2f} s ({f['judgments']} judgments); re-run "
                  f"{1000 * a['seconds']:.1f} ms with {a['judgments']} judge calls, {a['cache_hits']} cache hits and "
                  f"{a['server_hits']} requests reaching the server.", ""]
    return "\n".join(lines)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if report.get("hf"):
        for r in report["hf"]["rows"]:
            rows.append({"backend": "hf", "model": report["hf"]["model"]["name"], "batch_size": r["batch_size"],
                         "concurrency": None, "judgments": r["judgments"], "per_s": r["per_s"]["median"],
                         "seconds": r["seconds"]["median"]})
        a = report["hf"]["cache_rerun"]
        rows.append({"backend": "hf", "model": report["hf"]["model"]["name"], "batch_size": None,
                     "concurrency": None, "judgments": a["judgments"], "per_s": None, "seconds": a["seconds"],
                     "note": "cache-hit re-run"})
    if report.get("openai"):
        for r in report["openai"]["rows"]:
            rows.append({"backend": "openai", "model": "loopback", "batch_size": None, "concurrency": r["concurrency"],
                         "judgments": r["judgments"], "per_s": r["per_s"], "seconds": r["seconds"],
                         "note": f"latency {report['openai']['latency_s']} s, max in flight {r['max_in_flight']}"})
        a = report["openai"]["cache_rerun"]
        rows.append({"backend": "openai", "model": "loopback", "batch_size": None, "concurrency": None,
                     "judgments": a["judgments"], "per_s": None, "seconds": a["seconds"], "note": "cache-hit re-run"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf-model", default="smollm2-135m-instruct", help="embedded judge name or HF directory")
    ap.add_argument("--hf-dtype", default="bfloat16", help="judge weights (the hf backend's default is bfloat16)")
    ap.add_argument("--hf-batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--pairs", type=int, default=16, help="pairs per run (2 judgments each)")
    ap.add_argument("--repeats", type=int, default=2, help="hf runs per batch size (interleaved)")
    ap.add_argument("--openai-pairs", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1, help="loopback server latency per request (s)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke mode: 3 pairs, latency 0.02 s, concurrency 1 4")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (the judge's own included)")
    args = ap.parse_args(argv)
    if args.no_progress:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm ≥ 4.66 reads its defaults from TQDM_* variables
    C.setup_logging()
    if args.quick:
        args.pairs, args.openai_pairs, args.latency, args.concurrency, args.repeats = 3, 4, 0.02, [1, 4], 1
        args.hf_batch = [1, 4]
    C.set_threads(args.threads)
    machine = C.machine_info(args.device)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"bench": "judge_throughput", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "command": C.command_line(), "machine": machine,
                              "settings": {"pairs": args.pairs, "openai_pairs": args.openai_pairs,
                                           "repeats": args.repeats, "latency_s": args.latency,
                                           "concurrency": args.concurrency, "hf_batch": args.hf_batch}}
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp:
        if not args.skip_hf:
            report["hf"] = bench_hf(args, make_items(args.pairs), Path(tmp))
        report["openai"] = bench_openai(args, make_items(args.openai_pairs), Path(tmp))
    machine["loadavg_end"] = C.loadavg()
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    stem = f"judge_throughput_{args.tag or args.device.split(':')[0]}"
    report["stem"] = stem
    C.write_json(args.out / f"{stem}.json", report)
    C.write_csv(args.out / f"{stem}.csv", csv_rows(report))
    C.atomic_write(args.out / f"{stem}.md", to_markdown(report))
    logger.info("wrote %s.{json,csv,md} in %.0fs", args.out / stem, report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
