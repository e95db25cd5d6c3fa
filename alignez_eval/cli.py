"""`alignez-eval` — one entry point, thin subcommands.

Each subcommand lives in `alignez_eval.commands.<module>` and exposes
`configure(parser: argparse.ArgumentParser) -> None` and `main(args: argparse.Namespace) -> int`.
Modules are imported only when their subcommand runs, so `--help` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from alignez_eval import __version__
from alignez_eval.errors import AlignEZError

# name -> (module, one-line help). `run` is special: it forwards its argv to lm-eval untouched.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("alignez_eval.commands.run", "lm-eval's own CLI with `alignez-hf` registered and our tasks on the include path"),
    "fit": ("alignez_eval.commands.fit", "fit an edit artifact (self-generated or given preference pairs)"),
    "queries": ("alignez_eval.commands.queries", "export a task's queries as JSONL for `fit --queries`"),
    "tasks-path": ("alignez_eval.commands.tasks_path", "print the directory holding the packaged task YAMLs"),
    "judge": ("alignez_eval.commands.judge", "judge candidate runs against a baseline run (cached)"),
    "judge-check": ("alignez_eval.commands.judge_check", "sanity-check a judge on controlled degradations"),
    "judge-agreement": ("alignez_eval.commands.judge_agreement",
                        "measure a judge's agreement with a reference annotator (AlpacaEval annotations)"),
    "train-scorer": ("alignez_eval.commands.train_scorer",
                     "train a scorer judge (Bradley-Terry head on frozen LM features) from reference annotations"),
    "scorer-features": ("alignez_eval.commands.scorer_features",
                        "list, export and import the scorer's stored features (encode once, train anywhere)"),
    "judge-family": ("alignez_eval.commands.judge_family",
                     "a judge's nets and gap closed on a real base -> tuned family, beside the reference's"),
    "report": ("alignez_eval.commands.report", "write leaderboard md/csv/png/results.json from judgments"),
    "export": ("alignez_eval.commands.export", "write a run's answers as AlpacaEval model_outputs.json"),
    "export-edit": ("alignez_eval.commands.export_edit",
                    "write an additive edit (CAA, ITI) as a llama.cpp / repeng GGUF control vector"),
    "compare": ("alignez_eval.commands.compare", "generate, fit, judge and report in one cached pipeline"),
    "demo": ("alignez_eval.commands.demo", "compare on the embedded offline models and prompts"),
    "sweep": ("alignez_eval.commands.sweep", "grid/random sweep over edit settings, logged to wandb"),
    "sweep-agent": ("alignez_eval.commands.sweep_agent", "run one point from wandb.config (for `wandb agent`)"),
    "train-dpo": ("alignez_eval.commands.train_dpo",
                  "train a LoRA adapter with DPO (TRL) on real preference pairs (the [dpo] extra)"),
    "dpo-expedite": ("alignez_eval.commands.dpo_expedite",
                     "DPO on shares of a preference pool, +AlignEZ, judged and scored on held-out data"),
    "models": ("alignez_eval.commands.models", "list / prepare / locate the embedded offline models"),
}

EPILOG = """\
examples:
  alignez-eval run --model alignez-hf --model_args pretrained=DIR,edit=edit.safetensors \\
      --tasks alignez_embedded_base --limit 8 --output_path runs/x --log_samples
  alignez-eval fit --model_args pretrained=DIR --queries alignez_embedded --out edit.safetensors
  alignez-eval demo

Run `alignez-eval COMMAND --help` for the options of each command.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignez-eval",
        description="AlignEZ self-alignment evaluated with lm-evaluation-harness.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"alignez-eval {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    # Global options come before the subcommand; everything after it belongs to the subcommand.
    head: list[str] = []
    while argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        head.append(argv.pop(0))
        if head[-1] == "--log-level" and argv:
            head.append(argv.pop(0))
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(head + argv)
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    ns = parser.parse_args(head)
    _setup_logging(ns.log_level)
    if name not in COMMANDS:
        print(f"alignez-eval: unknown command {name!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        if name == "run":
            return int(module.main(rest) or 0)
        sub = argparse.ArgumentParser(
            prog=f"alignez-eval {name}",
            description=COMMANDS[name][1],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        return int(module.main(sub.parse_args(rest)) or 0)
    except AlignEZError as exc:
        print(f"alignez-eval {name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
