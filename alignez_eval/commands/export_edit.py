"""`alignez-eval export-edit`: an additive edit (CAA, ITI, an imported vector) as a llama.cpp control vector."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
Only an edit that is one constant vector per layer can be a control vector: CAA or ITI (fit or compare
--methods caa|iti), or a vector imported from another tool. AlignEZ's edits are refused, with the reason:
their update depends on each hidden state and each query.

llama.cpp adds direction.N to block N's output at every position; run alignez-hf with positions=all to
get the same model here (the exported file is read back with its default positions=all).

examples:
  alignez-eval export-edit runs/demo/fit/base-caa/alignez_embedded/edit.safetensors -o caa.gguf --model-type gemma3
  llama-completion -m model.gguf --control-vector-scaled caa.gguf 1.0 -p "How do I bake bread?"
  alignez-eval run --model alignez-hf --model_args pretrained=DIR,edit=caa.gguf ...   # the same edit here
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("edit", metavar="ARTIFACT", type=Path, help="an alignez-eval edit artifact (.safetensors)")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="FILE", help="the .gguf to write")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="scale baked into the vectors (default 1; llama.cpp's own scale multiplies it)")
    parser.add_argument("--layers", default=None, metavar="SPEC",
                        help="layers to export, e.g. 10-14 (default: the artifact's default layers)")
    parser.add_argument("--model-type", default=None, metavar="TYPE",
                        help="the model's config.model_type (llama, qwen2, gemma3, …), written as the file's "
                             "controlvector.model_hint; needed to export an MLP-output edit")


def main(args: argparse.Namespace) -> int:
    from alignez_eval.editing.artifact import Edit
    from alignez_eval.editing.interop import write_control_vector

    edit = Edit.load(args.edit)
    from alignez_eval.editing.interop import export_layers

    sha = write_control_vector(edit, args.out, alpha=args.alpha, model_type=args.model_type, layers=args.layers)
    layers = ", ".join(str(i) for i in (export_layers(edit, args.layers) if edit.meta.rule == "add" else edit.layers))
    print(f"export-edit: {edit.meta.method} edit, blocks {layers}, alpha {args.alpha:g} -> {args.out} "
          f"(sha256 {sha[:12]})")
    return 0
