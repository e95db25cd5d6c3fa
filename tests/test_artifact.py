"""Edit artifact: round trip, refusal of a mismatched model, corrupt and foreign files."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny import make_model

from alignez_eval.editing.architectures import hidden_size, num_layers
from alignez_eval.editing.artifact import (
    CHECKSUM_FIELD,
    LEGACY_CHECKSUM_KEY,
    METADATA_KEY,
    Edit,
    EditMeta,
    LayerEdit,
)
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ArtifactError
from alignez_eval.hashing import sha256_file


def _unit(rows: int, d: int, g: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, d, generator=g), dim=1)


def _edit(d: int = 8, n: int = 3) -> Edit:
    g = torch.Generator().manual_seed(0)
    layers = {
        0: LayerEdit(harm=_unit(2, d, g), help=_unit(1, d, g), stats={"kept": 3.0}),
        2: LayerEdit(harm=torch.zeros(0, d), help=_unit(3, d, g), steer=torch.randn(d, generator=g)),
    }
    meta = EditMeta(method="v2", rule="alignez", component="mlp", hidden_size=d, num_layers=n, model="m",
                    gate="paper", n_layers=2, fit={"data_sha256": "abc", "pairs": 7})
    return Edit(meta=meta, layers=layers)


def test_round_trip(tmp_path: Path) -> None:
    e = _edit()
    sha = e.save(tmp_path / "sub" / "e.safetensors")
    assert sha == sha256_file(tmp_path / "sub" / "e.safetensors") and len(sha) == 64
    back = Edit.load(tmp_path / "sub" / "e.safetensors")
    assert back.sha256 == sha
    assert back.meta == e.meta
    assert sorted(back.layers) == [0, 2]
    for i in (0, 2):
        assert torch.equal(back.layers[i].harm, e.layers[i].harm)
        assert torch.equal(back.layers[i].help, e.layers[i].help)
    assert back.layers[0].steer is None and torch.equal(back.layers[2].steer, e.layers[2].steer)
    assert back.layers[0].stats == {"kept": 3.0}
    assert back.layers[2].harm.shape == (0, 8)
    assert not list((tmp_path / "sub").glob("*.tmp"))  # atomic write leaves no temp file


def test_random_edit_is_orthonormal_and_fits_model(tmp_path: Path) -> None:
    model, _ = make_model("gpt2")
    e = random_edit(model, k_harm=2, k_help=3, seed=1)
    for le in e.layers.values():
        basis = torch.cat([le.harm, le.help])
        assert torch.allclose(basis @ basis.T, torch.eye(5), atol=1e-5)
    e.save(tmp_path / "r.safetensors")
    Edit.load(tmp_path / "r.safetensors").check_model(hidden_size(model), num_layers(model))


def test_mismatch_errors_name_both_shapes() -> None:
    e = _edit(d=8, n=3)
    with pytest.raises(ArtifactError, match="hidden size 8.*has hidden size 32.*alignez-eval fit"):
        e.check_model(32, 3)
    with pytest.raises(ArtifactError, match="fitted on 3 layers.*has 4"):
        e.check_model(8, 4)
    e.meta.num_layers = 2
    e.path = "e.safetensors"
    with pytest.raises(ArtifactError, match=r"'e.safetensors' has directions for layers \[2\], outside the model's "
                                            r"layers 0..1.*re-create it with `alignez-eval fit`"):
        e.check_model(8, 2)


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist.*edit=none"):
        Edit.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        Edit.load(bad)
    good = tmp_path / "good.safetensors"
    _edit().save(good)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        Edit.load(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ArtifactError, match="without alignez metadata"):
        Edit.load(foreign)
    broken_meta = tmp_path / "meta.safetensors"
    save_file({"layer.0.harm": torch.zeros(1, 8), "layer.0.help": torch.zeros(1, 8)}, str(broken_meta),
              metadata={"alignez": "{not json"})
    with pytest.raises(ArtifactError, match="corrupt metadata"):
        Edit.load(broken_meta)
    wrong_shape = tmp_path / "shape.safetensors"
    meta = json.dumps({"method": "v2", "rule": "alignez", "component": "mlp", "hidden_size": 8, "num_layers": 2})
    save_file({"layer.0.harm": torch.zeros(1, 7), "layer.0.help": torch.zeros(1, 8)}, str(wrong_shape),
              metadata={"alignez": meta})
    with pytest.raises(ArtifactError, match=r"layer.0.harm has shape \(1, 7\)"):
        Edit.load(wrong_shape)
    lacking = tmp_path / "lacking.safetensors"
    save_file({"layer.0.harm": torch.zeros(1, 8)}, str(lacking), metadata={"alignez": meta})
    with pytest.raises(ArtifactError, match="lacks tensor"):
        Edit.load(lacking)
    bad_rule = tmp_path / "rule.safetensors"
    save_file({"layer.0.harm": torch.zeros(1, 8), "layer.0.help": torch.zeros(1, 8)}, str(bad_rule),
              metadata={"alignez": meta.replace('"alignez"', '"mystery"')})
    with pytest.raises(ArtifactError, match="unknown edit rule 'mystery'"):
        Edit.load(bad_rule)


# ---- bad values never load silently (issue 12 item 7) ------------------------------------------
def _data_start(raw: bytes) -> int:
    """Offset of the first tensor byte: safetensors = u64 header length, JSON header, data."""
    return 8 + struct.unpack("<Q", raw[:8])[0]


@pytest.mark.parametrize("tensor,value", [("help", float("nan")), ("harm", float("inf")),
                                          ("help", float("-inf")), ("steer", float("nan"))])
def test_non_finite_values_are_refused(tmp_path: Path, tensor: str, value: float) -> None:
    e = _edit()
    layer = 2 if tensor == "steer" else 0
    getattr(e.layers[layer], tensor).view(-1)[0] = value
    path = tmp_path / "e.safetensors"
    e.save(path)  # a valid checksum over the bad values: the value check itself must fire
    with pytest.raises(ArtifactError, match=rf"'{path}': layer.{layer}.{tensor} has 1 non-finite value.*"
                                            "re-create it with `alignez-eval fit`"):
        Edit.load(path)


def test_corrupted_tensor_bytes_under_an_intact_header(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    _edit().save(path)
    raw = bytearray(path.read_bytes())
    start = _data_start(bytes(raw))
    raw[start + 5] ^= 0x01  # one bit of one float: still finite, still readable
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="do not match the checksum stored with them.*alignez-eval fit"):
        Edit.load(path)


def test_non_unit_directions_are_refused(tmp_path: Path) -> None:
    e = _edit()
    e.layers[2].help[1] *= 1.5
    path = tmp_path / "e.safetensors"
    e.save(path)
    with pytest.raises(ArtifactError, match=r"row 1 of layer.2.help has norm 1.5, but the alignez rule needs "
                                            "unit-norm directions"):
        Edit.load(path)
    # the additive rule applies only the shift: its (empty or not) Θ rows are not checked
    add = _edit()
    add.meta.rule = "add"
    add.layers[0].help[0] *= 3.0
    add.save(path)
    assert Edit.load(path).meta.rule == "add"


def test_checksum_is_stored_and_old_files_load_with_a_warning(tmp_path: Path, caplog) -> None:
    from safetensors import safe_open

    path = tmp_path / "e.safetensors"
    e = _edit()
    e.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert list(meta) == [METADATA_KEY]
    fields = json.loads(meta[METADATA_KEY])
    assert len(fields.pop(CHECKSUM_FIELD)) == 64
    old = tmp_path / "old.safetensors"
    tensors = {f"layer.{i}.{n}": getattr(le, n) for i, le in e.layers.items() for n in ("harm", "help", "steer")
               if getattr(le, n) is not None}
    unchecked = {METADATA_KEY: json.dumps(fields)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(old), metadata=unchecked)
    with caplog.at_level(logging.WARNING, logger="alignez_eval.editing.artifact"):
        back = Edit.load(old)
    assert torch.equal(back.layers[0].harm, e.layers[0].harm)
    assert any("no tensor checksum" in r.getMessage() and str(old) in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignez_eval.editing.artifact"):
        Edit.load(path)
    assert not caplog.records
    # an old file still gets the value checks
    tensors["layer.0.help"] = torch.full_like(tensors["layer.0.help"], float("nan"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(old), metadata=unchecked)
    with pytest.raises(ArtifactError, match="non-finite"):
        Edit.load(old)


def test_layer_outside_the_files_own_layer_count(tmp_path: Path) -> None:
    e = _edit(n=3)
    e.layers[5] = e.layers.pop(2)
    path = tmp_path / "e.safetensors"
    e.save(path)
    with pytest.raises(ArtifactError, match=rf"'{path}' has directions for layers \[5\], outside its own "
                                            r"num_layers=3 \(0..2\).*re-create it with `alignez-eval fit`"):
        Edit.load(path)


def test_save_layers_sharing_one_tensor(tmp_path: Path) -> None:
    """A hand-built CAA edit: one shift (and one empty basis) object reused by every layer."""
    d = 8
    shift = torch.randn(d)
    empty = torch.zeros(0, d)
    layers = {i: LayerEdit(harm=empty, help=empty, steer=shift) for i in range(3)}
    e = Edit(meta=EditMeta(method="caa", rule="add", component="mlp", hidden_size=d, num_layers=3), layers=layers)
    path = tmp_path / "caa.safetensors"
    e.save(path)
    back = Edit.load(path)
    assert all(torch.equal(back.layers[i].steer, shift) for i in range(3))
    # one basis tensor shared as Θ_help by two layers
    basis = torch.eye(d)[:2]
    e2 = Edit(meta=EditMeta(method="v2", rule="alignez", component="mlp", hidden_size=d, num_layers=3),
              layers={0: LayerEdit(harm=basis, help=basis), 1: LayerEdit(harm=basis[:1], help=basis)})
    e2.save(path)
    assert torch.equal(Edit.load(path).layers[1].help, basis)


def test_tensor_names_not_written_by_alignez_eval(tmp_path: Path) -> None:
    meta = json.dumps({"method": "v2", "rule": "alignez", "component": "mlp", "hidden_size": 8, "num_layers": 2})
    path = tmp_path / "odd.safetensors"
    save_file({"layer.x.harm": torch.zeros(0, 8), "layer.0.help": torch.eye(8)[:1]}, str(path),
              metadata={"alignez": meta})
    with pytest.raises(ArtifactError, match=r"tensors \['layer.x.harm'\] that are not layer.<i>.harm\|help\|steer"):
        Edit.load(path)


def test_saving_an_edit_twice_gives_byte_identical_files(tmp_path: Path) -> None:
    """`Edit.sha256` is the file's hash and keys the fit cache: equal edits must be equal bytes.
    (Two safetensors metadata keys were written in either order: ~50% of saves differed.)"""
    e = _edit()
    shas = {e.save(tmp_path / f"e{i}.safetensors") for i in range(16)}
    assert len(shas) == 1
    assert Edit.load(tmp_path / "e0.safetensors").sha256 == shas.pop()


def test_files_with_the_checksum_in_a_second_metadata_key_still_verify(tmp_path: Path) -> None:
    from safetensors import safe_open

    e = _edit()
    path = tmp_path / "e.safetensors"
    e.save(path)
    with safe_open(str(path), framework="pt") as f:
        fields = json.loads(f.metadata()[METADATA_KEY])
    checksum = fields.pop(CHECKSUM_FIELD)
    tensors = {f"layer.{i}.{n}": getattr(le, n) for i, le in e.layers.items() for n in ("harm", "help", "steer")
               if getattr(le, n) is not None}
    legacy = tmp_path / "legacy.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(legacy),
              metadata={METADATA_KEY: json.dumps(fields), LEGACY_CHECKSUM_KEY: checksum})
    assert torch.equal(Edit.load(legacy).layers[0].harm, e.layers[0].harm)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(legacy),
              metadata={METADATA_KEY: json.dumps(fields), LEGACY_CHECKSUM_KEY: "0" * 64})
    with pytest.raises(ArtifactError, match="do not match the checksum"):
        Edit.load(legacy)
