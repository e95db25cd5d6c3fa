"""`alignez-eval judge`: judge candidate runs against a baseline run (cached, resumable)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from alignez_eval.commands.options import add_cache_option, add_judge_option
from alignez_eval.errors import ConfigError

logger = logging.getLogger(__name__)

EPILOG = """\
RUN is an lm-eval --output_path directory (run with --log_samples), its model subdirectory, a
results_*.json, or an AlpacaEval model_outputs.json (paired by exact instruction text); prefix NAME=
to name it (default: the model directory's name, or the file's generator).

SPEC is a YAML file or a short string:
  hf:qwen2.5-coder-1.5b-instruct                  local chat judge: pairwise, both orders, probabilities
                                                  averaged, anchored prompt, length correction 0.05
                                                  (defaults chosen by agreement with GPT-4; README)
  hf:/path/to/model,mode=single                   local judge, 1-9 grade of each answer
  openai:gpt-4o-mini@https://api.openai.com/v1    any OpenAI-compatible endpoint (key: $OPENAI_API_KEY)
  openai:qwen@http://127.0.0.1:8080/v1,api_key_env=LLAMA_KEY,concurrency=8
  rm:/path/to/reward-model                        reward model, scores compared

example:
  alignez-eval judge --baseline base=runs/base --candidate alignez=runs/alignez \\
      --candidate tuned=runs/tuned --judge hf:qwen2.5-coder-1.5b-instruct --out judgments/demo
"""


def named_run(text: str) -> tuple[str | None, str]:
    name, eq, path = text.partition("=")
    if eq and name and not Path(text).exists():
        return name, path
    return None, text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--baseline", required=True, metavar="[NAME=]RUN", help="the run every candidate is judged against")
    parser.add_argument("--candidate", action="append", required=True, metavar="[NAME=]RUN",
                        help="a run to judge (repeat for several)")
    add_judge_option(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where judgments and manifest go")
    add_cache_option(parser, " (default: DIR/cache.sqlite)")
    parser.add_argument("--mode", choices=["pairwise", "single"], default=None, help="override the spec's mode")
    parser.add_argument("--margin", type=float, default=None, help="override the spec's tie margin")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="judge a seeded random sample of N paired docs (default: all); the manifest records it")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit's sample (default 0)")
    parser.add_argument("--max-error-rate", type=float, default=0.2, metavar="SHARE",
                        help="exit non-zero when more than this share of a candidate's judgments failed "
                             "(default 0.2); a run in which no judgment succeeded always does")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.judge import judge_runs, load_run
    from alignez_eval.judge.spec import with_overrides

    if not 0 <= args.max_error_rate <= 1:
        raise ConfigError(f"--max-error-rate {args.max_error_rate:g} is a share of judgments; pass one in 0..1")
    spec = with_overrides(args.judge, args.mode, args.margin)
    bname, bpath = named_run(args.baseline)
    baseline = load_run(bpath, name=bname)
    candidates = {}
    for text in args.candidate:
        name, path = named_run(text)
        run = load_run(path, name=name)
        if run.name in candidates or run.name == baseline.name:
            raise ConfigError(f"two runs are both named {run.name!r}; name them with NAME=RUN")
        candidates[run.name] = run
    out = judge_runs(baseline, candidates, spec, args.out, cache_path=args.cache, limit=args.limit, seed=args.seed)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"judge: {manifest['judge_description']}")
    for name, info in manifest["candidates"].items():
        c = info["counts"]
        p = info["pairing"]
        print(f"  {name} vs {baseline.name}: win {c.get('win', 0)} tie {c.get('tie', 0)} lose {c.get('lose', 0)} "
              f"error {c.get('error', 0)} ({p['paired']} paired, {p.get('judged', p['paired'])} judged, "
              f"{len(p['missing_in_candidate'])} missing, "
              f"{len(p['extra_in_candidate'])} extra)")
    s = manifest["stats"]
    print(f"  {int(s['calls'])} judge calls, {int(s['cache_hits'])} cached, cost ${s['cost_usd']:.4f}; "
          f"judgments in {out}")
    check_errors(out, manifest, args.max_error_rate)
    return 0


def check_errors(out: Path, manifest: dict, max_error_rate: float) -> None:
    """A judge that failed (bad key, unknown model, a server refusing every request) must not end
    in exit 0 with a leaderboard of errors: raise with the first error the judge returned."""
    from alignez_eval.errors import JudgeError
    from alignez_eval.judge.runner import read_jsonl

    first: str | None = None
    judged = failed = 0
    too_many: list[str] = []
    for name, info in manifest["candidates"].items():
        records = read_jsonl(out / info["file"])
        errors = [r for r in records if r.get("verdict") == "error"]
        if errors and first is None:
            first = " ".join(str(errors[0].get("error") or "no message").split())[:400]
        judged += sum(1 for r in records if not r.get("identical"))  # identical answers need no call
        failed += len(errors)
        if records and len(errors) / len(records) > max_error_rate:
            too_many.append(f"{name}: {len(errors)} of {len(records)}")
    fix = "fix the judge (URL, API key, model name) and rerun"
    if judged and failed >= judged:
        raise JudgeError(f"no judgment succeeded ({failed} failed); first error: {first}; {fix}")
    if too_many:
        raise JudgeError(f"judgments failed ({'; '.join(too_many)}), more than --max-error-rate "
                         f"{max_error_rate:g}; first error: {first}; {fix}")
