"""A fit's files: the artifact, the annotated pairs JSONL and the JSON/text reports next to it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_text
from alignez_eval.editing.layers import format_layers
from alignez_eval.fitting.result import FitResult


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
    diag = report.get("diagnostics") or {}
    if diag.get("gate_activity"):
        ga = diag["gate_activity"]
        lines.append(f"{ga['gate']} gate open on the fit's queries (share of directions kept): "
                     + " ".join(f"{k}:{v:.2f}" for k, v in sorted(ga["open_by_layer"].items(), key=lambda kv: int(kv[0]))))
    if diag.get("verdict"):
        lines.append(diag["verdict"])
    if report.get("artifact"):
        lines.append(f"artifact: {report['artifact']['path']} sha256={report['artifact']['sha256'][:16]}")
    return "\n".join(lines)
