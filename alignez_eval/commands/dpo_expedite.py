"""`alignez-eval dpo-expedite`: the paper's "AlignEZ expedites DPO" experiment in one cached command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from alignez_eval.commands.compare import add_edit_args, edit_settings, fit_settings, print_report

logger = logging.getLogger(__name__)

EPILOG = """\
example (the committed reports/dpo_expedite run; see docs/dpo.md):
  alignez-eval dpo-expedite --model gemma-3-270m --pref-data hh-rlhf/harmless-base/test.jsonl.gz \\
      --tuned pretrained=smollm2-135m-instruct,dtype=float32 --pool 96 --shares 8,96 \\
      --eval-pairs 60 --eval-prompts 32 --prefacc-pairs 30 --limit 16 --max-gen-toks 48 \\
      --dpo-max-length 128 --dpo-batch-size 2 --fit-arg answer_tokens=48,char_tokens=24

What runs (every step cached under --work-dir, default runs/NAME):
  1. the preference file's pairs are split once, disjoint by prompt: --eval-pairs + --eval-prompts held
     out, --pool training pairs; --shares are nested prefixes of the training pairs
  2. train-dpo per share: a LoRA adapter (TRL DPOTrainer) on base --model
  3. compare on the held-out prompts, judged against the base: base+AlignEZ, each DPO model, DPO(share)
     +AlignEZ for --edit-shares (fitted on that DPO model's own generations), the --tuned reference;
     with % of the base-to-tuned gap closed
  4. preference accuracy of every system on the held-out pairs (judge-free; edits applied in
     loglikelihood too)
Outputs: reports/NAME/leaderboard.{md,csv,png} (compare's) and reports/NAME/expedite.{md,csv,png}.
Needs the [dpo] extra (pip install 'alignez-eval[dpo]').
"""


def configure(p: argparse.ArgumentParser) -> None:
    from alignez_eval.dpo.train import DPOSettings

    p.epilog = EPILOG
    p.add_argument("--model", required=True, help="base model: directory or embedded name (gemma-3-270m)")
    p.add_argument("--pref-data", required=True, type=Path, help="preference pool: HH-RLHF transcripts or "
                   "prompt/chosen/rejected (.jsonl, .jsonl.gz, .json)")
    p.add_argument("--tuned", help="model_args of the tuned reference (gap closed is relative to it)")
    p.add_argument("--judge", help="judge spec (default: the project's default judge, alignez_eval.defaults)")
    p.add_argument("--judge-reference", type=Path, help="agreement.json stated in the report (default: the "
                   "default judge's, when the default judge is used)")
    p.add_argument("--name", default="dpo_expedite", help="reports/NAME/ (default %(default)s)")
    s = p.add_argument_group("the pool and the shares")
    s.add_argument("--pool", type=int, default=400, help="training pool size (default %(default)s)")
    s.add_argument("--shares", default="5%,25%,100%", help="comma-separated shares or counts of the pool, small "
                   "to large (default %(default)s)")
    s.add_argument("--edit-shares", help="shares whose DPO model also gets +AlignEZ (default: the smallest)")
    s.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs for preference accuracy")
    s.add_argument("--eval-prompts", type=int, default=48, help="held-out single-turn prompts, judged")
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--prefacc-pairs", type=int, help="score preference accuracy on the first N held-out pairs "
                   "only (default: all --eval-pairs; each pair is two forwards per system)")
    t = p.add_argument_group("LoRA and DPO settings (as train-dpo)")
    for f in dataclasses.fields(DPOSettings):
        t.add_argument("--dpo-" + f.name.replace("_", "-"), dest="dpo_" + f.name, default=None,
                       help=f"(default {f.default})")
    r = p.add_argument_group("generation and judging")
    r.add_argument("--dtype", default="float32", help="dtype of the evaluated models (default %(default)s)")
    r.add_argument("--max-gen-toks", type=int, default=96, help="new tokens per answer (default %(default)s)")
    r.add_argument("--limit", type=int, help="judge (and fit AlignEZ on) this many held-out prompts, spread over "
                   "them (default: all --eval-prompts)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--work-dir", type=Path)
    r.add_argument("--report-root", type=Path, default=Path("reports"))
    r.add_argument("--no-judge-check", action="store_true")
    r.add_argument("--judge-check-n", type=int, default=4)
    p.add_argument("--train-only", action="store_true", help="train the adapters and stop (a later run reuses them)")
    p.add_argument("--no-judge", action="store_true", help="fits, generations and preference accuracy only; a "
                   "later run reuses them and judges")
    p.add_argument("--no-generate", action="store_true", help="fits and preference accuracy only (no generation, "
                   "no judge): the judge-free half of the experiment")
    add_edit_args(p)


def main(args: argparse.Namespace) -> int:
    from alignez_eval.commands import demo
    from alignez_eval.dpo.expedite import ExpediteConfig, run_expedite
    from alignez_eval.dpo.train import DPOSettings

    dpo = DPOSettings.from_mapping({f.name: getattr(args, "dpo_" + f.name) for f in dataclasses.fields(DPOSettings)})
    judge, reference = args.judge, args.judge_reference
    if judge is None and (args.train_only or args.no_judge or args.no_generate):
        judge = "none (train only)"
    elif judge is None:
        from alignez_eval.defaults import DEFAULT_JUDGE, DEFAULT_JUDGE_AGREEMENT

        judge = DEFAULT_JUDGE
        reference = reference or DEFAULT_JUDGE_AGREEMENT  # its measured agreement, stated in the header
        logger.info("judge: the default (%s), agreement from %s", judge, reference)
    fit = {**demo.DEFAULT_FIT, **{k: v for k, v in fit_settings(args).items() if v is not None}}
    cfg = ExpediteConfig(
        model=args.model, pref_data=args.pref_data, judge=judge, name=args.name, tuned=args.tuned, pool=args.pool,
        shares=[s.strip() for s in args.shares.split(",") if s.strip()],
        edit_shares=[s.strip() for s in args.edit_shares.split(",")] if args.edit_shares else None,
        eval_pairs=args.eval_pairs, eval_prompts=args.eval_prompts, split_seed=args.split_seed, dpo=dpo,
        dtype=args.dtype, max_gen_toks=args.max_gen_toks, batch_size=args.batch_size, fit=fit,
        edit=edit_settings(args), seed=args.seed, work_dir=args.work_dir, report_root=args.report_root,
        judge_check=not args.no_judge_check, judge_check_n=args.judge_check_n, judge_reference=reference,
        train_only=args.train_only, judge_enabled=not args.no_judge,
        generate_enabled=not args.no_generate, prefacc_pairs=args.prefacc_pairs,
        limit=args.limit,
    )
    out = run_expedite(cfg)
    if args.train_only:
        print(f"adapters: {out['adapters']}")
        return 0
    if args.no_judge or args.no_generate:
        for name, a in out["accuracy"].items():
            print(f"{name:28s} preference accuracy {100 * a['accuracy']:.1f}% "
                  f"[{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]  mean margin {a['mean_margin']:+.3f}")
        return 0
    print_report(out["report"], "leaderboard")
    print(Path(out["summary"]["md"]).read_text(encoding="utf-8"))
    print(f"expedite summary: {out['summary']['md']}")
    return 0
