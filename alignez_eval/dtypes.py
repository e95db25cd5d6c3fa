"""Which weight dtype is fast on this machine.

bf16 halves memory and is the fast path on GPUs and on CPUs with native bf16 matmul (AVX512-BF16,
AMX). On a CPU without it (AVX2 only) torch emulates bf16 matmul: measured on such a machine, a 256x1536 @ 1536x8960 matmul
took 0.45 s in fp32 and 32 s in bf16 — 70x slower; on a CPU with AVX512-BF16 the same matmul took
0.063 s in fp32 and 0.020 s in bf16. So `auto` on CPU reads the instruction set (Linux
/proc/cpuinfo flags) and measures only where the flags cannot be read. The answer must not
change from run to run on one machine: it is part of every cached judgment's identity, and a
millisecond timing under load once flipped it between two runs of the same pipeline.
"""

from __future__ import annotations

import functools
import logging
import time

logger = logging.getLogger(__name__)

AUTO = "auto"


def _time_matmul(dtype: object, n: int = 3) -> float:
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
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


# Instruction-set flags (Linux names) that give torch a native bf16 matmul on CPU.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """True/False from the CPU's flags; None where they cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86 | aarch64
            return bool(BF16_FLAGS & set(value.split()))
    return None


@functools.cache
def fast_dtype(device: str = "cpu") -> str:
    """`bfloat16` where bf16 matmul is at least as fast as fp32 on `device`, else `float32`."""
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    if device != "cpu":
        return "float32"
    native = cpu_has_native_bf16()
    if native is not None:
        choice = "bfloat16" if native else "float32"
        logger.info("dtype auto on CPU: native bf16 matmul %s -> %s", "yes" if native else "no", choice)
        return choice
    fp32, bf16 = _time_matmul(torch.float32), _time_matmul(torch.bfloat16)
    # emulated bf16 is many times slower, native bf16 faster: a 1.5x margin keeps noise from deciding
    choice = "bfloat16" if bf16 <= 1.5 * fp32 else "float32"
    logger.info("dtype auto on CPU: bf16 matmul %.2f ms, fp32 %.2f ms -> %s", bf16 * 1e3, fp32 * 1e3, choice)
    return choice


def resolve_dtype(name: str | None, device: str | None = None) -> str:
    """A concrete dtype name: `auto` (or None) becomes `fast_dtype(device)`; others pass through."""
    if name is None or name == AUTO:
        # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return fast_dtype(dev.split(":")[0] if dev.startswith("cuda") else dev)
    return name
