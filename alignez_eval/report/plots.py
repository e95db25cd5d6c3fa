"""Leaderboard figure: % gap closed per dataset (with CIs) and net win per candidate (with CIs).

A candidate has one colour in every panel (the tuned model has a net-win bar but no gap bar, so
colouring by position within a panel would shift the others). Titles and labels go through
`shareable_text`, like the md/csv/json files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from alignez_eval.shareable import shareable_text  # noqa: E402


def _err(value: float, ci: tuple[float, float]) -> tuple[float, float]:
    lo, hi = ci
    if any(math.isnan(x) for x in (value, lo, hi)):
        return (0.0, 0.0)
    return (max(0.0, value - lo), max(0.0, hi - value))


def candidate_colours(models: list[dict[str, Any]]) -> dict[str, str]:
    """Candidate -> matplotlib colour, in order of first appearance, shared by every panel."""
    names = [r.candidate for m in models for r in m["rows"]] + [c for m in models for c in m["gaps"]]
    return {cand: f"C{i % 10}" for i, cand in enumerate(dict.fromkeys(names))}


def leaderboard_figure(models: list[dict[str, Any]], title: str) -> Figure:
    has_gap = any(m["gaps"] for m in models)
    colour = candidate_colours(models)
    ncols = 2 if has_gap else 1
    fig, axes = plt.subplots(len(models), ncols, figsize=(6.5 * ncols, 3.8 * len(models)), squeeze=False)
    for i, m in enumerate(models):
        mode = m["mode"]
        ax_net = axes[i, -1]
        rows = [r for r in m["rows"] if r.n > 0]
        cands = list(dict.fromkeys(r.candidate for r in rows))
        datasets = list(dict.fromkeys(r.dataset for r in rows))
        width = 0.8 / max(1, len(cands))
        for j, cand in enumerate(cands):
            xs, ys, errs = [], [], []
            for k, ds in enumerate(datasets):
                r = next((r for r in rows if r.candidate == cand and r.dataset == ds), None)
                if r is None:
                    continue
                xs.append(k + (j - (len(cands) - 1) / 2) * width)
                ys.append(r.net)
                errs.append(_err(r.net, r.ci["net"]))
            ax_net.bar(xs, ys, width, yerr=np.array(errs).T if errs else None, capsize=3, color=colour[cand],
                       label=shareable_text(cand))
        ax_net.axhline(0, color="black", linewidth=0.8)
        ax_net.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right", fontsize=8)
        ax_net.set_ylabel("Net win vs baseline (Win% - Lose%)")
        ax_net.set_title(shareable_text(f"{m['model']}: net win, 95% CI (judge mode: {mode})"), fontsize=9)
        ax_net.legend(fontsize=7)
        if has_gap:
            ax_gap = axes[i, 0]
            gcands = list(m["gaps"])
            gdatasets = list(dict.fromkeys(ds for per in m["gaps"].values() for ds in per))
            gwidth = 0.8 / max(1, len(gcands))
            for j, cand in enumerate(gcands):
                for k, ds in enumerate(gdatasets):
                    g = m["gaps"][cand].get(ds)
                    if g is None:
                        continue
                    x = k + (j - (len(gcands) - 1) / 2) * gwidth
                    if g.defined and g.value is not None and g.ci is not None:
                        ax_gap.bar(x, g.value, gwidth, yerr=np.array([_err(g.value, g.ci)]).T, capsize=3,
                                   color=colour[cand], label=shareable_text(cand) if k == 0 else None,
                                   hatch="//" if ds == "average" else None)
                    else:
                        ax_gap.text(x, 0, "undefined", rotation=90, ha="center", va="bottom", fontsize=7)
            ax_gap.axhline(0, color="black", linewidth=0.8)
            ax_gap.axhline(100, color="grey", linewidth=0.8, linestyle="--")
            ax_gap.set_xticks(range(len(gdatasets)), gdatasets, rotation=20, ha="right", fontsize=8)
            ax_gap.set_ylabel("% of base-to-tuned gap closed")
            ax_gap.set_title(shareable_text(f"{m['model']}: gap closed vs tuned `{m['tuned']}`, 95% CI "
                                            f"(judge mode: {mode})"), fontsize=9)
            if ax_gap.get_legend_handles_labels()[0]:
                ax_gap.legend(fontsize=7)
    fig.suptitle(shareable_text(title))
    fig.tight_layout()
    return fig


def plot_leaderboard(models: list[dict[str, Any]], path: Path, title: str) -> Path:
    fig = leaderboard_figure(models, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
