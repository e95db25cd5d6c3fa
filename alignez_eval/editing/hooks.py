"""Installing an edit on a model for one call: forward hooks on each edited layer's component.

`edit_session(...)` installs the hooks for one model call (a forward or a whole `generate`) and
removes them afterwards, also when the call raises. What to edit comes from an `EditPlan`
(editing/plan.py), which positions from a `PositionRule` (editing/positions.py), and per-row
choices from `RowGates` (editing/gates.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from alignez_eval.editing.architectures import find_components
from alignez_eval.editing.gates import RowGates
from alignez_eval.editing.outputs import hidden_of, with_hidden
from alignez_eval.editing.plan import EditPlan
from alignez_eval.editing.positions import EVERY, LAST, SKIP, ForwardState, PositionRule
from alignez_eval.editing.rules import FusedAlignEZ
from alignez_eval.errors import ConfigError


def _rows(t: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """Per-query tensors follow generate's batch expansion (beams / num_return_sequences repeat
    each row in place)."""
    if t is None or t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ConfigError(f"edit gates for {t.shape[0]} rows cannot be matched to a batch of {batch}")
    return t.repeat_interleave(batch // t.shape[0], dim=0)


def layer_delta(
    plan: EditPlan, layer: int, x: torch.Tensor, gates: RowGates | None
) -> torch.Tensor:
    """The plan's rule's delta for x (B, T, d) at one layer; a row the gates leave off this layer
    (layers=auto) gets none. A layer with a fused form (`plan.fused`, the alignez rule) never comes
    here: its hook is `_make_fused_hook`."""
    batch = x.shape[0]
    delta = plan.rule.delta(x, plan.harm[layer], plan.help[layer], plan.steer.get(layer), plan.config.alpha)
    if gates is not None:
        on = _rows(gates.active[layer], batch).to(device=x.device, dtype=x.dtype)
        delta = delta * on[:, None, None]
    return delta


class _Buffers:
    """Coefficient buffers (and their column-block views) reused across decoding steps."""

    SMALL = 256  # rows; larger inputs are prefill, where one allocation is noise

    def __init__(self, fused: FusedAlignEZ) -> None:
        self.fused = fused
        self.by_key: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def get(self, n: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (n, x.dtype, x.device)
        got = self.by_key.get(key)
        if got is None:
            buf = torch.empty(n, self.fused.k, dtype=x.dtype, device=x.device)
            got = self.by_key[key] = (buf, buf[:, : self.fused.k_harm], buf[:, self.fused.k_harm :])
        return got


def _fused_gate(gates: RowGates | None, layer: int) -> torch.Tensor | None:
    """(B, k) per-row 0/1 mask over the stacked [Θ_harm; Θ_help] coefficients."""
    if gates is None:
        return None
    return torch.cat([gates.harm[layer], gates.help[layer]], dim=1)


def _make_fused_hook(
    plan: EditPlan, layer: int, rule: PositionRule, state: ForwardState, gates: RowGates | None
) -> Callable[..., Any]:
    fused = plan.fused[layer]
    gate0 = _fused_gate(gates, layer)
    if gate0 is not None:
        gate0 = gate0[:, : fused.k]  # alpha = 0 dropped the help block
    by_batch: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
    buffers = _Buffers(fused)

    def row_gate(batch: int, x: torch.Tensor) -> torch.Tensor | None:
        if gate0 is None:
            return None
        key = (batch, x.dtype, x.device)
        g = by_batch.get(key)
        if g is None:
            g = by_batch[key] = _rows(gate0, batch).to(device=x.device, dtype=x.dtype)
        return g

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        x = output if isinstance(output, torch.Tensor) else hidden_of(output)
        batch, length, d = x.shape
        key = (length, x.device)
        where = state.cache.get(key)
        if where is None:
            where = state.cache[key] = rule.where(state, batch, length, x.device)
        if where is SKIP:
            return None
        f = fused.cast(x)
        g = row_gate(batch, x)
        # Writing into the component's fresh output saves a copy; with autograd on, build a new one.
        inplace = not (torch.is_grad_enabled() and x.requires_grad)
        if where is LAST:
            c = f.delta_coeffs(x[:, -1, :])
            if g is not None:
                c.mul_(g)
            y = x if inplace else x.clone()
            y[:, -1, :].addmm_(c, f.theta_out)
        else:
            contiguous = x.is_contiguous()
            x2 = x.view(-1, d) if contiguous else x.reshape(-1, d)
            n = x2.shape[0]
            if inplace and n <= _Buffers.SMALL and g is None and where is EVERY:
                c, c_harm, c_help = buffers.get(n, x)
                torch.mm(x2, f.theta_in.T, out=c)
                f.activate_(c, c_harm, c_help)
            else:
                c = f.delta_coeffs(x2)
                if g is not None or where is not EVERY:
                    c3 = c.view(batch, length, -1)
                    if g is not None:
                        c3.mul_(g.unsqueeze(1))
                    if where is not EVERY:
                        c3.mul_(_rows(where, batch).unsqueeze(-1).to(dtype=c3.dtype))
            if inplace and contiguous:  # x2 is then a view of x: write through it
                x2.addmm_(c, f.theta_out)
                y = x
            else:
                y = torch.addmm(x2, c, f.theta_out).view_as(x)
        if y is x:
            return None
        return y if isinstance(output, torch.Tensor) else (y, *output[1:])

    return hook


def _make_hook(
    plan: EditPlan, layer: int, rule: PositionRule, state: ForwardState, gates: RowGates | None
) -> Callable[..., Any]:
    if layer in plan.fused:
        return _make_fused_hook(plan, layer, rule, state, gates)

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        x = hidden_of(output)
        batch, length = x.shape[0], x.shape[1]
        key = (length, x.device)
        where = state.cache.get(key)
        if where is None:
            where = state.cache[key] = rule.where(state, batch, length, x.device)
        if isinstance(where, str) and where == SKIP:
            return None
        if isinstance(where, str) and where == LAST:
            last = x[:, -1:, :]
            return with_hidden(output, torch.cat([x[:, :-1, :], last + layer_delta(plan, layer, last, gates)], dim=1))
        delta = layer_delta(plan, layer, x, gates)
        if isinstance(where, torch.Tensor):
            delta = delta * _rows(where, batch).unsqueeze(-1).to(dtype=delta.dtype)
        return with_hidden(output, x + delta)

    return hook


@contextmanager
def edit_session(
    model: torch.nn.Module,
    plan: EditPlan,
    positions: PositionRule,
    gates: RowGates | None = None,
) -> Iterator[ForwardState]:
    """Install the edit for the duration of the `with` block (one `model(...)` or one
    `model.generate(...)`); every hook is removed on exit, also on exceptions."""
    components = find_components(model, plan.component, plan.layers_path)
    layers = gates.layers_in_use() if gates is not None else plan.hook_layers
    state = ForwardState()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        handles.append(model.register_forward_pre_hook(state.pre_hook, with_kwargs=True))
        for i in layers:
            handles.append(components[i].register_forward_hook(_make_hook(plan, i, positions, state, gates)))
        yield state
    finally:
        for h in handles:
            h.remove()


def active_hook_count(model: torch.nn.Module) -> int:
    """Forward hooks + pre-hooks currently installed anywhere in `model` (for tests and checks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
