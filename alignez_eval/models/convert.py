"""GGUF -> bf16 safetensors + tokenizer, checked to reproduce the GGUF-loaded logits exactly;
run in a child process (`python -m alignez_eval.models convert ...`)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from alignez_eval.errors import ArtifactError
from alignez_eval.models.registry import DTYPE
from alignez_eval.models.relay import run_relayed

PROBE_PROMPT = "Write a Python function that returns the square of a number.\n"


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Load a GGUF dequantized with transformers, save it as bf16 safetensors + tokenizer, and
    check that the saved directory reproduces the GGUF-loaded model's logits exactly."""
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True: with the optional `kernels` package transformers would otherwise keep packed
    # GGUF blocks (GgufLinear), which neither save nor match a plain HF checkpoint.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, DTYPE),
        quantization_config=GgufConfig(dequantize=True),
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model loaded through a quantizer; the weights are plain now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

    ids = torch.tensor([tokenizer(PROBE_PROMPT).input_ids])
    with torch.no_grad():
        expected = model(ids).logits.float()
    del model
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    reloaded_ids = torch.tensor([AutoTokenizer.from_pretrained(str(out))(PROBE_PROMPT).input_ids])
    if not torch.equal(ids, reloaded_ids):
        raise ArtifactError(f"the saved tokenizer encodes the probe prompt differently from {gguf.name}")
    with torch.no_grad():
        got = reloaded(ids).logits.float()
    max_abs_diff = (got - expected).abs().max().item()
    if reloaded.dtype != getattr(torch, DTYPE) or max_abs_diff != 0.0:
        raise ArtifactError(f"the saved model ({reloaded.dtype}) does not reproduce the GGUF-loaded "
                            f"logits (max |diff| {max_abs_diff}); the transformers version may convert badly")
    return {"prompt": PROBE_PROMPT, "tokens": int(ids.shape[1]), "max_abs_logit_diff": max_abs_diff}


def convert_in_subprocess(gguf: Path, out: Path) -> dict:
    # A separate process returns the loader's peak memory (up to ~11 GB) to the OS when it ends,
    # instead of leaving it in the caller (often a long test or eval process).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    report = gguf.with_name("conversion-check.json")
    cmd = [sys.executable, "-m", "alignez_eval.models", "convert", str(gguf), str(out), str(report)]
    code, tail = run_relayed(cmd, env=env)
    if code != 0:
        raise ArtifactError(f"converting {gguf.name} failed (exit {code}: {tail or 'no output'}; full log "
                            "above); check free memory/disk and the transformers version, then prepare again")
    return json.loads(report.read_text())


def main(argv: list[str]) -> int:
    # Internal entry point of the conversion subprocess.
    if len(argv) != 4 or argv[0] != "convert":
        print("usage: python -m alignez_eval.models convert GGUF OUT_DIR CHECK_JSON  (internal; use "
              "`alignez-eval models prepare`)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check = convert_gguf(Path(argv[1]), Path(argv[2]))
    Path(argv[3]).write_text(json.dumps(check))
    return 0
