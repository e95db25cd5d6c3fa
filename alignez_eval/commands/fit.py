"""`alignez-eval fit`: fit an edit artifact from self-generated (or given) preference pairs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from alignez_eval.defaults import DEFAULT_JUDGE
from alignez_eval.editing.config import is_none
from alignez_eval.errors import ConfigError
from alignez_eval.fitting.settings import GROUPS, HELP_CHOICES, FitSettings

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  # AlignEZ v2 from the model's own answers to the embedded queries (no labels)
  alignez-eval fit --model_args pretrained=gemma-3-270m,dtype=bfloat16 \\
      --queries alignez_embedded --limit 24 --out edits/gemma-v2.safetensors
  # a query file, the harmless keywords, the v1 (RoboShot) form
  alignez-eval fit --model_args pretrained=DIR --queries my_queries.jsonl --method v1 \\
      --keywords harmless --out edits/v1.safetensors
  # on a LoRA adapter (e.g. from `alignez-eval train-dpo`): generated, read and fitted with it applied
  alignez-eval fit --model_args pretrained=gemma-3-270m,peft=adapters/dpo-5pct,dtype=float32 \\
      --queries alignez_embedded --limit 24 --out edits/dpo5-v2.safetensors
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

LOAD_KEYS = ("pretrained", "dtype", "device", "gguf_file", "revision", "trust_remote_code", "layers_path", "peft")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--model_args", "--model-args", required=True,
                        help="pretrained=DIR|NAME[,dtype=bfloat16|float32][,device=cpu|cuda][,gguf_file=F]"
                             "[,revision=R][,layers_path=model.layers][,peft=ADAPTER_DIR (a LoRA adapter, merged in; "
                             "needs the [dpo] extra)]")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    groups["data"].add_argument("--queries",
                                help="query JSONL (instruction/query/prompt per line) or one of our task names")
    groups["data"].add_argument("--pref-data", help="real preference pairs instead of self-generation "
                                                    "(see formats below)")
    _add_setting_flags(groups)
    o = parser.add_argument_group("output and caching")
    o.add_argument("--out", required=True, help="artifact path (.safetensors); pairs and reports go next to it")
    o.add_argument("--cache-dir", help="fit cache (default $ALIGNEZ_HOME/fits)")
    o.add_argument("--no-cache", action="store_true", help="neither read nor write the fit cache")
    o.add_argument("--activations", help="reuse/save the captured activations at this .safetensors path")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    d = parser.add_argument_group("diagnostics (in the report, never in the artifact)")
    d.add_argument("--pair-judge", default=DEFAULT_JUDGE, metavar="SPEC|none",
                   help="judge each helpful answer against its harmful twin: how often the model's own "
                        "'helpful' answer is better (default: the default judge, %(default)s; none to skip)")


def setting_flags() -> dict[str, str]:
    """FitSettings field → its flag (layers_path has none: it comes with --model_args)."""
    return {f.name: f.metadata["flag"] or "--" + f.name.replace("_", "-")
            for f in dataclasses.fields(FitSettings) if f.metadata["cli"]}


def _add_setting_flags(groups: dict[str, Any]) -> None:
    """One flag per FitSettings field, default and help from the field. Values stay strings here:
    FitSettings.from_mapping reads them as it reads model_args, so a bad one is one ConfigError."""
    flags = setting_flags()
    for f in dataclasses.fields(FitSettings):
        if f.name not in flags:
            continue
        group, help_text = groups[f.metadata["group"]], f.metadata["help"]
        if isinstance(f.default, bool):  # a switch that flips the default (--greedy: do_sample off)
            group.add_argument(flags[f.name], dest=f.name, default=f.default,
                               action="store_false" if f.default else "store_true", help=help_text)
            continue
        choices = HELP_CHOICES.get(f.name)
        group.add_argument(
            flags[f.name], dest=f.name, default=f.default,
            metavar="{" + ",".join(choices) + "}" if choices else flags[f.name].lstrip("-").replace("-", "_").upper(),
            help=help_text if f.default is None else f"{help_text} (default {f.default})",
        )


def _settings(args: argparse.Namespace) -> FitSettings:
    values = {name: getattr(args, name) for name in setting_flags()}
    return FitSettings.from_mapping({**values, "layers_path": args.layers_path})


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
    if args.get("peft"):
        from alignez_eval.adapters import apply_adapter

        model = apply_adapter(model, args["peft"], merge=True)
    device = args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tok


def add_diagnostics(result: Any, model: Any, tok: Any, pair_judge: str | None, layers_path: str | None) -> None:
    """Pair quality, gate activity and the one-line data verdict, into the report and the pair records."""
    from alignez_eval.fitting.diagnostics import data_verdict, gate_activity
    from alignez_eval.models.paths import alignez_home

    quality = None
    if pair_judge and not is_none(pair_judge):
        from alignez_eval.judge.pair_quality import pair_quality

        quality = pair_quality(result.pairs, pair_judge, cache_path=alignez_home() / "fit-pair-judgments.sqlite")
        for rec in result.pairs:
            rec["pair_verdict"] = quality["verdicts"].get(str(rec["id"]))
    prompts = [str(r["query"]) for r in result.pairs if r.get("query")]
    gates = gate_activity(model, tok, result.edit, prompts, layers_path)
    fit = result.report["fit"]
    verdict = data_verdict(quality, fit["counts"], gates, result.edit.meta.num_layers)
    result.report["diagnostics"] = {
        "pair_quality": None if quality is None else {k: v for k, v in quality.items() if k != "verdicts"},
        "gate_activity": gates,
        "energy_kept_by_layer": {k: v.get("energy_kept") for k, v in fit["layer_diagnostics"].items()
                                 if v.get("energy_kept") is not None},
        "pairs_per_layer": fit["counts"]["pairs_per_layer"],
        "verdict": verdict,
    }


def main(args: argparse.Namespace) -> int:
    from alignez_eval.adapters import adapter_identity
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
    adapter = adapter_identity(model_args.get("peft"))  # a directory that is no adapter fails here
    queries = None
    if args.queries and not args.pref_data:
        from alignez_eval.queries import load_queries

        queries = load_queries(args.queries, settings.limit)
    t0 = time.perf_counter()
    model, tok = load_model(model_args)
    logger.info("loaded %s in %.1f s", model_args.get("pretrained"), time.perf_counter() - t0)
    cache_dir: Any = None if args.no_cache else (args.cache_dir or "default")
    result = run_fit(
        model, tok, queries, settings, pref_data=args.pref_data, cache_dir=cache_dir,
        activations_path=args.activations, model_name=model_args.get("pretrained"), adapter=adapter,
        progress=not args.no_progress,
    )
    add_diagnostics(result, model, tok, args.pair_judge, args.layers_path)
    paths = write_outputs(result, out)
    print(paths["text"].read_text(encoding="utf-8").rstrip())
    print(f"pairs: {paths['pairs']}\nreport: {paths['report']}")
    return 0
