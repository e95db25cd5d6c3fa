"""`alignez-eval report`: leaderboard md/csv/png + lm-eval-shaped results.json from judgments."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from alignez_eval.errors import DataError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example: alignez-eval report --judgments judgments/demo --name demo --tuned tuned "
                     "--judge-check reports/judge-check/hf-qwen.json")
    parser.add_argument("--judgments", required=True, nargs="+", type=Path, metavar="DIR",
                        help="judgments dir(s) written by `alignez-eval judge` (one per model/baseline)")
    parser.add_argument("--name", default=None, help="report name (default: the judgments dir's name)")
    parser.add_argument("--out-root", type=Path, default=Path("reports"), help="parent of reports/NAME")
    parser.add_argument("--tuned", default=None, metavar="NAME",
                        help="candidate that is the tuned model: enables %% gap closed for the others")
    parser.add_argument("--judge-check", type=Path, default=None, metavar="FILE",
                        help="judge-check JSON to state in the leaderboard")
    parser.add_argument("--judge-reference", type=Path, default=None, metavar="FILE",
                        help="agreement.json of `alignez-eval judge-agreement`: the judge's agreement with a "
                             "reference annotator, stated in the leaderboard header")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--min-tuned-net", type=float, default=10.0,
                        help="below this tuned net (points) the gap is reported as undefined")
    parser.add_argument("--wandb", action="store_true", help="also log the table and figure to W&B")
    parser.add_argument("--wandb-project", default=None, help="W&B project (default: alignez-eval)")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.package import __version__
    from alignez_eval.report import write_report

    name = args.name or args.judgments[0].resolve().name
    command = ["alignez-eval", "report", "--judgments", *map(str, args.judgments), "--name", name,
               "--out-root", str(args.out_root), "--n-boot", str(args.n_boot), "--seed", str(args.seed),
               "--min-tuned-net", str(args.min_tuned_net)]
    if args.tuned:
        command += ["--tuned", args.tuned]
    if args.judge_check:
        command += ["--judge-check", str(args.judge_check)]
    if args.judge_reference:
        command += ["--judge-reference", str(args.judge_reference)]
    extra: dict[str, object] = {"command": shlex.join(command), "alignez_eval version": __version__}
    if args.judge_check:
        if not args.judge_check.is_file():
            raise DataError(f"--judge-check {args.judge_check} does not exist; write it with "
                            "`alignez-eval judge-check --judge SPEC --out FILE`")
        extra["judge_check"] = str(args.judge_check)
    if args.judge_reference:
        from alignez_eval.judge.agreement import agreement_extra, load_agreement

        extra["judge_agreement"] = agreement_extra(load_agreement(args.judge_reference))
    paths = write_report(args.judgments, name, out_root=args.out_root, tuned=args.tuned, extra=extra,
                         n_boot=args.n_boot, seed=args.seed, min_tuned_net=args.min_tuned_net, wandb=args.wandb,
                         wandb_project=args.wandb_project)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
