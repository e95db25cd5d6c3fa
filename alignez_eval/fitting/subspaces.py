"""Per-layer preference subspaces from paired embeddings H_help, H_harm (rows = pairs, one layer).

- v2 (AlignEZ 2025 / lab v2 code): H_align = H_help − H_harm, SVD without centering, keep the top
  right-singular vectors holding ≥ `energy` of Σσ² → Θ_help. Θ_harm: see `harm_basis`.
- v1 (AlignEZ 2024, RoboShot lineage): the top singular vector of H_help (boost) and of H_harm (remove).
- CAA: the unnormalised mean of H_help − H_harm, added as a constant shift.
- ITI: the probe direction (unit) × the std of the activations along it, at the best probe layers.

Signs: an SVD returns ±θ arbitrarily, and the query gate ⟨q̂,θ⟩ ≤ 0 depends on that sign. Every
helpful θ is oriented so that ⟨mean(H_help − H_harm), θ⟩ > 0; every harmful θ the opposite way
(towards harmful — ReLU removal of a helpful-pointing θ would remove helpfulness). A direction with
no measurable projection on the mean difference gets a deterministic tie-break: its largest-|entry|
component is made positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

HARM_BASES = ("neg_align", "harm_orth")


@dataclass
class BasisFit:
    basis: torch.Tensor  # (k, d) float64, orthonormal rows
    singular_values: torch.Tensor  # all singular values of the decomposed matrix
    energy_kept: float  # Σσ² of the kept rows / Σσ²
    ties: int = 0  # rows oriented by the tie-break, not by the mean difference
    info: dict[str, float] = field(default_factory=dict)


def cosine_keep(h_help: torch.Tensor, h_harm: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """(n,) bool: pairs whose two embeddings are *not* near-duplicates (cosine ≤ threshold)."""
    cos = torch.nn.functional.cosine_similarity(h_help.to(torch.float64), h_harm.to(torch.float64), dim=1)
    return cos <= threshold


def mean_cosine(h_help: torch.Tensor, h_harm: torch.Tensor) -> float:
    if h_help.shape[0] == 0:
        return math.nan
    return float(torch.nn.functional.cosine_similarity(
        h_help.to(torch.float64), h_harm.to(torch.float64), dim=1).mean())


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest k with Σ_{i<k} σ_i² ≥ energy · Σ σ² (≥ 1 when any σ > 0)."""
    s2 = singular_values.to(torch.float64) ** 2
    total = float(s2.sum())
    if total <= 0:
        return 0
    cum = torch.cumsum(s2, 0) / total
    # Tolerance: energy=1.0 must not fail on float rounding of the last cumulative sum.
    return int(torch.nonzero(cum >= energy - 1e-12)[0]) + 1


def tie_break(row: torch.Tensor) -> torch.Tensor:
    """Deterministic sign for a direction without a preferred side: largest-|entry| positive."""
    i = int(torch.argmax(row.abs()))
    return row if row[i] >= 0 else -row


def orient(basis: torch.Tensor, towards: torch.Tensor, rel_tol: float = 1e-6) -> tuple[torch.Tensor, int]:
    """Flip rows so that ⟨towards, θ⟩ > 0; rows with |⟨towards, θ⟩| ≤ rel_tol·‖towards‖ use `tie_break`.
    Returns the oriented basis and the number of tie-broken rows."""
    if basis.shape[0] == 0:
        return basis, 0
    tol = rel_tol * float(towards.norm())
    proj = basis @ towards.to(basis.dtype)
    rows = []
    ties = 0
    for r, p in zip(basis, proj, strict=True):
        if abs(float(p)) <= tol:
            rows.append(tie_break(r))
            ties += 1
        else:
            rows.append(r if p > 0 else -r)
    return torch.stack(rows), ties


def orthonormalize(rows: torch.Tensor, rel_tol: float = 1e-8) -> torch.Tensor:
    """Orthonormal rows spanning `rows` (Gram–Schmidt order kept, near-dependent rows dropped), so
    the i-th output row is the i-th input row with the earlier ones projected out."""
    out: list[torch.Tensor] = []
    scale = float(rows.norm(dim=1).max()) if rows.shape[0] else 0.0
    for r in rows.to(torch.float64):
        v = r.clone()
        for _ in range(2):  # twice is enough (Kahan–Parlett) for numerical orthogonality
            for u in out:
                v = v - (v @ u) * u
        n = float(v.norm())
        if n > rel_tol * max(scale, 1e-300):
            out.append(v / n)
    if not out:
        return rows.new_zeros((0, rows.shape[1]), dtype=torch.float64)
    return torch.stack(out)


def svd_basis(m: torch.Tensor, energy: float) -> BasisFit:
    """Top right-singular vectors of m (no centering) holding ≥ energy of Σσ²."""
    m = m.to(torch.float64)
    if m.shape[0] == 0 or float(m.abs().max()) == 0.0:
        return BasisFit(m.new_zeros((0, m.shape[1])), m.new_zeros(0), 0.0)
    _, s, vt = torch.linalg.svd(m, full_matrices=False)
    k = energy_rank(s, energy)
    kept = float((s[:k] ** 2).sum() / (s**2).sum())
    return BasisFit(vt[:k].clone(), s, kept)


def theta_help(h_help: torch.Tensor, h_harm: torch.Tensor, energy: float = 0.90) -> BasisFit:
    """v2 helpful basis: SVD of H_align = H_help − H_harm, oriented towards helpful."""
    align = (h_help - h_harm).to(torch.float64)
    fit = svd_basis(align, energy)
    fit.basis, fit.ties = orient(fit.basis, align.mean(0))
    return fit


def harm_basis(
    h_help: torch.Tensor,
    h_harm: torch.Tensor,
    help_fit: BasisFit,
    energy: float = 0.90,
    source: str = "neg_align",
) -> BasisFit:
    """v2 harmful basis. The lab's v2 code (method.md) defines a single decomposed matrix
    H_align = H_help − H_harm and applies ReLU removal to "harmful" directions and tanh boosting to
    "helpful" ones; our reading (`neg_align`, default) is that the harmful directions are those of
    −H_align, i.e. the same subspace pointing towards harmful: θ_harm = −θ_help. Per direction, with
    c = ⟨x, θ_help⟩ and both inner products on the original x, the update is
    Δc = ReLU(−c) + α·tanh(c): the harmful side is clipped and the helpful side boosted, and nothing
    outside the preference subspace is touched.

    `harm_orth` is the RoboShot-lineage alternative: SVD of H_harm with Θ_help projected out of its
    rows (so Θ_harm ⟂ Θ_help), energy-selected, oriented towards mean(H_harm). It removes what
    harmful answers' activations have in common beyond the helpful subspace — including much of the
    shared mean activation, so it is the more invasive reading.
    """
    if source not in HARM_BASES:
        raise ValueError(f"harm basis source {source!r}; choose one of {HARM_BASES}")
    if source == "neg_align":
        return BasisFit(-help_fit.basis, help_fit.singular_values, help_fit.energy_kept, help_fit.ties)
    hb = help_fit.basis
    harm = h_harm.to(torch.float64)
    resid = harm - (harm @ hb.T) @ hb if hb.shape[0] else harm
    fit = svd_basis(resid, energy)
    if fit.basis.shape[0]:
        basis = orthonormalize(torch.cat([hb, fit.basis]))[hb.shape[0]:] if hb.shape[0] else fit.basis
        fit.basis, fit.ties = orient(basis, harm.mean(0))
    return fit


def v1_directions(h_help: torch.Tensor, h_harm: torch.Tensor) -> tuple[BasisFit, BasisFit]:
    """v1: (harm, help) — the top right-singular vector of H_harm and of H_help, one each (RoboShot).
    Help is oriented towards helpful, harm towards harmful (the projection rule is sign-free anyway)."""
    diff = (h_help - h_harm).to(torch.float64).mean(0)
    out = []
    for h, towards in ((h_harm, -diff), (h_help, diff)):
        h = h.to(torch.float64)
        if h.shape[0] == 0:
            out.append(BasisFit(h.new_zeros((0, h.shape[1])), h.new_zeros(0), 0.0))
            continue
        _, s, vt = torch.linalg.svd(h, full_matrices=False)
        basis, ties = orient(vt[:1].clone(), towards)
        out.append(BasisFit(basis, s, float(s[0] ** 2 / (s**2).sum()), ties))
    return out[0], out[1]


def caa_steer(h_help: torch.Tensor, h_harm: torch.Tensor) -> torch.Tensor:
    """CAA: mean(H_help − H_harm), unnormalised (its scale is the activation scale)."""
    return (h_help - h_harm).to(torch.float64).mean(0)


def iti_steer(h_help: torch.Tensor, h_harm: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """ITI: unit probe direction × std of all (help and harm) activations projected on it."""
    u = direction.to(torch.float64)
    u = u / u.norm().clamp_min(1e-300)
    if float(u @ caa_steer(h_help, h_harm)) < 0:
        u = -u
    proj = torch.cat([h_help, h_harm]).to(torch.float64) @ u
    sigma = float(proj.std(unbiased=False)) if proj.numel() > 1 else 0.0
    return u * sigma
