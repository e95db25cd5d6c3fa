"""LoRA DPO on preference pairs with TRL's DPOTrainer (the optional `[dpo]` extra).

`train_dpo` writes an adapter directory (PEFT's adapter_config.json + adapter_model.safetensors)
with `dpo_manifest.json` (the data's sha256, the ids of the pairs used, every training setting,
versions, the training log and wall time) and `dpo_pairs.jsonl` (the pairs themselves). The
directory is published in one rename (a killed run leaves nothing half-written) and a rerun with
the same inputs returns the finished directory without training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_dir, atomic_write_json, atomic_write_text
from alignez_eval.dpo.data import PrefPair
from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_json
from alignez_eval.package import __version__

logger = logging.getLogger(__name__)

MANIFEST = "dpo_manifest.json"
PAIRS_FILE = "dpo_pairs.jsonl"


@dataclass(frozen=True)
class DPOSettings:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str = "q_proj,v_proj"
    beta: float = 0.1
    learning_rate: float = 5e-4
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 256  # prompt + answer tokens; longer answers are cut at the end (TRL keep_start)
    max_steps: int = -1  # > 0: stop after this many optimizer steps (tests)
    seed: int = 0
    compact_head: bool = True  # score only answer tokens in TRL's LM head (same numbers; see answer_tokens_only)
    dtype: str = "float32"

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DPOSettings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown DPO setting(s) {unknown}; known: {', '.join(known)}")
        out: dict[str, Any] = {}
        for k, v in values.items():
            if v is None:
                continue
            typ = type(known[k].default)
            if typ is bool and isinstance(v, str):
                if v.lower() not in ("true", "false", "1", "0"):
                    raise ConfigError(f"DPO setting {k}={v!r} is not true/false")
                out[k] = v.lower() in ("true", "1")
                continue
            try:
                out[k] = typ(v)
            except (TypeError, ValueError):
                raise ConfigError(f"DPO setting {k}={v!r} is not a {typ.__name__}") from None
        s = cls(**out)
        if s.lora_r < 1 or s.batch_size < 1 or s.max_length < 8 or s.beta <= 0 or s.learning_rate <= 0:
            raise ConfigError(f"DPO settings out of range: {s}")
        if s.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype={s.dtype!r}: use float32, bfloat16 or float16")
        return s


def dpo_key(base_identity: dict[str, Any], data_sha256: str, pairs: list[PrefPair], s: DPOSettings) -> str:
    import peft
    import trl

    return sha256_json({"base": base_identity, "data": data_sha256, "pairs": [p.id for p in pairs],
                        "settings": asdict(s), "trl": trl.__version__, "peft": peft.__version__,
                        "package": __version__})


def is_done(out: Path, key: str) -> bool:
    m = out / MANIFEST
    if not (m.is_file() and (out / "adapter_config.json").is_file()):
        return False
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


@contextlib.contextmanager
def answer_tokens_only(enabled: bool = True) -> Iterator[None]:
    """Score only the answer tokens in TRL's chunked LM head, as TRL itself does on Triton devices.

    Elsewhere (CPU) TRL 1.16 sends every position — prompt and padding included — through its
    262k-column (for gemma) log-softmax and masks the prompt afterwards; the answer tokens' log-probs,
    the loss and the gradients are the same either way (tests/test_dpo_train.py checks the loss), at a
    fraction of the cost."""
    if not enabled:
        yield
        return
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # another TRL layout: leave it alone
        yield
        return
    trl_utils._use_triton = lambda device: True  # only read there to choose the compact (masked) path
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _import_trl() -> tuple[Any, Any, Any]:
    try:
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:
        raise ConfigError("train-dpo needs TRL and PEFT: pip install 'alignez-eval[dpo]'") from exc
    return LoraConfig, DPOConfig, DPOTrainer


def train_dpo(base: str | Path, pairs: list[PrefPair], out: str | Path, settings: DPOSettings | None = None, *,
              data_sha256: str, data_path: str = "", progress: bool = True) -> dict[str, Any]:
    """Train a LoRA adapter on `pairs` with DPO against the frozen base; return its manifest.

    Skipped (the manifest is returned) when `out` already holds an adapter trained on the same
    base, data, pairs and settings."""
    import torch

    from alignez_eval.pipeline.identity import model_identity

    s = settings or DPOSettings()
    if not pairs:
        raise ConfigError("train-dpo got no preference pairs; pass a share or count of at least one pair")
    out = Path(out)
    base_id = model_identity(str(base))
    key = dpo_key(base_id, data_sha256, pairs, s)
    if is_done(out, key):
        logger.info("train-dpo: %s already holds this adapter (key %s); skipped", out, key[:16])
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    LoraConfig, DPOConfig, DPOTrainer = _import_trl()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    too_long = sum(len(tok(p.prompt).input_ids) >= s.max_length for p in pairs)
    if too_long == len(pairs):
        raise ConfigError(f"every one of the {len(pairs)} prompts is at least max_length={s.max_length} tokens, "
                          "so no answer token would be trained on; raise --max-length")
    if too_long:
        logger.warning("train-dpo: %d of %d prompts reach max_length=%d tokens; TRL drops those pairs",
                       too_long, len(pairs), s.max_length)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, s.dtype))
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": " " + p.chosen, "rejected": " " + p.rejected}
                              for p in pairs])
    lora = LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      target_modules=[m.strip() for m in s.target_modules.split(",") if m.strip()],
                      task_type="CAUSAL_LM")
    t0, cpu0 = time.perf_counter(), time.process_time()
    with atomic_dir(out, suffix=".training") as tmp, answer_tokens_only(s.compact_head and not torch.cuda.is_available()):
        cfg = DPOConfig(
            output_dir=str(tmp / "trainer"), per_device_train_batch_size=s.batch_size, num_train_epochs=s.epochs,
            max_steps=s.max_steps, learning_rate=s.learning_rate, beta=s.beta, max_length=s.max_length,
            seed=s.seed, data_seed=s.seed, logging_steps=1, save_strategy="no",
            report_to="none", use_cpu=not torch.cuda.is_available(), bf16=s.dtype == "bfloat16",
            disable_tqdm=not progress, dataloader_num_workers=0, dataset_num_proc=None,
            # TRL turns checkpointing on by default: it recomputes every forward (memory is not short here)
            gradient_checkpointing=False,
        )
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, peft_config=lora)
        pairs_trained = len(trainer.train_dataset)  # after TRL drops pairs whose prompt fills max_length
        result = trainer.train()
        trainer.model.save_pretrained(str(tmp))
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        import peft
        import transformers
        import trl

        manifest = {
            "key": key, "base": str(base), "base_identity": base_id,
            "data": {"path": data_path, "sha256": data_sha256}, "n_pairs": len(pairs),
            "pairs_trained": pairs_trained,
            "pair_ids": [p.id for p in pairs], "settings": asdict(s),
            "steps": int(result.global_step), "train_seconds": round(seconds, 1),
            "seconds_per_pair": round(seconds / max(1, len(pairs) * s.epochs), 3),
            "cpu_seconds": round(cpu_seconds, 1),
            "cpu_seconds_per_pair": round(cpu_seconds / max(1, len(pairs) * s.epochs), 3),
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "log_history": trainer.state.log_history,
            "versions": {"trl": trl.__version__, "peft": peft.__version__, "transformers": transformers.__version__,
                         "torch": torch.__version__, "alignez_eval": __version__},
        }
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        atomic_write_text(tmp / PAIRS_FILE, "".join(json.dumps(p.as_dict()) + "\n" for p in pairs))
        atomic_write_json(tmp / MANIFEST, manifest)
    logger.info("train-dpo: %d pairs, %d steps in %.0f s -> %s", len(pairs), result.global_step, seconds, out)
    return manifest
