"""Command-line options several commands share, defined once so their names, defaults and help
stay the same everywhere (`--judge` in compare, demo, judge, judge-agreement, judge-check and
judge-family; the judgment cache in the judge commands)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alignez_eval.defaults import DEFAULT_JUDGE

JUDGE_HELP = ("judge spec: a YAML file or BACKEND:MODEL[,key=value...], e.g. hf:qwen2.5-coder-1.5b-instruct or "
              "openai:gpt-4o@https://api.openai.com/v1 (default: %(default)s, the validated default judge; "
              "see docs/judging-and-validation.md)")


def add_judge_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--judge", default=DEFAULT_JUDGE, metavar="SPEC", help=JUDGE_HELP)


def add_cache_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default_note: str = "") -> None:
    """`--cache PATH`: the SQLite judgment cache; the same file may be shared by every judge command."""
    parser.add_argument("--cache", type=Path, default=None, metavar="PATH",
                        help=f"SQLite judgment cache{default_note}; share one file across judge, judge-agreement, "
                             "judge-check and judge-family runs to reuse judgments")
