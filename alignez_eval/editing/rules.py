"""The edit rules applied to a hidden state x (…, d) at the edited positions.

All functions return the *delta* to add to x, computed in x's dtype/device as two small matmuls
(no loop over tokens or directions). Bases are (k, d) with orthonormal rows; k may be 0.

Gates are optional multiplicative masks on the per-direction coefficients, broadcastable to
(…, k): the paper's query-conditional filter keeps direction θ for a query only when
⟨q̂, θ⟩ ≤ 0, which is a per-row 0/1 mask of shape (B, 1, k).
"""

from __future__ import annotations

import torch

RULES = ("alignez", "projection", "add")


def _coeffs(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return x @ basis.to(dtype=x.dtype, device=x.device).T


def _combine(coeffs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return coeffs @ basis.to(dtype=coeffs.dtype, device=coeffs.device)


def remove_harm_delta(
    x: torch.Tensor, harm_basis: torch.Tensor, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """−Σ_θ ReLU(⟨x,θ⟩)·θ over θ ∈ Θ_harm: only the part of x that points *into* a harmful
    direction is removed, so a state already pointing away is left alone."""
    if harm_basis.shape[0] == 0:
        return torch.zeros_like(x)
    c = torch.relu(_coeffs(x, harm_basis))
    if gate is not None:
        c = c * gate.to(dtype=c.dtype, device=c.device)
    return -_combine(c, harm_basis)


def boost_help_delta(
    x: torch.Tensor, help_basis: torch.Tensor, alpha: float, gate: torch.Tensor | None = None
) -> torch.Tensor:
    """α·Σ_θ tanh(⟨x,θ⟩)·θ over θ ∈ Θ_help: tanh bounds the boost per direction to |α|, and is odd,
    so the result does not depend on the sign an SVD happened to give θ."""
    if help_basis.shape[0] == 0 or alpha == 0:
        return torch.zeros_like(x)
    c = torch.tanh(_coeffs(x, help_basis))
    if gate is not None:
        c = c * gate.to(dtype=c.dtype, device=c.device)
    return alpha * _combine(c, help_basis)


def alignez_delta(
    x: torch.Tensor,
    harm_basis: torch.Tensor,
    help_basis: torch.Tensor,
    alpha: float = 1.0,
    harm_gate: torch.Tensor | None = None,
    help_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """AlignEZ v2 update. Both inner products use the original x (the lab code's form; equal to
    the sequential form when Θ_harm ⟂ Θ_help)."""
    return remove_harm_delta(x, harm_basis, harm_gate) + boost_help_delta(x, help_basis, alpha, help_gate)


def projection_delta(
    x: torch.Tensor, harm_basis: torch.Tensor, help_basis: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    """AlignEZ v1 / RoboShot form, sequential as written in the paper:
    x ← x − ⟨x,θ_harm⟩θ_harm, then x ← x + α⟨x,θ_help⟩θ_help (unit θ)."""
    y = x
    if harm_basis.shape[0]:
        y = y - _combine(_coeffs(y, harm_basis), harm_basis)
    if help_basis.shape[0] and alpha != 0:
        y = y + alpha * _combine(_coeffs(y, help_basis), help_basis)
    return y - x


def add_delta(x: torch.Tensor, steer: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """CAA / ITI: a constant shift α·v (v already carries its scale, e.g. ITI's σ·θ)."""
    return (alpha * steer.to(dtype=x.dtype, device=x.device)).expand_as(x)
