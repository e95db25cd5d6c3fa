"""The scorer study behind reports/scorer/: which features and data make a scorer that agrees with
GPT-4 on held-out generators (and held-out instructions), sees the real families' gaps and rejects
degraded answers. Reads the real reference data in ../shared/data (never used by `make test`).

  python bench/scorer_study.py prefetch --part 0/2   # feature extraction, resumable, one core each
  python bench/scorer_study.py variants              # heads on the stored features, one table

Every split is fixed here (seeded), so figures can be reproduced:
  - evaluation generators: the dev file's 5 (alpaca-7b, alpaca-farm-ppo-human, phi-2-sft,
    zephyr-7b-beta, llama-2-7b-chat-hf), never in training (checked, by family name);
  - instructions: a seeded half of AlpacaEval's 805 may appear in training; the other half never
    does, and the family and by-instruction figures use only that half.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

DATA = Path(os.environ.get("ALIGNEZ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
AE = DATA / "alpaca_eval"
TRAIN_GPT4 = AE / "annotations_gpt4_train.jsonl.gz"
TRAIN_TURBO = AE / "annotations_gpt4_turbo_train.jsonl.gz"
DEV = AE / "annotations_gpt4_dev.jsonl"
OUTPUTS = AE / "model_outputs"
FAMILIES = {"alpaca": ("alpaca-7b", "alpaca-farm-ppo-human"), "phi-2": ("phi-2", "phi-2-sft")}
# GPT-4 (AlpacaEval 1) win rates vs text_davinci_003 over all 805 instructions (shared/data/README).
GPT4_WIN_RATES = {"phi-2": 26.5, "phi-2-sft": 68.5, "phi-2-dpo": 82.3, "alpaca-7b": 23.5,
                  "alpaca-farm-ppo-human": 39.8}
SEED = 0
TRAIN_INSTRUCTION_SHARE = 0.5
PER_GENERATOR = 30
TURBO_ROWS = 200
FAMILY_N = 100
DEGRADE_N = 60


def plan() -> dict:
    from alignez_eval.scorer.data import (
        check_disjoint,
        generator_family,
        instruction_split,
        load_pairs,
        sample_per_generator,
    )

    dev, _ = load_pairs(DEV)
    gpt4, _ = load_pairs(TRAIN_GPT4)
    turbo, _ = load_pairs(TRAIN_TURBO)
    train_instr = instruction_split([p.instruction for p in gpt4], TRAIN_INSTRUCTION_SHARE, SEED)
    dev_gens = {p.generator_2 for p in dev}
    train = sample_per_generator([p for p in gpt4 if p.instruction in train_instr], PER_GENERATOR, SEED)
    dev_fams = {generator_family(g) for g in dev_gens}
    turbo_ok = [p for p in turbo if p.instruction in train_instr and generator_family(p.generator_2) not in dev_fams
                and p.generator_2 != "example"]
    variants = [p for p in turbo_ok if p.generator_2.endswith(("_concise", "_verbose"))
                or f"{p.generator_2}_concise" in {q.generator_2 for q in turbo_ok}]
    rng = random.Random(SEED)
    turbo_pick = sorted(rng.sample(range(len(variants)), min(TURBO_ROWS, len(variants))))
    turbo_train = [variants[i] for i in turbo_pick]
    check_disjoint(train + turbo_train, dev_gens, shared_reference=["text_davinci_003"])
    outputs = {n: {r["instruction"]: r["output"] for r in json.loads((OUTPUTS / f"{n}.json").read_text())}
               for fam in FAMILIES.values() for n in fam}
    common = sorted(set.intersection(*(set(v) for v in outputs.values())) - train_instr)
    fam_instr = sorted(random.Random(SEED).sample(common, FAMILY_N))
    decisive = [p for p in dev if p.p2 != 0.5]
    deg = sorted(random.Random(SEED).sample(range(len(decisive)), DEGRADE_N))
    degrade_prompts = [{"id": f"dev{decisive[i].row}", "instruction": decisive[i].instruction,
                        "answer": decisive[i].output_2 if decisive[i].p2 > 0.5 else decisive[i].output_1}
                       for i in deg]
    return {"dev": dev, "train": train, "turbo": turbo_train, "train_instr": train_instr,
            "outputs": outputs, "family_instructions": fam_instr, "degrade_prompts": degrade_prompts}


def answer_items(p: dict) -> list[tuple[str, str]]:
    """Every answer the study scores, in the order extraction should take them: the held-out dev
    pairs, the AlpacaEval-1 training pairs (shuffled, so a partial run is a random subset), the
    families, the degraded answers, then the AlpacaEval-2 pairs."""
    from alignez_eval.judge.check import build_check_items

    def pairs_of(rows: list) -> list[tuple[str, str]]:
        out = []
        for r in rows:
            out += [(r.instruction, r.output_1), (r.instruction, r.output_2)]
        return out

    train = pairs_of(p["train"])
    random.Random(SEED).shuffle(train)
    family = [(q, p["outputs"][name][q]) for fam in FAMILIES.values() for name in fam for q in p["family_instructions"]]
    degraded = [(it.instruction, it.candidate) for it in build_check_items(p["degrade_prompts"])]
    return list(dict.fromkeys(pairs_of(p["dev"]) + train + family + degraded + pairs_of(p["turbo"])))


def prefetch(args: argparse.Namespace) -> None:
    import torch

    from alignez_eval.scorer.features import FeatureSpec, features_for

    torch.set_num_threads(args.threads)
    k, n = (int(x) for x in args.part.split("/"))
    spec = FeatureSpec(args.model, layers=tuple(args.layers), max_answer_tokens=args.max_answer_tokens)
    items = answer_items(plan())
    mine = items[k::n]
    print(f"part {k}/{n}: {len(mine)} of {len(items)} answers, features {spec.identity_hash()[:12]}", flush=True)
    features_for(mine, spec, batch_size=args.batch_size, shard_size=64)
    print("done", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pf = sub.add_parser("prefetch", help="extract and store the features of every answer the study uses")
    pf.add_argument("--part", default="0/1", help="K/N: this process takes every N-th answer from K")
    pf.add_argument("--model", default="smollm2-135m-instruct")
    pf.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12])
    pf.add_argument("--max-answer-tokens", type=int, default=160)
    pf.add_argument("--batch-size", type=int, default=8)
    pf.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    {"prefetch": prefetch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
