"""`alignez-eval queries SPEC` — print a task's (or a JSONL file's) queries as JSONL for `fit --queries`."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  alignez-eval queries alignez_embedded --limit 5
  alignez-eval queries alignez_just_eval_coding --limit 50 > q.jsonl
  alignez-eval queries alignez_mt_bench --data-files mt_bench_train.jsonl   # offline copy of the split
  alignez-eval fit --queries q.jsonl ...
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("spec", help="task name (e.g. alignez_embedded) or a JSONL file with instruction/query/prompt")
    parser.add_argument("--limit", type=int, default=None, help="at most this many queries (in the task's order)")
    parser.add_argument("--full", action="store_true",
                        help="print every field of the processed doc, not just id, instruction and category")
    parser.add_argument("--output", "-o", default="-", help="write here instead of stdout")
    parser.add_argument("--data-files", default=None, metavar="PATH",
                        help="read the task's split from this local JSON/JSONL copy instead of the hub")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.queries import load_queries

    rows = load_queries(args.spec, limit=args.limit, data_files=args.data_files)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for row in rows:
            rec = row if args.full else {k: row[k] for k in ("id", "instruction", "category")}
            out.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
