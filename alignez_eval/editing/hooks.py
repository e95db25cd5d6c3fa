"""Installing an edit on a model for one call: forward hooks on each edited layer's component.

Three pieces:
- `EditConfig`: what the user chose (α, layers, n_layers, positions, component, gate).
- `EditPlan`: the config resolved against an artifact and a model (layer indices, rule, bases on
  the model's device/dtype). Built once per `set_edit`, reused by every call.
- `edit_session(...)`: a context manager that installs the hooks for one model call (a forward
  or a whole `generate`) and removes them afterwards, also when the call raises.

Which positions a forward edits is decided by a `PositionRule` (generation: per forward step and
attention mask; loglikelihood: a per-row token span). Per-query choices (`layers=auto`, the
direction gate) come from `query_gates` on Φ_l read by `capture_query_states` in an unedited
pre-pass, because the choice at layer l depends on q̂ at *all* layers, which one forward pass
cannot provide before layer l runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from alignez_eval.editing import rules
from alignez_eval.editing.architectures import find_components, hidden_size, num_layers
from alignez_eval.editing.artifact import COMPONENTS, GATES, Edit
from alignez_eval.editing.layers import ALL, AUTO, format_layers, parse_layers, resolve_probe
from alignez_eval.errors import ArchitectureError, ConfigError

logger = logging.getLogger(__name__)

POSITIONS = ("last", "all", "generated")


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditConfig:
    """User-facing settings. `None` means "what the artifact says"."""

    alpha: float = 1.0
    layers: str | None = None
    n_layers: int | None = None
    positions: str = "last"
    component: str | None = None
    gate: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha):
            raise ConfigError(f"alpha={self.alpha!r} must be a finite number (e.g. alpha=1.0)")
        if self.positions not in POSITIONS:
            raise ConfigError(f"positions={self.positions!r}; choose one of {'|'.join(POSITIONS)}")
        if self.component is not None and self.component not in COMPONENTS:
            raise ConfigError(f"component={self.component!r}; choose one of {'|'.join(COMPONENTS)}")
        if self.gate is not None and self.gate not in GATES:
            raise ConfigError(f"gate={self.gate!r}; choose one of {'|'.join(GATES)}")
        if self.n_layers is not None and (
            not isinstance(self.n_layers, int) or isinstance(self.n_layers, bool) or self.n_layers < 1
        ):
            raise ConfigError(f"n_layers={self.n_layers!r} must be a positive integer")


@dataclass
class EditPlan:
    """An artifact + config resolved against one model."""

    edit: Edit
    config: EditConfig
    rule: str
    component: str
    gate: str
    n_layers: int
    layers: str | tuple[int, ...]  # "auto" or explicit absolute indices
    harm: dict[int, torch.Tensor]
    help: dict[int, torch.Tensor]
    steer: dict[int, torch.Tensor]
    layers_path: str | None = None
    fused: dict[int, FusedAlignEZ] = field(default_factory=dict)  # alignez rule only

    @property
    def hook_layers(self) -> tuple[int, ...]:
        """Layers that may be edited (auto: every fitted layer is a candidate)."""
        return tuple(sorted(self.harm)) if self.layers == AUTO else tuple(self.layers)

    @property
    def needs_query_states(self) -> bool:
        return self.layers == AUTO or self.gate != "none"

    def describe(self) -> dict[str, Any]:
        return {
            "edit": self.edit.describe(),
            "alpha": float(self.config.alpha),
            "layers": format_layers(self.layers),
            "n_layers": self.n_layers if self.layers == AUTO else None,
            "positions": self.config.positions,
            "component": self.component,
            "gate": self.gate,
            "rule": self.rule,
            "method": self.edit.meta.method,
            "sha256": self.edit.sha256,
        }


def prepare_plan(
    edit: Edit, config: EditConfig, model: torch.nn.Module, layers_path: str | None = None
) -> EditPlan:
    """Check the artifact against the model and put its bases on the model's device and dtype."""
    n_model = num_layers(model, layers_path)
    edit.check_model(hidden_size(model), n_model)
    edit.validate()  # also for an Edit built in memory rather than loaded
    meta = edit.meta
    component = config.component or meta.component
    if component != meta.component:
        raise ConfigError(
            f"component={component} but the artifact was fitted on the {meta.component} output; "
            f"drop component= (or pass component={meta.component}), or fit on component={component}"
        )
    gate = config.gate or meta.gate
    if meta.rule != "alignez" and gate != "none":
        raise ConfigError(
            f"gate={gate} applies to the alignez rule only, but this artifact's rule is {meta.rule}; pass gate=none"
        )
    fitted = tuple(sorted(edit.layers))
    spec = config.layers if config.layers is not None else meta.layers
    if isinstance(spec, str) and spec.strip().strip("'\"").lower() == ALL:
        layers: str | tuple[int, ...] = fitted  # every layer that has directions
    else:
        try:
            layers = parse_layers(resolve_probe(spec, meta.fit.get("probe_ranking"), fitted), n_model)
        except ConfigError as exc:
            if config.layers is not None:
                raise
            # the spec is the artifact's stored default, not something the user typed: say where it is
            raise ConfigError(f"{exc} — this is the default layers={meta.layers!r} stored in "
                              f"{edit.path or 'the edit artifact'}; pass layers= to override it") from exc
    if layers == AUTO:
        if meta.rule == "add":
            raise ConfigError(
                "layers=auto ranks layers by ‖Σ⟨q̂,θ⟩θ‖ over the artifact's directions, but an additive "
                "(CAA/ITI) artifact has none; pass explicit layers, e.g. layers=10-14"
            )
        if not fitted:
            raise ConfigError("the artifact has no fitted layers; re-fit it")
    else:
        missing = sorted(set(layers) - set(fitted))
        if missing:
            raise ConfigError(
                f"layers {missing} have no fitted directions in this artifact (fitted: {format_layers(fitted)}); "
                "choose among the fitted layers, or layers=auto|all"
            )
    n_layers = config.n_layers or meta.n_layers
    param = _first_param(model)
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    use = fitted if layers == AUTO else layers
    # Each layer's bases go where that layer runs (a device_map can split the model); the hooks
    # still move anything that arrives on another device (e.g. offloaded weights run elsewhere).
    components = find_components(model, component, layers_path)
    fallback = param.device if param is not None else torch.device("cpu")
    device = {i: _device_of(components[i], fallback) for i in use}
    harm = {i: edit.layers[i].harm.to(device=device[i], dtype=dtype) for i in use}
    help_ = {i: edit.layers[i].help.to(device=device[i], dtype=dtype) for i in use}
    steer: dict[int, torch.Tensor] = {}
    if meta.rule == "add":
        for i in use:
            if edit.layers[i].steer is None:
                raise ConfigError(f"additive artifact lacks layer.{i}.steer; re-fit it")
            steer[i] = edit.layers[i].steer.to(device=device[i], dtype=dtype)
    fused: dict[int, FusedAlignEZ] = {}
    if meta.rule == "alignez":
        fused = {i: FusedAlignEZ.build(harm[i], help_[i], float(config.alpha)) for i in use}
    return EditPlan(
        edit=edit, config=config, rule=meta.rule, component=component, gate=gate, n_layers=n_layers,
        layers=layers, harm=harm, help=help_, steer=steer, layers_path=layers_path, fused=fused,
    )


def _first_param(module: torch.nn.Module) -> torch.Tensor | None:
    """The first parameter holding data: with accelerate's offloading, parameters kept elsewhere
    show up on `meta`, where nothing can be computed or copied from."""
    return next((p for p in module.parameters() if p.device.type != "meta"), None)


def _device_of(module: torch.nn.Module, fallback: torch.device) -> torch.device:
    p = _first_param(module)
    return p.device if p is not None else fallback


# ---------------------------------------------------------------------------------------------
# per-query choices: q̂_l, the direction gate and layers=auto
# ---------------------------------------------------------------------------------------------
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
            x = _hidden(output)
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


# ---------------------------------------------------------------------------------------------
# which positions a forward edits
# ---------------------------------------------------------------------------------------------
SKIP = "skip"  # edit nothing in this forward
EVERY = "every"  # edit every position (no mask)
LAST = "last"  # edit only position -1 of every row (computed on that slice alone)
Where = str | torch.Tensor  # or a (B, T) bool mask


@dataclass
class ForwardState:
    """Filled by the pre-hook on the top-level model before every forward of the session."""

    step: int = -1
    attention_mask: torch.Tensor | None = None
    # keyed by (length, device): on a model split across devices (device_map) each layer needs
    # its mask on the device of its own activations
    cache: dict[tuple[int, torch.device], Where] = field(default_factory=dict)

    def pre_hook(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.step += 1
        mask = kwargs.get("attention_mask")
        self.attention_mask = mask if isinstance(mask, torch.Tensor) else None
        self.cache = {}


class PositionRule:
    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        raise NotImplementedError


@dataclass
class GenerationPositions(PositionRule):
    """Generation with left padding. Step 0 is the prefill (the whole prompt), steps ≥ 1 decode
    one new token each.
      last       prefill: the last prompt token of every row; decode: every new token
      all        prefill: every non-padding prompt token; decode: every new token
      generated  prefill: nothing; decode: every new token"""

    mode: str = "last"

    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        if state.step > 0:
            if length == 1:
                return EVERY
            return _real(state.attention_mask, length, device)
        if self.mode == "generated":
            return SKIP
        if self.mode == "last":
            return LAST
        return _real(state.attention_mask, length, device)


def _real(attention_mask: torch.Tensor | None, length: int, device: torch.device) -> Where:
    if attention_mask is None:
        return EVERY
    m = attention_mask[:, -length:].bool()
    # the mask lives with the inputs; a layer on another device (device_map) edits there
    return EVERY if bool(m.all()) else m.to(device)


@dataclass
class SpanPositions(PositionRule):
    """A fixed per-row span [start, end) of the (right-padded) input, for loglikelihood."""

    starts: torch.Tensor  # (B,)
    ends: torch.Tensor  # (B,)

    def where(self, state: ForwardState, batch: int, length: int, device: torch.device) -> Where:
        t = torch.arange(length, device=device)
        return (t[None, :] >= self.starts.to(device)[:, None]) & (t[None, :] < self.ends.to(device)[:, None])


def loglikelihood_span(positions: str, inplen: int, contlen: int) -> tuple[int, int]:
    """Edited positions of one lm-eval loglikelihood row: inp = (context + continuation)[:-1],
    the scored logits are at [inplen − contlen, inplen), and position inplen − contlen holds the
    last context token.
      last       [inplen − contlen, inplen): the last context token and every continuation token
      all        [0, inplen): every real token
      generated  [inplen − contlen + 1, inplen): continuation tokens only"""
    first_scored = inplen - contlen
    if positions == "last":
        return first_scored, inplen
    if positions == "all":
        return 0, inplen
    return first_scored + 1, inplen


# ---------------------------------------------------------------------------------------------
# the hooks
# ---------------------------------------------------------------------------------------------
def _hidden(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ArchitectureError(
        f"cannot edit a component whose forward returns {type(output).__name__}; "
        "expected a tensor or a tuple starting with one (try component=mlp)"
    )


def _replace(output: Any, x: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return x
    return (x, *output[1:])


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
    """The rule's delta for x (B, T, d) at one layer, with per-row gates."""
    batch = x.shape[0]
    if plan.rule == "alignez":
        hg = hp = None
        if gates is not None:
            hg = _rows(gates.harm[layer], batch).unsqueeze(1)
            hp = _rows(gates.help[layer], batch).unsqueeze(1)
        return rules.alignez_delta(x, plan.harm[layer], plan.help[layer], plan.config.alpha, hg, hp)
    if plan.rule == "projection":
        delta = rules.projection_delta(x, plan.harm[layer], plan.help[layer], plan.config.alpha)
    else:
        delta = rules.add_delta(x, plan.steer[layer], plan.config.alpha)
    if gates is not None:
        on = _rows(gates.active[layer], batch).to(device=x.device, dtype=x.dtype)
        delta = delta * on[:, None, None]
    return delta


@dataclass
class FusedAlignEZ:
    """One layer's AlignEZ update as one matmul in and one addmm out, for the hot path.

    With Θ_in = [−Θ_harm; Θ_help] the coefficients c = x Θ_inᵀ come out at once; clamping the
    first k_harm columns at ≤ 0 gives −ReLU(⟨x,θ_harm⟩) and tanh on the rest gives tanh(⟨x,θ_help⟩),
    so with Θ_out = [Θ_harm; α·Θ_help] the update is x + c Θ_out: rules.alignez_delta term for term.
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
        x = output if isinstance(output, torch.Tensor) else _hidden(output)
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
    if plan.rule == "alignez" and layer in plan.fused:
        return _make_fused_hook(plan, layer, rule, state, gates)

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        x = _hidden(output)
        batch, length = x.shape[0], x.shape[1]
        key = (length, x.device)
        where = state.cache.get(key)
        if where is None:
            where = state.cache[key] = rule.where(state, batch, length, x.device)
        if isinstance(where, str) and where == SKIP:
            return None
        if isinstance(where, str) and where == LAST:
            last = x[:, -1:, :]
            return _replace(output, torch.cat([x[:, :-1, :], last + layer_delta(plan, layer, last, gates)], dim=1))
        delta = layer_delta(plan, layer, x, gates)
        if isinstance(where, torch.Tensor):
            delta = delta * _rows(where, batch).unsqueeze(-1).to(dtype=delta.dtype)
        return _replace(output, x + delta)

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


def config_dict(config: EditConfig) -> dict[str, Any]:
    return asdict(config)
