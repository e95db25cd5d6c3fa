"""`alignez-eval export`: a run's answers in another evaluator's format (AlpacaEval's model_outputs.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """\
RUN is anything `alignez-eval judge` takes: an lm-eval --output_path directory (run with
--log_samples), its model subdirectory, a results_*.json, or an AlpacaEval model_outputs.json.

examples:
  alignez-eval export runs/alignez --format alpaca_eval -o model_outputs.json
  alignez-eval export runs/suite --task alignez_alpaca_eval --generator gemma-alignez -o outputs.json
  alpaca_eval --model_outputs model_outputs.json      # AlpacaEval's own evaluator on our answers
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("run", metavar="RUN", help="the run to export")
    parser.add_argument("--format", choices=["alpaca_eval"], default="alpaca_eval",
                        help="output format: alpaca_eval = a JSON list of {instruction, output, generator, dataset}")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="FILE", help="file to write")
    parser.add_argument("--generator", default=None, metavar="NAME",
                        help="the `generator` field (default: the run's name, embedded model paths as their names)")
    parser.add_argument("--task", action="append", default=None, metavar="NAME",
                        help="export only this task or task family (repeat for several; default: all)")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.atomic import atomic_write_text
    from alignez_eval.judge.alpaca_eval import alpaca_eval_rows
    from alignez_eval.judge.runs import load_run
    from alignez_eval.shareable import shareable_text

    run = load_run(args.run)
    # lm-eval names the run directory after `pretrained`, so an embedded model's home path would
    # otherwise end up in every row.
    generator = args.generator or shareable_text(run.name)
    rows = alpaca_eval_rows(run, generator=generator, tasks=args.task)
    atomic_write_text(args.out, json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    print(f"export: {len(rows)} rows of {run.name} (generator {generator!r}) -> {args.out}")
    return 0
