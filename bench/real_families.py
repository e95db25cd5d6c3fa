"""Real base -> tuned gaps on AlpacaEval's published outputs, beside what GPT-4 says of the same models.

Judges phi-2-sft against phi-2 and alpaca-farm-ppo-human against alpaca-7b (AlpacaEval
`model_outputs.json` files, paired by exact instruction text) on a seeded sample of instructions
with the given judge, writes one leaderboard per family under reports/real_families/, and a
summary table that sets our nets beside GPT-4's AlpacaEval-1 preferences from the dev annotations
(each model against text-davinci-003).

  python bench/real_families.py --data ../shared/data/alpaca_eval --limit 100 \
      --judge hf:qwen2.5-coder-1.5b-instruct --cache judgecache.sqlite

The data are AlpacaEval's (CC BY-NC 4.0); nothing here is read by the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from alignez_eval.cli import main as cli

FAMILIES = (("phi-2", "phi-2-sft"), ("alpaca-7b", "alpaca-farm-ppo-human"))


def gpt4_win_rates(annotations: Path, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per generator_2: GPT-4's win rate against output_1 (text-davinci-003), ties half, with a
    percentile-bootstrap 95% CI."""
    from alignez_eval.judge.agreement import parse_preference

    by_gen: dict[str, list[float]] = {}
    for line in annotations.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        pref = parse_preference(row["preference"])
        if pref is None:
            continue
        by_gen.setdefault(row["generator_2"], []).append({"2": 1.0, "1": 0.0, "tie": 0.5}[pref])
    rng = np.random.default_rng(seed)
    out = {}
    for gen, vals in sorted(by_gen.items()):
        v = np.array(vals)
        boots = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        out[gen] = {"n": len(v), "win_rate": 100 * v.mean(), "lo": 100 * lo, "hi": 100 * hi}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder with model_outputs/ and annotations_gpt4_dev.jsonl")
    p.add_argument("--judge", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--work", type=Path, default=Path("runs/real_families"))
    p.add_argument("--out-root", type=Path, default=Path("reports/real_families"))
    p.add_argument("--judge-reference", type=Path, default=None, help="agreement.json stated in each header")
    args = p.parse_args()

    nets = {}
    for base, tuned in FAMILIES:
        out = args.work / f"{tuned}_vs_{base}"
        cmd = ["judge", "--baseline", f"{base}={args.data / 'model_outputs' / f'{base}.json'}",
               "--candidate", f"{tuned}={args.data / 'model_outputs' / f'{tuned}.json'}",
               "--judge", args.judge, "--out", str(out), "--limit", str(args.limit), "--seed", str(args.seed)]
        if args.cache:
            cmd += ["--cache", str(args.cache)]
        if cli(cmd) != 0:
            return 1
        rep = ["report", "--judgments", str(out), "--name", f"{tuned}_vs_{base}", "--out-root", str(args.out_root)]
        if args.judge_reference:
            rep += ["--judge-reference", str(args.judge_reference)]
        if cli(rep) != 0:
            return 1
        res = json.loads((args.out_root / f"{tuned}_vs_{base}" / "results.json").read_text(encoding="utf-8"))
        nets[(base, tuned)] = res
    gpt4 = gpt4_win_rates(args.data / "annotations_gpt4_dev.jsonl")
    lines = ["# Real base -> tuned families: our judge's nets beside GPT-4's preferences", "",
             f"judge: `{args.judge}`; {args.limit} AlpacaEval instructions per family (seeded sample, seed "
             f"{args.seed}), paired by exact instruction text.", "",
             "GPT-4 (AlpacaEval 1 `alpaca_eval_gpt4` dev annotations, 120 random instructions per model): "
             "win rate against text-davinci-003, ties half, 95% bootstrap CI.", "",
             "| model | GPT-4 win rate vs text-davinci-003 [CI] (n) |", "|---|---|"]
    for gen, r in gpt4.items():
        lines.append(f"| {gen} | {r['win_rate']:.1f} [{r['lo']:.1f}, {r['hi']:.1f}] ({r['n']}) |")
    lines += ["", "Per-family leaderboards (net = win% - lose% of the tuned model against its base, with CIs):", ""]
    for base, tuned in FAMILIES:
        lines.append(f"- [{tuned} vs {base}]({tuned}_vs_{base}/leaderboard.md)")
    (args.out_root / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out_root / "gpt4_reference.json").write_text(json.dumps(gpt4, indent=2) + "\n", encoding="utf-8")
    print((args.out_root / "README.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
