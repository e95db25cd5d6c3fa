"""Content hashes: one definition of "equal inputs" for every cache key, artifact and manifest.

A leaf without torch, so parsing a judge spec or a cache key does not pay torch's ~3 s import;
the tensor checksum lives with the artifact it checks (editing/artifact.py)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal inputs give byte-equal text, hence equal hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of `canonical_json(obj)`."""
    return sha256_text(canonical_json(obj))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

