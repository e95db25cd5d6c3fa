"""The edit artifact: per-layer bases in safetensors, everything that produced them in JSON metadata.

File layout (no pickle anywhere):
  tensors   layer.{i}.harm   (k_harm, d) float32, orthonormal rows (may have 0 rows)
            layer.{i}.help   (k_help, d) float32, orthonormal rows (may have 0 rows)
            layer.{i}.steer  (d,)        float32, only for rules that add a vector (CAA, ITI, imported
                                         control vectors; the value a clamp holds)
  metadata  {"alignez": JSON of EditMeta, with per-layer stats under "layer_stats" and
             "tensors_sha256": sha256 over every tensor's name, dtype, shape and bytes}
            (one key only, so equal edits are byte-equal files: `Edit.sha256` is the file's hash)

`Edit.load` refuses a file whose tensors do not match that checksum (bytes corrupted under an
intact header), non-finite values, and Θ rows that are not unit vectors; files written before the
checksum existed load with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from alignez_eval.atomic import atomic_write_safetensors
from alignez_eval.editing.config import COMPONENTS, GATES, POSITIONS
from alignez_eval.editing.rules import RULES, get_rule
from alignez_eval.errors import ArtifactError
from alignez_eval.hashing import sha256_file
from alignez_eval.package import __version__

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "alignez"
CHECKSUM_FIELD = "tensors_sha256"  # inside the METADATA_KEY JSON
LEGACY_CHECKSUM_KEY = "alignez_tensors_sha256"  # a second metadata key in files of 0.x before the fix
# |‖θ‖ − 1| allowed for a basis row: float32 SVD bases are unit to ~1e-6; 1e-3 leaves room for
# bases cast through bf16 and back, and still catches rows that were never normalised.
UNIT_NORM_TOL = 1e-3
_WARNED_NO_CHECKSUM: set[str] = set()
_TENSOR_NAME = re.compile(r"^layer\.\d+\.(harm|help|steer)$")


def sha256_tensors(tensors: Mapping[str, torch.Tensor]) -> str:
    """Checksum of tensors as stored: name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    # the positions this edit is meant for when the user names none: "last" for AlignEZ and the baselines
    # fitted here (the paper's), "all" for control vectors, which their own tools add at every position
    positions: str = "last"
    fit: dict[str, Any] = field(default_factory=dict)  # data hash, settings, counts (no timings)
    package_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ArtifactError(f"unknown edit rule {self.rule!r}; expected one of {RULES}")
        if self.component not in COMPONENTS:
            raise ArtifactError(f"unknown component {self.component!r}; expected one of {COMPONENTS}")
        if self.gate not in GATES:
            raise ArtifactError(f"unknown gate {self.gate!r}; expected one of {GATES}")
        if self.positions not in POSITIONS:
            raise ArtifactError(f"unknown positions {self.positions!r}; expected one of {POSITIONS}")


@dataclass
class Edit:
    meta: EditMeta
    layers: dict[int, LayerEdit]
    sha256: str = ""  # of the file it was loaded from / saved to
    path: str = ""  # the file it was loaded from / saved to, for messages

    # ---- validation -------------------------------------------------------------------------
    def _name(self) -> str:
        return f"edit artifact {self.path!r}" if self.path else "edit artifact"

    def check_model(self, hidden_size: int, num_layers: int, where: str = "the model") -> None:
        """Refuse an artifact fitted on another architecture, naming both shapes."""
        if self.meta.hidden_size != hidden_size:
            raise ArtifactError(
                f"{self._name()} was fitted with hidden size {self.meta.hidden_size} "
                f"(model {self.meta.model or '?'}), but {where} has hidden size {hidden_size}; "
                "fit a new artifact on this model with `alignez-eval fit`"
            )
        if self.meta.num_layers != num_layers:
            raise ArtifactError(
                f"{self._name()} was fitted on {self.meta.num_layers} layers (model {self.meta.model or '?'}), "
                f"but {where} has {num_layers}; fit a new artifact on this model with `alignez-eval fit`"
            )
        bad = sorted(i for i in self.layers if not 0 <= i < num_layers)
        if bad:
            raise ArtifactError(
                f"{self._name()} has directions for layers {bad}, outside {where}'s layers 0..{num_layers - 1} "
                "(its tensors disagree with its own num_layers); the file is inconsistent — "
                "re-create it with `alignez-eval fit` on this model"
            )

    def validate(self) -> None:
        """Refuse values the hooks would turn into NaN logits or empty generations without a word:
        non-finite entries anywhere, and Θ rows that are not unit vectors (the rules assume them)."""
        fix = "the file is corrupt or came from a failed fit — re-create it with `alignez-eval fit`"
        for i, le in sorted(self.layers.items()):
            named = [("harm", le.harm), ("help", le.help)] + ([] if le.steer is None else [("steer", le.steer)])
            for name, t in named:
                if t.numel() and not bool(torch.isfinite(t).all()):
                    n_bad = int((~torch.isfinite(t)).sum())
                    raise ArtifactError(
                        f"{self._name()}: layer.{i}.{name} has {n_bad} non-finite value(s) (NaN or ±inf); {fix}"
                    )
            if le.steer is not None and tuple(le.steer.shape) != (self.meta.hidden_size,):
                raise ArtifactError(
                    f"{self._name()}: layer.{i}.steer has shape {tuple(le.steer.shape)}, "
                    f"expected ({self.meta.hidden_size},); {fix}"
                )
            if not get_rule(self.meta.rule).uses_directions:
                continue  # the shift alone is applied; Θ rows are not used
            for name, t in (("harm", le.harm), ("help", le.help)):
                if not t.shape[0]:
                    continue
                norms = t.detach().to(torch.float64).norm(dim=1)
                worst = int((norms - 1).abs().argmax())
                if abs(float(norms[worst]) - 1) > UNIT_NORM_TOL:
                    raise ArtifactError(
                        f"{self._name()}: row {worst} of layer.{i}.{name} has norm {float(norms[worst]):.6g}, "
                        f"but the {self.meta.rule} rule needs unit-norm directions; {fix}"
                    )

    # ---- I/O --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write atomically (temp file + rename); return the file's sha256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        stats: dict[str, dict[str, float]] = {}

        def own(t: torch.Tensor) -> torch.Tensor:
            # a copy of its own: safetensors refuses tensors that share memory (one shift or one
            # basis reused by several layers of a hand-built edit)
            return t.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()

        for i, le in sorted(self.layers.items()):
            tensors[f"layer.{i}.harm"] = own(le.harm)
            tensors[f"layer.{i}.help"] = own(le.help)
            if le.steer is not None:
                tensors[f"layer.{i}.steer"] = own(le.steer)
            if le.stats:
                stats[str(i)] = le.stats
        meta = dataclasses.asdict(self.meta)
        if meta["positions"] == "last":
            del meta["positions"]  # the default: artifacts written before the field existed stay byte-equal
        meta["layer_stats"] = stats
        meta[CHECKSUM_FIELD] = sha256_tensors(tensors)
        # One metadata key: safetensors stores metadata in a hash map, so two keys could be written
        # in either order and the same edit would get two file hashes.
        atomic_write_safetensors(path, tensors, {METADATA_KEY: json.dumps(meta, sort_keys=True)})
        self.sha256 = sha256_file(path)
        self.path = str(path)
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
                file_meta = f.metadata() or {}
            raw_meta = file_meta.get(METADATA_KEY)
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
            stored = meta_d.pop(CHECKSUM_FIELD, None) or file_meta.get(LEGACY_CHECKSUM_KEY)
            known = {f.name for f in dataclasses.fields(EditMeta)}
            meta = EditMeta(**{k: v for k, v in meta_d.items() if k in known})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ArtifactError(f"edit artifact {str(path)!r} has corrupt metadata ({exc})") from exc
        if meta.format_version > FORMAT_VERSION:
            raise ArtifactError(
                f"edit artifact {str(path)!r} has format version {meta.format_version}; this alignez-eval "
                f"reads up to {FORMAT_VERSION} — upgrade alignez-eval"
            )
        if stored is None and str(path) not in _WARNED_NO_CHECKSUM:
            _WARNED_NO_CHECKSUM.add(str(path))  # once per file: a sweep reloads the same artifact often
            logger.warning(
                "edit artifact %r carries no tensor checksum (written by an older alignez-eval), so corrupted "
                "bytes cannot be detected beyond the value checks; re-save it (Edit.load(p).save(p)) to add one",
                str(path),
            )
        elif stored is not None and stored != sha256_tensors(tensors):
            raise ArtifactError(
                f"edit artifact {str(path)!r}: its tensors do not match the checksum stored with them "
                "(the file's bytes were changed after it was written); re-create it with `alignez-eval fit`"
            )
        layers: dict[int, LayerEdit] = {}
        strange = sorted(k for k in tensors if not _TENSOR_NAME.match(k))
        if strange:
            raise ArtifactError(
                f"edit artifact {str(path)!r} holds tensors {strange[:5]} that are not layer.<i>.harm|help|steer; "
                "it was not written by alignez-eval — re-create it with `alignez-eval fit`"
            )
        idx = sorted({int(k.split(".")[1]) for k in tensors})
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
        outside = [i for i in idx if not 0 <= i < meta.num_layers]
        if outside:
            raise ArtifactError(
                f"edit artifact {str(path)!r} has directions for layers {outside}, outside its own "
                f"num_layers={meta.num_layers} (0..{meta.num_layers - 1}); the file is inconsistent — "
                "re-create it with `alignez-eval fit`"
            )
        edit = cls(meta=meta, layers=layers, sha256=sha256_file(path), path=str(path))
        edit.validate()
        return edit

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
