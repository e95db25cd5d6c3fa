"""`alignez-eval train-dpo`: a LoRA adapter trained with DPO (TRL) on a share of real preference pairs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_file

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  # 5% of a 400-pair training pool of HH-RLHF harmless-base, LoRA r=8 on q/v, seed 0
  alignez-eval train-dpo --model gemma-3-270m --pref-data hh/harmless-base/test.jsonl.gz \\
      --pool 400 --share 5% --out adapters/dpo-5pct
  # the first 64 pairs of a prompt/chosen/rejected JSONL, 2 epochs
  alignez-eval train-dpo --model DIR --pref-data pairs.jsonl --count 64 --epochs 2 --out adapters/x

then evaluate or fit on it:  --model_args pretrained=gemma-3-270m,peft=adapters/dpo-5pct

The pairs: the file's usable pairs are split once, disjoint by prompt (seeded by --split-seed), into
--eval-pairs + --eval-prompts held out and up to --pool training pairs; --share/--count take a
prefix of the training pairs, so a larger share contains every smaller one. Needs the [dpo] extra
(pip install 'alignez-eval[dpo]': TRL + PEFT).

outputs (--out DIR): PEFT's adapter_config.json + adapter_model.safetensors, dpo_manifest.json (data
sha256, the pair ids, every setting, versions, loss log, seconds) and dpo_pairs.jsonl. The directory
appears in one rename when training ends; rerunning with the same inputs skips training.
"""


def configure(p: argparse.ArgumentParser) -> None:
    from alignez_eval.dpo.train import DPOSettings

    p.epilog = EPILOG
    p.add_argument("--model", required=True, help="base model: a directory or an embedded name (gemma-3-270m)")
    p.add_argument("--pref-data", required=True, help="preference file: HH-RLHF transcripts or prompt/chosen/"
                   "rejected JSONL (.jsonl, .jsonl.gz or a .json list)")
    p.add_argument("--out", required=True, type=Path, help="adapter directory to write")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--share", help="share of the training pool: 5%% or 0.05")
    g.add_argument("--count", type=int, help="number of training pairs")
    sp = p.add_argument_group("the pool split (disjoint by prompt)")
    sp.add_argument("--pool", type=int, help="training pool size (default: every pair not held out)")
    sp.add_argument("--eval-pairs", type=int, default=0, help="pairs held out for preference accuracy")
    sp.add_argument("--eval-prompts", type=int, default=0, help="single-turn prompts held out for judging")
    sp.add_argument("--split-seed", type=int, default=0, help="seed of the split's prompt order")
    t = p.add_argument_group("LoRA and DPO settings")
    for f in dataclasses.fields(DPOSettings):
        t.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=f"(default {f.default})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.dpo.data import count_of, read_pairs, split_pool
    from alignez_eval.dpo.train import DPOSettings, train_dpo
    from alignez_eval.pipeline.parts import resolve_pretrained

    settings = DPOSettings.from_mapping({f.name: getattr(args, f.name) for f in dataclasses.fields(DPOSettings)})
    pairs = read_pairs(args.pref_data)
    held = args.eval_pairs + args.eval_prompts
    pool = args.pool if args.pool is not None else len(pairs) - held
    if pool < 1:
        raise ConfigError(f"no training pairs left: {len(pairs)} pairs, {held} held out")
    split = split_pool(pairs, n_train=pool, n_eval_pairs=args.eval_pairs, n_eval_prompts=args.eval_prompts,
                       seed=args.split_seed) if held or args.pool is not None else None
    train = split.train if split is not None else pairs
    n = count_of(args.share if args.share is not None else args.count, len(train))
    base = resolve_pretrained({"pretrained": args.model})["pretrained"]
    if not Path(base).expanduser().is_dir():
        raise ConfigError(f"--model {args.model!r} is neither a model directory nor an embedded model name "
                          "(`alignez-eval models list`)")
    manifest = train_dpo(base, train[:n], args.out, settings, data_sha256=sha256_file(args.pref_data),
                         data_path=str(args.pref_data), progress=not args.no_progress)
    print(f"adapter: {args.out} ({manifest['n_pairs']} pairs, {manifest['steps']} steps, "
          f"{manifest['train_seconds']} s)")
    return 0
