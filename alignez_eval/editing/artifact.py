"""The edit artifact: per-layer bases in safetensors, everything that produced them in JSON metadata.

File layout (no pickle anywhere):
  tensors   layer.{i}.harm   (k_harm, d) float32, orthonormal rows (may have 0 rows)
            layer.{i}.help   (k_help, d) float32, orthonormal rows (may have 0 rows)
            layer.{i}.steer  (d,)        float32, only for additive rules (CAA, ITI)
  metadata  {"alignez": JSON of EditMeta, with per-layer stats under "layer_stats"}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from alignez_eval import __version__
from alignez_eval.editing.rules import RULES
from alignez_eval.errors import ArtifactError

FORMAT_VERSION = 1
METADATA_KEY = "alignez"
COMPONENTS = ("mlp", "block")
GATES = ("paper", "flipped", "none")


@dataclass
class LayerEdit:
    """What is applied at one layer: Θ_harm, Θ_help (rows orthonormal) and an optional shift."""

    harm: torch.Tensor
    help: torch.Tensor
    steer: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class EditMeta:
    method: str  # v2 | v1 | caa | iti | random | … (free text, recorded with every number)
    rule: str  # one of rules.RULES
    component: str  # mlp | block
    hidden_size: int
    num_layers: int
    model: str = ""
    revision: str | None = None
    gate: str = "none"  # paper | flipped | none — query-conditional direction filter
    n_layers: int = 5  # per-query top-n for layers=auto
    layers: str = "auto"  # default layer selection when the user does not pass one
    # "help": Θ_help rows point towards helpful (⟨mean(H_help − H_harm), θ⟩ > 0) and Θ_harm rows towards
    # harmful; query gates are evaluated on the helpful-oriented sign of every direction (−θ for harm).
    orientation: str = "help"
    fit: dict[str, Any] = field(default_factory=dict)  # data hash, settings, counts, timings
    package_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ArtifactError(f"unknown edit rule {self.rule!r}; expected one of {RULES}")
        if self.component not in COMPONENTS:
            raise ArtifactError(f"unknown component {self.component!r}; expected one of {COMPONENTS}")
        if self.gate not in GATES:
            raise ArtifactError(f"unknown gate {self.gate!r}; expected one of {GATES}")


@dataclass
class Edit:
    meta: EditMeta
    layers: dict[int, LayerEdit]
    sha256: str = ""  # of the file it was loaded from / saved to

    # ---- validation -------------------------------------------------------------------------
    def check_model(self, hidden_size: int, num_layers: int, where: str = "the model") -> None:
        """Refuse an artifact fitted on another architecture, naming both shapes."""
        if self.meta.hidden_size != hidden_size:
            raise ArtifactError(
                f"edit artifact was fitted with hidden size {self.meta.hidden_size} "
                f"(model {self.meta.model or '?'}), but {where} has hidden size {hidden_size}; "
                "fit a new artifact on this model with `alignez-eval fit`"
            )
        if self.meta.num_layers != num_layers:
            raise ArtifactError(
                f"edit artifact was fitted on {self.meta.num_layers} layers (model {self.meta.model or '?'}), "
                f"but {where} has {num_layers}; fit a new artifact on this model with `alignez-eval fit`"
            )
        bad = [i for i in self.layers if not 0 <= i < num_layers]
        if bad:
            raise ArtifactError(f"edit artifact names layers {bad} outside 0..{num_layers - 1}")

    # ---- I/O --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write atomically (temp file + rename); return the file's sha256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        stats: dict[str, dict[str, float]] = {}
        for i, le in sorted(self.layers.items()):
            tensors[f"layer.{i}.harm"] = le.harm.detach().to(torch.float32).contiguous().cpu()
            tensors[f"layer.{i}.help"] = le.help.detach().to(torch.float32).contiguous().cpu()
            if le.steer is not None:
                tensors[f"layer.{i}.steer"] = le.steer.detach().to(torch.float32).contiguous().cpu()
            if le.stats:
                stats[str(i)] = le.stats
        meta = dataclasses.asdict(self.meta)
        meta["layer_stats"] = stats
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.sha256 = file_sha256(path)
        return self.sha256

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Edit:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(
                f"edit artifact {str(path)!r} does not exist; pass edit=none for the unedited baseline "
                "or create one with `alignez-eval fit --out PATH`"
            )
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                raw_meta = (f.metadata() or {}).get(METADATA_KEY)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"edit artifact {str(path)!r} is not a readable safetensors file ({exc}); "
                "re-create it with `alignez-eval fit`"
            ) from exc
        if raw_meta is None:
            raise ArtifactError(
                f"{str(path)!r} is a safetensors file without alignez metadata; "
                "it was not written by alignez-eval — re-create it with `alignez-eval fit`"
            )
        try:
            meta_d = json.loads(raw_meta)
            layer_stats = meta_d.pop("layer_stats", {})
            known = {f.name for f in dataclasses.fields(EditMeta)}
            meta = EditMeta(**{k: v for k, v in meta_d.items() if k in known})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactError(f"edit artifact {str(path)!r} has corrupt metadata ({exc})") from exc
        if meta.format_version > FORMAT_VERSION:
            raise ArtifactError(
                f"edit artifact {str(path)!r} has format version {meta.format_version}; this alignez-eval "
                f"reads up to {FORMAT_VERSION} — upgrade alignez-eval"
            )
        layers: dict[int, LayerEdit] = {}
        idx = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("layer.")})
        for i in idx:
            try:
                harm, help_ = tensors[f"layer.{i}.harm"], tensors[f"layer.{i}.help"]
            except KeyError as exc:
                raise ArtifactError(f"edit artifact {str(path)!r} lacks tensor {exc} for layer {i}") from exc
            for name, t in (("harm", harm), ("help", help_)):
                if t.dim() != 2 or t.shape[1] != meta.hidden_size:
                    raise ArtifactError(
                        f"edit artifact {str(path)!r}: layer.{i}.{name} has shape {tuple(t.shape)}, "
                        f"expected (k, {meta.hidden_size})"
                    )
            layers[i] = LayerEdit(
                harm=harm, help=help_, steer=tensors.get(f"layer.{i}.steer"), stats=layer_stats.get(str(i), {})
            )
        return cls(meta=meta, layers=layers, sha256=file_sha256(path))

    def describe(self) -> dict[str, Any]:
        """Short summary for logs and lm-eval's results `config`."""
        return {
            "method": self.meta.method,
            "rule": self.meta.rule,
            "component": self.meta.component,
            "gate": self.meta.gate,
            "layers_fitted": sorted(self.layers),
            "k_harm": {i: int(le.harm.shape[0]) for i, le in sorted(self.layers.items())},
            "k_help": {i: int(le.help.shape[0]) for i, le in sorted(self.layers.items())},
            "model": self.meta.model,
            "sha256": self.sha256,
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
