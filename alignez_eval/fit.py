"""Fitting an edit: preference pairs → Φ_l activations → per-layer subspaces → `Edit` artifact.

    from alignez_eval import fit
    edit = fit(model, tokenizer, queries, method="v2")          # self-generated pairs
    edit = fit(model, tokenizer, None, pref_data="hh.jsonl")    # ground-truth pairs

Stages (each timed and reported): self-generation (or loading `pref_data`), text filtering,
activation capture (one batched pass per set of texts), per-layer cosine filter, probe, SVD /
mean differences, artifact. Everything is cached by content: the generated pairs by
(model, queries, generation settings) — resumable —, activations by (model, texts, component), and
the finished artifact by (pairs, model, fit settings), so a second identical call generates nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignez_eval import __version__
from alignez_eval.atomic import atomic_dir, atomic_write_text
from alignez_eval.editing.activations import READS, capture, load_activations, save_activations
from alignez_eval.editing.architectures import COMPONENTS, find_components, hidden_size
from alignez_eval.editing.artifact import GATES, Edit, EditMeta, LayerEdit
from alignez_eval.editing.layers import format_layers
from alignez_eval.editing.probe import probe_layer
from alignez_eval.editing.subspaces import (
    HARM_BASES,
    caa_steer,
    cosine_keep,
    harm_basis,
    iti_steer,
    mean_cosine,
    theta_help,
    v1_directions,
)
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.hashing import sha256_json
from alignez_eval.selfpref.generate import Sampling, context_length
from alignez_eval.selfpref.pipeline import SelfPrefSettings, degeneracy, normalize_queries, self_generate
from alignez_eval.selfpref.templates import activation_text, parse_keywords

logger = logging.getLogger(__name__)

METHODS = ("v2", "v1", "caa", "iti")
RULE_OF = {"v2": "alignez", "v1": "projection", "caa": "add", "iti": "add"}
DEFAULT_GATE = {"v2": "paper", "v1": "none", "caa": "none", "iti": "none"}
ORIENTATION_RULE = (
    "help rows: <mean(H_help - H_harm), theta> > 0; harm rows: <mean(H_harm - H_help), theta> > 0 "
    "(neg_align) or <mean(H_harm), theta> > 0 (harm_orth); steer: <mean(H_help - H_harm), steer> > 0; "
    "no measurable projection: largest-|entry| component positive"
)
HARM_READING = {
    "neg_align": "Theta_harm = -Theta_help: the top-energy right-singular vectors of -H_align = H_harm - H_help "
                 "(the lab's single decomposed matrix), pointing towards harmful; per direction the update is "
                 "dc = ReLU(-c) + alpha*tanh(c) with c = <x, theta_help>",
    "harm_orth": "Theta_harm = top-energy right-singular vectors of H_harm with Theta_help projected out "
                 "(orthogonal to Theta_help), pointing towards mean(H_harm)",
}


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitSettings:
    """Everything that decides a fit. Names are the CLI flags (dashes → underscores) and the
    `fit_*` model_args of `alignez-hf`."""

    method: str = "v2"  # v2 | v1 | caa | iti
    keywords: str = "helpful"  # helpful | harmless | humor | POS/NEG
    energy: float = 0.90  # fraction of Σσ² the helpful basis keeps (v2)
    cos_threshold: float = 0.8  # per layer, drop pairs whose two embeddings have cosine above this (v1, v2)
    min_pairs: int = 4  # a layer resting on fewer surviving pairs is not edited
    harm_basis: str = "neg_align"  # neg_align | harm_orth (v2; see subspaces.harm_basis)
    component: str = "mlp"  # mlp | block
    layers_path: str | None = None
    read: str = "last"  # last | mean (over the answer tokens)
    gate: str = "auto"  # paper | flipped | none; auto = the method's default (v2: paper, others: none)
    n_layers: int = 5  # per-query top-n for layers=auto (recorded for the hooks)
    top_k: int = 5  # layers kept by probe accuracy for iti (and caa's default layer choice)
    probe_folds: int = 5
    probe_l2: float = 1e-2
    char_tokens: int = 50
    answer_tokens: int = 200
    gen_batch_size: int = 16
    act_batch_size: int = 16
    chat: str = "auto"  # auto | yes | no
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0
    limit: int | None = None  # first N queries
    pref_limit: int | None = None  # first N usable ground-truth pairs

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 < float(self.energy) <= 1.0:
            raise ConfigError(f"energy={self.energy} must be in (0, 1], e.g. 0.9")
        if not -1.0 <= float(self.cos_threshold) <= 1.0:
            raise ConfigError(f"cos_threshold={self.cos_threshold} must be a cosine in [-1, 1]")
        if self.harm_basis not in HARM_BASES:
            raise ConfigError(f"harm_basis={self.harm_basis!r}; choose one of {', '.join(HARM_BASES)}")
        if self.component not in COMPONENTS:
            raise ConfigError(f"component={self.component!r}; choose one of {', '.join(COMPONENTS)}")
        if self.read not in READS:
            raise ConfigError(f"read={self.read!r}; choose one of {', '.join(READS)}")
        if self.gate != "auto" and self.gate not in GATES:
            raise ConfigError(f"gate={self.gate!r}; choose one of auto, {', '.join(GATES)}")
        if self.gate not in ("auto", "none") and RULE_OF[self.method] != "alignez":
            raise ConfigError(f"gate={self.gate} applies to method v2 only; use gate=none with {self.method}")
        for name in ("min_pairs", "n_layers", "top_k", "probe_folds", "char_tokens", "answer_tokens",
                     "gen_batch_size", "act_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be ≥ 1")
        for name in ("limit", "pref_limit"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name}={v} must be ≥ 1")
        parse_keywords(self.keywords)

    @property
    def effective_gate(self) -> str:
        return DEFAULT_GATE[self.method] if self.gate == "auto" else self.gate

    def selfpref(self) -> SelfPrefSettings:
        return SelfPrefSettings(
            keywords=self.keywords, char_tokens=self.char_tokens, answer_tokens=self.answer_tokens,
            batch_size=self.gen_batch_size, chat=self.chat,
            sampling=Sampling(do_sample=self.do_sample, temperature=self.temperature, top_p=self.top_p,
                              repetition_penalty=self.repetition_penalty, seed=self.seed),
        )

    def fit_inputs(self) -> dict[str, Any]:
        """The settings that change the artifact once the pairs are fixed (the fit cache key)."""
        skip = {"keywords", "char_tokens", "answer_tokens", "gen_batch_size", "act_batch_size", "chat", "do_sample",
                "temperature", "top_p", "repetition_penalty", "seed", "limit", "pref_limit"}
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["gate"] = self.effective_gate
        return d

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FitSettings:
        """Build from strings (CLI, lm-eval model_args): "0.9" → 0.9, "none" → None, "true" → True."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown fit setting {key!r}; known: {', '.join(sorted(known))}")
            if name == "gate" and raw is None:  # lm-eval's model_args parser turns `none` into None
                raw = "none"
            out[name] = _coerce(name, raw, hints[name])
        return cls(**out)

    def replace(self, **changes: Any) -> FitSettings:
        return FitSettings.from_mapping({**asdict(self), **changes}) if changes else self


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")):
        if not optional:
            raise ConfigError(f"{name} needs a value")
        return None
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            t = str(raw).strip().lower()
            if t in ("1", "true", "yes", "on"):
                return True
            if t in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if base is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError(raw)
            return int(f)
        if base is float:
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {base.__name__}") from exc
    return str(raw).strip()


# ---------------------------------------------------------------------------------------------
# identity and cache
# ---------------------------------------------------------------------------------------------
_sha = sha256_json


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Identity of an in-memory model: its config, dtype, and the first/last values of every
    parameter (two random inits, or a base and its fine-tune, differ there; hashing all weights
    would cost seconds per call)."""
    cfg = getattr(model, "config", None)
    cfg_d = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}
    name = str(cfg_d.pop("_name_or_path", "") or getattr(model, "name_or_path", ""))
    for volatile in ("transformers_version", "use_cache"):
        cfg_d.pop(volatile, None)
    h = hashlib.sha256()
    dtype = None
    with torch.no_grad():
        for pname, p in model.named_parameters():
            dtype = dtype or str(p.dtype)
            flat = p.detach().reshape(-1)
            sample = torch.cat([flat[:64], flat[-64:]]).to("cpu", torch.float32)
            h.update(pname.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    return {"name": name, "config_sha256": _sha(cfg_d), "weights": h.hexdigest(), "dtype": dtype}


def default_cache_dir() -> Path:
    from alignez_eval.models import alignez_home

    return alignez_home() / "fits"


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    edit: Edit
    report: dict[str, Any]
    pairs: list[dict[str, Any]]  # one record per query/pair, annotated per layer
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _rank_layers(acc: dict[int, float], diffnorm: dict[int, float]) -> list[int]:
    """Layers by held-out probe accuracy, best first; ties by larger mean-difference norm, then index."""
    def key(i: int) -> tuple[float, float, int]:
        a = acc.get(i, math.nan)
        return (-(a if not math.isnan(a) else -1.0), -diffnorm.get(i, 0.0), i)

    return sorted(acc, key=key)


def _texts(records: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Activation texts help₀, harm₀, help₁, … and each answer's character offset."""
    texts, starts = [], []
    for r in records:
        for side in ("pos", "neg"):
            t, s = activation_text(r["query"], r["answers"][side])
            texts.append(t)
            starts.append(s)
    return texts, starts


def _check_activation_lengths(tokenizer: Any, model: Any, texts: list[str], ids: list[str]) -> None:
    ctx = context_length(model, tokenizer)
    if ctx is None:
        return
    for t, qid in zip(texts, ids, strict=True):
        n = len(tokenizer(t)["input_ids"])
        if n > ctx:
            raise DataError(
                f"pair {qid!r} is {n} tokens long as 'Human: …\\nAssistant: …', more than the model's context of "
                f"{ctx}; drop or shorten that pair (or lower --answer-tokens)"
            )


def run_fit(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: list[dict[str, Any]] | list[str] | None,
    settings: FitSettings | None = None,
    *,
    pref_data: str | os.PathLike[str] | list[dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike[str] | None = "default",
    activations_path: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    progress: bool = True,
    on_batch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> FitResult:
    """The whole pipeline; `fit` is the short form returning only the `Edit`."""
    s = settings or FitSettings()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cache = Path(default_cache_dir() if cache_dir == "default" else cache_dir) if cache_dir is not None else None
    ident = model_fingerprint(model)
    name = model_name or ident["name"]

    # ---- the pairs' identity (decided before any generation, so a cache hit costs nothing) ----
    if pref_data is not None:
        from alignez_eval.prefdata import load_pref_pairs

        t0 = time.perf_counter()
        records = (load_pref_pairs(pref_data, s.pref_limit) if not isinstance(pref_data, list)
                   else [dict(r) for r in pref_data])
        timings["load_pref_data"] = time.perf_counter() - t0
        data_key = _sha({"pref": [[r["id"], r["query"], r["answers"]] for r in records]})
        source = "pref-data"
        gen_header: dict[str, Any] | None = None
        items = None
    else:
        if queries is None:
            raise DataError("no queries and no --pref-data; pass queries to self-generate pairs from, or real pairs")
        qlist = list(queries)[: s.limit] if s.limit else list(queries)
        items = normalize_queries(qlist)
        gen_header = s.selfpref().header(ident)
        data_key = _sha({"gen": gen_header, "queries": [[i, t] for i, t, _ in items]})
        source = "self"
        records = []
    fit_key = _sha({"data": data_key, "fit": s.fit_inputs(), "model": ident, "version": __version__})

    if cache is not None:
        hit = _load_cached(cache, fit_key)
        if hit is not None:
            logger.info("fit cache hit %s (no generation, no activations)", fit_key[:16])
            return hit

    # ---- pairs ----------------------------------------------------------------------------
    if source == "self":
        store = cache / "selfpref" / f"{data_key[:24]}.jsonl" if cache is not None else None
        records, gstats = self_generate(
            model, tokenizer, qlist, s.selfpref(), store, model_id=ident, on_batch=on_batch, progress=progress
        )
        timings["generate_characteristics"] = gstats.seconds_characteristics
        timings["generate_answers"] = gstats.seconds_answers
        resumed = gstats.resumed
    else:
        resumed = 0
    kept = [r for r in records if r["status"] == "kept"]
    if not kept:
        raise DataError(
            f"all {len(records)} pairs were dropped as empty or identical; nothing to fit on — "
            "use more queries, other --keywords, or a larger --answer-tokens"
        )

    # ---- activations ----------------------------------------------------------------------
    t0 = time.perf_counter()
    texts, starts = _texts(kept)
    d = hidden_size(model)
    n_layers_model = len(find_components(model, s.component, s.layers_path))
    act_meta = {"model": ident, "texts": _sha(texts), "component": s.component, "read": s.read,
                "layers_path": s.layers_path}
    act_file = Path(activations_path) if activations_path is not None else (
        cache / "activations" / f"{_sha(act_meta)[:24]}.safetensors" if cache is not None else None)
    acts = None
    if act_file is not None and act_file.exists():
        tensors, meta = load_activations(act_file, d, n_layers_model)
        if meta.get("texts") == act_meta["texts"] and meta.get("component") == s.component \
                and meta.get("read") == s.read:
            acts = tensors["phi"]
        else:
            logger.info("activation file %s is for other texts/settings; recomputing", act_file)
    if acts is None:
        _check_activation_lengths(tokenizer, model, texts, [r["id"] for r in kept for _ in (0, 1)])
        acts = capture(model, tokenizer, texts, component=s.component, layers_path=s.layers_path, read=s.read,
                       answer_starts=starts if s.read == "mean" else None, batch_size=s.act_batch_size,
                       progress=progress)
        if act_file is not None:
            save_activations(act_file, {"phi": acts}, act_meta)
    timings["activations"] = time.perf_counter() - t0
    h_help_all, h_harm_all = acts[0::2], acts[1::2]  # (n, L, d)

    # ---- per layer ------------------------------------------------------------------------
    layers: dict[int, LayerEdit] = {}
    diag: dict[int, dict[str, float]] = {}
    kept_by_layer: dict[int, list[bool]] = {}
    cos_by_layer: dict[int, list[float]] = {}
    t_probe = t_sub = 0.0
    acc: dict[int, float] = {}
    diffnorm: dict[int, float] = {}
    uses_filter = s.method in ("v2", "v1")
    for li in range(n_layers_model):
        hh, hr = h_help_all[:, li].to(torch.float64), h_harm_all[:, li].to(torch.float64)
        cos = torch.nn.functional.cosine_similarity(hh, hr, dim=1)
        cos_by_layer[li] = [round(float(c), 4) for c in cos]
        keep = cosine_keep(hh, hr, s.cos_threshold) if uses_filter else torch.ones(len(hh), dtype=torch.bool)
        kept_by_layer[li] = [bool(k) for k in keep]
        t0 = time.perf_counter()
        pr = probe_layer(hh, hr, folds=s.probe_folds, l2=s.probe_l2, seed=s.seed)
        t_probe += time.perf_counter() - t0
        acc[li] = pr.accuracy
        mean_diff = (hh - hr).mean(0)
        diffnorm[li] = float(mean_diff.norm())
        n_pairs = int(keep.sum())
        st: dict[str, float] = {
            "probe_acc": _f(pr.accuracy),
            "mean_cos_help_harm": _f(mean_cosine(hh, hr)),
            "n_pairs": n_pairs,
            "n_pairs_total": len(hh),
            "mean_diff_norm": diffnorm[li],
        }
        t0 = time.perf_counter()
        le = _fit_layer(s, hh[keep], hr[keep], pr.direction, st) if n_pairs >= s.min_pairs else None
        t_sub += time.perf_counter() - t0
        diag[li] = st
        if le is not None:
            layers[li] = le
    timings["probe"] = t_probe
    timings["subspaces"] = t_sub
    ranking = _rank_layers(acc, diffnorm)
    skipped = {li: int(diag[li]["n_pairs"]) for li in range(n_layers_model) if li not in layers}

    # ---- layer choice for the additive baselines -----------------------------------------
    if s.method == "iti":
        top = [li for li in ranking if li in layers][: s.top_k]
        layers = {li: layers[li] for li in sorted(top)}
    if not layers:
        raise DataError(
            f"no layer has ≥ min_pairs={s.min_pairs} pairs after the cosine filter (> {s.cos_threshold} dropped); "
            f"pairs per layer: {[int(diag[i]['n_pairs']) for i in range(n_layers_model)]}. Use more queries, "
            "a higher --cos-threshold, a lower --min-pairs, or --read mean"
        )
    if s.method in ("caa", "iti"):
        default_layers = format_layers(sorted([li for li in ranking if li in layers][: s.top_k]))
    else:
        default_layers = "auto"

    # ---- annotate the pairs (what was kept where) -----------------------------------------
    kept_index = {r["id"]: j for j, r in enumerate(kept)}
    pairs_out = []
    for r in records:
        rec = dict(r)
        j = kept_index.get(r["id"])
        if j is None:
            rec["layers_kept"], rec["layers_dropped_cos"] = [], []
        else:
            rec["layers_kept"] = [li for li in range(n_layers_model) if kept_by_layer[li][j]]
            rec["layers_dropped_cos"] = [li for li in range(n_layers_model) if not kept_by_layer[li][j]]
            rec["cos_by_layer"] = [cos_by_layer[li][j] for li in range(n_layers_model)]
        pairs_out.append(rec)

    timings["total"] = time.perf_counter() - t_start
    counts = {
        "queries": len(items) if items is not None else None,
        "pairs": len(records),
        "pairs_resumed": resumed,
        "kept_text": len(kept),
        "dropped_empty": sum(1 for r in records if r.get("reason") == "empty"),
        "dropped_identical": sum(1 for r in records if r.get("reason") == "identical"),
        "pairs_per_layer": {str(li): int(diag[li]["n_pairs"]) for li in range(n_layers_model)},
        "layers_edited": sorted(layers),
        "layers_skipped": {str(k): v for k, v in skipped.items()},
    }
    fit_meta = {
        "data_source": source,
        "data_hash": data_key,
        "cache_key": fit_key,
        "settings": asdict(s) | {"gate": s.effective_gate},
        "generation": gen_header,
        "counts": counts,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "degeneracy": degeneracy(records),
        "probe_ranking": ranking,
        "probe_accuracy": {str(k): _f(v) for k, v in acc.items()},
        "layer_diagnostics": {str(k): v for k, v in diag.items()},
        "harm_basis": {"source": s.harm_basis, "reading": HARM_READING[s.harm_basis]} if s.method == "v2" else None,
        "orientation_rule": ORIENTATION_RULE,
        "model_identity": ident,
        "package_version": __version__,
    }
    edit = Edit(
        meta=EditMeta(
            method=s.method, rule=RULE_OF[s.method], component=s.component, hidden_size=d,
            num_layers=n_layers_model, model=name, gate=s.effective_gate, n_layers=s.n_layers,
            layers=default_layers, orientation="help", fit=fit_meta,
        ),
        layers=layers,
    )
    report = {"fit": fit_meta, "method": s.method, "rule": RULE_OF[s.method], "model": name,
              "layers": default_layers}
    result = FitResult(edit=edit, report=report, pairs=pairs_out, timings=timings)
    if cache is not None:
        _store_cached(cache, fit_key, result)
    return result


def _f(x: float | None) -> float | None:
    """Rounded float; NaN (e.g. a probe on < 2 pairs) becomes None so reports stay valid JSON."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _fit_layer(
    s: FitSettings, hh: torch.Tensor, hr: torch.Tensor, probe_dir: torch.Tensor, st: dict[str, float]
) -> LayerEdit:
    d = hh.shape[1]
    empty = torch.zeros(0, d, dtype=torch.float32)
    if s.method == "v2":
        help_fit = theta_help(hh, hr, s.energy)
        harm_fit = harm_basis(hh, hr, help_fit, s.energy, s.harm_basis)
        st.update(energy_kept=round(help_fit.energy_kept, 6), k_help=int(help_fit.basis.shape[0]),
                  k_harm=int(harm_fit.basis.shape[0]), sign_ties=help_fit.ties + harm_fit.ties)
        return LayerEdit(harm=harm_fit.basis.float(), help=help_fit.basis.float(), stats=st)
    if s.method == "v1":
        harm_fit, help_fit = v1_directions(hh, hr)
        st.update(energy_kept=round(help_fit.energy_kept, 6), energy_kept_harm=round(harm_fit.energy_kept, 6),
                  k_help=1, k_harm=1, cos_help_harm_dirs=round(float(harm_fit.basis[0] @ help_fit.basis[0]), 6),
                  sign_ties=help_fit.ties + harm_fit.ties)
        return LayerEdit(harm=harm_fit.basis.float(), help=help_fit.basis.float(), stats=st)
    steer = caa_steer(hh, hr) if s.method == "caa" else iti_steer(hh, hr, probe_dir)
    st.update(steer_norm=round(float(steer.norm()), 6))
    return LayerEdit(harm=empty, help=empty.clone(), steer=steer.float(), stats=st)


# ---- cache entries: <cache>/fits/<key[:24]>/{edit.safetensors, edit.pairs.jsonl, edit.report.json} ----
def _entry(cache: Path, key: str) -> Path:
    return cache / "fits" / key[:24]


def _load_cached(cache: Path, key: str) -> FitResult | None:
    paths = output_paths(_entry(cache, key) / "edit.safetensors")
    if not paths["report"].exists():
        return None
    try:
        report = json.loads(paths["report"].read_text(encoding="utf-8"))
        if report.get("fit", {}).get("cache_key") != key:
            return None
        edit = Edit.load(paths["edit"])
        pairs = [json.loads(ln) for ln in paths["pairs"].read_text(encoding="utf-8").splitlines() if ln.strip()]
    except Exception as exc:  # noqa: BLE001 — a corrupt entry is rebuilt, never trusted
        logger.warning("ignoring unreadable fit cache entry %s (%s)", paths["edit"].parent, exc)
        return None
    report.pop("artifact", None)
    return FitResult(edit=edit, report=report, pairs=pairs, cache_hit=True,
                     timings=report.get("fit", {}).get("timings", {}))


def _store_cached(cache: Path, key: str, result: FitResult) -> None:
    """Build the entry in a temp sibling and rename it into place: a killed run leaves no half entry."""
    with atomic_dir(_entry(cache, key), suffix=".tmp") as tmp:
        write_outputs(result, tmp / "edit.safetensors", text=False)


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------
def output_paths(out: str | os.PathLike[str]) -> dict[str, Path]:
    """edit.safetensors → edit.pairs.jsonl, edit.report.json, edit.report.txt next to it."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".safetensors" else out
    return {
        "edit": out,
        "pairs": stem.with_name(stem.name + ".pairs.jsonl"),
        "report": stem.with_name(stem.name + ".report.json"),
        "text": stem.with_name(stem.name + ".report.txt"),
    }


def write_outputs(result: FitResult, out: str | os.PathLike[str], text: bool = True) -> dict[str, Path]:
    """Artifact + annotated pairs JSONL + report JSON (+ the text report). Returns the paths written."""
    paths = output_paths(out)
    sha = result.edit.save(paths["edit"])
    report = dict(result.report)
    report["artifact"] = {"path": str(paths["edit"]), "sha256": sha}
    report["cache_hit"] = result.cache_hit
    atomic_write_text(paths["pairs"], "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in result.pairs))
    atomic_write_text(paths["report"], json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    if text:
        atomic_write_text(paths["text"], format_report(report) + "\n")
    else:
        paths.pop("text")
    return paths


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of a fit report."""
    f = report["fit"]
    c, t, g = f["counts"], f["timings"], f["degeneracy"]
    lines = [
        f"alignez-eval fit: method={report['method']} rule={report['rule']} model={report.get('model') or '?'}"
        f"{' (cache hit)' if report.get('cache_hit') else ''}",
        f"data: {f['data_source']}; pairs {c['pairs']} (kept {c['kept_text']}, dropped empty {c['dropped_empty']}, "
        f"identical {c['dropped_identical']}; resumed {c.get('pairs_resumed', 0)})",
        f"degeneracy rate {g.get('rate', 0):.2f} (echo pos {g.get('echo_pos', 0):.2f}, echo neg "
        f"{g.get('echo_neg', 0):.2f}, echo instruction {g.get('echo_instruction', 0):.2f}, near-identical {g.get('near_identical', 0):.2f}, loops collapsed "
        f"{g.get('loops_collapsed', 0):.2f})",
        "pairs per layer after the cosine filter: "
        + " ".join(f"{k}:{v}" for k, v in sorted(c["pairs_per_layer"].items(), key=lambda kv: int(kv[0]))),
        f"layers edited: {format_layers(c['layers_edited']) or '-'}; skipped (< min_pairs): "
        f"{format_layers(sorted(int(k) for k in c['layers_skipped'])) or '-'}; default layers={report['layers']}",
        "probe ranking (held-out acc): " + ", ".join(
            f"{li}:{_fmt(f['probe_accuracy'][str(li)])}" for li in f["probe_ranking"][:8]),
        "time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()),
    ]
    if report.get("artifact"):
        lines.append(f"artifact: {report['artifact']['path']} sha256={report['artifact']['sha256'][:16]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def fit(
    model: torch.nn.Module,
    tokenizer: Any,
    queries: list[dict[str, Any]] | list[str] | None,
    settings: FitSettings | None = None,
    *,
    pref_data: str | os.PathLike[str] | list[dict[str, Any]] | None = None,
    cache_dir: str | os.PathLike[str] | None = "default",
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Edit:
    """Fit an edit artifact on `model` from its own answers to `queries` (or from `pref_data`).

    `overrides` are FitSettings fields (method="caa", energy=0.8, …). `out` also writes the
    artifact, `*.pairs.jsonl` and `*.report.json` there. `cache_dir=None` disables caching.
    """
    s = (settings or FitSettings()).replace(**overrides) if overrides else (settings or FitSettings())
    result = run_fit(model, tokenizer, queries, s, pref_data=pref_data, cache_dir=cache_dir, progress=progress)
    if out is not None:
        write_outputs(result, out)
    return result.edit


# ---------------------------------------------------------------------------------------------
# alignez-hf `fit=...`: fitting on the evaluation's own queries (test-time, no labels)
# ---------------------------------------------------------------------------------------------
# `fit_*` model_args that are not FitSettings fields.
ADAPTER_KEYS = ("cache_dir", "pref_data", "out")


def queries_from_requests(requests: list[Any]) -> list[dict[str, Any]]:
    """One query per distinct prompt among lm-eval requests: the doc's `instruction` when it has
    one (our tasks), else the request's context string. Ids are content hashes, so the same prompt
    set always gives the same fit cache key."""
    from alignez_eval.queries import query_id

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for req in requests:
        doc = getattr(req, "doc", None)
        text = doc.get("instruction") if isinstance(doc, dict) else None
        if not isinstance(text, str) or not text.strip():
            args = getattr(req, "args", None) or getattr(req, "arguments", None) or ()
            text = args[0] if args and isinstance(args[0], str) else None
        if not text or not text.strip() or text in seen:
            continue
        seen.add(text)
        category = doc.get("category", "") if isinstance(doc, dict) else ""
        out.append({"id": query_id(text), "instruction": text, "category": str(category or "")})
    return out


def fit_from_model_args(
    model: torch.nn.Module,
    tokenizer: Any,
    spec: Any,
    fit_args: Mapping[str, Any],
    requests: list[Any],
    model_name: str | None = None,
    queries: list[dict[str, Any]] | None = None,
) -> Edit:
    """`alignez-hf fit=self|QUERIES.jsonl|TASK` with `fit_<setting>=…` model_args (scalars only:
    lm-eval splits model_args on commas). `fit_cache_dir`, `fit_pref_data` and `fit_out` (write the
    artifact, pairs and report there too) are also accepted. Cached like every fit. `queries`
    overrides the prompts taken from `requests` (data parallel pools them across ranks)."""
    args = {k[len("fit_"):] if k.startswith("fit_") else k: v for k, v in fit_args.items()}
    extra = {k: args.pop(k) for k in ADAPTER_KEYS if k in args}
    settings = FitSettings.from_mapping(args)
    pref = extra.get("pref_data")
    if spec is True or (isinstance(spec, str) and spec.strip().lower() == "self"):
        # `queries` is given under data parallel: the prompts pooled from every rank's requests
        queries = queries_from_requests(requests) if queries is None else queries
        where = f"the evaluation's {len(queries)} distinct prompts"
    elif isinstance(spec, str) and spec.strip():
        from alignez_eval.queries import load_queries

        try:
            queries = load_queries(spec.strip(), settings.limit)
        except ConfigError as exc:
            raise ConfigError(f"fit={spec}: {exc} — or pass fit=self to fit on the evaluation's own prompts") from exc
        where = spec
    else:
        raise ConfigError(f"fit={spec!r}: pass fit=self (the evaluation's own queries) or fit=QUERIES.jsonl|TASK")
    if not queries and pref is None:
        raise DataError(f"fit={spec}: no queries found in {where}")
    logger.info("alignez-hf fit=%s: fitting %s on %s", spec, settings.method, where if pref is None else pref)
    cache_dir = extra.get("cache_dir") or "default"
    result = run_fit(model, tokenizer, queries, settings, pref_data=pref, cache_dir=cache_dir, model_name=model_name)
    if extra.get("out"):
        write_outputs(result, extra["out"])
    logger.info("%s", format_report(result.report | {"cache_hit": result.cache_hit}))
    return result.edit


class _CallableModule(types.ModuleType):
    """`alignez_eval.fit` is both this module and the function: `alignez_eval.fit(model, tok, queries)`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Edit:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
