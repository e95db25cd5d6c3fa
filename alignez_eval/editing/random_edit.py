"""A random edit with the shape of a real one, for tests and benchmarks: random orthonormal Θ_harm
and Θ_help per layer (mutually orthogonal), or a random shift for the additive rule."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from alignez_eval.editing.architectures import hidden_size, num_layers
from alignez_eval.editing.artifact import Edit, EditMeta, LayerEdit
from alignez_eval.editing.rules import get_rule


def random_orthonormal(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, dim) with orthonormal rows (QR of a Gaussian matrix; signs fixed by R's diagonal)."""
    if rows == 0:
        return torch.zeros(0, dim)
    q, r = torch.linalg.qr(torch.randn(dim, rows, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return q.T.to(torch.float32).contiguous()


def random_edit(
    model: torch.nn.Module,
    *,
    k_harm: int = 2,
    k_help: int = 2,
    layers: Iterable[int] | None = None,
    seed: int = 0,
    rule: str = "alignez",
    component: str = "mlp",
    gate: str = "none",
    n_layers: int = 2,
    default_layers: str = "all",
    steer_scale: float = 1.0,
    layers_path: str | None = None,
) -> Edit:
    """An Edit for `model` whose directions are random (method "random")."""
    d, n = hidden_size(model), num_layers(model, layers_path)
    g = torch.Generator().manual_seed(seed)
    chosen = sorted(set(range(n) if layers is None else layers))
    out: dict[int, LayerEdit] = {}
    for i in chosen:
        basis = random_orthonormal(k_harm + k_help, d, g)
        steer = None
        if get_rule(rule).needs_steer:
            steer = steer_scale * random_orthonormal(1, d, g)[0]
        out[i] = LayerEdit(harm=basis[:k_harm], help=basis[k_harm:], steer=steer)
    meta = EditMeta(
        method="random", rule=rule, component=component, hidden_size=d, num_layers=n,
        model=getattr(getattr(model, "config", None), "_name_or_path", "") or "", gate=gate,
        n_layers=n_layers, layers=default_layers, fit={"seed": seed, "k_harm": k_harm, "k_help": k_help},
    )
    return Edit(meta=meta, layers=out)
