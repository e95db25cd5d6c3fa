"""Edits written by other steering tools, read as ordinary `Edit`s, and additive edits written for them.

Read (`load_edit`, by the file's suffix; everything else is this package's own safetensors artifact):
  .gguf      a control vector as llama.cpp (`cvector-generator`) and repeng (`export_gguf`) write it:
             `general.architecture = controlvector`, `controlvector.model_hint`, `controlvector.layer_count`,
             one tensor `direction.N` (d,) per layer. llama.cpp adds direction.N to the output of decoder
             block N (numbered from 0, as here; N = 0 is not allowed there), at every position, scaled by
             `--control-vector-scaled FILE S` over `--control-vector-layer-range A B`: here `alpha=S` and
             `layers=A-B`, and the artifact's default positions are `all`.
  .pt/.pth   lm-eval's `steered` file: {hookpoint: {steering_vector, steering_coefficient, action, bias,
             head_index}}, read with `torch.load(weights_only=True)` only, so a pickle holding code is
             refused. A hookpoint names a module of `model.base_model` (e.g. `layers.3`, `layers.3.mlp`,
             GPT-2's `h.3`); it is matched to this package's architecture map by module identity.
             action=add adds coefficient·v at every position (rule `add`); action=clamp holds the component
             along d = v/‖v‖ at the coefficient, around the bias (rule `clamp`, rules.clamp_delta).

Write (`write_control_vector`): an edit that is one vector per layer (rule `add`: CAA, ITI, an imported
vector) as a llama.cpp control vector. AlignEZ's edits are refused: their update depends on each hidden
state (ReLU/tanh of ⟨x, θ⟩) and on each query (gate, layer choice), which no constant vector reproduces.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignez_eval.editing.architectures import find_components, hidden_size, num_layers
from alignez_eval.editing.artifact import Edit, EditMeta, LayerEdit
from alignez_eval.editing.config import COMPONENTS
from alignez_eval.editing.layers import ALL, AUTO, format_layers, parse_layers
from alignez_eval.errors import ArtifactError
from alignez_eval.hashing import sha256_file

logger = logging.getLogger(__name__)

CONTROL_VECTOR_ARCH = "controlvector"
GGUF_SUFFIXES = (".gguf",)
STEERED_SUFFIXES = (".pt", ".pth")
_DIRECTION = re.compile(r"^direction\.(\d+)$")
STEERED_KEYS = {"steering_vector", "steering_coefficient", "action", "bias", "head_index"}
# model types whose decoder block adds the MLP's output straight into the residual stream, so a shift
# of the MLP output is the same shift of the block output (what llama.cpp adds to); Gemma's blocks norm
# the MLP output first (post_feedforward_layernorm), so there it is not
RESIDUAL_MLP_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi", "phi3",
                                "olmo", "olmo2", "granite", "stablelm", "starcoder2"})


def is_foreign(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in GGUF_SUFFIXES + STEERED_SUFFIXES


def load_edit(path: str | os.PathLike[str], model: torch.nn.Module | None = None,
              layers_path: str | None = None) -> Edit:
    """An edit from any file this package reads; control vectors and steered files need the model they
    are applied to (its depth, and for steered files its module names)."""
    path = Path(path)
    if not is_foreign(path):
        return Edit.load(path)
    if not path.is_file():
        raise ArtifactError(f"edit file {str(path)!r} does not exist")
    if model is None:
        raise ArtifactError(f"{path.name} is a file of another tool; it is read against the model it edits: "
                            "load it through alignez-hf (edit=PATH) or apply_edit(model, PATH)")
    if path.suffix.lower() in GGUF_SUFFIXES:
        return read_control_vector(path, model, layers_path)
    return read_steered(path, model, layers_path)


def _model_type(model: torch.nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "model_type", "") or "")


def _gguf_string(reader: Any, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return str(field.contents())
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def read_control_vector(path: str | os.PathLike[str], model: torch.nn.Module,
                        layers_path: str | None = None) -> Edit:
    """A GGUF control vector as an additive edit on the block outputs of `model` (see the module doc)."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is one clear error
        raise ArtifactError(f"{path} is not a readable GGUF file ({exc}); pass a llama.cpp / repeng control "
                            "vector (.gguf), an lm-eval steered file (.pt) or an alignez-eval artifact") from None
    arch = _gguf_string(reader, "general.architecture")
    if arch != CONTROL_VECTOR_ARCH:
        raise ArtifactError(f"{path} is a GGUF file of architecture {arch!r}, not a control vector "
                            f"({CONTROL_VECTOR_ARCH!r}); a model's weights are loaded with pretrained=, not edit=")
    n_model, d_model = num_layers(model, layers_path), hidden_size(model)
    layers: dict[int, LayerEdit] = {}
    for t in reader.tensors:
        m = _DIRECTION.match(t.name)
        if m is None:
            raise ArtifactError(f"{path}: tensor {t.name!r} is not direction.N; this is not a control vector")
        n = int(m.group(1))
        v = torch.from_numpy(np.asarray(t.data, dtype=np.float32).reshape(-1).copy())
        if v.numel() != d_model:
            raise ArtifactError(f"{path}: {t.name} has {v.numel()} values but the model's hidden size is {d_model}; "
                                "it was made for another model")
        if not 0 < n < n_model:
            raise ArtifactError(f"{path}: {t.name} is for block {n}, but llama.cpp numbers blocks 1..{n_model - 1} "
                                f"on this {n_model}-layer model; it was made for another model")
        layers[n] = LayerEdit(harm=torch.zeros(0, d_model), help=torch.zeros(0, d_model), steer=v)
    if not layers:
        raise ArtifactError(f"{path} holds no direction.N tensors")
    hint = _gguf_string(reader, "controlvector.model_hint") or ""
    if hint and _model_type(model) and hint != _model_type(model):
        logger.warning("control vector %s was made for a %r model, this one is %r", path, hint, _model_type(model))
    sha = sha256_file(path)
    meta = EditMeta(method="control-vector", rule="add", component="block", hidden_size=d_model, num_layers=n_model,
                    model=hint, layers="all", positions="all",
                    fit={"source": {"format": "gguf-controlvector", "file": path.name, "sha256": sha,
                                    "model_hint": hint}})
    edit = Edit(meta=meta, layers=layers, sha256=sha, path=str(path))
    edit.validate()
    return edit


def _load_steered_dict(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = torch.load(f, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"{path} was refused: it is not a file of plain tensors and numbers ({first[:200]}). Files are read "
            "with torch.load(weights_only=True) only, never running code a pickle carries; save the steering "
            "config as {hookpoint: {'steering_vector': tensor, 'steering_coefficient': float, 'action': 'add'|"
            "'clamp', 'bias': tensor|None}} with torch.save") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise ArtifactError(f"{path} is not an lm-eval steered config: expected a non-empty dict of hookpoint -> "
                            "{steering_vector, steering_coefficient, action, bias}")
    return data


def _hookpoints(model: torch.nn.Module, layers_path: str | None) -> dict[str, tuple[str, int]]:
    """hookpoint name (as lm-eval resolves it, in model.base_model) -> (component, layer)."""
    base = getattr(model, "base_model", model)
    names = {id(m): name for name, m in base.named_modules()}
    out: dict[str, tuple[str, int]] = {}
    for component in COMPONENTS:
        try:
            mods = find_components(model, component, layers_path)
        except Exception:  # noqa: BLE001 -- a model without MLP submodules still has its blocks
            continue
        for i, m in enumerate(mods):
            name = names.get(id(m))
            if name is not None:
                out[name] = (component, i)
    return out


def read_steered(path: str | os.PathLike[str], model: torch.nn.Module, layers_path: str | None = None) -> Edit:
    """An lm-eval `steered` .pt file as an edit of `model` (see the module doc)."""
    path = Path(path)
    data = _load_steered_dict(path)
    known = _hookpoints(model, layers_path)
    d_model = hidden_size(model)
    unknown = [h for h in data if h not in known]
    if unknown:
        shown = ", ".join(sorted(known, key=lambda h: (known[h][0], known[h][1]))[:4])
        raise ArtifactError(f"{path}: hookpoint(s) {unknown} are not a decoder block or MLP output of this model "
                            f"(those are e.g. {shown}, …); this package edits those only")
    components = {known[h][0] for h in data}
    actions = {str(info.get("action")) for info in data.values()}
    if len(components) > 1:
        raise ArtifactError(f"{path} steers both block and MLP outputs; one edit acts on one component: split "
                            "the file in two (one per component)")
    if len(actions) > 1 or not actions <= {"add", "clamp"}:
        raise ArtifactError(f"{path}: actions {sorted(actions)}; one file of one action, add or clamp, is read")
    action, component = actions.pop(), components.pop()
    layers: dict[int, LayerEdit] = {}
    for hook, info in data.items():
        extra = set(info) - STEERED_KEYS
        if extra:
            raise ArtifactError(f"{path}: hookpoint {hook} has unknown keys {sorted(extra)}")
        if info.get("head_index") is not None:
            raise ArtifactError(f"{path}: hookpoint {hook} steers attention head {info['head_index']}; this "
                                "package edits whole block or MLP outputs, not single heads")
        v = info.get("steering_vector")
        if not isinstance(v, torch.Tensor) or v.numel() != d_model:
            raise ArtifactError(f"{path}: hookpoint {hook}'s steering_vector must be a tensor of the hidden size "
                                f"{d_model}, got {getattr(v, 'shape', type(v).__name__)}")
        v = v.detach().to(torch.float64).reshape(-1)
        coef = float(info.get("steering_coefficient", 1.0))
        if not math.isfinite(coef):
            raise ArtifactError(f"{path}: hookpoint {hook}'s steering_coefficient is {coef}")
        bias = info.get("bias")
        empty = torch.zeros(0, d_model)
        if action == "add":
            if bias is not None:
                raise ArtifactError(f"{path}: hookpoint {hook} has a bias, which lm-eval's add action refuses too")
            layers[known[hook][1]] = LayerEdit(harm=empty, help=empty, steer=(coef * v).float())
        else:
            norm = float(v.norm())
            if norm == 0:
                raise ArtifactError(f"{path}: hookpoint {hook}'s steering_vector is zero; a clamp needs a direction")
            d = v / norm
            b = torch.zeros(d_model, dtype=torch.float64) if bias is None else bias.detach().to(torch.float64).reshape(-1)
            if b.numel() != d_model:
                raise ArtifactError(f"{path}: hookpoint {hook}'s bias has {b.numel()} values, not {d_model}")
            layers[known[hook][1]] = LayerEdit(harm=d[None].float(), help=empty, steer=((coef + float(b @ d)) * d).float())
    sha = sha256_file(path)
    meta = EditMeta(method=f"steered-{action}", rule="add" if action == "add" else "clamp", component=component,
                    hidden_size=d_model, num_layers=num_layers(model, layers_path), model=_model_type(model),
                    layers="all", positions="all",
                    fit={"source": {"format": "lm-eval-steered", "file": path.name, "sha256": sha,
                                    "hookpoints": sorted(data)}})
    edit = Edit(meta=meta, layers=layers, sha256=sha, path=str(path))
    edit.validate()
    return edit


def export_layers(edit: Edit, layers: str | None = None) -> tuple[int, ...]:
    """The layers an export holds: `layers` if given, else what alignez-hf applies by default (the
    artifact's own `layers`; every fitted layer for `all` / `auto`)."""
    spec = layers if layers is not None else edit.meta.layers
    fitted = tuple(sorted(edit.layers))
    if str(spec).strip().lower() in (ALL, AUTO):
        return fitted
    chosen = parse_layers(spec, edit.meta.num_layers)
    assert not isinstance(chosen, str)
    missing = sorted(set(chosen) - set(fitted))
    if missing:
        raise ArtifactError(f"layers {missing} have no vector in this edit (fitted: {format_layers(fitted)})")
    return tuple(chosen)


def export_refusal(edit: Edit, model_type: str | None = None, layers: tuple[int, ...] | None = None) -> str | None:
    """Why `edit` (on `layers`, default: all it has) cannot be a llama.cpp control vector, or None."""
    meta = edit.meta
    if meta.rule != "add":
        return (f"a {meta.method} edit (rule {meta.rule}) is not one vector per layer: AlignEZ's update "
                "−ReLU(⟨x,θ⟩)θ + α·tanh(⟨x,θ⟩)θ changes with every hidden state x, and its gate and layer choice "
                "with every query, so no constant vector reproduces it; a control vector holds a constant shift "
                "per layer only (export an additive edit: compare/fit --methods caa or iti)")
    if meta.component != "block":
        mt = model_type or meta.model
        if mt not in RESIDUAL_MLP_TYPES:
            return (f"llama.cpp adds a control vector to each block's output, and this edit adds to the MLP output; "
                    f"the two are the same shift only where the MLP output joins the residual stream unchanged "
                    f"(model types {', '.join(sorted(RESIDUAL_MLP_TYPES))}), and model type {mt or '(unknown)'!r} "
                    "is not known to: pass --model-type when it is one of those, or fit with component=block")
    if 0 in (layers if layers is not None else edit.layers):
        return ("the edit shifts block 0, which llama.cpp's control vectors cannot hold (direction.0 is invalid "
                "there): export other layers (--layers 1-N)")
    return None


def write_control_vector(edit: Edit, path: str | os.PathLike[str], alpha: float = 1.0,
                         model_type: str | None = None, layers: str | None = None) -> str:
    """Write `edit` (α·steer on each of `export_layers(edit, layers)`) as a llama.cpp control vector,
    atomically; -> the file's sha256."""
    from gguf import GGUFWriter

    chosen = export_layers(edit, layers) if edit.meta.rule == "add" else tuple(sorted(edit.layers))
    why = export_refusal(edit, model_type, chosen)
    if why is not None:
        raise ArtifactError(f"cannot export {edit.path or 'this edit'} as a control vector: {why}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    writer = GGUFWriter(str(tmp), CONTROL_VECTOR_ARCH)
    writer.add_string(f"{CONTROL_VECTOR_ARCH}.model_hint", model_type or edit.meta.model or "")
    writer.add_uint32(f"{CONTROL_VECTOR_ARCH}.layer_count", len(chosen))
    for i in chosen:
        le = edit.layers[i]
        assert le.steer is not None  # Edit.validate: an additive artifact carries its shifts
        writer.add_tensor(f"direction.{i}", (alpha * le.steer.detach().to(torch.float64)).float().numpy())
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_file(path)
