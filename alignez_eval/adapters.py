"""PEFT (LoRA) adapters: their identity, and loading a base model with one applied.

An adapter is named by its directory's basename plus the sha256 of its config and weights, so an
edit fitted on `base + adapter` records exactly which adapter it was fitted with, and `alignez-hf`
can tell when an artifact meets another model or adapter.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_identity(path: str | Path | None) -> dict[str, str] | None:
    """{"name": basename, "sha256": of adapter_config.json + the adapter weights}; None for no adapter."""
    if path in (None, "", "none"):
        return None
    d = Path(str(path)).expanduser()
    cfg = d / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"peft={str(path)!r} is not a PEFT adapter directory (no adapter_config.json); pass the "
                          "directory that `alignez-eval train-dpo` or PEFT's save_pretrained wrote")
    h = hashlib.sha256()
    for name in ADAPTER_FILES:
        f = d / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return {"name": d.resolve().name, "sha256": h.hexdigest()}


def apply_adapter(model: Any, path: str | Path, *, merge: bool = True) -> Any:
    """`model` with the PEFT adapter at `path` applied; merged into the weights by default (the same
    function, with plain modules the hooks find as on any model)."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ConfigError("peft=DIR needs the peft package: pip install 'alignez-eval[dpo]'") from exc
    ident = adapter_identity(path)  # a clear error for a directory that is not an adapter
    wrapped = PeftModel.from_pretrained(model, str(Path(str(path)).expanduser()))
    out = wrapped.merge_and_unload() if merge else wrapped
    mark(out, ident)
    return out


ATTR = "alignez_adapter"


def mark(model: Any, identity: dict[str, str] | None) -> None:
    """Record on the model object which adapter it carries; a fit reads it (`model_adapter`)."""
    object.__setattr__(model, ATTR, identity)


def model_adapter(model: Any) -> dict[str, str] | None:
    return getattr(model, ATTR, None)


def _adapter_name(a: dict[str, Any] | None) -> str:
    return "no adapter" if not a else f"adapter {a.get('name')} (sha256 {str(a.get('sha256'))[:12]})"


def fitted_elsewhere(fitted_identity: dict[str, Any] | None, model: Any,
                     adapter: dict[str, str] | None) -> str | None:
    """Why an artifact whose fit recorded `fitted_identity` (its meta.fit["model_identity"]) was not
    fitted on `model` carrying `adapter`, or None when it was (or the artifact predates the record).
    Compared: the adapter (name + sha256) and the model config's sha256."""
    if not fitted_identity:
        return None
    reasons = []
    fitted_adapter = fitted_identity.get("adapter")
    if (fitted_adapter or None) != (adapter or None):
        reasons.append(f"it was fitted with {_adapter_name(fitted_adapter)}, this model has {_adapter_name(adapter)}")
    cfg = fitted_identity.get("config_sha256")
    if cfg:
        from alignez_eval.fitting.cache import model_config_sha256

        if cfg != model_config_sha256(model):
            reasons.append(f"it was fitted on another model ({fitted_identity.get('name') or '?'}; the configs differ)")
    return "; ".join(reasons) or None
