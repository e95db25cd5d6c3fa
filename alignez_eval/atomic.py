"""Atomic writes: every cache entry, artifact, sidecar and report goes through here, so a run
killed at any moment leaves either the old file (or directory) or the new one, never half of one.

Everything is published with the modes of a model directory (`file_mode()`/`dir_mode()`: what
open() and `mkdir` would give under the umask, not mkstemp's private 0600 / mkdtemp's 0700), so a
work directory shared by a group stays readable by all of it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def umask() -> int:
    """The process's umask (reading it means setting it, so it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a published file gets: what open() would make under the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a published directory (a model directory, a cached step) gets."""
    return 0o755 & ~umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write via a temp file in the same directory + fsync + os.replace, with `mode` (default
    `file_mode()`, not mkstemp's private 0600)."""
    if mode is None:
        mode = file_mode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def atomic_write_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """safetensors file written atomically with fsync (no pickle).

    safetensors keeps `metadata` in a Rust HashMap, so a file with two or more metadata keys can be
    written with its keys in either order: callers that need byte-identical files for equal
    content (artifacts are identified by their file's sha256) keep a single key.
    """
    # lazy: safetensors.torch pulls torch, 3.5-5.6 s (measured on AMD EPYC, 2 cores)
    from safetensors.torch import save

    data = save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], *, prefix: str | None = None, suffix: str = ".partial",
               mode: int | None = None) -> Iterator[Path]:
    """Yield a temp sibling of `final` to fill; on success it replaces `final` in one rename, with
    `mode` (default `dir_mode()`, not mkdtemp's private 0700).

    On any exception the temp directory is removed and `final` is left as it was. Files written
    inside should themselves be flushed (the atomic_write_* helpers fsync); the parent directory
    is fsynced after the rename so the new name survives a crash.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix if prefix is not None else f".{final.name}.", suffix=suffix,
                                dir=final.parent))
    try:
        yield tmp
        tmp.chmod(dir_mode() if mode is None else mode)
        if final.exists():  # a stale or partial directory for the same key: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
