"""`alignez-eval train-scorer`: train a scorer head (a judge) from reference annotations."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
FILE: AlpacaEval annotations (annotations.json, or JSONL; .gz accepted) of
  {"instruction", "output_1", "output_2", "preference", "generator_1", "generator_2"}
preference: 1 / 2 hard, a value in [1, 2] soft (AlpacaEval 2's weighted annotator: p - 1 is the
probability that output_2 is better), 0 or 1.5 a tie, null skipped.

What it does: features of every distinct answer from a frozen causal LM (stored under
$ALIGNEZ_HOME/scorer/features and resumable), standardized; a Bradley-Terry head on feature
differences; the L2 strength chosen by cross-validation grouped by generator; with
--length-term control (default) a length term is fitted beside the quality part and left out
when scoring (AlpacaEval 2-LC's idea). Writes HEAD.safetensors (verified on load: provenance,
training files' sha256, generators, licence) and HEAD.json (cross-validation table).

Use it: alignez-eval judge --judge scorer:HEAD.safetensors ...   (any command that takes --judge)

examples:
  alignez-eval train-scorer annotations_gpt4_train.jsonl.gz --out heads/gpt4.safetensors \\
      --per-generator 45 --instruction-share 0.5 --exclude-generators alpaca-7b,phi-2-sft
  alignez-eval train-scorer a.json b.jsonl.gz --out h.safetensors --model qwen2.5-coder-0.5b-instruct \\
      --layers 6 12 --poolings mean
"""


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def configure(parser: argparse.ArgumentParser) -> None:
    from alignez_eval.scorer.fit import DEFAULT_L2_GRID
    from alignez_eval.scorer.spec import FeatureSpec

    d = FeatureSpec("x")
    parser.epilog = EPILOG
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="annotation files (see below)")
    parser.add_argument("--out", required=True, type=Path, metavar="HEAD", help="head file to write (.safetensors)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="feature model: an embedded name or a model directory (default: %(default)s)")
    parser.add_argument("--layers", type=int, nargs="+", default=list(d.layers),
                        help="hidden-state indices to read (0 = embeddings; default: %(default)s)")
    parser.add_argument("--poolings", nargs="+", default=list(d.poolings), choices=["mean", "last"],
                        help="pool each layer over the answer's tokens (mean) and/or take the last token")
    parser.add_argument("--max-answer-tokens", type=int, default=d.max_answer_tokens,
                        help="answers are cut to this many tokens for the features (default: %(default)s); "
                             "the length term reads the whole answer")
    parser.add_argument("--length-term", choices=["control", "none", "full"], default=None,
                        help="control: fit a log-length term and score without it (the default of a linear head); "
                             "none: no length term (the default, and the only choice, of --head mlp/auto); full: "
                             "fit it and score with it")
    parser.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2_GRID),
                        help="L2 strengths tried by grouped cross-validation")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by generator")
    parser.add_argument("--per-generator", type=int, default=None, metavar="N",
                        help="at most N rows of each generator (seeded sample)")
    parser.add_argument("--instruction-share", type=float, default=None, metavar="S",
                        help="train only on a seeded share S of the instructions (evaluate on the rest)")
    parser.add_argument("--exclude-generators", default=None, metavar="A,B",
                        help="drop these generators (and their _concise/_verbose variants) from training")
    parser.add_argument("--eval-generators", default=None, metavar="A,B|FILE",
                        help="generators you will evaluate on (names, or an annotation file): training on any of "
                             "them is refused")
    parser.add_argument("--augment-degradations", type=int, default=0, metavar="N",
                        help="add synthetic pairs: N preferred training answers each beat their truncated, looped, "
                             "shuffled copies and another instruction's answer (default 0)")
    parser.add_argument("--head", choices=["linear", "mlp", "auto"], default="linear",
                        help="linear Bradley-Terry head (default), a small MLP one, or auto: whichever has the "
                             "lower log loss under the same grouped cross-validation (mlp/auto: --length-term none)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128], help="MLP hidden widths tried (default 128)")
    parser.add_argument("--mlp-l2", type=float, nargs="+", default=[1e-3], help="MLP weight decays tried")
    parser.add_argument("--epochs", type=int, default=12, help="MLP training epochs (Adam, minibatches of 256)")
    parser.add_argument("--relevance", action="store_true",
                        help="fit a relevance gate: an answer whose PMI with its instruction under the feature model "
                             "is below τ loses κ per unit (needs --augment-degradations for off-topic examples)")
    parser.add_argument("--relevance-pairs", type=int, default=2000, metavar="N",
                        help="real pairs (seeded sample) beside the synthetic swapped ones for the gate fit")
    parser.add_argument("--relevance-tokens", type=int, default=64, metavar="N",
                        help="answer tokens the relevance PMI reads (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="feature dtype: auto = bfloat16 on CPUs with native bf16 (AVX512-BF16, AMX) and GPUs, "
                             "float32 elsewhere; recorded in the head")
    parser.add_argument("--batch-size", type=int, default=16, help="feature-extraction batch size")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import itertools

    from alignez_eval.dtypes import cpu_has_native_bf16, resolve_dtype
    from alignez_eval.scorer.data import generators, load_pairs
    from alignez_eval.scorer.mlp import MLPSettings
    from alignez_eval.scorer.relevance import RelevanceSpec
    from alignez_eval.scorer.spec import FeatureSpec
    from alignez_eval.scorer.train import TrainSettings, train_scorer

    eval_gens: tuple[str, ...] = ()
    if args.eval_generators:
        path = Path(args.eval_generators)
        eval_gens = (tuple(sorted(generators(load_pairs(path)[0]))) if path.is_file() else _csv(args.eval_generators))
    dtype = resolve_dtype(args.dtype, "cpu")
    settings = TrainSettings(
        features=FeatureSpec(args.model, layers=tuple(args.layers), poolings=tuple(args.poolings),
                             max_answer_tokens=args.max_answer_tokens, dtype=dtype),
        head_kind=args.head, relevance_pairs=args.relevance_pairs,
        mlp_grid=tuple(MLPSettings(hidden=h, l2=l2, epochs=args.epochs, seed=args.seed)
                       for h, l2 in itertools.product(args.hidden, args.mlp_l2)),
        relevance=RelevanceSpec(args.model, max_answer_tokens=args.relevance_tokens, dtype=dtype)
        if args.relevance else None,
        extra={"feature_dtype": dtype, "dtype_requested": args.dtype, "cpu_native_bf16": cpu_has_native_bf16()},
        length_term=args.length_term or ("control" if args.head == "linear" else "none"), l2_grid=tuple(args.l2), folds=args.folds, per_generator=args.per_generator,
        instruction_share=args.instruction_share, exclude_generators=_csv(args.exclude_generators),
        evaluation_generators=eval_gens, augment=args.augment_degradations, seed=args.seed, batch_size=args.batch_size)
    report = train_scorer(args.files, args.out, settings)
    best = next(r for r in report["cv"] if r["l2"] == report["l2"])
    print(f"scorer head {args.out} ({report['kind']}, sha256 {report['sha256'][:12]}): {report['pairs']} pairs of "
          f"{len(report['generators'])} generators, {report['answers']} answers; L2 {report['l2']:g} by grouped CV "
          f"(held-out agreement {best['agreement']:.1%}, log loss {best['log_loss']:.3f}); {report['seconds']} s")
    print(f"use it: --judge scorer:{args.out}")
    return 0
