"""The pieces `compare` and `sweep` chain, behind one small seam each.

Loading models, fitting, setting an edit, judging and reporting belong to other modules; keeping
their call sites here makes the orchestration readable and the contract with each module explicit.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignez_eval.editing.config import EDIT_SETTINGS, EditConfig
from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_file

logger = logging.getLogger(__name__)

# compare's method names -> fit's method names
FIT_METHODS: dict[str, str] = {"alignez": "v2", "alignez-v1": "v1", "caa": "caa", "iti": "iti"}
# `component` also decides where a fit reads Φ, so compare and sweep treat it as a fit setting and
# the edit follows the artifact's; the other EditConfig fields only reconfigure the loaded model.
SET_EDIT_SETTINGS: tuple[str, ...] = tuple(s for s in EDIT_SETTINGS if s != "component")
# model_args that only configure the edit (set with set_edit, never at load time)
EDIT_ARG_KEYS = ("edit", *SET_EDIT_SETTINGS, "fit")


def check_edit_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The inference-time settings that were given (None = not given), checked by EditConfig and
    typed as it types them ("1.5" → 1.5), so a bad value fails before any model loads."""
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - set(SET_EDIT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown edit setting(s) {', '.join(unknown)}; inference-time settings are "
                          f"{', '.join(SET_EDIT_SETTINGS)}")
    config = EditConfig.from_mapping(given)
    return {k: getattr(config, k) for k in given}


def fit_method(name: str) -> str:
    try:
        return FIT_METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(FIT_METHODS)}") from None


def resolve_pretrained(args: dict[str, str]) -> dict[str, str]:
    """`pretrained=NAME` of an embedded offline model becomes its prepared directory."""
    name = args.get("pretrained", "")
    if not name or Path(name).expanduser().exists() or "/" in name:
        return args
    # lazy: the models package imports torch (5.6 s, measured on AMD EPYC, 2 cores); the CLI reads this module
    from alignez_eval import models

    known = {getattr(s, "name", None) for s in models.list_models()}
    if name in known:
        return {**args, "pretrained": str(models.model_path(name))}
    return args


def load_lm(args: dict[str, str], batch_size: int) -> Any:
    """An `alignez-hf` LM with no edit, ready for `set_edit`."""
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
    import torch

    from model_adapters.alignez_hf import AlignEZHFLM

    load_args = {k: v for k, v in args.items() if k not in EDIT_ARG_KEYS}
    # HFLM defaults to cuda even where there is none; lm-eval's CLI passes --device, so do we.
    load_args.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    logger.info("loading %s", load_args.get("pretrained"))
    lm = AlignEZHFLM.create_from_arg_obj({**load_args, "edit": "none"}, {"batch_size": batch_size})
    logger.info("loaded %s in %.1f s", load_args.get("pretrained"), time.perf_counter() - t0)
    return lm


def free(obj: Any) -> None:
    """Drop what we can of a model before loading the next (the demo box has 24 GiB for three models)."""
    # lazy: torch costs 5.6 s to import (measured on AMD EPYC, 2 cores)
    import torch

    del obj
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def set_edit(lm: Any, edit_path: Path | None, settings: dict[str, Any]) -> None:
    """Reconfigure the loaded model's edit without reloading weights (`None` = the unedited baseline)."""
    lm.set_edit(str(edit_path) if edit_path is not None else "none", **settings)


def fit_edit(lm: Any, queries: list[dict[str, Any]], method: str, settings: dict[str, Any], out: Path,
             model_name: str | None = None) -> dict[str, Any]:
    """Fit `method` on `queries` with the loaded model; write the artifact (+ pairs, fit report) to `out`.

    The fit module caches the self-generated pairs by (model, queries, generation settings), not by
    method, so AlignEZ v2/v1, CAA and ITI fitted on the same prompts share one generation pass.
    """
    # lazy: the CLI builds compare's flags from this module; these pull torch (5.6 s, measured on AMD EPYC, 2 cores)
    from alignez_eval.fitting import FitSettings, run_fit, write_outputs

    set_edit(lm, None, {})  # the hooks only act inside lm-eval calls; this keeps the state explicit
    fs = FitSettings.from_mapping({**settings, "method": fit_method(method)})
    result = run_fit(lm.model, lm.tokenizer, queries, fs, model_name=model_name)
    paths = write_outputs(result, out)
    counts = result.report.get("fit", {}).get("counts", {})
    return {"edit_sha256": sha256_file(paths["edit"]), "method": method, "fit_method": fs.method,
            "fit_cache_hit": result.cache_hit, "pairs_kept": counts.get("kept_text"),
            "layers_edited": counts.get("layers_edited"), "timings": result.timings}


def judge(baseline: Any, candidates: dict[str, Any], spec: Any, out_dir: Path, cache_path: Path) -> Path:
    # lazy: the CLI builds compare's flags from this module; these pull torch (5.6 s, measured on AMD EPYC, 2 cores)
    from alignez_eval.judge import judge_runs

    return judge_runs(baseline, candidates, spec, out_dir, cache_path=cache_path)


def report(judgments_dir: Path, name: str, out_root: Path, tuned: str | None, extra: dict[str, Any]) -> dict[str, Path]:
    # lazy: the CLI builds compare's flags from this module; these pull torch (5.6 s, measured on AMD EPYC, 2 cores)
    from alignez_eval.report import write_report

    return write_report(judgments_dir, name, out_root=str(out_root), tuned=tuned, extra=extra)
