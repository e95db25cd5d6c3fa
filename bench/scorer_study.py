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
HH = DATA / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
HH_N = 300
# The λ grid of the study: the first full run chose the top of (1e-3, 1e-2, 1e-1) for every variant,
# so it moved up one decade; 3 values x 5 folds keep ~17 variants within minutes here.
L2_GRID = (1e-2, 1e-1, 1.0)
AUGMENT_N = 150  # preferred training answers degraded into synthetic pairs (x4)  # pairs on each side of the HH-RLHF split by prompt


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
    from alignez_eval.scorer.augment import degraded_pairs

    return {"dev": dev, "train": train, "turbo": turbo_train, "augment": degraded_pairs(train, AUGMENT_N, SEED), "train_instr": train_instr,
            "outputs": outputs, "family_instructions": fam_instr, "degrade_prompts": degrade_prompts}


def plan_hh() -> dict:
    """HH-RLHF harmless-base (human labels): a seeded half of the prompts for training, the rest for
    evaluation, HH_N pairs each."""
    from alignez_eval.scorer.data import instruction_split, load_pairs, sample_per_generator

    pairs, skipped = load_pairs(HH)
    train_instr = instruction_split([p.instruction for p in pairs], 0.5, SEED)
    train = sample_per_generator([p for p in pairs if p.instruction in train_instr], HH_N, SEED)
    rest = [p for p in pairs if p.instruction not in train_instr]
    test = [rest[i] for i in sorted(random.Random(SEED).sample(range(len(rest)), HH_N))]
    return {"train": train, "test": test, "rows": len(pairs) + skipped, "skipped": skipped}


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
    degraded = [(it.instruction, x) for it in build_check_items(p["degrade_prompts"]) for x in (it.baseline, it.candidate)]
    return list(dict.fromkeys(pairs_of(p["dev"]) + train + family + degraded + pairs_of(p["turbo"])
                              + pairs_of(p["augment"])))


# -- the full-scale plan (issue: every annotation, not a sample) ------------------------------------------
DEGRADE_N_FULL = 200  # dev answers GPT-4 preferred, each against 4 degradations
AUGMENT_N_FULL = 1000  # training answers degraded into synthetic pairs (x4)


DEV_GENERATORS = ("alpaca-7b", "alpaca-farm-ppo-human", "phi-2-sft", "zephyr-7b-beta", "llama-2-7b-chat-hf")


def train_settings(**kw):
    """The training settings of the full-scale heads, as `train-scorer` takes them: both annotation
    files, the training half of the instructions, the dev generators (and AlpacaEval 2's `example`
    rows) excluded, AUGMENT_N_FULL answers degraded into synthetic pairs, bf16 features."""
    from alignez_eval.scorer.spec import FeatureSpec
    from alignez_eval.scorer.train import TrainSettings

    base = dict(features=FeatureSpec("smollm2-135m-instruct", dtype="bfloat16"), length_term="none",
                instruction_share=TRAIN_INSTRUCTION_SHARE, exclude_generators=DEV_GENERATORS + ("example",),
                evaluation_generators=DEV_GENERATORS, shared_reference=("text_davinci_003", "gpt4_1106_preview"),
                augment=AUGMENT_N_FULL, seed=SEED, batch_size=16)
    base.update(kw)
    return TrainSettings(**base)


def plan_full() -> dict:
    """The training pairs exactly as `train-scorer` selects them (train_settings), all dev pairs, the
    families on every held-out instruction, DEGRADE_N_FULL degraded dev answers on held-out
    instructions; the other half of the training rows last (the all-instructions variant)."""
    from alignez_eval.scorer.data import instruction_split, load_pairs
    from alignez_eval.scorer.train import select_pairs

    dev, _ = load_pairs(DEV)
    train, _info = select_pairs([TRAIN_GPT4, TRAIN_TURBO], train_settings())
    gpt4, _ = load_pairs(TRAIN_GPT4)
    turbo, _ = load_pairs(TRAIN_TURBO)
    train_instr = instruction_split([p.instruction for p in gpt4 + turbo], TRAIN_INSTRUCTION_SHARE, SEED)
    assert {p.instruction for p in train} <= train_instr
    other = [p for p in gpt4 + turbo if p.instruction not in train_instr]
    outputs = {n: {r["instruction"]: r["output"] for r in json.loads((OUTPUTS / f"{n}.json").read_text())}
               for fam in FAMILIES.values() for n in fam}
    common = sorted(set.intersection(*(set(v) for v in outputs.values())) - train_instr)
    decisive = [p for p in dev if p.p2 != 0.5 and p.instruction not in train_instr]
    deg = sorted(random.Random(SEED).sample(range(len(decisive)), min(DEGRADE_N_FULL, len(decisive))))
    degrade_prompts = [{"id": f"dev{decisive[i].row}", "instruction": decisive[i].instruction,
                        "answer": decisive[i].output_2 if decisive[i].p2 > 0.5 else decisive[i].output_1}
                       for i in deg]
    return {"dev": dev, "train": train, "train_other": other, "train_instr": train_instr,
            "outputs": outputs, "family_instructions": common, "degrade_prompts": degrade_prompts}


def answer_items_full(p: dict) -> list[tuple[str, str]]:
    """Evaluation answers first (dev, degradations, families), then the training pairs shuffled (a
    partial run is a random subset), then the other half of the instructions."""
    from alignez_eval.judge.check import build_check_items

    def pairs_of(rows: list, shuffle: bool = False) -> list[tuple[str, str]]:
        out = [(r.instruction, a) for r in rows for a in (r.output_1, r.output_2)]
        if shuffle:
            random.Random(SEED).shuffle(out)
        return out

    family = [(q, p["outputs"][name][q]) for fam in FAMILIES.values() for name in fam for q in p["family_instructions"]]
    degraded = [(it.instruction, x) for it in build_check_items(p["degrade_prompts"]) for x in (it.baseline, it.candidate)]
    return list(dict.fromkeys(pairs_of(p["dev"]) + degraded + family + pairs_of(p["train"], True)
                              + pairs_of(p["train_other"], True)))


def prefetch(args: argparse.Namespace) -> None:
    import torch

    from alignez_eval.scorer.features import FeatureSpec, features_for

    torch.set_num_threads(args.threads)
    k, n = (int(x) for x in args.part.split("/"))
    spec = FeatureSpec(args.model, layers=tuple(args.layers), max_answer_tokens=args.max_answer_tokens,
                       dtype=args.dtype)
    items = answer_items_full(plan_full()) if args.full else answer_items(plan())
    if args.hh:
        hh = plan_hh()
        items = list(dict.fromkeys((r.instruction, a) for r in hh["train"] + hh["test"] for a in (r.output_1, r.output_2)))
    mine = items[k::n]
    print(f"part {k}/{n}: {len(mine)} of {len(items)} answers, features {spec.identity_hash()[:12]}", flush=True)
    features_for(mine, spec, batch_size=args.batch_size, shard_size=256 if args.full else 64)
    print("done", flush=True)


# -- variants: heads on the stored features -----------------------------------------------------------
def _stored(items: list[tuple[str, str]], spec) -> dict:
    """The stored vectors of `items` that exist (any compatible store), by answer key."""
    from alignez_eval.scorer.features import compatible_stores
    from alignez_eval.scorer.spec import answer_key

    out = {}
    keys = list(dict.fromkeys(answer_key(q, a) for q, a in items))
    for store, cols in compatible_stores(spec):
        hit = [k for k in keys if k in store and k not in out]
        if hit:
            out.update(zip(hit, store.get(hit)[:, cols], strict=True))
    return out


def _length_balanced(margin, y, l1, l2):

    dec = y != 0.5
    longer2 = l2 > l1
    unequal = l1 != l2
    hit = (margin > 0) == (y > 0.5)
    ref_longer = dec & unequal & ((y > 0.5) == longer2)
    ref_shorter = dec & unequal & ((y > 0.5) != longer2)
    return float((hit[ref_longer].mean() + hit[ref_shorter].mean()) / 2), float(hit[dec].mean())


def variants(args: argparse.Namespace) -> None:
    import numpy as np
    from scipy.special import log_expit

    from alignez_eval.atomic import atomic_write_json, atomic_write_text
    from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
    from alignez_eval.judge.agreement import agreement_figures
    from alignez_eval.judge.check import build_check_items
    from alignez_eval.judge.family import implied_net
    from alignez_eval.scorer.data import generator_family
    from alignez_eval.scorer.fit import PairData, choose_l2, fit_bt, grouped_folds
    from alignez_eval.scorer.head import answer_length
    from alignez_eval.scorer.spec import FeatureSpec, answer_key

    p = plan()
    full = FeatureSpec(args.model, layers=tuple(args.layers), max_answer_tokens=args.max_answer_tokens)
    phi = _stored(answer_items(p), full)
    dim = len(next(iter(phi.values()))) // len(full.blocks)
    print(f"{len(phi)} answers stored ({dim}-dim blocks)", flush=True)

    def have(rows):
        return [r for r in rows if answer_key(r.instruction, r.output_1) in phi
                and answer_key(r.instruction, r.output_2) in phi]

    dev = have(p["dev"])
    pools = {"ae1": have(p["train"]), "ae1+ae2": have(p["train"]) + have(p["turbo"]),
             "ae1+degradations": have(p["train"]) + have(p["augment"]),
             "ae1+ae2+degradations": have(p["train"]) + have(p["turbo"]) + have(p["augment"])}
    print(f"dev {len(dev)}/{len(p['dev'])}, train {len(pools['ae1'])}/{len(p['train'])}, "
          f"turbo {len(pools['ae1+ae2']) - len(pools['ae1'])}/{len(p['turbo'])}", flush=True)
    fam_ok = all(answer_key(q, p["outputs"][n][q]) in phi for f in FAMILIES.values() for n in f
                 for q in p["family_instructions"])
    deg_items = build_check_items(p["degrade_prompts"])
    deg_ok = all(answer_key(it.instruction, it.candidate) in phi and answer_key(it.instruction, it.baseline) in phi
                 for it in deg_items)

    both = ("mean", "last")

    def variant(name, layers=full.layers, pool=both, length="none", data="ae1", share=None):
        return {"name": name, "layers": layers, "pool": pool, "length": length, "data": data, "share": share}

    def configs():
        for length in ("none", "control", "full"):
            yield variant(f"all layers, mean+last, length {length}", length=length)
        for layer in full.layers:
            yield variant(f"layer {layer}, mean, length none", layers=(layer,), pool=("mean",))
        yield variant("all layers, mean, length none", pool=("mean",))
        yield variant("all layers, last, length none", pool=("last",))
        for length in ("none", "full"):
            yield variant(f"all layers, mean+last, length {length}, + AlpacaEval-2 soft", length=length, data="ae1+ae2")
        for length in ("none", "full"):
            yield variant(f"all layers, mean+last, length {length}, + degradation pairs", length=length,
                          data="ae1+degradations")
            yield variant(f"all layers, mean+last, length {length}, + AlpacaEval-2 soft + degradation pairs",
                          length=length, data="ae1+ae2+degradations")
        for share in (0.25, 0.5):
            yield variant(f"all layers, mean+last, length none, {int(share * 100)}% of the data", share=share)

    def design(rows, cols, mu, sigma):
        z1 = np.stack([(phi[answer_key(r.instruction, r.output_1)][cols] - mu) / sigma for r in rows])
        z2 = np.stack([(phi[answer_key(r.instruction, r.output_2)][cols] - mu) / sigma for r in rows])
        dl = np.array([answer_length(r.output_2) - answer_length(r.output_1) for r in rows])
        return z2 - z1, dl

    results = []
    for n_cfg, cfg in enumerate(configs()):
        if args.only is not None and n_cfg >= args.only:
            break
        train = pools[cfg["data"]]
        if cfg.get("share"):
            rng = np.random.default_rng(SEED)
            train = [train[i] for i in sorted(rng.choice(len(train), int(cfg["share"] * len(train)), replace=False))]
        cols = full.columns(full.subset(cfg["layers"], cfg["pool"]), dim)
        answers = list(dict.fromkeys(answer_key(r.instruction, a) for r in train for a in (r.output_1, r.output_2)))
        mat = np.stack([phi[k][cols] for k in answers]).astype(np.float64)
        mu, sigma = mat.mean(0), mat.std(0) + 1e-6
        dz, dl = design(train, cols, mu, sigma)
        y = np.array([r.p2 for r in train])
        groups = np.array([generator_family(r.generator_2) for r in train])
        data = PairData(dz, dl, y, np.ones(len(y)), groups)
        # λ by grouped CV; out-of-fold margins also give the CV figures used to choose a variant
        folds = grouped_folds(groups, 5, SEED)
        cv = []
        for l2 in L2_GRID:
            m = np.zeros(len(y))
            for test in folds:
                tr = np.setdiff1d(np.arange(len(y)), test)
                w, g = fit_bt(data.take(tr), l2, cfg["length"] != "none")
                m[test] = dz[test] @ w + (g * dl[test] if cfg["length"] == "full" else 0.0)
            ll = -float(np.mean(y * log_expit(m) + (1 - y) * log_expit(-m)))
            l1 = np.array([len(r.output_1.strip()) for r in train])
            l2_ = np.array([len(r.output_2.strip()) for r in train])
            hard = np.abs(y - 0.5) > 0.2
            lb, ag = _length_balanced(m[hard], np.round(y[hard]), l1[hard], l2_[hard])
            cv.append({"l2": l2, "log_loss": ll, "agreement": ag, "length_balanced": lb})
        l2 = choose_l2(cv)
        w, gamma = fit_bt(data, l2, cfg["length"] != "none")
        g_read = gamma if cfg["length"] == "full" else 0.0
        best = next(c for c in cv if c["l2"] == l2)

        def score(q, a, cols=cols, mu=mu, sigma=sigma, w=w, g=g_read):
            return float((phi[answer_key(q, a)][cols] - mu) / sigma @ w + g * answer_length(a))

        ddz, ddl = design(dev, cols, mu, sigma)
        margin = ddz @ w + g_read * ddl
        ref = ["2" if r.p2 > 0.5 else "1" if r.p2 < 0.5 else "tie" for r in dev]
        jl = ["2" if m > 0 else "1" if m < 0 else "tie" for m in margin]
        l1 = [len(r.output_1.strip()) for r in dev]
        l2c = [len(r.output_2.strip()) for r in dev]
        figs = agreement_figures(ref, jl, l1, l2c, n_boot=1000, seed=SEED)["figures"]
        held = [i for i, r in enumerate(dev) if r.instruction not in p["train_instr"]]
        figs_instr = agreement_figures([ref[i] for i in held], [jl[i] for i in held], [l1[i] for i in held],
                                       [l2c[i] for i in held], n_boot=1000, seed=SEED)["figures"]
        row = {**{k: v for k, v in cfg.items()}, "layers": list(cfg["layers"]), "pool": list(cfg["pool"]),
               "l2": l2, "gamma": gamma, "train_pairs": len(train), "cv": best, "dev_n": len(dev),
               "dev": {k: figs[k] for k in ("agreement", "length_balanced", "agreement_ref_longer",
                                            "agreement_ref_shorter", "judge_picks_longer", "length_baseline")},
               "dev_heldout_instructions": {"n": len(held), **{k: figs_instr[k] for k in ("agreement", "length_balanced")}}}
        if fam_ok:
            fams = {}
            for fam, (base, tuned) in FAMILIES.items():
                v = np.array([np.sign(score(q, p["outputs"][tuned][q]) - score(q, p["outputs"][base][q]))
                              for q in p["family_instructions"]])
                idx = bootstrap_indices(len(v), 1000, SEED)
                fams[fam] = {"net": float(100 * v.mean()), "ci": list(percentile_ci(100 * v[idx].mean(1))),
                             "reference_net": implied_net(GPT4_WIN_RATES[tuned], GPT4_WIN_RATES[base]),
                             "n": len(v)}
            row["families"] = fams
        if deg_ok:
            degs: dict[str, list[float]] = {}
            for it in deg_items:
                deg = dict(it.meta)["degradation"]
                degs.setdefault(deg, []).append(float(score(it.instruction, it.baseline) > score(it.instruction, it.candidate)))
            row["degradations"] = {k: float(np.mean(v)) for k, v in degs.items()}
        results.append(row)
        fam_txt = " ".join(f"{k} {v['net']:+.0f}" for k, v in row.get("families", {}).items())
        print(f"{cfg['name']:<62} λ={l2:<7g} CV agr {best['agreement']:.3f} lb {best['length_balanced']:.3f} | "
              f"dev agr {figs['agreement']['value']:.3f} lb {figs['length_balanced']['value']:.3f} | "
              f"held-out instr agr {figs_instr['agreement']['value']:.3f} lb {figs_instr['length_balanced']['value']:.3f}"
              f" | {fam_txt} | deg {min(row.get('degradations', {'-': float('nan')}).values()):.2f}", flush=True)
    out = Path(args.out)
    atomic_write_json(out / "variants.json", {"plan": {"seed": SEED, "train_instruction_share": TRAIN_INSTRUCTION_SHARE,
                                                       "per_generator": PER_GENERATOR, "turbo_rows": TURBO_ROWS,
                                                       "family_n": FAMILY_N, "degrade_n": DEGRADE_N},
                                              "features": full.identity(), "results": results})
    atomic_write_text(out / "variants.md", variants_table(results))
    print(f"saved {out / 'variants.json'}, variants.md")


# -- the full-scale study: heads trained by train_scorer itself, evaluated on held-out data ------------
FIGS = ("agreement", "length_balanced", "agreement_ref_longer", "agreement_ref_shorter", "judge_picks_longer",
        "reference_picks_longer", "length_baseline", "kappa")


def full_variants() -> list[tuple[str, dict]]:
    from alignez_eval.scorer.mlp import MLPSettings
    from alignez_eval.scorer.relevance import RelevanceSpec

    rel = RelevanceSpec("smollm2-135m-instruct", max_answer_tokens=64, dtype="bfloat16")
    grid = (0.1, 1.0, 3.0)
    mlps = (MLPSettings(hidden=128, l2=1e-3, epochs=8, seed=SEED), MLPSettings(hidden=512, l2=1e-3, epochs=8, seed=SEED))
    return [
        ("linear, 30 rows a generator (the previous default's data size) + degradations",
         dict(per_generator=30, augment=150, l2_grid=grid)),
        ("linear, every row, no synthetic pairs", dict(augment=0, l2_grid=grid)),
        ("linear, every row + degradations", dict(l2_grid=grid)),
        ("linear, every row + degradations, length control", dict(l2_grid=grid, length_term="control")),
        ("linear, every row + degradations, length full", dict(l2_grid=grid, length_term="full")),
        ("mlp (128 or 512 by CV), every row + degradations", dict(l2_grid=grid, head_kind="mlp", mlp_grid=mlps)),
        ("auto (linear vs mlp by CV), every row + degradations + relevance gate",
         dict(l2_grid=grid, head_kind="auto", mlp_grid=mlps, relevance=rel, relevance_pairs=1000)),
        ("linear, every row + degradations + relevance gate", dict(l2_grid=grid, relevance=rel, relevance_pairs=1000)),
        ("mlp 128, every row + degradations + relevance gate",
         dict(l2_grid=grid, head_kind="mlp", mlp_grid=mlps[:1], relevance=rel, relevance_pairs=1000)),
    ]


def evaluate_head(head_path: Path, p: dict) -> dict:
    """Held-out figures of one head file: dev agreement (unseen generators; and unseen instructions
    too), both families on every held-out instruction, degradations of held-out answers."""
    import numpy as np

    from alignez_eval.bootstrap import bootstrap_indices, percentile_ci
    from alignez_eval.judge.agreement import agreement_figures
    from alignez_eval.judge.check import build_check_items
    from alignez_eval.judge.family import implied_net
    from alignez_eval.scorer.features import features_for
    from alignez_eval.scorer.head import load_head
    from alignez_eval.scorer.relevance import RelevanceSpec, relevance_for
    from alignez_eval.scorer.spec import answer_key

    head = load_head(head_path)
    dev = p["dev"]
    deg_items = build_check_items(p["degrade_prompts"])
    items = list(dict.fromkeys(
        [(r.instruction, a) for r in dev for a in (r.output_1, r.output_2)]
        + [(q, p["outputs"][n][q]) for f in FAMILIES.values() for n in f for q in p["family_instructions"]]
        + [(it.instruction, x) for it in deg_items for x in (it.baseline, it.candidate)]))
    phi, _ = features_for(items, head.features, batch_size=16)
    rel = None
    if head.reads_relevance:
        rel, _ = relevance_for(items, RelevanceSpec.from_identity(head.relevance), batch_size=16)
    scores = head.score(phi, [a for _, a in items], rel)
    sc = {answer_key(q, a): float(v) for (q, a), v in zip(items, scores, strict=True)}

    def score(q: str, a: str) -> float:
        return sc[answer_key(q, a)]

    margin = np.array([score(r.instruction, r.output_2) - score(r.instruction, r.output_1) for r in dev])
    ref = ["2" if r.p2 > 0.5 else "1" if r.p2 < 0.5 else "tie" for r in dev]
    jl = ["2" if m > 0 else "1" if m < 0 else "tie" for m in margin]
    l1 = [len(r.output_1.strip()) for r in dev]
    l2 = [len(r.output_2.strip()) for r in dev]
    figs = agreement_figures(ref, jl, l1, l2, n_boot=2000, seed=SEED)["figures"]
    held = [i for i, r in enumerate(dev) if r.instruction not in p["train_instr"]]
    figs_i = agreement_figures([ref[i] for i in held], [jl[i] for i in held], [l1[i] for i in held],
                               [l2[i] for i in held], n_boot=2000, seed=SEED)["figures"]
    by_gen = {}
    for g in sorted({r.generator_2 for r in dev}):
        idx = [i for i, r in enumerate(dev) if r.generator_2 == g]
        f = agreement_figures([ref[i] for i in idx], [jl[i] for i in idx], [l1[i] for i in idx], [l2[i] for i in idx],
                              n_boot=0)["figures"]
        by_gen[g] = {k: f[k]["value"] for k in ("agreement", "length_balanced", "length_baseline")}
    fams = {}
    for fam, (base, tuned) in FAMILIES.items():
        v = np.array([np.sign(score(q, p["outputs"][tuned][q]) - score(q, p["outputs"][base][q]))
                      for q in p["family_instructions"]])
        idx = bootstrap_indices(len(v), 2000, SEED)
        fams[fam] = {"net": float(100 * v.mean()), "ci": list(percentile_ci(100 * v[idx].mean(1))),
                     "reference_net": implied_net(GPT4_WIN_RATES[tuned], GPT4_WIN_RATES[base]), "n": len(v)}
    degs: dict[str, list[float]] = {}
    for it in deg_items:
        degs.setdefault(dict(it.meta)["degradation"], []).append(
            float(score(it.instruction, it.baseline) > score(it.instruction, it.candidate)))
    deg_out = {}
    for k, v in degs.items():
        arr = np.array(v)
        idx = bootstrap_indices(len(arr), 2000, SEED)
        deg_out[k] = {"value": float(arr.mean()), "ci": list(percentile_ci(arr[idx].mean(1))), "n": len(arr)}
    return {"head": str(head_path), "kind": head.kind, "gated": head.reads_relevance,
            "dev": {k: figs[k] for k in FIGS}, "dev_heldout_instructions": {"n": len(held), **{k: figs_i[k] for k in FIGS}},
            "dev_by_generator": by_gen, "families": fams, "degradations": deg_out}


def full(args: argparse.Namespace) -> None:
    import time

    import torch

    from alignez_eval.atomic import atomic_write_json, atomic_write_text
    from alignez_eval.scorer.train import train_scorer

    torch.set_num_threads(args.threads)
    p = plan_full()
    out = Path(args.out)
    heads = Path(args.heads)
    heads.mkdir(parents=True, exist_ok=True)
    results_path = out / "full.json"
    results = json.loads(results_path.read_text())["results"] if results_path.is_file() else []
    done = {r["name"] for r in results}
    for n, (name, kw) in enumerate(full_variants()):
        if args.only is not None and n not in args.only:
            continue
        if name in done and not args.redo:
            continue
        t0 = time.time()
        path = heads / f"v{n}.safetensors"
        report = train_scorer([TRAIN_GPT4, TRAIN_TURBO], path, train_settings(**kw))
        t_train = time.time() - t0
        ev = evaluate_head(path, p)
        row = {"name": name, "variant": n, "train": {k: report[k] for k in ("kind", "l2", "pairs", "answers", "sha256")},
               "cv": next(r for r in report["cv"] if r["l2"] == report["l2"]), "mlp_cv": report.get("mlp_cv"),
               "relevance_gate": report.get("relevance_gate"), **ev,
               "seconds": {"train": round(t_train, 1), "evaluate": round(time.time() - t0 - t_train, 1)}}
        results = [r for r in results if r["name"] != name] + [row]
        results.sort(key=lambda r: r["variant"])
        atomic_write_json(results_path, {"plan": {"seed": SEED, "train_instruction_share": TRAIN_INSTRUCTION_SHARE,
                                                  "augment": AUGMENT_N_FULL, "degrade_n": DEGRADE_N_FULL,
                                                  "family_instructions": len(p["family_instructions"])},
                                         "results": results})
        atomic_write_text(out / "full.md", full_table(results))
        d = ev["dev"]
        print(f"[{n}] {name}: {report['kind']} dev agr {d['agreement']['value']:.3f} lb {d['length_balanced']['value']:.3f} "
              f"longer {d['judge_picks_longer']['value']:.3f} (GPT-4 {d['reference_picks_longer']['value']:.3f}) | "
              + " ".join(f"{k} {v['net']:+.0f}" for k, v in ev["families"].items()) + " | "
              + " ".join(f"{k} {100 * v['value']:.0f}%" for k, v in ev["degradations"].items())
              + f" | {row['seconds']}", flush=True)


def full_table(results: list[dict]) -> str:
    lines = ["| # | variant | head | train pairs | CV agreement | dev agreement | dev length-bal. | picks longer "
             "(GPT-4) | held-out instr. agreement / length-bal. | alpaca net (GPT-4 +37) | phi-2 net (GPT-4 +72) | "
             "truncated / looped / gibberish / swapped lose |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d, h, f, g = r["dev"], r["dev_heldout_instructions"], r["families"], r["degradations"]
        fam = [f"{f[k]['net']:+.0f} [{f[k]['ci'][0]:+.0f}, {f[k]['ci'][1]:+.0f}]" for k in ("alpaca", "phi-2")]
        degs = " / ".join(f"{100 * g[k]['value']:.0f}" for k in ("truncated", "looped", "gibberish", "swapped") if k in g)
        lines.append(f"| {r['variant']} | {r['name']} | {r['train']['kind']}{' + gate' if r['gated'] else ''} | "
                     f"{r['train']['pairs']} | {100 * r['cv']['agreement']:.1f} | {_pct(d['agreement'])} | "
                     f"{_pct(d['length_balanced'])} | {_pct(d['judge_picks_longer'])} "
                     f"({100 * d['reference_picks_longer']['value']:.1f}) | {100 * h['agreement']['value']:.1f} / "
                     f"{100 * h['length_balanced']['value']:.1f} (n={h['n']}) | {fam[0]} | {fam[1]} | {degs} |")
    return "\n".join(lines) + "\n"


def _pct(fig) -> str:
    if not fig or fig.get("value") is None:
        return "—"
    lo, hi = fig["ci"]
    return f"{100 * fig['value']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


def variants_table(results: list[dict]) -> str:
    lines = ["| variant | train pairs | CV agreement | CV length-bal. | dev agreement | dev length-bal. | "
             "held-out instr. agreement | held-out instr. length-bal. | alpaca net (GPT-4-implied) | "
             "phi-2 net (GPT-4-implied) | degradations: original wins (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        fam = r.get("families", {})
        famtxt = [f"{fam[f]['net']:+.0f} [{fam[f]['ci'][0]:+.0f}, {fam[f]['ci'][1]:+.0f}] ({fam[f]['reference_net']:+.0f})"
                  if f in fam else "—" for f in ("alpaca", "phi-2")]
        deg = r.get("degradations")
        degtxt = (", ".join(f"{k} {100 * v:.0f}%" for k, v in deg.items()) if deg else "—")
        lines.append(f"| {r['name']} | {r['train_pairs']} | {100 * r['cv']['agreement']:.1f} | "
                     f"{100 * r['cv']['length_balanced']:.1f} | {_pct(r['dev']['agreement'])} | "
                     f"{_pct(r['dev']['length_balanced'])} | {_pct(r['dev_heldout_instructions']['agreement'])} | "
                     f"{_pct(r['dev_heldout_instructions']['length_balanced'])} | {famtxt[0]} | {famtxt[1]} | {degtxt} |")
    return "\n".join(lines) + "\n"


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
    pf.add_argument("--hh", action="store_true", help="the HH-RLHF harmlessness answers instead")
    pf.add_argument("--full", action="store_true", help="every annotation (plan_full), not the sampled plan")
    pf.add_argument("--dtype", default="float32", help="float32 or bfloat16 (native bf16 CPUs: ~1.7x faster)")
    va = sub.add_parser("variants", help="heads on the stored features: CV, held-out, family, degradation figures")
    va.add_argument("--model", default="smollm2-135m-instruct")
    va.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12])
    va.add_argument("--max-answer-tokens", type=int, default=160)
    va.add_argument("--out", default="reports/scorer")
    va.add_argument("--only", type=int, default=None, help="the first N variants only (a quick look)")
    fu = sub.add_parser("full", help="the full-scale heads (train-scorer on every annotation), held-out figures")
    fu.add_argument("--out", default="reports/scorer")
    fu.add_argument("--heads", default=str(Path.home() / ".cache" / "alignez-eval" / "scorer" / "study-heads"),
                    help="where the variants' head files go (not committed: an MLP head is ~10 MB)")
    fu.add_argument("--only", type=int, nargs="+", default=None, help="these variant numbers only")
    fu.add_argument("--redo", action="store_true", help="retrain variants already in full.json")
    fu.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    {"prefetch": prefetch, "variants": variants, "full": full}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
