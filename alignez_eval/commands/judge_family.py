"""`alignez-eval judge-family`: a judge's view of a real base -> tuned family beside the reference's."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
Each FILE is AlpacaEval's model_outputs.json (a list of {instruction, output, generator}); all
answer the same instructions. The judge compares every system with --base on the instructions all
files share; the reference's nets come from its win rates against one common baseline through
Bradley-Terry (net = 100 (2 sigmoid(logit w_a - logit w_b) - 1)).

example (GPT-4's AlpacaEval 1 win rates vs text_davinci_003):
  alignez-eval judge-family --base phi-2.json --tuned phi-2-sft.json \\
      --reference-win-rates phi-2=26.5,phi-2-sft=68.5 --limit 150 --out reports/family/phi-2
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from alignez_eval.commands.options import add_cache_option, add_judge_option

    parser.epilog = EPILOG
    add_judge_option(parser)
    parser.add_argument("--base", required=True, type=Path, metavar="FILE", help="the base model's outputs")
    parser.add_argument("--tuned", required=True, type=Path, metavar="FILE", help="the tuned sibling's outputs")
    parser.add_argument("--candidate", type=Path, nargs="*", default=[], metavar="FILE",
                        help="systems between them (their gap closed is reported)")
    parser.add_argument("--reference-win-rates", default=None, metavar="NAME=PCT,...",
                        help="the reference annotator's win rate (percent) of each generator vs one common baseline")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="a seeded sample of N instructions")
    parser.add_argument("--exclude-instructions", type=Path, default=None, metavar="FILE",
                        help="annotation/outputs file whose instructions to leave out (e.g. the scorer's training data)")
    parser.add_argument("--held-out-instructions", action="store_true",
                        help="scorer judges: leave out the instructions the head was trained on")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="writes DIR/family.json and family.md")
    add_cache_option(parser)
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import json

    from alignez_eval.atomic import atomic_write_json, atomic_write_text
    from alignez_eval.judge.family import judge_family, parse_win_rates

    exclude = None
    if args.exclude_instructions:
        from alignez_eval.scorer.data import read_text

        text = read_text(args.exclude_instructions).strip()
        rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
        exclude = {r["instruction"] for r in rows if isinstance(r, dict) and "instruction" in r}
    cache = args.cache or (args.out / "cache.sqlite" if args.out else None)
    result = judge_family(args.judge, args.base, args.tuned, args.candidate,
                          win_rates=parse_win_rates(args.reference_win_rates), limit=args.limit,
                          exclude_instructions=exclude, held_out_instructions=args.held_out_instructions,
                          seed=args.seed, cache_path=cache)
    print(result["summary"])
    if args.out:
        atomic_write_json(args.out / "family.json", result)
        atomic_write_text(args.out / "family.md", result["summary"] + "\n")
        print(f"saved {args.out / 'family.json'}, family.md")
    return 0
