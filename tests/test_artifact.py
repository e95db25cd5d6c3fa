"""Edit artifact: round trip, refusal of a mismatched model, corrupt and foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny import make_model

from alignez_eval.editing.architectures import hidden_size, num_layers
from alignez_eval.editing.artifact import Edit, EditMeta, LayerEdit, file_sha256
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ArtifactError


def _edit(d: int = 8, n: int = 3) -> Edit:
    g = torch.Generator().manual_seed(0)
    layers = {
        0: LayerEdit(harm=torch.randn(2, d, generator=g), help=torch.randn(1, d, generator=g), stats={"kept": 3.0}),
        2: LayerEdit(harm=torch.zeros(0, d), help=torch.randn(3, d, generator=g), steer=torch.randn(d, generator=g)),
    }
    meta = EditMeta(method="v2", rule="alignez", component="mlp", hidden_size=d, num_layers=n, model="m",
                    gate="paper", n_layers=2, fit={"data_sha256": "abc", "pairs": 7})
    return Edit(meta=meta, layers=layers)


def test_round_trip(tmp_path: Path) -> None:
    e = _edit()
    sha = e.save(tmp_path / "sub" / "e.safetensors")
    assert sha == file_sha256(tmp_path / "sub" / "e.safetensors") and len(sha) == 64
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
    with pytest.raises(ArtifactError, match=r"layers \[2\] outside 0..1"):
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
