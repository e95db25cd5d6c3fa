"""What identifies a model, a task and a prompt set for the step cache.

Hashing a 6 GB weight file on every run would cost more than some steps it guards, so a local
model directory is identified by its small files (config, tokenizer, chat template) in full and
each weight file by its size and the sha256 of its first and last MiB: a different checkpoint
changes those, a copy of the same directory elsewhere does not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_file, sha256_json

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_PROBE = 1 << 20


def _weight_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_PROBE))
        if size > 2 * _PROBE:
            fh.seek(size - _PROBE)
            h.update(fh.read(_PROBE))
    return h.hexdigest()


def model_identity(pretrained: str, revision: str | None = None) -> dict[str, Any]:
    """A JSON-able identity of `pretrained` (a local directory, or a hub id + revision)."""
    path = Path(os.path.expanduser(pretrained))
    if not path.is_dir():
        return {"hub_id": pretrained, "revision": revision or "main"}
    files: dict[str, str] = {}
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        files[f.name] = _weight_fingerprint(f) if f.suffix in _WEIGHT_SUFFIXES else sha256_file(f)
    return {"dir_name": path.name, "files_sha256": sha256_json(files)}


def parse_model_args(spec: str) -> dict[str, str]:
    """lm-eval's `key=value,key=value` model_args string as a dict (values kept as strings)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part:
            # a bare token is taken as the model path, as users often type `--base DIR`
            if "pretrained" in out:
                raise ConfigError(f"model_args {spec!r}: {part!r} has no '='; write key=value pairs "
                                  "such as pretrained=DIR,dtype=bfloat16")
            out["pretrained"] = part
            continue
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def format_model_args(args: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in args.items())


def queries_fingerprint(queries: list[dict[str, Any]]) -> str:
    """Hash of the (id, instruction) list a step sees: a changed prompt set changes every key."""
    return sha256_json([[str(q.get("id")), q.get("instruction", "")] for q in queries])
