"""Sweep configuration files: parsing, grid/random expansion, and the seeded prompt split.

A sweep YAML names the models, tasks and judge like `compare`, and a search space over edit
settings. Parameters use wandb's sweep syntax (`values: [...]`, or `min`/`max`/`distribution` for
random search; a bare list is shorthand for `values`), so the same file can be emitted as a native
`wandb sweep` configuration.

```yaml
name: demo_alpha_layers
base: pretrained=${model:gemma-3-270m},dtype=${dtype:auto}
tuned: pretrained=${model:smollm2-135m-instruct},dtype=${dtype:auto}
tasks: [alignez_embedded]       # or your own tasks, with include_path: [DIR] (relative to this file)
judge: hf:${model:qwen2.5-coder-1.5b-instruct}   # optional; omitted: the default judge (alignez_eval/defaults.py)
limit: 64
heldout: 0.5          # fraction of prompts the sweep never sees; the best point is reported there
seed: 0
search: grid          # or random (then n_points)
metric: net_win       # or gap_closed; always maximised
fixed: {method: alignez, layers: auto}
fit: {answer_tokens: 128}   # other fit settings, the same for every point
parameters:
  alpha: [0.5, 1.0, 2.0]
  n_layers: [1, 3, 5]
```
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignez_eval.defaults import DEFAULT_JUDGE
from alignez_eval.editing.config import EditConfig
from alignez_eval.errors import ConfigError
from alignez_eval.judge.spec import parse_judge_spec
from alignez_eval.pipeline.parts import SET_EDIT_SETTINGS

# Edit settings a sweep may vary. Fit-time settings change the fitted artifact (cached per value);
# inference-time settings (EditConfig's) only reconfigure the loaded model through `set_edit`.
FIT_PARAMS: frozenset[str] = frozenset({"method", "energy", "keywords", "component", "min_pairs"})
EDIT_PARAMS: frozenset[str] = frozenset(SET_EDIT_SETTINGS)
SWEEP_PARAMS: frozenset[str] = FIT_PARAMS | EDIT_PARAMS
METRICS: tuple[str, ...] = ("net_win", "gap_closed", "length_adjusted_win_rate", "win_rate")
# Old configs say `lc_win_rate`: the same figure, renamed because it is not AlpacaEval 2's LC win rate.
OLD_METRIC_NAMES = {"lc_win_rate": "length_adjusted_win_rate"}
_DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")

_SUBST = re.compile(r"\$\{(model|env|dtype):([^}]+)\}")


def substitute(text: str) -> str:
    """Expand `${model:NAME}` (an embedded offline model's directory), `${env:VAR}` and `${dtype:auto}`
    (bfloat16 where it is fast on this machine, else float32; see alignez_eval.dtypes)."""

    def repl(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2).strip()
        if kind == "dtype":
            # lazy: dtypes' helpers import torch (5.6 s, measured on AMD EPYC, 2 cores); this module stays light
            from alignez_eval.dtypes import resolve_dtype

            return resolve_dtype(name)
        if kind == "env":
            if name not in os.environ:
                raise ConfigError(f"sweep config uses ${{env:{name}}} but {name} is not set; export it first")
            return os.environ[name]
        from alignez_eval.models import model_path  # the registry prepares the model on first use

        return str(model_path(name))

    return _SUBST.sub(repl, text)


@dataclass
class Param:
    """One searched parameter: a list of values (grid or random) or a distribution (random only)."""

    name: str
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    distribution: str = "uniform"

    def sample(self, rng: random.Random) -> Any:
        if self.values is not None:
            return rng.choice(self.values)
        assert self.min is not None and self.max is not None
        if self.distribution == "int_uniform":
            return rng.randint(int(self.min), int(self.max))
        if self.distribution == "log_uniform_values":
            return float(math.exp(rng.uniform(math.log(self.min), math.log(self.max))))
        return float(rng.uniform(self.min, self.max))

    def to_wandb(self) -> dict[str, Any]:
        if self.values is not None:
            return {"values": list(self.values)}
        return {"min": self.min, "max": self.max, "distribution": self.distribution}


@dataclass
class SweepConfig:
    name: str
    base: str
    tasks: list[str]
    judge: str
    params: list[Param]
    tuned: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    search: str = "grid"
    n_points: int | None = None
    limit: int | None = None
    heldout: float = 0.5
    seed: int = 0
    metric: str = "net_win"
    wandb_project: str = "alignez-eval"
    wandb_entity: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)  # other fit settings for every point (FitSettings fields)
    batch_size: int = 16
    judge_batch_size: int | None = None
    include_path: tuple[str, ...] = ()  # directories of the user's own task YAMLs
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """The search points, each the full edit setting (fixed settings merged in), in a stable order."""
        if self.search == "grid":
            names = [p.name for p in self.params]
            combos = itertools.product(*[p.values or [] for p in self.params])
            pts = [dict(zip(names, c, strict=True)) for c in combos]
        else:
            rng = random.Random(self.seed)
            pts, seen = [], set()
            n = self.n_points or 0
            tries = 0
            while len(pts) < n and tries < 100 * n:
                tries += 1
                pt = {p.name: p.sample(rng) for p in self.params}
                sig = tuple(sorted((k, repr(v)) for k, v in pt.items()))
                if sig not in seen:  # a repeated draw would only re-read the same cache entries
                    seen.add(sig)
                    pts.append(pt)
        return [{**self.fixed, **pt} for pt in pts]


def point_name(point: dict[str, Any]) -> str:
    """A short readable name for a point, e.g. `alpha=2,n_layers=3`."""

    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ",".join(f"{k}={fmt(v)}" for k, v in sorted(point.items()))


def split_ids(ids: list[str], heldout: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split into (sweep, held-out) ids; each keeps the original order.

    The split depends only on the ids and the seed, so adding a point to a sweep never moves a
    prompt between the halves (which would invalidate every cached judgment).
    """
    if not 0.0 < heldout < 1.0:
        raise ConfigError(f"heldout must be a fraction strictly between 0 and 1, got {heldout}")
    if len(ids) < 4:
        raise ConfigError(f"a sweep needs at least 4 prompts to split into sweep/held-out, got {len(ids)}; "
                          "raise `limit`")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_held = min(len(ids) - 2, max(2, round(heldout * len(ids))))
    held = set(order[:n_held])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def _param(name: str, spec: Any) -> Param:
    if name not in SWEEP_PARAMS:
        raise ConfigError(f"unknown sweep parameter {name!r}; choose from {', '.join(sorted(SWEEP_PARAMS))}")
    if isinstance(spec, list):
        spec = {"values": spec}
    elif not isinstance(spec, dict):
        spec = {"values": [spec]}
    if "value" in spec:
        spec = {"values": [spec["value"]]}
    if "values" in spec:
        vals = list(spec["values"])
        if not vals:
            raise ConfigError(f"sweep parameter {name!r} has an empty value list; give at least one value")
        return Param(name, values=vals)
    if "min" in spec and "max" in spec:
        dist = spec.get("distribution", "int_uniform" if isinstance(spec["min"], int)
                        and isinstance(spec["max"], int) else "uniform")
        if dist not in _DISTRIBUTIONS:
            raise ConfigError(f"sweep parameter {name!r}: distribution {dist!r} unsupported; "
                              f"use one of {', '.join(_DISTRIBUTIONS)}")
        if float(spec["min"]) > float(spec["max"]):
            raise ConfigError(f"sweep parameter {name!r}: min {spec['min']} > max {spec['max']}")
        return Param(name, min=spec["min"], max=spec["max"], distribution=dist)
    raise ConfigError(f"sweep parameter {name!r}: give a list of values, {{values: [...]}}, or {{min, max}}")


def parse_sweep(raw: dict[str, Any], source: Path | None = None) -> SweepConfig:
    """Validate a sweep mapping (already loaded from YAML) into a SweepConfig."""
    where = f"sweep config {source}" if source else "sweep config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for req in ("base", "tasks", "parameters"):
        if req not in raw:
            raise ConfigError(f"{where}: missing `{req}`; see sweeps/demo_alpha_layers.yaml for a complete example")
    known = {"name", "base", "tuned", "tasks", "judge", "parameters", "fixed", "search", "method", "n_points",
             "count", "limit", "heldout", "seed", "metric", "wandb", "gen_kwargs", "fit", "batch_size",
             "judge_batch_size", "description", "include_path"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    search = str(raw.get("search", raw.get("method", "grid")))
    if search not in ("grid", "random"):
        raise ConfigError(f"{where}: search must be grid or random, got {search!r}")
    params_raw = raw["parameters"]
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(f"{where}: `parameters` must map parameter names to values")
    params = [_param(str(k), v) for k, v in params_raw.items()]
    if search == "grid" and any(p.values is None for p in params):
        bad = [p.name for p in params if p.values is None]
        raise ConfigError(f"{where}: grid search needs value lists; {', '.join(bad)} use min/max "
                          "(set `search: random` or list values)")
    fixed = dict(raw.get("fixed") or {})
    for k in fixed:
        if k not in SWEEP_PARAMS:
            raise ConfigError(f"{where}: unknown fixed setting {k!r}; choose from {', '.join(sorted(SWEEP_PARAMS))}")
    _check_edit_values(where, params, fixed)
    overlap = sorted(set(fixed) & {p.name for p in params})
    if overlap:
        raise ConfigError(f"{where}: {', '.join(overlap)} both fixed and searched; keep one")
    n_points = raw.get("n_points", raw.get("count"))
    if search == "random" and not n_points:
        raise ConfigError(f"{where}: random search needs `n_points: N`")
    tasks = raw["tasks"]
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    metric = str(raw.get("metric", "net_win"))
    metric = OLD_METRIC_NAMES.get(metric, metric)
    if metric not in METRICS:
        raise ConfigError(f"{where}: metric {metric!r} unknown; choose from {', '.join(METRICS)}")
    if metric == "gap_closed" and not raw.get("tuned"):
        raise ConfigError(f"{where}: metric gap_closed needs a `tuned` model; add one or use metric: net_win")
    judge = str(raw.get("judge") or DEFAULT_JUDGE)
    try:
        # unexpanded ${model:…} (an agent's copy) stands in as a name: the spec's own checks still run
        parse_judge_spec(_SUBST.sub(lambda m: m.group(2).strip() or "x", judge))
    except ConfigError as exc:
        raise ConfigError(f"{where}: judge: {exc}") from None
    wb = dict(raw.get("wandb") or {})
    name = str(raw.get("name") or (source.stem if source else "sweep"))
    include = raw.get("include_path") or []
    include = [include] if isinstance(include, str) else list(include)
    # relative to the YAML, so the config works from any directory (and for `wandb agent`)
    include_path = tuple(str((source.parent / d) if source is not None else Path(d)) for d in include)
    return SweepConfig(
        name=name,
        base=str(raw["base"]),
        tuned=str(raw["tuned"]) if raw.get("tuned") else None,
        tasks=[str(t) for t in tasks],
        judge=judge,
        params=params,
        fixed=fixed,
        search=search,
        n_points=int(n_points) if n_points else None,
        limit=int(raw["limit"]) if raw.get("limit") else None,
        heldout=float(raw.get("heldout", 0.5)),
        seed=int(raw.get("seed", 0)),
        metric=metric,
        wandb_project=str(wb.get("project", "alignez-eval")),
        wandb_entity=wb.get("entity"),
        gen_kwargs=dict(raw.get("gen_kwargs") or {}),
        fit=dict(raw.get("fit") or {}),
        batch_size=int(raw.get("batch_size", 16)),
        judge_batch_size=int(raw["judge_batch_size"]) if raw.get("judge_batch_size") else None,
        include_path=include_path,
        source=source,
        raw=raw,
    )


def _check_edit_values(where: str, params: list[Param], fixed: dict[str, Any]) -> None:
    """Every listed value (and a range's ends) of an inference-time setting through EditConfig, so
    `alpha: [1, abc]` fails here rather than at that point, after models were loaded."""
    checks = [(f"fixed setting {k}", k, v) for k, v in fixed.items() if k in EDIT_PARAMS]
    for p in params:
        if p.name in EDIT_PARAMS:
            values = p.values if p.values is not None else [p.min, p.max]
            checks += [(f"parameter {p.name}", p.name, v) for v in values]
    for what, name, value in checks:
        try:
            # None is a value here (gate: null means no gate, as in model_args), not "not given"
            EditConfig.from_mapping({name: value})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {what}: {exc}") from None


def load_sweep(path: str | Path, *, resolve: bool = True) -> SweepConfig:
    """Read a sweep YAML; `${model:…}`/`${env:…}` are expanded unless `resolve=False`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep config {str(path)!r} not found; pass a YAML file such as "
                          "sweeps/demo_alpha_layers.yaml")
    text = path.read_text(encoding="utf-8")
    if resolve:
        text = substitute(text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep config {path}: not valid YAML ({exc})") from exc
    return parse_sweep(raw, source=path)


def wandb_sweep_config(cfg: SweepConfig, config_path: str | Path) -> dict[str, Any]:
    """A native `wandb sweep` configuration running `alignez-eval sweep-agent` for each point.

    The agent reads the point from `wandb.config`; the command passes no `${args}` because the
    point arrives through wandb, not argv.
    """
    params = {p.name: p.to_wandb() for p in cfg.params}
    for k, v in cfg.fixed.items():
        params[k] = {"value": v}
    return {
        "name": cfg.name,
        "program": "alignez-eval",
        "command": ["${env}", "${program}", "sweep-agent", "--config", str(Path(config_path).resolve())],
        "method": cfg.search,
        "metric": {"name": f"sweep/{cfg.metric}", "goal": "maximize"},
        "parameters": params,
        **({"run_cap": cfg.n_points} if cfg.search == "random" and cfg.n_points else {}),
    }
