"""`alignez-eval tasks-path` — print the directory of the packaged task YAMLs.

Use it with plain lm-eval: `lm_eval --include_path $(alignez-eval tasks-path) --tasks alignez_embedded ...`.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  lm_eval --include_path $(alignez-eval tasks-path) --tasks alignez_embedded_base ..."


def main(args: argparse.Namespace) -> int:
    from alignez_eval.package import tasks_path

    print(tasks_path())
    return 0
