"""`alignez-eval judge-agreement`: how often does a judge agree with a reference annotator?"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignez_eval.commands.options import add_cache_option, add_judge_option

EPILOG = """\
FILE is AlpacaEval's annotations.json (a JSON list) or JSONL, one pair per record:
  {"instruction": ..., "output_1": ..., "output_2": ..., "preference": 1,
   "generator_1": "text_davinci_003", "generator_2": "alpaca-7b", "dataset": "helpful_base"}
preference: 1 = output_1 preferred, 2 = output_2, 0 or 1.5 = tie (int, float or string); fractional
values read <1.5 -> output_1, >1.5 -> output_2; null/NaN rows are skipped and counted.

The judge sees output_1 as the baseline and output_2 as the candidate (both orders in pairwise mode),
through the same cache as `alignez-eval judge`: a re-run makes no call for a committed judgment.

example:
  alignez-eval judge-agreement --judge hf:qwen2.5-coder-1.5b-instruct,mode=pairwise \\
      --reference annotations.json --out reports/agreement/qwen --limit 200
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_judge_option(parser)
    parser.add_argument("--reference", required=True, type=Path, metavar="FILE",
                        help="reference annotations (AlpacaEval annotations.json or JSONL)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="writes DIR/agreement.json, agreement.md, pairs.jsonl")
    add_cache_option(parser, " (default: DIR/cache.sqlite)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="judge N pairs (after the other filters): a seeded random sample kept in file "
                             "order (--limit-mode first: the first N)")
    parser.add_argument("--limit-mode", choices=["random", "first"], default="random",
                        help="which N pairs --limit keeps (default: random; AlpacaEval files are grouped by "
                             "generator, so the first N would be one model's)")
    parser.add_argument("--max-chars", type=int, default=None, metavar="C",
                        help="skip pairs where either output is longer than C characters (counted)")
    parser.add_argument("--generators", default=None, metavar="A,B",
                        help="only pairs whose generator_2 is one of these")
    parser.add_argument("--mode", choices=["pairwise", "single"], default=None, help="override the spec's mode")
    parser.add_argument("--margin", type=float, default=None, help="override the spec's tie margin")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit's sample and the bootstrap")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.judge.agreement_run import judge_agreement
    from alignez_eval.judge.spec import with_overrides

    spec = with_overrides(args.judge, args.mode, args.margin)
    generators = [g.strip() for g in args.generators.split(",") if g.strip()] if args.generators else None
    result = judge_agreement(spec, args.reference, args.out, cache_path=args.cache, generators=generators,
                             max_chars=args.max_chars, limit=args.limit, limit_mode=args.limit_mode,
                             seed=args.seed, n_boot=args.n_boot)
    s = result["stats"]
    print(result["summary"])
    print(f"  {int(s['calls'])} judge calls, {int(s['cache_hits'])} cached, cost ${s['cost_usd']:.4f}; "
          f"{args.out / 'agreement.json'}, agreement.md, pairs.jsonl")
    return 0
