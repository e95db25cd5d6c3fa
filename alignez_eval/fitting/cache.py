"""The fit cache: model identity, cache keys, and finished fits stored by key.

Entries live at <cache>/fits/<key[:24]>/{edit.safetensors, edit.pairs.jsonl, edit.report.json};
generated pairs (<cache>/selfpref) and activations (<cache>/activations) sit beside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from alignez_eval.atomic import atomic_dir
from alignez_eval.editing.artifact import Edit
from alignez_eval.fitting.outputs import output_paths, write_outputs
from alignez_eval.fitting.result import FitResult
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.hashing import sha256_json
from alignez_eval.models import alignez_home
from alignez_eval.package import __version__

logger = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of an in-memory model: its config, dtype, and the first/last values of every
    parameter (two random inits, or a base and its fine-tune, differ there; hashing all weights
    would cost seconds per call)."""
    cfg_d = _config_dict(model)
    name = str(cfg_d.pop("_name_or_path", "") or getattr(model, "name_or_path", ""))
    h = hashlib.sha256()
    dtype = None
    with torch.no_grad():
        for pname, p in model.named_parameters():
            dtype = dtype or str(p.dtype)
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:64], flat[-64:]]).to("cpu", torch.float32)
            h.update(pname.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    return {"name": name, "config_sha256": sha256_json(cfg_d), "weights": h.hexdigest(), "dtype": dtype}


def _config_dict(model: torch.nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    cfg_d = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
    for volatile in ("transformers_version", "use_cache"):
        cfg_d.pop(volatile, None)
    return cfg_d


def model_config_sha256(model: torch.nn.Module) -> str:
    """The `config_sha256` of `model_fingerprint`, without reading any weight."""
    cfg_d = _config_dict(model)
    cfg_d.pop("_name_or_path", None)
    return sha256_json(cfg_d)


def default_cache_dir() -> Path:
    return alignez_home() / "fits"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """"default" → $ALIGNEZ_HOME/fits; None → no caching."""
    if cache_dir is None:
        return None
    return Path(default_cache_dir() if cache_dir == "default" else cache_dir)


def fit_key(data_key: str, settings: FitSettings, model_identity: dict[str, Any]) -> str:
    """The finished fit's key: the pairs, the settings that shape the artifact, the model, the package."""
    return sha256_json({"data": data_key, "fit": settings.fit_inputs(), "model": model_identity,
                        "version": __version__})


def _entry(cache: Path, key: str) -> Path:
    return cache / "fits" / key[:24]


def load_cached(cache: Path, key: str) -> FitResult | None:
    paths = output_paths(_entry(cache, key) / "edit.safetensors")
    if not paths["report"].exists():
        return None
    try:
        report = json.loads(paths["report"].read_text(encoding="utf-8"))
        if report.get("fit", {}).get("cache_key") != key:
            return None
        edit = Edit.load(paths["edit"])
        pairs = [json.loads(ln) for ln in paths["pairs"].read_text(encoding="utf-8").splitlines() if ln.strip()]
    except Exception as exc:  # noqa: BLE001 — a corrupt entry is rebuilt, never trusted
        logger.warning("ignoring unreadable fit cache entry %s (%s)", paths["edit"].parent, exc)
        return None
    report.pop("artifact", None)
    return FitResult(edit=edit, report=report, pairs=pairs, cache_hit=True,
                     timings=report.get("fit", {}).get("timings", {}))


def store_cached(cache: Path, key: str, result: FitResult) -> None:
    """Build the entry in a temp sibling and rename it into place: a killed run leaves no half entry."""
    with atomic_dir(_entry(cache, key), suffix=".tmp") as tmp:
        write_outputs(result, tmp / "edit.safetensors", text=False)
