"""The judge-agreement measurement behind the hf judge's defaults: every mode on the tune and test splits.

Runs `alignez-eval judge-agreement` for each judge mode on the two committed reference files
(reports/judge_agreement/alpaca_eval_gpt4_{tune,test}.jsonl: GPT-4's AlpacaEval-1 annotations,
split by generator, both answers <= 1,500 characters) and writes one table,
reports/judge_agreement/README.md, with each run's agreement.json/md/pairs.jsonl beside it.
With a shared --cache every judgment already made is re-used (a re-run makes no judge call).

  python bench/judge_agreement_table.py --cache judgecache.sqlite [--splits tune,test]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from alignez_eval.cli import main as cli

ROOT = Path("reports/judge_agreement")
JUDGE = "hf:qwen2.5-coder-1.5b-instruct"
# (name, spec, what it is); the first is the default chosen from the tune split.
MODES = (
    ("default", JUDGE, "**default**: pairwise, anchored prompt, margin 0, length correction 0.05"),
    ("anchored_no_correction", f"{JUDGE},length_debias=0", "pairwise, anchored prompt, margin 0, no length correction"),
    ("pairwise_v1_corrected", f"{JUDGE},prompt=pairwise", "pairwise, lab prompt (v1), margin 0, length correction 0.05"),
    ("pairwise_v1", f"{JUDGE},prompt=pairwise,margin=0.05,length_debias=0",
     "pairwise, lab prompt (v1), margin 0.05 (the old pairwise default)"),
    ("single", f"{JUDGE},mode=single", "single 1-9 grades, margin 0.5 (the old default)"),
)
COLS = (("agreement", "agreement"), ("judge_tie_rate", "ties"), ("agreement_judge_decisive", "when decisive"),
        ("agreement_ref_shorter", "GPT-4 picked shorter"), ("length_balanced", "length-balanced"),
        ("judge_picks_longer", "picks longer"), ("kappa", "κ"), ("swap_consistency", "swap consistency"))


def fmt(fig: dict | None, pct: bool = True) -> str:
    if not fig or fig.get("value") is None:
        return "n/a"
    k = 100 if pct else 1
    ci = fig.get("ci") or [float("nan"), float("nan")]
    v, lo, hi = fig["value"] * k, ci[0] * k, ci[1] * k
    return f"{v:.0f}% [{lo:.0f}, {hi:.0f}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--splits", default="tune,test")
    p.add_argument("--modes", default=",".join(m for m, _, _ in MODES))
    p.add_argument("--skip", default="", help="SPLIT/MODE,... rows to leave out (e.g. not measured for lack of time)")
    p.add_argument("--work", type=Path, default=Path("runs/judge_agreement"))
    args = p.parse_args()
    wanted = set(args.modes.split(","))
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    rows: list[str] = []
    for split in args.splits.split(","):
        ref = ROOT / f"alpaca_eval_gpt4_{split}.jsonl"
        for name, spec, what in MODES:
            if name not in wanted or f"{split}/{name}" in skip:
                continue
            out = args.work / split / name
            if cli(["judge-agreement", "--judge", spec, "--reference", str(ref), "--cache", str(args.cache),
                    "--out", str(out)]) != 0:
                return 1
            keep = ROOT / split / name
            keep.mkdir(parents=True, exist_ok=True)
            for f in ("agreement.json", "agreement.md", "pairs.jsonl"):
                shutil.copyfile(out / f, keep / f)
            res = json.loads((out / "agreement.json").read_text(encoding="utf-8"))
            o = res["overall"]["figures"]
            cells = [fmt(o.get(k), pct=(k != "kappa")) for k, _ in COLS]
            n_dec = (o.get("agreement") or {}).get("n")
            rows.append(f"| {split} | {what} | {res['counts'].get('judged', '')} ({n_dec}) | " + " | ".join(cells) +
                        f" | {fmt(o.get('length_baseline'))} |")
    header = ("| split | judge (Qwen2.5-Coder-1.5B-Instruct, fp32, CPU) | pairs | " +
              " | ".join(c for _, c in COLS) + " | length-only baseline |")
    table = "\n".join([header, "|" + "---|" * (len(COLS) + 4), *rows])
    (ROOT / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
