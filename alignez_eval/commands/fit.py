"""`alignez-eval fit`: fit an edit artifact from self-generated (or given) preference pairs."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  # AlignEZ v2 from the model's own answers to the embedded queries (no labels)
  alignez-eval fit --model_args pretrained=gemma-3-270m,dtype=bfloat16 \\
      --queries alignez_embedded --limit 24 --out edits/gemma-v2.safetensors
  # a query file, the harmless keywords, the v1 (RoboShot) form
  alignez-eval fit --model_args pretrained=DIR --queries my_queries.jsonl --method v1 \\
      --keywords harmless --out edits/v1.safetensors
  # ground-truth pairs (HH-RLHF / UltraFeedback / prompt-chosen-rejected JSONL), small-data regime
  alignez-eval fit --model_args pretrained=DIR --pref-data hh_train.jsonl --pref-limit 64 \\
      --method caa --out edits/caa-gt.safetensors

outputs (for --out edits/x.safetensors):
  edits/x.safetensors     the artifact (use with alignez-hf edit=edits/x.safetensors)
  edits/x.pairs.jsonl     per query: characteristics, both answers, kept/dropped and why, per-layer filter
  edits/x.report.json     counts, per-stage seconds, degeneracy rate, probe ranking, settings
  edits/x.report.txt      the same in short, also printed

--pref-data formats (one JSON object per line, or a .json list):
  {"prompt": ..., "chosen": "...", "rejected": "..."}
  {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}        (HH-RLHF)
  {"prompt": ..., "chosen": [{"role": ..., "content": ...}, ...], "rejected": [...]}  (UltraFeedback)

Fitting is cached by content ($ALIGNEZ_HOME/fits, default ~/.cache/alignez-eval/fits): rerunning the
same fit reuses it, a killed fit resumes its generation, and methods fitted on the same queries share
one generation pass.
"""

LOAD_KEYS = ("pretrained", "dtype", "device", "gguf_file", "revision", "trust_remote_code", "layers_path")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--model_args", "--model-args", required=True,
                        help="pretrained=DIR|NAME[,dtype=bfloat16|float32][,device=cpu|cuda][,gguf_file=F]"
                             "[,revision=R][,layers_path=model.layers]")
    src = parser.add_argument_group("data")
    src.add_argument("--queries", help="query JSONL (instruction/query/prompt per line) or one of our task names")
    src.add_argument("--limit", type=int, help="use only the first N queries")
    src.add_argument("--pref-data", help="real preference pairs instead of self-generation (see formats below)")
    src.add_argument("--pref-limit", type=int, help="use only the first N usable real pairs")
    src.add_argument("--keywords", default="helpful", help="helpful | harmless | humor | POS/NEG (default helpful)")
    m = parser.add_argument_group("method")
    m.add_argument("--method", default="v2", help="v2 (default) | v1 | caa | iti")
    m.add_argument("--energy", type=float, default=0.90, help="v2: fraction of Σσ² kept (default 0.9)")
    m.add_argument("--cos-threshold", type=float, default=0.8,
                   help="v1/v2: per layer, drop pairs whose embeddings have cosine above this (default 0.8)")
    m.add_argument("--min-pairs", type=int, default=4, help="layers with fewer surviving pairs are not edited")
    m.add_argument("--harm-basis", default="neg_align", help="v2 harmful basis: neg_align (default) | harm_orth")
    m.add_argument("--component", default="mlp", help="mlp (default) | block")
    m.add_argument("--read", default="last", help="Φ at the last token (default) or the mean over the answer")
    m.add_argument("--gate", default="auto",
                   help="paper | flipped | none, recorded in the artifact (auto: paper for v2, none otherwise)")
    m.add_argument("--n-layers", type=int, default=5, help="per-query top-n layers for layers=auto (default 5)")
    m.add_argument("--top-k", type=int, default=5, help="iti/caa: layers kept by probe accuracy (default 5)")
    g = parser.add_argument_group("generation")
    g.add_argument("--char-tokens", type=int, default=50, help="new tokens per characteristic (default 50)")
    g.add_argument("--answer-tokens", type=int, default=200, help="new tokens per answer (default 200)")
    g.add_argument("--batch-size", type=int, default=16, help="queries per generate call (default 16)")
    g.add_argument("--act-batch-size", type=int, default=16, help="texts per activation forward (default 16)")
    g.add_argument("--chat", default="auto", help="auto (chat template if the tokenizer has one) | yes | no")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    g.add_argument("--seed", type=int, default=0)
    o = parser.add_argument_group("output and caching")
    o.add_argument("--out", required=True, help="artifact path (.safetensors); pairs and reports go next to it")
    o.add_argument("--cache-dir", help="fit cache (default $ALIGNEZ_HOME/fits)")
    o.add_argument("--no-cache", action="store_true", help="neither read nor write the fit cache")
    o.add_argument("--activations", help="reuse/save the captured activations at this .safetensors path")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> Any:
    from alignez_eval.fitting.settings import FitSettings

    return FitSettings.from_mapping({
        "method": args.method, "keywords": args.keywords, "energy": args.energy,
        "cos_threshold": args.cos_threshold, "min_pairs": args.min_pairs, "harm_basis": args.harm_basis,
        "component": args.component, "read": args.read, "gate": args.gate, "n_layers": args.n_layers,
        "top_k": args.top_k, "char_tokens": args.char_tokens, "answer_tokens": args.answer_tokens,
        "gen_batch_size": args.batch_size, "act_batch_size": args.act_batch_size, "chat": args.chat,
        "do_sample": not args.greedy, "temperature": args.temperature, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty, "seed": args.seed, "limit": args.limit,
        "pref_limit": args.pref_limit, "layers_path": args.layers_path,
    })


def load_model(model_args: dict[str, str]) -> tuple[Any, Any]:
    """(model, tokenizer) from `pretrained=…` model_args, the way alignez-hf would load them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignez_eval.pipeline.parts import resolve_pretrained

    unknown = sorted(set(model_args) - set(LOAD_KEYS))
    if unknown:
        raise ConfigError(f"fit --model_args: unknown keys {unknown}; accepted: {', '.join(LOAD_KEYS)}")
    args = resolve_pretrained(model_args)
    pretrained = args.get("pretrained")
    if not pretrained:
        raise ConfigError("fit --model_args needs pretrained=DIR (or an embedded model name, see `alignez-eval models`)")
    dtype_name = args.get("dtype", "auto")
    dtype: Any = "auto" if dtype_name == "auto" else getattr(torch, dtype_name, None)
    if dtype is None or (dtype != "auto" and not isinstance(dtype, torch.dtype)):
        raise ConfigError(f"dtype={dtype_name!r} is not a torch dtype; use bfloat16, float16, float32 or auto")
    kw: dict[str, Any] = {"dtype": dtype}
    for key in ("gguf_file", "revision"):
        if args.get(key):
            kw[key] = args[key]
    if str(args.get("trust_remote_code", "")).lower() in ("1", "true", "yes"):
        kw["trust_remote_code"] = True
    try:
        tok = AutoTokenizer.from_pretrained(pretrained, **{k: v for k, v in kw.items() if k != "dtype"})
        model = AutoModelForCausalLM.from_pretrained(pretrained, **kw)
    except OSError as exc:
        raise ConfigError(f"cannot load pretrained={pretrained!r} ({exc}); pass a local model directory "
                          "or an embedded model name (`alignez-eval models list`)") from exc
    device = args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tok


def main(args: argparse.Namespace) -> int:
    from alignez_eval.fitting import run_fit, write_outputs
    from alignez_eval.pipeline.identity import parse_model_args

    model_args = parse_model_args(args.model_args)
    args.layers_path = model_args.pop("layers_path", None)
    settings = _settings(args)  # validate flags before loading a model
    if not args.queries and not args.pref_data:
        raise ConfigError("pass --queries FILE.jsonl|TASK (self-generated pairs) or --pref-data FILE (real pairs)")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {args.out!r} should end in .safetensors (the artifact format)")
    queries = None
    if args.queries and not args.pref_data:
        from alignez_eval.queries import load_queries

        queries = load_queries(args.queries, args.limit)
    t0 = time.perf_counter()
    model, tok = load_model(model_args)
    logger.info("loaded %s in %.1f s", model_args.get("pretrained"), time.perf_counter() - t0)
    cache_dir: Any = None if args.no_cache else (args.cache_dir or "default")
    result = run_fit(
        model, tok, queries, settings, pref_data=args.pref_data, cache_dir=cache_dir,
        activations_path=args.activations, model_name=model_args.get("pretrained"),
        progress=not args.no_progress,
    )
    paths = write_outputs(result, out)
    print(paths["text"].read_text(encoding="utf-8").rstrip())
    print(f"pairs: {paths['pairs']}\nreport: {paths['report']}")
    return 0
