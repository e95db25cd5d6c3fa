"""Fitting an edit: preference pairs → Φ_l activations → per-layer subspaces → `Edit` artifact.

    from alignez_eval import fit
    edit = fit(model, tokenizer, queries, method="v2")          # self-generated pairs
    edit = fit(model, tokenizer, None, pref_data="hh.jsonl")    # ground-truth pairs
    result = alignez_eval.fitting.run_fit(model, tokenizer, queries, FitSettings(method="caa"))

Stages (each timed and reported): self-generation or loading `pref_data` (pairs.py), text
filtering, activation capture, one batched pass per set of texts (capture.py: Φ_l of any texts;
activations.py: of the kept pairs' answers), per-layer cosine filter, probe (probe.py), SVD / mean
differences (subspaces.py, layer_fit.py), artifact and report (result.py). Everything is
cached by content (cache.py): the generated pairs by (model, queries, generation settings) —
resumable —, activations by (model, texts, component), and the finished artifact by (pairs, model,
fit settings), so a second identical call generates nothing.

Importing this package imports no torch (`alignez-eval fit --help` reads `settings.FitSettings`);
the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FitSettings": "alignez_eval.fitting.settings",
    "FitResult": "alignez_eval.fitting.result",
    "fit": "alignez_eval.fitting.run",
    "run_fit": "alignez_eval.fitting.run",
    "write_outputs": "alignez_eval.fitting.outputs",
    "output_paths": "alignez_eval.fitting.outputs",
    "format_report": "alignez_eval.fitting.outputs",
    "model_fingerprint": "alignez_eval.fitting.cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # PEP 562
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alignez_eval.fitting' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
