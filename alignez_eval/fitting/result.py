"""Stage 4 of a fit: the `Edit` artifact, its report and the pairs annotated with what was kept where."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from alignez_eval.editing.artifact import Edit, EditMeta
from alignez_eval.fitting.layer_fit import LayerFits, json_float
from alignez_eval.fitting.pairs import Pairs
from alignez_eval.fitting.settings import RULE_OF, FitSettings
from alignez_eval.package import __version__
from alignez_eval.selfpref.pipeline import degeneracy

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


@dataclass
class FitResult:
    edit: Edit
    report: dict[str, Any]
    pairs: list[dict[str, Any]]  # one record per query/pair, annotated per layer
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def annotate_pairs(records: list[dict[str, Any]], kept: list[dict[str, Any]], fits: LayerFits,
                   num_layers: int) -> list[dict[str, Any]]:
    """Each pair record plus the layers whose cosine filter kept or dropped it."""
    kept_index = {r["id"]: j for j, r in enumerate(kept)}
    out = []
    for r in records:
        rec = dict(r)
        j = kept_index.get(r["id"])
        if j is None:
            rec["layers_kept"], rec["layers_dropped_cos"] = [], []
        else:
            rec["layers_kept"] = [li for li in range(num_layers) if fits.kept_by_layer[li][j]]
            rec["layers_dropped_cos"] = [li for li in range(num_layers) if not fits.kept_by_layer[li][j]]
            rec["cos_by_layer"] = [fits.cos_by_layer[li][j] for li in range(num_layers)]
        out.append(rec)
    return out


def assemble(
    s: FitSettings,
    pairs: Pairs,
    kept: list[dict[str, Any]],
    fits: LayerFits,
    *,
    hidden_size: int,
    num_layers: int,
    model_identity: dict[str, Any],
    model_name: str,
    cache_key: str,
    timings: dict[str, float],
) -> FitResult:
    records, diag = pairs.records, fits.diagnostics
    pairs_out = annotate_pairs(records, kept, fits, num_layers)
    counts = {
        "queries": pairs.n_queries,
        "pairs": len(records),
        "kept_text": len(kept),
        "dropped_empty": sum(1 for r in records if r.get("reason") == "empty"),
        "dropped_identical": sum(1 for r in records if r.get("reason") == "identical"),
        "pairs_per_layer": {str(li): int(diag[li]["n_pairs"]) for li in range(num_layers)},
        "layers_edited": sorted(fits.layers),
        "layers_skipped": {str(k): v for k, v in fits.skipped.items()},
    }
    fit_meta = {
        "data_source": pairs.source,
        "data_hash": pairs.data_key,
        "cache_key": cache_key,
        "settings": asdict(s) | {"gate": s.effective_gate},
        "generation": pairs.generation,
        "counts": counts,
        "degeneracy": degeneracy(records),
        "probe_ranking": fits.ranking,
        "probe_accuracy": {str(k): json_float(v) for k, v in fits.probe_accuracy.items()},
        "layer_diagnostics": {str(k): v for k, v in diag.items()},
        "harm_basis": {"source": s.harm_basis, "reading": HARM_READING[s.harm_basis]} if s.method == "v2" else None,
        "orientation_rule": ORIENTATION_RULE,
        "model_identity": model_identity,
        "package_version": __version__,
    }
    edit = Edit(
        meta=EditMeta(
            method=s.method, rule=RULE_OF[s.method], component=s.component, hidden_size=hidden_size,
            num_layers=num_layers, model=model_name, gate=s.effective_gate, n_layers=s.n_layers,
            layers=fits.default_layers, orientation="help", fit=fit_meta,
        ),
        layers=fits.layers,
    )
    # How this run went (wall time, pairs read back from an interrupted generation) is reported beside
    # the artifact, never inside it: the artifact's sha256 is its identity, and two fits of equal
    # pairs with equal settings must give one file.
    run = {"counts": counts | {"pairs_resumed": pairs.resumed},
           "timings": {k: round(v, 3) for k, v in timings.items()}}
    report = {"fit": fit_meta | run, "method": s.method, "rule": RULE_OF[s.method], "model": model_name,
              "layers": fits.default_layers}
    return FitResult(edit=edit, report=report, pairs=pairs_out, timings=timings)
