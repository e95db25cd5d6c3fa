"""`alignez-eval judge-check`: does a judge prefer good answers to degraded ones?"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

from alignez_eval.commands.options import add_cache_option, add_judge_option
from alignez_eval.errors import DataError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Pairs each packaged prompt's good answer with four degradations (truncated, looped, "
                     "swapped with another prompt's answer, shuffled words) and reports the share the judge "
                     "gets right, per degradation, plus swap consistency in pairwise mode.\n"
                     "example: alignez-eval judge-check --judge hf:qwen2.5-coder-1.5b-instruct --n 8")
    add_judge_option(parser)
    parser.add_argument("--n", type=int, default=None, help="use the first N prompts (default: all 24)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="YAML/JSONL of {instruction, answer} to use instead of the packaged set")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON result file (default: reports/judge-check/<judge>.json)")
    add_cache_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled-words degradation")


def _load_prompts(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"prompt file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    data = ([json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl"
            else yaml.safe_load(text))
    if not isinstance(data, list) or not all(isinstance(d, dict) and "instruction" in d and "answer" in d
                                             for d in data):
        raise DataError(f"{path} must be a list of {{instruction, answer}} records")
    return data


def main(args: argparse.Namespace) -> int:
    from alignez_eval.atomic import atomic_write_text
    from alignez_eval.judge import judge_check, parse_judge_spec

    spec = parse_judge_spec(args.judge)
    prompts = _load_prompts(args.prompts) if args.prompts else None
    result = judge_check(spec, prompts=prompts, n=args.n, cache_path=args.cache, seed=args.seed)
    out = args.out or Path("reports") / "judge-check" / (re.sub(r"[^\w.-]+", "_", f"{spec.backend}-{spec.model}-{spec.mode}") + ".json")
    atomic_write_text(out, json.dumps(result, indent=2, ensure_ascii=False))
    print(result["summary"])
    print(f"saved {out}")
    return 0
