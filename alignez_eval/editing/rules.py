"""The edit rules applied to a hidden state x (…, d) at the edited positions.

All functions return the *delta* to add to x, computed in x's dtype/device as two small matmuls
(no loop over tokens or directions). Bases are (k, d) with orthonormal rows; k may be 0.

Gates are optional multiplicative masks on the per-direction coefficients, broadcastable to
(…, k): the paper's query-conditional filter keeps direction θ for a query only when
⟨q̂, θ⟩ ≤ 0, which is a per-row 0/1 mask of shape (B, 1, k).

Each rule an artifact can name is a small `Rule` object (`RULE_OBJECTS`, `get_rule`): one interface —
`delta`, the optional fused hot path `fuse`, and what it needs (directions, a shift, gates) — that
the plan and the hooks ask, instead of testing the rule's name. Adding a rule is adding a subclass
here and listing it in `RULE_OBJECTS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from alignez_eval.errors import ArtifactError


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


def clamp_delta(x: torch.Tensor, basis: torch.Tensor, steer: torch.Tensor, alpha: float) -> torch.Tensor:
    """Set x's component in span(Θ) to α·steer's: x ← x − Σ⟨x,θ⟩θ + α·steer, steer ∈ span(Θ).

    lm-eval's `steered` clamp, x ← x + d(c − ⟨x − b, d⟩) with unit d, is this with Θ = [d] and
    steer = (c + ⟨b, d⟩)·d: the bias only moves the value the component is clamped to."""
    return alpha * steer.to(dtype=x.dtype, device=x.device).expand_as(x) - _combine(_coeffs(x, basis), basis)


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


class Rule:
    """How an edited layer changes x. Subclasses set the class attributes and implement `delta`."""

    name: ClassVar[str]
    uses_directions: ClassVar[bool] = True  # reads Θ_harm/Θ_help (False: a constant shift alone)
    needs_steer: ClassVar[bool] = False  # reads the artifact's per-layer shift `steer`
    gated: ClassVar[bool] = False  # the query-conditional direction gate applies to it

    def delta(self, x: torch.Tensor, harm: torch.Tensor, help_: torch.Tensor, steer: torch.Tensor | None,
              alpha: float) -> torch.Tensor:
        """The change to x (…, d) at an edited position."""
        raise NotImplementedError

    def fuse(self, harm: torch.Tensor, help_: torch.Tensor, alpha: float) -> FusedAlignEZ | None:
        """A fused form for the hooks' hot path, or None (the hooks then call `delta`)."""
        return None

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


class AlignEZRule(Rule):
    """AlignEZ v2: remove ReLU(⟨x,θ_harm⟩)θ_harm, boost α·tanh(⟨x,θ_help⟩)θ_help (`alignez_delta`)."""

    name = "alignez"
    gated = True

    def delta(self, x: torch.Tensor, harm: torch.Tensor, help_: torch.Tensor, steer: torch.Tensor | None,
              alpha: float) -> torch.Tensor:
        return alignez_delta(x, harm, help_, alpha)

    def fuse(self, harm: torch.Tensor, help_: torch.Tensor, alpha: float) -> FusedAlignEZ:
        return FusedAlignEZ.build(harm, help_, alpha)


class ProjectionRule(Rule):
    """AlignEZ v1 / RoboShot: project Θ_harm out, then boost along Θ_help (`projection_delta`)."""

    name = "projection"

    def delta(self, x: torch.Tensor, harm: torch.Tensor, help_: torch.Tensor, steer: torch.Tensor | None,
              alpha: float) -> torch.Tensor:
        return projection_delta(x, harm, help_, alpha)


class AddRule(Rule):
    """CAA / ITI: add α·steer (`add_delta`); Θ rows are not used."""

    name = "add"
    uses_directions = False
    needs_steer = True

    def delta(self, x: torch.Tensor, harm: torch.Tensor, help_: torch.Tensor, steer: torch.Tensor | None,
              alpha: float) -> torch.Tensor:
        assert steer is not None  # prepare_plan refuses an additive artifact without its shifts
        return add_delta(x, steer, alpha)


class ClampRule(Rule):
    """lm-eval `steered`'s clamp: hold the component along Θ_harm at α·steer (`clamp_delta`)."""

    name = "clamp"
    needs_steer = True

    def delta(self, x: torch.Tensor, harm: torch.Tensor, help_: torch.Tensor, steer: torch.Tensor | None,
              alpha: float) -> torch.Tensor:
        assert steer is not None  # prepare_plan refuses a clamp artifact without its values
        return clamp_delta(x, harm, steer, alpha)


RULE_OBJECTS: dict[str, Rule] = {r.name: r for r in (AlignEZRule(), ProjectionRule(), AddRule(), ClampRule())}
RULES: tuple[str, ...] = tuple(RULE_OBJECTS)  # the names an artifact may carry


def get_rule(name: str) -> Rule:
    try:
        return RULE_OBJECTS[name]
    except KeyError:
        raise ArtifactError(f"unknown edit rule {name!r}; expected one of {RULES}") from None

