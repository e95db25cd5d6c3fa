"""Shared pieces of the benchmark scripts: machine record, peak memory, robust statistics,
model loading and atomic report writing.

The scripts run as `python bench/NAME.py`, so this module is imported as `_common` (the script's
directory is on sys.path); it is not part of the installed package.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "reports" / "bench"
PROMPTS_FILE = REPO / "tasks" / "data" / "embedded_prompts.jsonl"

logger = logging.getLogger("bench")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # lm-eval warns once per HFLM built from a loaded model object; that is what we do on purpose.
    for noisy in ("lm_eval", "lm-eval", "transformers", "httpx", "accelerate", "model_adapters", "alignez_eval"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# what ran, where
# ---------------------------------------------------------------------------------------------
def relative(arg: str) -> str:
    """An argument as a report can show it on any machine: a path inside the repository relative to
    it, an embedded model's directory by its name."""
    from alignez_eval.shareable import shareable_text

    root = str(REPO) + "/"
    return shareable_text(arg.replace(root, ""))


def command_line() -> str:
    return " ".join(shlex.quote(relative(a)) for a in [Path(sys.executable).name, *sys.argv])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The facts a reader needs to judge a timing: cores, threads, library versions, load."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": loadavg(),
        "device": device,
        "gpu": None,
        "git": _git(),
    }
    for mod in ("transformers", "lm_eval", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 — a version is informative, never required
            info[mod] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "cuda": torch.version.cuda, "capability": f"{props.major}.{props.minor}"}
    return info


# ---------------------------------------------------------------------------------------------
# peak memory
# ---------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Linux resets VmHWM (peak RSS) to the current RSS when "5" is written to clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemSample:
    peak_bytes: int | None  # peak during the block (RSS on CPU, allocated on CUDA)
    base_bytes: int | None  # resident/allocated just before it


class PeakMemory:
    """Peak memory of a block. CPU: the process's peak RSS (VmHWM, reset before the block), which
    counts torch's C++ allocations too (tracemalloc would only see Python objects). CUDA:
    torch.cuda.max_memory_allocated after reset_peak_memory_stats."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.kind = "cuda_max_memory_allocated" if self.cuda else "rss_vmhwm"
        self.available = True
        if not self.cuda and (_status_kib("VmHWM") is None or not _reset_rss_peak()):
            self.available = False
            self.kind = "unavailable (no /proc/self/clear_refs)"

    @contextmanager
    def measure(self) -> Iterator[list[MemSample]]:
        out: list[MemSample] = []
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            yield out
            torch.cuda.synchronize()
            out.append(MemSample(torch.cuda.max_memory_allocated(), base))
            return
        if not self.available:
            yield out
            out.append(MemSample(None, None))
            return
        _reset_rss_peak()
        base = _status_kib("VmRSS")
        yield out
        peak = _status_kib("VmHWM")
        out.append(MemSample(None if peak is None else peak * 1024, None if base is None else base * 1024))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy's import cost."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free confidence interval for the median: order statistics [x_(k), x_(n−k+1)]
    with the largest k whose binomial coverage 1 − 2·P(Bin(n, ½) < k) is still ≥ level. Returns
    (lo, hi, coverage); below n = 6 no pair reaches 95% and [min, max] comes with its own coverage."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median with its spread: interquartile range and min–max over the repeats."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"n": 0, "median": math.nan, "q25": math.nan, "q75": math.nan, "min": math.nan, "max": math.nan,
                "ci_lo": math.nan, "ci_hi": math.nan, "ci_level": math.nan}
    lo, hi, cov = median_ci(vals)
    return {"n": len(vals), "median": statistics.median(vals), "q25": quantile(vals, 0.25),
            "q75": quantile(vals, 0.75), "min": min(vals), "max": max(vals),
            "ci_lo": lo, "ci_hi": hi, "ci_level": cov}


def rnd(x: Any, nd: int = 4) -> Any:
    if isinstance(x, float):
        return x if not math.isfinite(x) else round(x, nd)
    if isinstance(x, dict):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [rnd(v, nd) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# models and prompts
# ---------------------------------------------------------------------------------------------
def resolve_model(name: str) -> Path:
    """A model directory as given, else an embedded model name (alignez_eval.models)."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    from alignez_eval.models import model_path

    return Path(model_path(name))


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def load_model(name: str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, DTYPES[dtype]))
    model.to(device).eval()
    cfg = model.config
    meta = {
        "name": name, "path": relative(str(path)), "model_type": getattr(cfg, "model_type", None),
        "num_layers": getattr(cfg, "num_hidden_layers", None), "hidden_size": getattr(cfg, "hidden_size", None),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": DTYPES[dtype], "device": device, "load_s": round(time.perf_counter() - t0, 2),
    }
    return model, tok, meta


def load_prompts(n: int | None = None) -> list[dict[str, str]]:
    """The embedded evaluation prompts (id, instruction), in file order."""
    out = []
    with open(PROMPTS_FILE, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                out.append({"id": str(obj["id"]), "instruction": str(obj["instruction"])})
    return out[:n] if n else out


# ---------------------------------------------------------------------------------------------
# writing reports
# ---------------------------------------------------------------------------------------------
def atomic_write(path: Path, text: str) -> None:
    """The package's one atomic writer (temp file in the same directory, fsync, os.replace)."""
    from alignez_eval.atomic import atomic_write_text

    atomic_write_text(path, text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead (json.dumps would emit the non-standard `NaN`)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        atomic_write(path, "")
        return
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write(path, buf.getvalue())


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:.3f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_md(machine: dict[str, Any], command: str) -> str:
    gpu = machine.get("gpu")
    parts = [
        f"- machine: {machine.get('cpu')} — {machine.get('cpu_count')} logical cores "
        f"(affinity {machine.get('cpu_affinity')}), torch {machine.get('torch')} with "
        f"{machine.get('torch_threads')} intra-op threads, transformers {machine.get('transformers')}, "
        f"lm-eval {machine.get('lm_eval')}, Python {machine.get('python')}",
        f"- device: {machine.get('device')}" + (f" — {gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})"
                                               if gpu else ""),
        f"- load average (1/5/15 min) at start {machine.get('loadavg_start')}, at end {machine.get('loadavg_end')}",
        f"- git {((machine.get('git') or {}).get('commit') or '?')[:12]}"
        + (" (uncommitted changes)" if (machine.get("git") or {}).get("dirty") else ""),
        f"- command: `{command}`",
    ]
    return "\n".join(parts)
