"""The manifest a prepared model directory carries: its inputs (pins, GGUF sha256, recipe) and
every file's size and sha256. Written last, so its presence marks a complete build."""

from __future__ import annotations

import contextlib
import json
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from alignez_eval.atomic import atomic_write_bytes
from alignez_eval.hashing import sha256_file
from alignez_eval.models.paths import prepared_dir
from alignez_eval.models.registry import ModelSpec, get_spec
from alignez_eval.package import __version__

MANIFEST = "alignez-model.json"
MANIFEST_FORMAT = "alignez-eval/model-manifest"


def _file_records(directory: Path) -> dict[str, dict[str, int | str]]:
    records: dict[str, dict[str, int | str]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            records[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def _versions() -> dict[str, str]:
    versions = {"alignez_eval": __version__}
    for dist in ("transformers", "torch", "gguf", "safetensors"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    return versions


def write_manifest(spec: ModelSpec, directory: Path, extra: dict | None = None) -> dict:
    """Record `directory`'s files against `spec` (atomically: temp file + fsync + os.replace).

    Written as the very last step of a build, so its presence marks the directory complete.
    """
    manifest = {
        "format": MANIFEST_FORMAT,
        **spec.fingerprint(),
        "hub_id": spec.hub_id,
        "kind": spec.kind,
        "architecture": spec.architecture,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
        "files": _file_records(directory),
    }
    # Readable as open() would make it (atomic_write_bytes' default), not private: a manifest other
    # users of a shared cache cannot read would make them rebuild the model.
    atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def read_manifest(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_prepared(name: str, verify: bool = False, directory: Path | None = None) -> str | None:
    """None if the prepared directory is complete and matches the registry, else why not.

    The default check is cheap (manifest + file sizes) so `model_path` can run it on every call;
    `verify=True` also re-hashes every file (seconds per GB).
    """
    spec = get_spec(name)
    directory = prepared_dir(name) if directory is None else directory
    if not directory.is_dir():
        return "not prepared"
    manifest = read_manifest(directory)
    if manifest is None:
        return f"no readable {MANIFEST} (an interrupted build?)"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST} has an unknown format"
    for key, want in spec.fingerprint().items():
        if manifest.get(key) != want:
            return f"built from different inputs ({key}: {manifest.get(key)!r}, registry wants {want!r})"
    files = manifest.get("files")
    if not isinstance(files, dict) or "config.json" not in files or not any(
        f.endswith(".safetensors") for f in files
    ):
        return f"{MANIFEST} lists no config.json / safetensors weights"
    for rel, record in files.items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != record.get("size"):
            return f"{rel} has {size} bytes, manifest says {record.get('size')}"
    if verify:
        for rel, record in files.items():
            if sha256_file(directory / rel) != record.get("sha256"):
                return f"{rel} does not match its sha256 in {MANIFEST}"
    return None
