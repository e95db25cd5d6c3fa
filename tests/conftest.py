from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests share 2 cores; oversubscribed torch threads were seen to slow generation up to 6x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tiny import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """Factory: tiny_dir("llama") -> path of a saved tiny random model (built once per session)."""
    cache: dict[tuple[str, int], Path] = {}

    def _make(arch: str = "llama", seed: int = 0) -> Path:
        key = (arch, seed)
        if key not in cache:
            cache[key] = save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}-{seed}"), seed)
        return cache[key]

    return _make
