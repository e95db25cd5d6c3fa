"""Stage 3 of a fit: per layer, the cosine filter, the probe, and the method's subspaces or steer.

Also which layers the artifact edits by default: all fitted ones (layers=auto at run time) for
v1/v2, the best `top_k` by probe accuracy for the additive baselines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from alignez_eval.editing.artifact import LayerEdit
from alignez_eval.editing.layers import format_layers
from alignez_eval.errors import DataError
from alignez_eval.fitting.activations import PairActivations
from alignez_eval.fitting.probe import probe_layer
from alignez_eval.fitting.settings import FitSettings
from alignez_eval.fitting.subspaces import (
    caa_steer,
    cosine_keep,
    harm_basis,
    iti_steer,
    mean_cosine,
    theta_help,
    v1_directions,
)


def json_float(x: float | None) -> float | None:
    """Rounded float; NaN (e.g. a probe on < 2 pairs) becomes None so reports stay valid JSON."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


@dataclass
class LayerFits:
    layers: dict[int, LayerEdit]  # the edited layers
    skipped: dict[int, int]  # layers below min_pairs → their pair count (iti's unranked ones are not here)
    diagnostics: dict[int, dict[str, float]]  # per layer of the model, edited or not
    kept_by_layer: dict[int, list[bool]]  # per layer, per kept pair: survived the cosine filter
    cos_by_layer: dict[int, list[float]]
    probe_accuracy: dict[int, float]
    ranking: list[int]  # layers by probe accuracy, best first
    default_layers: str  # the artifact's default `layers`
    seconds: dict[str, float] = field(default_factory=dict)  # "probe", "subspaces"


def _rank_layers(acc: dict[int, float], diffnorm: dict[int, float]) -> list[int]:
    """Layers by held-out probe accuracy, best first; ties by larger mean-difference norm, then index."""
    def key(i: int) -> tuple[float, float, int]:
        a = acc.get(i, math.nan)
        return (-(a if not math.isnan(a) else -1.0), -diffnorm.get(i, 0.0), i)

    return sorted(acc, key=key)


def _fit_layer(
    s: FitSettings, hh: torch.Tensor, hr: torch.Tensor, probe_dir: torch.Tensor, st: dict[str, float]
) -> LayerEdit:
    d = hh.shape[1]
    empty = torch.zeros(0, d, dtype=torch.float32)
    if s.method == "v2":
        help_fit = theta_help(hh, hr, s.energy)
        harm_fit = harm_basis(hh, hr, help_fit, s.energy, s.harm_basis)
        st.update(energy_kept=round(help_fit.energy_kept, 6), k_help=int(help_fit.basis.shape[0]),
                  k_harm=int(harm_fit.basis.shape[0]), sign_ties=help_fit.ties + harm_fit.ties)
        return LayerEdit(harm=harm_fit.basis.float(), help=help_fit.basis.float(), stats=st)
    if s.method == "v1":
        harm_fit, help_fit = v1_directions(hh, hr)
        st.update(energy_kept=round(help_fit.energy_kept, 6), energy_kept_harm=round(harm_fit.energy_kept, 6),
                  k_help=1, k_harm=1, cos_help_harm_dirs=round(float(harm_fit.basis[0] @ help_fit.basis[0]), 6),
                  sign_ties=help_fit.ties + harm_fit.ties)
        return LayerEdit(harm=harm_fit.basis.float(), help=help_fit.basis.float(), stats=st)
    steer = caa_steer(hh, hr) if s.method == "caa" else iti_steer(hh, hr, probe_dir)
    st.update(steer_norm=round(float(steer.norm()), 6))
    return LayerEdit(harm=empty, help=empty.clone(), steer=steer.float(), stats=st)


def fit_layers(s: FitSettings, acts: PairActivations) -> LayerFits:
    """Fit every layer of the model that keeps ≥ min_pairs pairs; DataError when none does."""
    n_layers_model = acts.num_layers
    layers: dict[int, LayerEdit] = {}
    diag: dict[int, dict[str, float]] = {}
    kept_by_layer: dict[int, list[bool]] = {}
    cos_by_layer: dict[int, list[float]] = {}
    t_probe = t_sub = 0.0
    acc: dict[int, float] = {}
    diffnorm: dict[int, float] = {}
    uses_filter = s.method in ("v2", "v1")
    for li in range(n_layers_model):
        hh, hr = acts.help[:, li].to(torch.float64), acts.harm[:, li].to(torch.float64)
        cos = torch.nn.functional.cosine_similarity(hh, hr, dim=1)
        cos_by_layer[li] = [round(float(c), 4) for c in cos]
        keep = cosine_keep(hh, hr, s.cos_threshold) if uses_filter else torch.ones(len(hh), dtype=torch.bool)
        kept_by_layer[li] = [bool(k) for k in keep]
        t0 = time.perf_counter()
        pr = probe_layer(hh, hr, folds=s.probe_folds, l2=s.probe_l2, seed=s.seed)
        t_probe += time.perf_counter() - t0
        acc[li] = pr.accuracy
        mean_diff = (hh - hr).mean(0)
        diffnorm[li] = float(mean_diff.norm())
        n_pairs = int(keep.sum())
        st: dict[str, float] = {
            "probe_acc": json_float(pr.accuracy),
            "mean_cos_help_harm": json_float(mean_cosine(hh, hr)),
            "n_pairs": n_pairs,
            "n_pairs_total": len(hh),
            "mean_diff_norm": diffnorm[li],
        }
        t0 = time.perf_counter()
        le = _fit_layer(s, hh[keep], hr[keep], pr.direction, st) if n_pairs >= s.min_pairs else None
        t_sub += time.perf_counter() - t0
        diag[li] = st
        if le is not None:
            layers[li] = le
    ranking = _rank_layers(acc, diffnorm)
    skipped = {li: int(diag[li]["n_pairs"]) for li in range(n_layers_model) if li not in layers}
    if s.method == "iti":
        top = [li for li in ranking if li in layers][: s.top_k]
        layers = {li: layers[li] for li in sorted(top)}
    if not layers:
        raise DataError(
            f"no layer has ≥ min_pairs={s.min_pairs} pairs after the cosine filter (> {s.cos_threshold} dropped); "
            f"pairs per layer: {[int(diag[i]['n_pairs']) for i in range(n_layers_model)]}. Use more queries, "
            "a higher --cos-threshold, a lower --min-pairs, or --read mean"
        )
    if s.method in ("caa", "iti"):
        default_layers = format_layers(sorted([li for li in ranking if li in layers][: s.top_k]))
    else:
        default_layers = "auto"
    return LayerFits(layers=layers, skipped=skipped, diagnostics=diag, kept_by_layer=kept_by_layer, cos_by_layer=cos_by_layer,
                     probe_accuracy=acc, ranking=ranking, default_layers=default_layers,
                     seconds={"probe": t_probe, "subspaces": t_sub})
