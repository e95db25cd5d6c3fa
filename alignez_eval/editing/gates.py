"""Per-query choices: q̂_l, the direction gate and `layers=auto`.

They come from Φ_l read by `capture_query_states` in an unedited pre-pass, because the choice at
layer l depends on q̂ at *all* layers, which one forward pass cannot provide before layer l runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from alignez_eval.editing.architectures import find_components
from alignez_eval.editing.layers import AUTO
from alignez_eval.editing.outputs import hidden_of
from alignez_eval.editing.plan import EditPlan
from alignez_eval.errors import ArchitectureError


@dataclass
class RowGates:
    """Per-row multiplicative masks on the coefficients at each layer, (B, k) each, already
    multiplied by whether the row edits that layer at all (`active`)."""

    harm: dict[int, torch.Tensor]
    help: dict[int, torch.Tensor]
    active: dict[int, torch.Tensor]  # (B,) bool
    chosen: list[list[int]] = field(default_factory=list)  # per row: the layers it edits

    def layers_in_use(self) -> tuple[int, ...]:
        return tuple(sorted(i for i, a in self.active.items() if bool(a.any())))


def direction_keep(coeffs: torch.Tensor, gate: str) -> torch.Tensor:
    """0/1 mask over directions from ⟨q̂, θ⟩: paper keeps ≤ 0, flipped keeps > 0, none keeps all."""
    if gate == "paper":
        return (coeffs <= 0).to(coeffs.dtype)
    if gate == "flipped":
        return (coeffs > 0).to(coeffs.dtype)
    return torch.ones_like(coeffs)


def query_gates(plan: EditPlan, query_states: dict[int, torch.Tensor]) -> RowGates:
    """From Φ_l at each query's last prompt token (B, d per layer): q̂_l, the kept directions,
    and for layers=auto the top-n layers per row by ‖Σ_{kept θ} ⟨q̂_l,θ⟩θ‖."""
    layers = plan.hook_layers
    any_state = next(iter(query_states.values()))
    batch = any_state.shape[0]
    harm_g: dict[int, torch.Tensor] = {}
    help_g: dict[int, torch.Tensor] = {}
    scores = torch.zeros(batch, len(layers), dtype=torch.float32)
    for j, i in enumerate(layers):
        q = query_states[i].to(torch.float32)
        q_hat = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        h = plan.edit.layers[i].harm.to(device=q.device, dtype=torch.float32)
        p = plan.edit.layers[i].help.to(device=q.device, dtype=torch.float32)
        ch, cp = q_hat @ h.T, q_hat @ p.T
        # The gate is defined on helpful-oriented directions. Fitted Θ_harm rows point towards
        # harmful (so ReLU removes the harmful side), so a harm θ is gated by its negation: with
        # Θ_harm = −Θ_help both halves of a direction pair are then kept or dropped together.
        gh, gp = direction_keep(-ch, plan.gate), direction_keep(cp, plan.gate)
        harm_g[i], help_g[i] = gh, gp
        scores[:, j] = ((ch * gh) @ h + (cp * gp) @ p).norm(dim=-1).cpu()
    if plan.layers == AUTO:
        n = min(plan.n_layers, len(layers))
        top = scores.topk(n, dim=1).indices
        active_m = torch.zeros(batch, len(layers), dtype=torch.bool)
        active_m.scatter_(1, top, True)
    else:
        active_m = torch.ones(batch, len(layers), dtype=torch.bool)
    active = {i: active_m[:, j] for j, i in enumerate(layers)}
    for i in layers:
        on = active[i].to(device=harm_g[i].device, dtype=harm_g[i].dtype).unsqueeze(1)
        harm_g[i] = harm_g[i] * on
        help_g[i] = help_g[i] * on
    chosen = [[i for j, i in enumerate(layers) if active_m[b, j]] for b in range(batch)]
    return RowGates(harm=harm_g, help=help_g, active=active, chosen=chosen)


def one_token_generate(generate: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       pad_token_id: int | None, keep_cache: bool = False) -> Any:
    """An unedited greedy 1-token `generate`, run for `capture_query_states`: its prefill is exactly
    the edited generate's own (the same position ids from the attention mask). `keep_cache` returns
    generate's output object, whose cache holds the prompt's keys and values."""
    extra = {"return_dict_in_generate": True} if keep_cache else {}
    return generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=1, do_sample=False,
                    pad_token_id=pad_token_id, use_cache=True, temperature=None, top_p=None, top_k=None, **extra)


class _PrepassDone(Exception):
    """Raised by the pre-pass hook of the last candidate layer: every q̂_l has been read."""


@contextmanager
def _capture(
    components: Sequence[torch.nn.Module], layers: Sequence[int], positions: torch.Tensor, stop_early: bool = True
) -> Iterator[dict[int, torch.Tensor]]:
    """Record Φ_l[b, positions[b]] (float32) from the first forward through each component."""
    out: dict[int, torch.Tensor] = {}
    handles = []
    n_wanted = len(set(layers))

    def make(i: int) -> Callable[..., None]:
        def hook(_m: torch.nn.Module, _a: Any, output: Any) -> None:
            if i in out:
                return
            x = hidden_of(output)
            rows = torch.arange(x.shape[0], device=x.device)
            out[i] = x[rows, positions.to(x.device)].detach().to(torch.float32)
            if stop_early and len(out) == n_wanted:
                raise _PrepassDone

        return hook

    try:
        for i in layers:
            handles.append(components[i].register_forward_hook(make(i)))
        yield out
    finally:
        for h in handles:
            h.remove()


def capture_query_states(
    model: torch.nn.Module,
    plan: EditPlan,
    run: Callable[[], Any],
    positions: torch.Tensor,
    stop_early: bool = True,
) -> dict[int, torch.Tensor]:
    """Run `run()` (an unedited forward or a 1-token generate) and return Φ_l at each row's
    query position for every candidate layer. `stop_early=False` lets the forward finish (when the
    caller keeps its KV cache)."""
    components = find_components(model, plan.component, plan.layers_path)
    with _capture(components, plan.hook_layers, positions, stop_early) as states, torch.no_grad():
        # Cut short once the last candidate layer has fired: the later layers and the LM head
        # (B × T × vocab logits for a loglikelihood batch; 262k wide on Gemma 3) are not needed.
        try:
            run()
        except _PrepassDone:
            pass
    missing = [i for i in plan.hook_layers if i not in states]
    if missing:
        raise ArchitectureError(f"the pre-pass never reached layers {missing}; check layers_path=")
    return states
