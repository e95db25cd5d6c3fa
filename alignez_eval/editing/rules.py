"""The edit rules applied to a hidden state x (…, d) at the edited positions.

All functions return the *delta* to add to x, computed in x's dtype/device as two small matmuls
(no loop over tokens or directions). Bases are (k, d) with orthonormal rows; k may be 0.

Gates are optional multiplicative masks on the per-direction coefficients, broadcastable to
(…, k): the paper's query-conditional filter keeps direction θ for a query only when
⟨q̂, θ⟩ ≤ 0, which is a per-row 0/1 mask of shape (B, 1, k).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    alpha: float,
    harm_gate: torch.Tensor | None = None,
    help_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """AlignEZ v2 update. Both inner products use the original x (the lab code's form; equal to
    the sequential form when Θ_harm ⟂ Θ_help)."""
    return remove_harm_delta(x, harm_basis, harm_gate) + boost_help_delta(x, help_basis, alpha, help_gate)


def projection_delta(
    x: torch.Tensor, harm_basis: torch.Tensor, help_basis: torch.Tensor, alpha: float
) -> torch.Tensor:
    """AlignEZ v1 / RoboShot form, sequential as written in the paper:
    x ← x − ⟨x,θ_harm⟩θ_harm, then x ← x + α⟨x,θ_help⟩θ_help (unit θ)."""
    y = x
    if harm_basis.shape[0]:
        y = y - _combine(_coeffs(y, harm_basis), harm_basis)
    if help_basis.shape[0] and alpha != 0:
        y = y + alpha * _combine(_coeffs(y, help_basis), help_basis)
    return y - x


def add_delta(x: torch.Tensor, steer: torch.Tensor, alpha: float) -> torch.Tensor:
    """CAA / ITI: a constant shift α·v (v already carries its scale, e.g. ITI's σ·θ)."""
    return (alpha * steer.to(dtype=x.dtype, device=x.device)).expand_as(x)


@dataclass
class FusedAlignEZ:
    """One layer's AlignEZ update as one matmul in and one addmm out, for the hot path.

    With Θ_in = [−Θ_harm; Θ_help] the coefficients c = x Θ_inᵀ come out at once; clamping the
    first k_harm columns at ≤ 0 gives −ReLU(⟨x,θ_harm⟩) and tanh on the rest gives tanh(⟨x,θ_help⟩),
    so with Θ_out = [Θ_harm; α·Θ_help] the update is x + c Θ_out: alignez_delta term for term.
    At decode the cost is operator dispatch on caches the weights just flushed (≈5–10 µs per
    operator on CPU, not FLOPs), so the hook keeps to five operators and reuses its buffers."""

    theta_in: torch.Tensor  # (k_harm + k_help, d)
    theta_out: torch.Tensor  # (k_harm + k_help, d)
    k_harm: int
    # copies in other dtypes/devices (autocast hands the hook bf16 outputs of an fp32 model), made once
    _casts: dict[tuple[torch.dtype, torch.device], FusedAlignEZ] = field(default_factory=dict, repr=False,
                                                                         compare=False)

    @classmethod
    def build(cls, harm: torch.Tensor, help_: torch.Tensor, alpha: float) -> FusedAlignEZ:
        if alpha == 0:
            help_ = help_[:0]
        theta_in = torch.cat([-harm, help_], dim=0).contiguous()
        theta_out = torch.cat([harm, alpha * help_], dim=0).contiguous()
        return cls(theta_in, theta_out, harm.shape[0])

    @property
    def k(self) -> int:
        return self.theta_in.shape[0]

    def cast(self, x: torch.Tensor) -> FusedAlignEZ:
        if self.theta_in.dtype == x.dtype and self.theta_in.device == x.device:
            return self
        key = (x.dtype, x.device)
        got = self._casts.get(key)
        if got is None:
            got = self._casts[key] = FusedAlignEZ(self.theta_in.to(x), self.theta_out.to(x), self.k_harm)
        return got

    def activate_(self, c: torch.Tensor, harm: torch.Tensor | None = None, help_: torch.Tensor | None = None) -> None:
        """In place on (N, k) raw coefficients; `harm`/`help_` are views of c's two column blocks
        when the caller keeps them (saves two slicing operators per call)."""
        if self.k_harm:
            (c[:, : self.k_harm] if harm is None else harm).clamp_(max=0)
        if self.k_harm < self.k:
            (c[:, self.k_harm :] if help_ is None else help_).tanh_()

    def delta_coeffs(self, x2: torch.Tensor) -> torch.Tensor:
        """(N, k) coefficients [−ReLU(⟨x,θ_harm⟩) …, tanh(⟨x,θ_help⟩) …] for x2 (N, d)."""
        c = x2 @ self.theta_in.T
        self.activate_(c)
        return c
