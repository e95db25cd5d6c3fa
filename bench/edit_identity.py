"""Byte identity of edited outputs: run one grid of edits through every way an edit is applied and
record a sha256 of each output, so a refactor of the edit engine can be checked bit for bit.

    python bench/edit_identity.py --out before.json          # on the old code
    python bench/edit_identity.py --compare before.json      # on the new code: exit 1 on any change

Grid (tiny random models from tests/tiny.py, CPU, float32): architectures × rules (alignez,
projection, add) × gates (none, paper, flipped) × layers (explicit, all, auto) × positions (last,
all, generated). Each point records
  - alignez-hf generate_until (greedy strings), with and without prompt-KV reuse,
  - alignez-hf loglikelihood (the float64 values' exact bytes),
  - apply_edit: generate without prompt-KV reuse (token ids and every step's scores, as bytes), the
    token ids with the handle's default (reuse where it applies: a new path that must give the
    same tokens as the old full prefill), and a plain forward's logits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from tiny import save_tiny  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from alignez_eval.apply import apply_edit  # noqa: E402
from alignez_eval.editing.random_edit import random_edit  # noqa: E402
from model_adapters.alignez_hf import AlignEZHFLM  # noqa: E402

PROMPTS = ["Human: How do I bake bread?\nAssistant:", "hi", "def add(a, b):\n    return", "The quick brown fox"]
LL = [("The quick brown", " fox jumps over"), ("def add(a, b):", " return a + b"),
      ("Human: How do I bake bread?\nAssistant:", " Mix flour"), ("hi", " there")]
GEN_KW = {"until": ["<<never>>"], "max_gen_toks": 5, "do_sample": False}
ARCHS = ("llama", "gpt2", "qwen2")
# (rule, gate, layers setting); the artifact is fitted with default layers "auto" and n_layers=2
EDITS = [("alignez", gate, layers) for gate in ("none", "paper", "flipped") for layers in ("1;2", "all", "auto")]
EDITS += [("projection", "none", "all"), ("projection", "none", "auto"), ("add", "none", "1;2")]
POSITIONS = ("last", "all", "generated")


def sha(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()


def run(archs: tuple[str, ...]) -> dict[str, str]:
    torch.set_num_threads(1)
    out: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="edit-identity-"))
    points = [(a, e, p) for a in archs for e in EDITS for p in POSITIONS]
    bar = tqdm(total=len(points), desc="edit identity")
    for arch in archs:
        path = save_tiny(arch, tmp / arch, 0)
        lm = AlignEZHFLM(pretrained=str(path), device="cpu", batch_size=4, edit="none")
        model, tok = lm.model, lm.tokenizer
        tok.padding_side = "left"
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
        for rule, gate, layers in EDITS:
            art = tmp / f"{arch}-{rule}-{gate}.safetensors"
            if not art.exists():
                random_edit(model, k_harm=2, k_help=2, seed=5, rule=rule, gate=gate, n_layers=2,
                            default_layers="auto").save(art)
            for positions in POSITIONS:
                key = f"{arch}/{rule}/gate={gate}/layers={layers}/positions={positions}"
                settings = {"alpha": 4.0, "layers": layers, "positions": positions}
                for reuse in (True, False):
                    lm.set_edit(edit=str(art), **settings)
                    lm.reuse_prompt_cache = reuse
                    gens = lm.generate_until([Instance("generate_until", None, (p, dict(GEN_KW)), i)
                                              for i, p in enumerate(PROMPTS)])
                    out[f"{key}/hf.generate/reuse={reuse}"] = sha(gens)
                lm.reuse_prompt_cache = True
                lls = lm.loglikelihood([Instance("loglikelihood", None, pair, i) for i, pair in enumerate(LL)])
                out[f"{key}/hf.loglikelihood"] = sha(torch.tensor([v for v, _ in lls], dtype=torch.float64),
                                                     [g for _, g in lls])
                out[f"{key}/hf.chosen_layers"] = sha(sorted(lm.layer_usage.items()))
                lm.set_edit(edit="none")
                with torch.no_grad(), apply_edit(model, str(art), **settings) as handle:
                    gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
                    out[f"{key}/apply.generate.tokens"] = sha(model.generate(**enc, **gen))
                    handle.reuse_prompt_cache = False  # (an attribute older handles simply ignore)
                    g = model.generate(**enc, **gen, output_scores=True, return_dict_in_generate=True)
                    out[f"{key}/apply.generate"] = sha(g.sequences, *g.scores)
                    logits = model(**enc).logits
                    out[f"{key}/apply.forward"] = sha(logits, handle.last_chosen_layers)
                bar.update(1)
    bar.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the hashes here")
    ap.add_argument("--compare", type=Path, help="compare with hashes written before; exit 1 on a difference")
    ap.add_argument("--archs", default=",".join(ARCHS))
    args = ap.parse_args()
    hashes = run(tuple(a for a in args.archs.split(",") if a))
    if args.out:
        args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} outputs hashed")
    if args.compare:
        before = json.loads(args.compare.read_text())
        common = sorted(set(before) & set(hashes))
        changed = [k for k in common if before[k] != hashes[k]]
        missing = sorted(set(before) ^ set(hashes))
        print(f"compared {len(common)}: {len(changed)} changed, {len(missing)} only on one side")
        for k in changed[:20]:
            print("  changed:", k)
        for k in missing[:10]:
            print("  one side only:", k)
        return 1 if changed or missing else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
