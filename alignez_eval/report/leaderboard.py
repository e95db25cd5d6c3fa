"""`write_report`: judgments -> reports/NAME/{leaderboard.md, leaderboard.csv, leaderboard.png,
results.json, answers.html}.

`results.json` has lm-eval's shape (results / versions / n-shot / higher_is_better / config), one
entry per "candidate:dataset", with the judge mode as the metric's filter (`net,single`), so
`lm_eval.utils.make_table` prints it and lm-eval's `WandbLogger` logs it.

Every file is written through `alignez_eval.shareable`: an embedded model's directory shows
as its registry name, so a committed report carries no path of the machine that made it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alignez_eval.atomic import atomic_write_text
from alignez_eval.bootstrap import DEFAULT_N_BOOT
from alignez_eval.errors import DataError
from alignez_eval.gap import MIN_TUNED_NET, GapResult, average_gap, gap_closed
from alignez_eval.judge.agreement import FORMAT, agreement_summary_line, load_agreement
from alignez_eval.judge.runner import load_judgments, safe_name
from alignez_eval.metrics import VALUES, HeadToHead, head_to_head
from alignez_eval.report.viewer import write_viewer
from alignez_eval.shareable import shareable, shareable_text

logger = logging.getLogger(__name__)

FIGURES = ("net", "win_rate", "length_adjusted_win_rate", "win_pct", "tie_pct", "lose_pct")
CSV_COLUMNS = [
    "model", "candidate", "dataset", "judge", "mode", "n", "wins", "ties", "losses", "errors", "identical",
    "win_pct", "tie_pct", "lose_pct", "net", "net_lo", "net_hi", "win_rate", "win_rate_lo", "win_rate_hi",
    "length_adjusted_win_rate", "length_adjusted_win_rate_lo", "length_adjusted_win_rate_hi", "mean_len_baseline", "mean_len_candidate",
    "swap_inconsistency", "tuned", "gap_closed", "gap_closed_lo", "gap_closed_hi", "gap_status",
]


def _doc_values(records: list[dict[str, Any]], dataset: str) -> dict[str, float]:
    return {r["doc_id"]: VALUES[r["verdict"]] for r in records
            if r["family"] == dataset and r["verdict"] in VALUES}


def _aligned(a_recs: list[dict[str, Any]], t_recs: list[dict[str, Any]], dataset: str) -> tuple[np.ndarray, np.ndarray]:
    a, t = _doc_values(a_recs, dataset), _doc_values(t_recs, dataset)
    docs = sorted(set(a) & set(t))
    return np.array([a[d] for d in docs]), np.array([t[d] for d in docs])


def build_report(judgments_dirs: Sequence[str | Path], tuned: str | None = None, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0, min_tuned_net: float = MIN_TUNED_NET) -> list[dict[str, Any]]:
    """One entry per judgments dir (= per model, i.e. per baseline): its manifest, head-to-head
    figures per candidate and dataset (plus 'all' pooled when there are several), and gaps."""
    models = []
    for jdir in judgments_dirs:
        manifest, records = load_judgments(jdir)
        mode = manifest["mode"]
        model = manifest["baseline"]["name"]
        if tuned is not None and tuned not in records:
            raise DataError(f"--tuned {tuned!r} is not a candidate in {jdir} (candidates: {sorted(records)}); "
                            "name the tuned model's candidate run")
        rows: list[HeadToHead] = []
        for cand, recs in records.items():
            datasets = sorted({r["family"] for r in recs})
            for ds in datasets:
                rows.append(head_to_head([r for r in recs if r["family"] == ds], cand, ds, mode, n_boot, seed))
            if len(datasets) > 1:
                rows.append(head_to_head(recs, cand, "all", mode, n_boot, seed))
        gaps: dict[str, dict[str, GapResult]] = {}
        if tuned is not None:
            for cand, recs in records.items():
                if cand == tuned:
                    continue
                datasets = sorted({r["family"] for r in recs} & {r["family"] for r in records[tuned]})
                per = {ds: _aligned(recs, records[tuned], ds) for ds in datasets}
                gaps[cand] = {ds: gap_closed(a, t, n_boot=n_boot, seed=seed, min_tuned_net=min_tuned_net)
                              for ds, (a, t) in per.items()}
                gaps[cand]["average"] = average_gap(per, n_boot=n_boot, seed=seed, min_tuned_net=min_tuned_net)
        models.append({"dir": str(jdir), "model": model, "mode": mode, "manifest": manifest, "rows": rows,
                       "gaps": gaps, "tuned": tuned})
    return models


# -- formatting -------------------------------------------------------------------------------------
def _f(x: float | None, signed: bool = False, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(row: HeadToHead, name: str, signed: bool = False) -> str:
    lo, hi = row.ci.get(name, (float("nan"), float("nan")))
    return f"{_f(getattr(row, name), signed)} [{_f(lo, signed)}, {_f(hi, signed)}]"


def _gap_text(g: GapResult) -> str:
    if not g.defined or g.value is None or g.ci is None:
        return "undefined"
    return f"{g.value:.1f} [{_f(g.ci[0])}, {_f(g.ci[1])}]"


def _judge_check_text(check: Any) -> str:
    if check is None:
        return ("not provided - run `alignez-eval judge-check --judge SPEC --out FILE` and pass "
                "`--judge-check FILE` to state it here")
    if isinstance(check, str | Path) and Path(check).is_file():
        check = json.loads(Path(check).read_text(encoding="utf-8"))
    if isinstance(check, dict):
        return str(check.get("summary") or json.dumps({k: check.get(k) for k in ("accuracy", "swap_consistency")}))
    return str(check)


def _summary_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("summary") or json.dumps(value, default=str))
    return str(value)


def _judge_agreement_text(agreement: Any, manifest: dict[str, Any]) -> str:
    """The agreement line (`alignez_eval.judge.agreement`), flagged when it was measured with another
    judge or margin than the one behind this section's figures."""

    if isinstance(agreement, str | Path) and Path(agreement).is_file():
        agreement = load_agreement(agreement)
    if not isinstance(agreement, dict) or agreement.get("format") != FORMAT:
        return _summary_text(agreement)
    text = agreement_summary_line(agreement) if "overall" in agreement else str(agreement.get("summary"))
    ident = manifest.get("judge_identity")
    if ident is not None and agreement.get("judge_identity") not in (None, ident):
        text += f" (**measured with a different judge** than this section's {manifest.get('judge_description')})"
    elif agreement.get("margin") is not None and agreement["margin"] != (manifest.get("judge") or {}).get("margin"):
        text += f" (measured at tie margin {agreement['margin']}; this section's judge uses {manifest['judge'].get('margin')})"
    return text


def _mode_note(manifest: dict[str, Any]) -> str:
    judge = manifest["judge"]
    mode = manifest["mode"]
    if judge["backend"] == "rm":
        how = "each answer scored once by a reward model; winner by score difference"
    elif judge["backend"] == "scorer":
        how = "each answer scored once by a scorer head; winner by score difference"
    elif mode == "single":
        how = f"each answer graded 1-{judge.get('scale')} on its own; winner by grade difference"
    elif judge["backend"] == "hf":
        how = "both orders; label probabilities averaged over the orders"
    else:
        how = "both orders; inconsistent orders count as ties"
    return f"{mode} ({how}, tie margin {judge.get('margin')})"


def render_markdown(name: str, models: list[dict[str, Any]], extra: dict[str, Any] | None,
                    png_name: str | None) -> str:
    extra = dict(extra or {})
    out = io.StringIO()
    w = out.write
    w(f"# Leaderboard: {name}\n\n")
    check = extra.pop("judge_check", None)
    # One line on how far the judge agrees with a reference judge (`report --judge-reference`);
    # `extra["judge_agreement"]`: a str, or a dict whose "summary" is that line.
    agreement = extra.pop("judge_agreement", None)
    for m in models:
        man = m["manifest"]
        prompt = man.get("prompt") or {}
        w(f"## Model: {m['model']} (baseline run `{man['baseline']['path']}`)\n\n")
        w(f"- **Judge**: {man.get('judge_description')}; prompt `{prompt.get('tag', 'n/a')}`\n")
        w(f"- **Judge mode behind every figure below**: {_mode_note(man)}\n")
        w(f"- **Judge check**: {_judge_check_text(check)}\n")
        if agreement is not None:
            w(f"- **Judge agreement**: {_judge_agreement_text(agreement, man)}\n")
        stats = man.get("stats", {})
        if stats:
            w(f"- Judging: {int(stats.get('calls', 0))} calls this run, {int(stats.get('cache_hits', 0))} cached, "
              f"{int(stats.get('call_errors', 0))} call errors, cost ${stats.get('cost_usd', 0.0):.4f}\n")
        w("\n")
        if m["gaps"]:
            w(f"### % of the base-to-tuned gap closed (tuned = `{m['tuned']}`, judge mode: {m['mode']})\n\n")
            w("gap closed = Net(candidate vs base) / Net(tuned vs base) x 100, on docs judged for both; "
              "95% paired-bootstrap CI. Undefined when the tuned net is not clearly positive.\n\n")
            w("| candidate | dataset | gap closed % [95% CI] | Net cand [CI] | Net tuned [CI] | n | note |\n")
            w("|---|---|---|---|---|---|---|\n")
            for cand, per in m["gaps"].items():
                for ds, g in per.items():
                    if ds == "average":
                        note = ("mean over " + ", ".join(g.datasets) if g.defined else str(g.reason))
                        if g.excluded:
                            note += "; excluded: " + "; ".join(f"{k} ({v})" for k, v in g.excluded.items())
                        w(f"| {cand} | **average** | **{_gap_text(g)}** | {_f(g.net_alignez, True)} | "
                          f"{_f(g.net_tuned, True)} | {g.n} | {note} |\n")
                        continue
                    w(f"| {cand} | {ds} | {_gap_text(g)} | {_f(g.net_alignez, True)} "
                      f"[{_f(g.net_alignez_ci[0], True)}, {_f(g.net_alignez_ci[1], True)}] | {_f(g.net_tuned, True)} "
                      f"[{_f(g.net_tuned_ci[0], True)}, {_f(g.net_tuned_ci[1], True)}] | {g.n} | "
                      f"{g.reason or ''} |\n")
            w("\n")
        w(f"### Head-to-head vs `{m['model']}` (judge mode: {m['mode']})\n\n")
        w("Win/Tie/Lose in % of judged docs; Net = Win% - Lose%; win rate counts ties half; length-adjusted "
          "(ours) = win rate at equal length from a logistic fit on this table's word-count differences, not "
          "AlpacaEval 2's LC win rate; lengths in words; errors are excluded and counted.\n\n")
        w("| candidate | dataset | mode | n | W/T/L % | Net [95% CI] | win rate [CI] | "
          "length-adjusted win rate (ours) [CI] | len base / cand | swap-inconsistent | errors |\n")
        w("|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in m["rows"]:
            swap = "n/a" if r.swap_inconsistency is None else f"{100 * r.swap_inconsistency:.0f}%"
            w(f"| {r.candidate} | {r.dataset} | {r.mode} | {r.n} | {_f(r.win_pct, digits=0)}/{_f(r.tie_pct, digits=0)}/"
              f"{_f(r.lose_pct, digits=0)} | {_ci(r, 'net', True)} | {_ci(r, 'win_rate')} | "
              f"{_ci(r, 'length_adjusted_win_rate')} | "
              f"{_f(r.mean_len_baseline, digits=0)} / {_f(r.mean_len_candidate, digits=0)} | {swap} | {r.errors} |\n")
        w("\n")
        notes = []
        for cand, info in man["candidates"].items():
            p = info["pairing"]
            by = " by exact instruction text" if p.get("paired_by") == "instruction" else ""
            if p["missing_in_candidate"] or p["extra_in_candidate"]:
                notes.append(f"`{cand}`: {p['paired']} docs paired{by}; {len(p['missing_in_candidate'])} only in the "
                             f"baseline, {len(p['extra_in_candidate'])} only in the candidate (listed in "
                             f"{m['dir']}/manifest.json)")
            if p.get("limit") is not None and p.get("judged", p["paired"]) < p["paired"]:
                notes.append(f"`{cand}`: {p['judged']} of {p['paired']} paired docs judged (seeded random sample, "
                             f"--limit {p['limit']} --seed {p.get('seed', 0)})")
            for note in info["run"].get("notes", []):
                notes.append(f"`{cand}`: {note}")
        for note in man["baseline"].get("notes", []):
            notes.append(f"baseline: {note}")
        if notes:
            w("**Pairing notes**\n\n" + "".join(f"- {n}\n" for n in notes) + "\n")
    if png_name:
        w(f"![gap closed and net win]({png_name})\n\n")
    if extra:
        w("## Provenance\n\n")
        for key, val in extra.items():
            if isinstance(val, list | tuple):
                w(f"- **{key}**:\n" + "".join(f"  - `{v}`\n" for v in val))
            elif isinstance(val, dict):
                w(f"- **{key}**: " + ", ".join(f"{k}={v}" for k, v in val.items()) + "\n")
            else:
                w(f"- **{key}**: {val}\n")
    return out.getvalue()


def _csv_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for m in models:
        judge = m["manifest"].get("judge_description")
        for r in m["rows"]:
            d = r.to_dict()
            row = {k: d.get(k) for k in CSV_COLUMNS if k in d}
            row.update(model=m["model"], judge=judge, tuned=m["tuned"] or "")
            g = m["gaps"].get(r.candidate, {}).get(r.dataset)
            if g is not None:
                row.update(gap_closed=g.value, gap_closed_lo=g.ci[0] if g.ci else None,
                           gap_closed_hi=g.ci[1] if g.ci else None, gap_status=g.reason or "defined")
            rows.append(row)
        for cand, per in m["gaps"].items():
            g = per["average"]
            rows.append({"model": m["model"], "candidate": cand, "dataset": "average", "judge": judge,
                         "mode": m["mode"], "n": g.n, "tuned": m["tuned"], "gap_closed": g.value,
                         "gap_closed_lo": g.ci[0] if g.ci else None, "gap_closed_hi": g.ci[1] if g.ci else None,
                         "gap_status": g.reason or "defined"})
    return rows


def _num(x: Any) -> Any:
    return "N/A" if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def lm_eval_results(name: str, models: list[dict[str, Any]], extra: dict[str, Any] | None) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    versions: dict[str, Any] = {}
    higher: dict[str, dict[str, bool]] = {}
    n_samples: dict[str, dict[str, int]] = {}  # lm-eval's own key: judged docs per entry
    several = len(models) > 1
    for m in models:
        mode = m["mode"]
        prompt = (m["manifest"].get("prompt") or {}).get("version", "N/A")
        for r in m["rows"]:
            key = f"{m['model']}.{r.candidate}:{r.dataset}" if several else f"{r.candidate}:{r.dataset}"
            key = key.replace("/", "_")  # WandbLogger splits "task/metric" on "/"
            entry: dict[str, Any] = {"alias": key}
            n_samples[key] = {"original": r.n + r.errors, "effective": r.n}
            for fig in FIGURES:
                entry[f"{fig},{mode}"] = _num(getattr(r, fig))
                entry[f"{fig}_stderr,{mode}"] = _num(r.se.get(fig))
            entry[f"errors,{mode}"] = r.errors
            if r.swap_inconsistency is not None:
                entry[f"swap_inconsistency,{mode}"] = r.swap_inconsistency
            g = m["gaps"].get(r.candidate, {}).get(r.dataset)
            if g is not None:
                entry[f"gap_closed,{mode}"] = g.value if g.defined else "undefined"
            results[key] = entry
            versions[key] = prompt
            higher[key] = {"net": True, "win_rate": True, "length_adjusted_win_rate": True, "win_pct": True, "lose_pct": False,
                           "gap_closed": True, "errors": False, "swap_inconsistency": False}
        for cand, per in m["gaps"].items():
            g = per["average"]
            key = (f"{m['model']}.{cand}:average" if several else f"{cand}:average").replace("/", "_")
            results[key] = {"alias": key, f"gap_closed,{mode}": g.value if g.defined else "undefined"}
            n_samples[key] = {"original": g.n, "effective": g.n}
            versions[key] = prompt
            higher[key] = {"gap_closed": True}
    first = models[0]["manifest"] if models else {}
    return {
        "results": results,
        "versions": versions,
        "n-shot": {k: 0 for k in results},
        "higher_is_better": higher,
        "n-samples": n_samples,
        "configs": {},
        "config": {"model": "alignez-eval-judge", "report": name,
                   "judge": first.get("judge_description"), "mode": first.get("mode"),
                   "tuned": models[0]["tuned"] if models else None},
        "alignez": {"judgments": [m["dir"] for m in models], "extra": extra or {},
                    "gaps": {m["model"]: {c: {ds: g.to_dict() for ds, g in per.items()}
                                          for c, per in m["gaps"].items()} for m in models}},
    }


def write_report(judgments_dir: str | Path | Sequence[str | Path], name: str, out_root: str | Path = "reports",
                 tuned: str | None = None, extra: dict[str, Any] | None = None, *, n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0, min_tuned_net: float = MIN_TUNED_NET, wandb: bool = False,
                 wandb_project: str | None = None) -> dict[str, Path]:
    """Write reports/NAME/{leaderboard.md,.csv,.png, results.json, answers.html};
    -> {"md", "csv", "png", "json", "html"}.
    `judgments_dir` may list several dirs (one per model/baseline). `extra` (commands, versions,
    judge_check: dict or JSON path, ...) is printed in the leaderboard."""
    dirs = [judgments_dir] if isinstance(judgments_dir, str | Path) else list(judgments_dir)
    models = build_report(dirs, tuned=tuned, n_boot=n_boot, seed=seed, min_tuned_net=min_tuned_net)
    out = Path(out_root) / safe_name(name)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "leaderboard.md", "csv": out / "leaderboard.csv", "png": out / "leaderboard.png",
             "json": out / "results.json", "html": out / "answers.html"}
    # lazy: matplotlib costs 1.5 s to import (measured on AMD EPYC, 2 cores)
    from alignez_eval.report.plots import plot_leaderboard

    plot_leaderboard(models, paths["png"], title=name)
    atomic_write_text(paths["md"], shareable_text(render_markdown(name, models, extra, paths["png"].name)))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in _csv_rows(models):
        writer.writerow({k: ("" if v is None else shareable(v)) for k, v in row.items()})
    atomic_write_text(paths["csv"], buf.getvalue())
    results = shareable(lm_eval_results(name, models, extra))
    atomic_write_text(paths["json"], json.dumps(results, indent=2, ensure_ascii=False, default=str))
    write_viewer(dirs, paths["html"], name)
    logger.info("report written to %s", out)
    if wandb:
        # lazy: wandb costs 1.8 s to import (measured on AMD EPYC, 2 cores) and is optional
        from alignez_eval.report.wandb_log import log_report

        log_report(results, paths, name=name, project=wandb_project)
    return paths
