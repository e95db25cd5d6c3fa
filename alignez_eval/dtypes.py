"""Which weight dtype is fast on this machine.

bf16 halves memory and is the fast path on GPUs and on CPUs with native bf16 matmul (AVX512-BF16,
AMX). On a CPU without it (AVX2 only) torch emulates bf16 matmul: measured here, a
256x1536 @ 1536x8960 matmul took 0.45 s in fp32 and 32 s in bf16 — 70x slower. So `auto` is
decided by a short measurement on CPU rather than by a flag that cannot see the instruction set.
"""

from __future__ import annotations

import functools
import logging
import time

logger = logging.getLogger(__name__)

AUTO = "auto"


def _time_matmul(dtype: object, n: int = 3) -> float:
    import torch

    a = torch.randn(64, 512, dtype=dtype)  # type: ignore[arg-type]
    w = torch.randn(512, 512, dtype=dtype)  # type: ignore[arg-type]
    a @ w  # warm-up: the first call pays for kernel selection
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - t)
    return best


@functools.cache
def fast_dtype(device: str = "cpu") -> str:
    """`bfloat16` where bf16 matmul is at least as fast as fp32 on `device`, else `float32`."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    if device != "cpu":
        return "float32"
    fp32, bf16 = _time_matmul(torch.float32), _time_matmul(torch.bfloat16)
    choice = "bfloat16" if bf16 <= fp32 else "float32"
    logger.info("dtype auto on CPU: bf16 matmul %.2f ms, fp32 %.2f ms -> %s", bf16 * 1e3, fp32 * 1e3, choice)
    return choice


def resolve_dtype(name: str | None, device: str | None = None) -> str:
    """A concrete dtype name: `auto` (or None) becomes `fast_dtype(device)`; others pass through."""
    if name is None or name == AUTO:
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return fast_dtype(dev.split(":")[0] if dev.startswith("cuda") else dev)
    return name
