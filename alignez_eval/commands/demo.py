"""`alignez-eval demo`: `compare` on the embedded offline models and prompts.

base gemma-3-270m (base prompt variant) vs the tuned reference SmolLM2-135M-Instruct (chat
variant + its template), with AlignEZ (v2) and CAA fitted on the evaluation prompts themselves,
judged by the default judge (alignez_eval/defaults.py; --judge to change it). Every model comes
from a pinned PyPI wheel converted once to a local directory: no hub, no network after set-up.
The defaults were sized for 2 CPU cores with fast bf16 (reports/demo/README.md); on an AVX2-only CPU
(fp32) generation and self-generation take several times longer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from alignez_eval.commands.compare import add_edit_args, edit_settings, fit_settings, parse_kv, print_report
from alignez_eval.commands.options import add_judge_option
from alignez_eval.defaults import DEFAULT_JUDGE, DEFAULT_JUDGE_AGREEMENT

logger = logging.getLogger(__name__)

BASE = "gemma-3-270m"
TUNED = "smollm2-135m-instruct"
INSTRUCT = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
TASK = "alignez_embedded"

# Sized for 2 CPU cores (measured, reports/demo/README.md): bf16 generation, all 48 prompts
# in one batch (batch 48 ran ~12% faster than 2 x 24 for gemma-3-270m; batch 1 is ~10x slower);
# 48 prompts is the least that gives a net win a usable CI (about +-20 points).
DEFAULT_LIMIT = 48
DEFAULT_MAX_GEN_TOKS = 96
DEFAULT_BATCH = 48
# Self-generation is the costliest stage (sampling over gemma's 262k vocabulary): shorter
# characteristics and answers than the paper's ~50/200 tokens keep the fit within budget.
DEFAULT_FIT = {"answer_tokens": 64, "char_tokens": 32, "gen_batch_size": 48, "act_batch_size": 48}
DEFAULT_JUDGE_CHECK_N = 4
DEFAULT_JUDGE_BATCH = 8
# The default judge's agreement with GPT-4 on held-out AlpacaEval pairs, stated in the demo's
# leaderboard header; the report flags it if the demo's judge differs.
JUDGE_REFERENCE = DEFAULT_JUDGE_AGREEMENT


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="every prompt, plus AlignEZ applied to the two instruct models (Δ%% vs unedited)")
    p.add_argument("--limit", type=int, help=f"prompts (default {DEFAULT_LIMIT}; --full: all)")
    p.add_argument("--max-gen-toks", type=int, default=DEFAULT_MAX_GEN_TOKS, help="new tokens per answer")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="generation batch size")
    add_judge_option(p)
    p.add_argument("--judge-batch-size", type=int,
                   help=f"inputs per forward pass of a local judge (hf, rm, scorer), over the spec's own batch_size "
                        f"(default: {DEFAULT_JUDGE_BATCH} for the default judge, else the spec's)")
    p.add_argument("--judge-check-n", type=int, default=DEFAULT_JUDGE_CHECK_N,
                   help="prompts of the judge sanity check (x5 gradings each)")
    p.add_argument("--methods", default="alignez,caa")
    p.add_argument("--judge-reference", type=Path, default=JUDGE_REFERENCE, metavar="FILE",
                   help="agreement.json stated in the leaderboard header (default: the packaged measurement of "
                        "the default judge against GPT-4 on held-out AlpacaEval pairs)")
    p.add_argument("--name", help="report name (default demo, or demo-full)")
    p.add_argument("--work-dir", type=Path, help="default runs/NAME")
    p.add_argument("--report-root", type=Path, default=Path("reports"))
    p.add_argument("--dtype", default="auto",
                   help="dtype of the generating models; auto: bfloat16 where bf16 matmul is fast (GPU, CPUs with "
                        "native bf16), else float32 (decided by a short measurement; see alignez_eval.dtypes)")
    add_edit_args(p)


def main(args: argparse.Namespace) -> int:
    from alignez_eval.models import model_path
    from alignez_eval.pipeline.compare import CompareConfig, run_compare
    from alignez_eval.pipeline.compare_config import configured_judge

    name = args.name or ("demo-full" if args.full else "demo")
    limit = args.limit if args.limit is not None else (None if args.full else DEFAULT_LIMIT)
    judge_batch_size = args.judge_batch_size
    if judge_batch_size is None and args.judge == DEFAULT_JUDGE:
        judge_batch_size = DEFAULT_JUDGE_BATCH
    configured_judge(args.judge, judge_batch_size)  # a bad judge fails here, before any model is prepared
    t0 = time.perf_counter()
    paths = {m: model_path(m) for m in (BASE, TUNED, *(INSTRUCT if args.full else ()))}
    t_models = time.perf_counter() - t0
    logger.info("models ready in %.1f s (first-time preparation is timed separately from the demo)", t_models)

    from alignez_eval.dtypes import resolve_dtype

    dtype = f"dtype={resolve_dtype(args.dtype)}"
    fit = {**DEFAULT_FIT, **{k: v for k, v in fit_settings(args).items() if v is not None}}
    cfg = CompareConfig(
        base=f"pretrained={paths[BASE]},{dtype}",
        tuned=f"pretrained={paths[TUNED]},{dtype}",
        tasks=[TASK],
        judge=args.judge,
        judge_batch_size=judge_batch_size,
        name=name,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        limit=limit,
        edit=edit_settings(args),
        fit=fit,
        gen_kwargs=parse_kv([f"max_gen_toks={args.max_gen_toks}"], "--max-gen-toks"),
        batch_size=args.batch_size,
        work_dir=args.work_dir,
        report_root=args.report_root,
        edited_instruct=[f"pretrained={paths[m]},{dtype}" for m in INSTRUCT] if args.full else [],
        judge_check_n=args.judge_check_n,
        judge_reference=args.judge_reference,
    )
    t1 = time.perf_counter()
    result = run_compare(cfg)
    t_run = time.perf_counter() - t1
    timing = {"models_prepare_s": round(t_models, 1), "compare_s": round(t_run, 1),
              "steps_run": len(result.cache.ran), "steps_skipped": len(result.cache.skipped),
              "cpu_count": os.cpu_count(), "torch_threads": _threads(),
              "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    (Path(cfg.work_dir) / "demo_timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    for rname, files in result.reports.items():
        if rname != cfg.name:
            print_report(files, f"report ({rname})")
    print_report(result.report, "report")
    print(f"demo: {t_run:.0f} s for the comparison ({timing['steps_run']} steps run, "
          f"{timing['steps_skipped']} cached) + {t_models:.0f} s to locate/prepare the models")
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()
