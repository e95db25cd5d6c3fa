"""An exported control vector in a real llama.cpp against the same edit in alignez-hf.

The embedded SmolLM2-135M-Instruct GGUF (Q4_1, as the PyPI wheel holds it) runs in llama.cpp's own
`llama-completion` with `--control-vector-scaled caa.gguf:1`; the same model, dequantized to HF
safetensors by `alignez-eval models prepare`, runs here with the CAA artifact applied at every
position. Greedy first tokens are compared per prompt, unedited and edited, so the quantization floor
(unedited vs unedited) is measured beside the edit's agreement. The vector is also exported one block
lower (direction.N at N−1) to check the block numbering: only the right one should match.

  python bench/llamacpp_control_vector.py --llama-completion PATH/llama-completion \
      --edit runs/x/caa.safetensors --alpha 4 --prompts 24 --tokens 12 --out reports/interop

llama.cpp is not a dependency: build `llama-completion` from llama-cpp-python's sdist (vendor/llama.cpp,
`cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target llama-completion`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignez_eval import apply_edit  # noqa: E402
from alignez_eval.editing.artifact import Edit, LayerEdit  # noqa: E402
from alignez_eval.editing.interop import write_control_vector  # noqa: E402
from alignez_eval.models import model_path  # noqa: E402
from alignez_eval.models.registry import get_spec  # noqa: E402
from alignez_eval.models.wheels import assemble_gguf, fetch_wheels  # noqa: E402
from alignez_eval.queries import load_queries  # noqa: E402

MODEL = "smollm2-135m-instruct"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                kind = "AVX512-BF16" if "avx512_bf16" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
                return f"{line.split(':', 1)[1].strip()} ({kind})"
    except OSError:
        pass
    return platform.processor() or "unknown"


def llama_cpp(binary: str, gguf: Path, prompt: str, n: int, vector: Path | None) -> str:
    cmd = [binary, "-m", str(gguf), "-p", prompt, "-n", str(n), "--temp", "0", "--top-k", "1", "-s", "0",
           "-no-cnv", "--no-display-prompt", "--no-warmup", "-t", "2", "-c", "1024", "--simple-io"]
    if vector is not None:
        cmd += ["--control-vector-scaled", f"{vector}:1.0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"llama-completion failed ({res.returncode}): {res.stderr[-800:]}")
    return res.stdout


def hf_greedy(model, tok, prompt: str, n: int) -> list[int]:
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def shifted(edit: Edit, by: int) -> Edit:
    """The same vectors one block lower: the off-by-one a wrong block numbering would give."""
    import dataclasses

    layers = {i - by: LayerEdit(harm=le.harm, help=le.help, steer=le.steer) for i, le in edit.layers.items()
              if i - by > 0}
    return Edit(meta=dataclasses.replace(edit.meta), layers=layers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-completion", required=True)
    ap.add_argument("--edit", required=True, type=Path, help="an additive artifact fitted on SmolLM2 (CAA, block)")
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "interop")
    args = ap.parse_args()
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="cv-check-"))
    spec = get_spec(MODEL)
    gguf = work / "model.gguf"
    assemble_gguf(spec, fetch_wheels(spec), gguf)
    edit = Edit.load(args.edit)
    vec, low = work / "caa.gguf", work / "caa-minus1.gguf"
    write_control_vector(edit, vec, alpha=args.alpha, model_type="llama")
    write_control_vector(shifted(edit, 1), low, alpha=args.alpha, model_type="llama")
    path = model_path(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    queries = load_queries("alignez_embedded")[: args.prompts]
    rows = []
    for q in queries:
        prompt = tok.apply_chat_template([{"role": "user", "content": q["instruction"]}], tokenize=False,
                                         add_generation_prompt=True)
        hf_plain = hf_greedy(model, tok, prompt, args.tokens)
        with apply_edit(model, vec):  # the exported file itself, read back: positions=all
            hf_edit = hf_greedy(model, tok, prompt, args.tokens)
        with apply_edit(model, edit, alpha=args.alpha, positions="all"):  # the original artifact
            hf_orig = hf_greedy(model, tok, prompt, args.tokens)
        enc = lambda text: tok(text, add_special_tokens=False).input_ids[: args.tokens]  # noqa: E731
        lc_plain = enc(llama_cpp(args.llama_completion, gguf, prompt, args.tokens, None))
        lc_edit = enc(llama_cpp(args.llama_completion, gguf, prompt, args.tokens, vec))
        lc_low = enc(llama_cpp(args.llama_completion, gguf, prompt, args.tokens, low))
        rows.append({"id": q["id"], "hf_plain": hf_plain, "hf_edit": hf_edit, "hf_orig_equal": hf_orig == hf_edit,
                     "lc_plain": lc_plain, "lc_edit": lc_edit, "lc_minus1": lc_low,
                     "text_hf_edit": tok.decode(hf_edit), "text_lc_edit": tok.decode(lc_edit)})

    def share(a: str, b: str, k: int) -> float:
        return sum(prefix(r[a], r[b]) >= k for r in rows) / len(rows)

    def mean_prefix(a: str, b: str) -> float:
        return sum(prefix(r[a], r[b]) for r in rows) / len(rows)

    k = min(8, args.tokens)
    summary = {
        "cpu": cpu_name(), "prompts": len(rows), "tokens": args.tokens, "alpha": args.alpha, "k": k,
        "edit": {"path": str(args.edit.name), "method": edit.meta.method, "layers": sorted(edit.layers),
                 "sha256": edit.sha256},
        "llama_cpp": "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp, llama-completion (CPU)",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf (the embedded wheel's)",
        "first_k_equal": {
            "plain: llama.cpp vs alignez-hf (quantization floor)": share("lc_plain", "hf_plain", k),
            "edited: llama.cpp + exported vector vs alignez-hf + CAA": share("lc_edit", "hf_edit", k),
            "edited, vector one block lower vs alignez-hf + CAA": share("lc_minus1", "hf_edit", k),
            "edit changes alignez-hf's tokens (edited vs plain differ)": 1 - share("hf_edit", "hf_plain", k),
            "edit changes llama.cpp's tokens": 1 - share("lc_edit", "lc_plain", k),
        },
        "mean_common_prefix_tokens": {
            "plain": mean_prefix("lc_plain", "hf_plain"), "edited": mean_prefix("lc_edit", "hf_edit"),
            "edited, one block lower": mean_prefix("lc_minus1", "hf_edit"),
        },
        "exported file == original artifact in alignez-hf (all prompts)": all(r["hf_orig_equal"] for r in rows),
        "seconds": round(time.time() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llamacpp.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
