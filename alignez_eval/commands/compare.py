"""`alignez-eval compare`: generate, fit, judge and report in one cached pipeline."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from alignez_eval.commands.options import add_judge_option
from alignez_eval.errors import ConfigError

logger = logging.getLogger(__name__)

EPILOG = """\
example (the demo, spelled out):
  alignez-eval compare --base pretrained=gemma-3-270m,dtype=bfloat16 \\
      --tuned pretrained=smollm2-135m-instruct,dtype=bfloat16 \\
      --tasks alignez_embedded --judge hf:qwen2.5-coder-1.5b-instruct \\
      --methods alignez,caa --limit 48 --name my-compare

other tools on the same leaderboard:
  ... --edit-file repeng=happy.gguf          # a llama.cpp / repeng control vector on the base model
  ... --edit-file sae=steer.pt               # an lm-eval `steered` file (add / clamp)
  ... --external-run vllm=out/vllm-base      # answers of a finished run of any engine (lm-eval with
                                             # --log_samples, e.g. vllm or local-completions), or an
                                             # AlpacaEval model_outputs.json, judged as they are

Generated runs, fits and judgments go to --work-dir (default runs/NAME, not committed); the report
to reports/NAME/. Re-running skips every step whose inputs did not change.
"""


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(f"{what} {part!r} is not KEY=VALUE; e.g. {what} max_gen_toks=128")
            k, v = part.split("=", 1)
            out[k.strip()] = _scalar(v.strip())
    return out


def _scalar(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def add_edit_args(p: argparse.ArgumentParser) -> None:
    from alignez_eval.editing.config import setting_choices, setting_help
    from alignez_eval.pipeline.parts import SET_EDIT_SETTINGS

    g = p.add_argument_group("edit settings (inference time; default: the artifact's)")
    for name in SET_EDIT_SETTINGS:
        # strings: EditConfig reads and checks them (edit_settings), with its own error messages
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        g.add_argument(*flags, dest=name, choices=setting_choices(name), help=setting_help(name))
    f = p.add_argument_group("fit settings (change the fitted artifact)")
    f.add_argument("--keywords", help="helpful | harmless | humor | POS/NEG keyword pair")
    f.add_argument("--energy", type=float, help="fraction of Σσ² kept by the helpful basis (v2)")
    f.add_argument("--component", choices=setting_choices("component"), help="where Φ is read and the edit applied")
    f.add_argument("--fit-arg", action="append", metavar="KEY=VALUE",
                   help="any other fit setting (answer_tokens=128, gen_batch_size=32, min_pairs=4, ...)")


def edit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The edit flags that were given, checked and typed by EditConfig."""
    from alignez_eval.pipeline.parts import SET_EDIT_SETTINGS, check_edit_settings

    return check_edit_settings({k: getattr(args, k) for k in SET_EDIT_SETTINGS})


def fit_settings(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: getattr(args, k) for k in ("keywords", "energy", "component")}
    out.update(parse_kv(args.fit_arg, "--fit-arg"))
    return out


def add_run_args(p: argparse.ArgumentParser, *, limit_default: int | None, batch_default: int) -> None:
    p.add_argument("--limit", type=int, default=limit_default, help="prompts per task (default: %(default)s = all)")
    p.add_argument("--limit-mode", choices=["spread", "first"], default="spread",
                   help="spread: evenly over the task (keeps every category of a sorted set); first: lm-eval's")
    p.add_argument("--gen-kwargs", action="append", metavar="KEY=VALUE",
                   help="generation settings for every system, e.g. max_gen_toks=128")
    p.add_argument("--batch-size", type=int, default=batch_default, help="generation batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, help="runs, fits, judgments and the step manifest (default runs/NAME)")
    p.add_argument("--report-root", type=Path, default=Path("reports"), help="reports/NAME/ goes here")
    p.add_argument("--no-judge-check", action="store_true", help="skip the judge sanity check")
    p.add_argument("--judge-check-n", type=int, help="prompts of the judge check (default: its whole set)")


def add_include_path_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include_path", "--include-path", dest="include_path", action="append", default=[],
                   metavar="DIR", help="a directory of your own task YAMLs (as lm_eval --include_path; "
                   "repeatable): NAME and optionally NAME_base, docs with `id` and `instruction`")


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--base", required=True, help="model_args of the base model (pretrained=DIR|embedded name,...)")
    p.add_argument("--tuned", help="model_args of the tuned reference (its chat variant and template are used)")
    p.add_argument("--tasks", required=True, help="comma-separated datasets, e.g. alignez_embedded,alignez_oasst1")
    add_include_path_arg(p)
    add_judge_option(p)
    p.add_argument("--name", required=True, help="report name: reports/NAME/")
    p.add_argument("--methods", default="alignez", help="comma-separated: alignez,alignez-v1,caa,iti")
    p.add_argument("--edit-instruct", action="append", default=[], metavar="MODEL_ARGS",
                   help="also edit this instruct model with AlignEZ and compare it with itself (Δ%% vs unedited)")
    p.add_argument("--edit-file", action="append", default=[], metavar="[LABEL=]PATH",
                   help="also run the base model with an edit from a file: a GGUF control vector (llama.cpp, "
                        "repeng), an lm-eval steered .pt (read with weights_only=True), or an alignez-eval "
                        "artifact (repeatable; LABEL defaults to the file's stem)")
    p.add_argument("--external-run", action="append", default=[], metavar="[LABEL=]PATH",
                   help="also judge the answers of a finished run made elsewhere: an lm-eval --output_path "
                        "directory (--log_samples, same task) of any model type, or an AlpacaEval "
                        "model_outputs.json (repeatable)")
    add_run_args(p, limit_default=None, batch_default=16)
    p.add_argument("--judge-reference", type=Path, metavar="FILE",
                   help="state the judge's agreement with a reference annotator in the report header: an "
                        "agreement.json of `alignez-eval judge-agreement`, or reference annotations (AlpacaEval "
                        "annotations.json / JSONL) to measure it on with this judge (a cached step)")
    p.add_argument("--judge-reference-limit", type=int, metavar="N",
                   help="judge a seeded random N of the reference pairs (default: all)")
    add_edit_args(p)


def labelled(item: str, flag: str) -> tuple[str, str]:
    """`LABEL=PATH`, or `PATH` labelled by its file name's stem."""
    label, sep, path = item.partition("=")
    if not sep:
        path = item
        label = Path(item.rstrip("/")).stem
    if not path:
        raise ConfigError(f"{flag} {item!r}: give LABEL=PATH")
    return label.strip(), path.strip()


def print_report(files: dict[str, Path], title: str) -> None:
    md = files.get("md")
    print()
    if md is not None and Path(md).exists():
        print(Path(md).read_text(encoding="utf-8"))
    print(f"{title}: {Path(files.get('md', next(iter(files.values())))).parent}")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.pipeline.compare import CompareConfig, run_compare

    cfg = CompareConfig(
        base=args.base, tuned=args.tuned, tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
        judge=args.judge, name=args.name, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        limit=args.limit, limit_mode=args.limit_mode, edit=edit_settings(args), fit=fit_settings(args),
        gen_kwargs=parse_kv(args.gen_kwargs, "--gen-kwargs"), batch_size=args.batch_size, seed=args.seed,
        work_dir=args.work_dir, report_root=args.report_root, edited_instruct=args.edit_instruct,
        judge_check=not args.no_judge_check, judge_check_n=args.judge_check_n,
        judge_reference=args.judge_reference, judge_reference_limit=args.judge_reference_limit,
        include_path=tuple(args.include_path),
        edit_files=[labelled(x, "--edit-file") for x in args.edit_file],
        external_runs=[labelled(x, "--external-run") for x in args.external_run],
    )
    result = run_compare(cfg)
    if not result.report:  # a data-parallel rank other than 0
        return 0
    logger.info("steps run: %d, skipped: %d (manifest: %s)", len(result.cache.ran), len(result.cache.skipped),
                result.cache.manifest_path)
    for name, files in result.reports.items():
        if name != cfg.name:
            print_report(files, f"report ({name})")
    print_report(result.report, "report")
    return 0
