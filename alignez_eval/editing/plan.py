"""An edit resolved against one model: what the user chose (`EditConfig`, editing/config.py) checked
against an artifact and a model, with the bases on each edited layer's device and dtype (`EditPlan`). Built
once per `set_edit` and reused by every model call."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from alignez_eval.editing.architectures import find_components, hidden_size, num_layers
from alignez_eval.editing.artifact import Edit
from alignez_eval.editing.config import EditConfig
from alignez_eval.editing.layers import ALL, AUTO, format_layers, parse_layers, resolve_probe
from alignez_eval.editing.rules import RULE_OBJECTS, FusedAlignEZ, Rule, get_rule
from alignez_eval.errors import ConfigError


@dataclass
class EditPlan:
    """An artifact + config resolved against one model."""

    edit: Edit
    config: EditConfig
    rule: Rule
    component: str
    gate: str
    n_layers: int
    layers: str | tuple[int, ...]  # "auto" or explicit absolute indices
    harm: dict[int, torch.Tensor]
    help: dict[int, torch.Tensor]
    steer: dict[int, torch.Tensor]
    layers_path: str | None = None
    fused: dict[int, FusedAlignEZ] = field(default_factory=dict)  # rules with a fused form (alignez)

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
            "rule": self.rule.name,
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
    rule = get_rule(meta.rule)
    component = config.component or meta.component
    if component != meta.component:
        raise ConfigError(
            f"component={component} but the artifact was fitted on the {meta.component} output; "
            f"drop component= (or pass component={meta.component}), or fit on component={component}"
        )
    gate = config.gate or meta.gate
    if config.positions is None:
        # resolved here, so everything downstream reads plan.config.positions as a position mode
        config = dataclasses.replace(config, positions=meta.positions)
    if not rule.gated and gate != "none":
        gated = ", ".join(name for name, r in RULE_OBJECTS.items() if r.gated)
        raise ConfigError(
            f"gate={gate} applies to the {gated} rule only, but this artifact's rule is {meta.rule}; pass gate=none"
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
        if not rule.uses_directions:
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
    if rule.needs_steer:
        for i in use:
            if edit.layers[i].steer is None:
                raise ConfigError(f"additive artifact lacks layer.{i}.steer; re-fit it")
            steer[i] = edit.layers[i].steer.to(device=device[i], dtype=dtype)
    fused = {i: f for i in use if (f := rule.fuse(harm[i], help_[i], float(config.alpha))) is not None}
    return EditPlan(
        edit=edit, config=config, rule=rule, component=component, gate=gate, n_layers=n_layers,
        layers=layers, harm=harm, help=help_, steer=steer, layers_path=layers_path, fused=fused,
    )


def _first_param(module: torch.nn.Module) -> torch.Tensor | None:
    """The first parameter holding data: with accelerate's offloading, parameters kept elsewhere
    show up on `meta`, where nothing can be computed or copied from."""
    return next((p for p in module.parameters() if p.device.type != "meta"), None)


def _device_of(module: torch.nn.Module, fallback: torch.device) -> torch.device:
    p = _first_param(module)
    return p.device if p is not None else fallback
