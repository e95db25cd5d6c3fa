"""Data parallel on CPU as well as GPU: rank assignment and a pickle-free gather of strings."""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def data_parallel_rank(accelerator: Any, rank: int, world_size: int) -> tuple[int, int]:
    """(rank, world size) for this process. lm-eval's HFLM assigns them only when CUDA has more
    than one device; under `accelerate launch`/torchrun on CPU (gloo) every process would
    otherwise evaluate everything."""
    if accelerator is not None and accelerator.num_processes > 1 and world_size == 1:
        rank, world_size = accelerator.process_index, accelerator.num_processes
        logger.info("data parallel: rank %d of %d (%s)", rank, world_size, accelerator.device)
    return rank, world_size


def all_gather_text(accelerator: Any, text: str) -> list[str]:
    """All ranks' strings, in rank order. Sent as UTF-8 byte tensors (no pickle, unlike
    gather_object); all_gather doubles as the barrier."""
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
    import torch.distributed as dist

    dev = accelerator.device
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=dev)
    n = torch.tensor([data.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(accelerator.num_processes)]
    dist.all_gather(sizes, n)
    width = max(1, max(int(s.item()) for s in sizes))
    padded = torch.zeros(width, dtype=torch.uint8, device=dev)
    padded[: data.numel()] = data
    bufs = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(bufs, padded)
    return [bytes(b[: int(s.item())].tolist()).decode("utf-8") for b, s in zip(bufs, sizes, strict=True)]
