"""`sweep`: many edit settings on one loaded base model, each judged and logged as a wandb run.

The prompts are split (seeded) into a sweep part and a held-out part. Every point is generated and
judged on the sweep part only; the best point (by the configured metric) is then generated and
judged on the held-out part, which no ranking ever saw, and that is what `reports/NAME/` shows.
Baseline and tuned generations, fits and judgments are step-cached like `compare`'s, so a point
that was already evaluated costs nothing and a new point costs one fit (when its fit settings are
new) plus one generation pass and its judgments.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_json
from alignez_eval.errors import ConfigError
from alignez_eval.pipeline import tracking
from alignez_eval.pipeline.compare import CompareConfig, ComparePipeline, Comparison, ModelSlot, System
from alignez_eval.pipeline.steps import StepResult
from alignez_eval.pipeline.sweep_config import (
    EDIT_PARAMS,
    FIT_PARAMS,
    SWEEP_PARAMS,
    SweepConfig,
    point_name,
    split_ids,
)

logger = logging.getLogger(__name__)

SPLITS = ("sweep", "heldout")


@dataclass
class PointResult:
    point: dict[str, Any]
    name: str
    metrics: dict[str, Any]
    report: dict[str, Path]
    wandb_dir: str | None = None


@dataclass
class SweepResult:
    points: list[PointResult]
    best: PointResult | None
    heldout: dict[str, Any] | None
    report: dict[str, Path]
    stats: dict[str, int] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)


def split_point(point: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, fit settings, inference-time edit settings) of a point."""
    unknown = sorted(set(point) - SWEEP_PARAMS)
    if unknown:
        raise ConfigError(f"point has unknown setting(s) {unknown}; allowed: {', '.join(sorted(SWEEP_PARAMS))}")
    method = str(point.get("method", "alignez"))
    fit = {k: v for k, v in point.items() if k in FIT_PARAMS and k != "method"}
    edit = {k: v for k, v in point.items() if k in EDIT_PARAMS}
    return method, fit, edit


class SweepPipeline:
    def __init__(self, cfg: SweepConfig, *, work_dir: Path | None = None, report_root: Path = Path("reports"),
                 command: str | None = None, use_wandb: bool = True) -> None:
        self.cfg = cfg
        self.use_wandb = use_wandb
        self.compare = ComparePipeline(CompareConfig(
            base=cfg.base, tuned=cfg.tuned, tasks=cfg.tasks, judge=cfg.judge, name=cfg.name, methods=[],
            limit=cfg.limit, gen_kwargs=cfg.gen_kwargs, fit=cfg.fit, batch_size=cfg.batch_size, seed=cfg.seed,
            work_dir=work_dir or Path("runs") / f"sweep-{cfg.name}", report_root=report_root, command=command,
            include_path=cfg.include_path, judge_batch_size=cfg.judge_batch_size,
        ))
        self.work_dir: Path = self.compare.cfg.work_dir  # type: ignore[assignment]
        self.report_root = report_root
        self.splits: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
        for ds, qs in self.compare.queries.items():
            sweep_ids, held_ids = split_ids([q["id"] for q in qs], cfg.heldout, cfg.seed)
            self.splits["sweep"][ds], self.splits["heldout"][ds] = sweep_ids, held_ids
        self.base_slot = ModelSlot(self.compare.models["base"], cfg.batch_size, self.compare.stats)
        self.gens: dict[str, dict[tuple[str, str], StepResult]] = {s: {} for s in SPLITS}
        self._spec: Any = None

    # -- shared pieces --------------------------------------------------------------------------
    @property
    def spec(self) -> Any:
        if self._spec is None:
            self._spec = self.compare.cfg.judge_spec()
        return self._spec

    def prepare_baselines(self) -> None:
        """Tuned generations first (then that model is freed), then the base model's own, on both splits."""
        c = self.compare
        if "tuned" in c.models:
            slot = ModelSlot(c.models["tuned"], self.cfg.batch_size, c.stats)
            try:
                for split in SPLITS:
                    for ds in c.variants:
                        self.gens[split][("tuned", ds)] = c.gen_step(
                            slot, c.systems["tuned"], ds, None, doc_ids=self.splits[split][ds],
                            name=f"tuned/{c.task_for(c.systems['tuned'], ds)}/{split}")
            finally:
                slot.close()
        for split in SPLITS:
            for ds in c.variants:
                self.gens[split][("base", ds)] = c.gen_step(
                    self.base_slot, c.systems["base"], ds, None, doc_ids=self.splits[split][ds],
                    name=f"base/{c.task_for(c.systems['base'], ds)}/{split}")

    def evaluate(self, point: dict[str, Any], split: str, label: str, out_root: Path) -> tuple[dict[str, Any], dict[str, Path]]:
        """Fit (cached), generate and judge one point on one split; returns (metrics, report files)."""
        c = self.compare
        method, fit, edit = split_point(point)
        system = System(label, "base", method)
        gens = dict(self.gens[split])
        for ds in c.variants:
            fitted = c.fit_step(self.base_slot, method, ds, {**self.cfg.fit, **fit})
            gens[(label, ds)] = c.gen_step(self.base_slot, system, ds, fitted, edit_settings=edit,
                                           doc_ids=self.splits[split][ds],
                                           name=f"{label}/{c.task_for(system, ds)}/{split}")
        candidates = [label] + (["tuned"] if "tuned" in c.models else [])
        comp = Comparison(f"{self.cfg.name}/{split}/{label}", "base", candidates,
                          tuned="tuned" if "tuned" in c.models else None)
        judged = c.judging.judge_step(comp, gens, self.spec)
        extra = {"commands": c.reporting.commands(), "versions": c.cache.versions, "judge_check": None,
                 "settings": {**c.reporting.describe(comp), "point": point, "split": split,
                              "prompts": {ds: len(ids) for ds, ids in self.splits[split].items()}}}
        name = self.cfg.name if split == "heldout" else f"{self.cfg.name}-{split}-{label}"
        files = c.reporting.report_step([judged], name, comp.tuned, extra, out_root)
        return point_metrics(files, label), files

    # -- the sweep ------------------------------------------------------------------------------
    def label(self, point: dict[str, Any]) -> str:
        """A point's name from its searched settings only (the fixed ones are the same everywhere)."""
        searched = {p.name for p in self.cfg.params}
        return point_name({k: v for k, v in point.items() if k in searched}) or point_name(point) or "default"

    def run_point(self, point: dict[str, Any], run: Any = None) -> PointResult:
        name = self.label(point)
        metrics, files = self.evaluate(point, "sweep", name, self.work_dir / "points")
        wandb_dir = None
        own_run = run is None and self.use_wandb
        if own_run:
            run = tracking.init_run(project=self.cfg.wandb_project, entity=self.cfg.wandb_entity,
                                    group=self.cfg.name, name=name, config=point, job_type="sweep-point",
                                    directory=self.work_dir)
        if run is not None:
            tracking.log_point(run, metrics, leaderboard_csv=files.get("csv"), plot_png=files.get("png"))
            wandb_dir = getattr(run, "dir", None)
            if own_run:
                run.finish()
        logger.info("point %s: %s", name, {k: metrics.get(k) for k in ("net_win", "gap_closed")})
        return PointResult(point, name, metrics, files, wandb_dir)

    def run(self, points: list[dict[str, Any]] | None = None) -> SweepResult:
        pts = points if points is not None else self.cfg.points()
        logger.info("sweep %s: %d points (%s search) on %s prompts; held-out %s", self.cfg.name, len(pts),
                    self.cfg.search, {ds: len(v) for ds, v in self.splits["sweep"].items()},
                    {ds: len(v) for ds, v in self.splits["heldout"].items()})
        try:
            self.prepare_baselines()
            results = []
            for i, pt in enumerate(pts, 1):
                logger.info("sweep point %d/%d: %s", i, len(pts), self.label(pt))
                results.append(self.run_point(pt))
            best = rank_points(results, self.cfg.metric)[0] if results else None
            heldout: dict[str, Any] | None = None
            report: dict[str, Path] = {}
            if best is not None:
                logger.info("best point on the sweep split (%s): %s; evaluating it on the held-out split",
                            self.cfg.metric, best.name)
                heldout, report = self.evaluate(best.point, "heldout", best.name, self.report_root)
        finally:
            self.base_slot.close()
        ranking = [{"rank": i, "point": r.name, **{k: v for k, v in r.metrics.items() if isinstance(v, int | float)}}
                   for i, r in enumerate(rank_points(results, self.cfg.metric), 1)]
        summary = {"sweep": self.cfg.name, "metric": self.cfg.metric, "ranking": ranking,
                   "best": best.point if best else None, "heldout": heldout,
                   "splits": {s: {ds: len(v) for ds, v in d.items()} for s, d in self.splits.items()}}
        atomic_write_json(self.work_dir / "sweep_summary.json", summary)
        if self.use_wandb:
            run = tracking.init_run(project=self.cfg.wandb_project, entity=self.cfg.wandb_entity,
                                    group=self.cfg.name, name=f"{self.cfg.name}-summary",
                                    config={"metric": self.cfg.metric, "best": best.point if best else None,
                                            "n_points": len(results)},
                                    job_type="sweep-summary", directory=self.work_dir)
            tracking.log_summary(run, ranking, heldout)
            run.finish()
        self.compare.reporting.write_manifest_summary()
        return SweepResult(results, best, heldout, report, dict(self.compare.stats), list(self.compare.cache.ran))


def rank_points(results: list[PointResult], metric: str) -> list[PointResult]:
    """Best first; a point whose metric is undefined (e.g. gap closed with no clear gap) ranks last."""

    def key(r: PointResult) -> tuple[int, float]:
        v = r.metrics.get(metric)
        return (0, -float(v)) if isinstance(v, int | float) else (1, 0.0)

    return sorted(results, key=key)


def point_metrics(files: dict[str, Path], candidate: str) -> dict[str, Any]:
    """One candidate's figures from a report's leaderboard.csv: pooled over datasets ("all") when
    there are several, gap closed averaged over datasets; undefined figures are left out."""

    with open(files["csv"], encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["candidate"] == candidate]
    if not rows:
        raise ConfigError(f"report {files['csv']} has no rows for {candidate!r}")
    per_ds = [r for r in rows if r["dataset"] not in ("all", "average")]
    pooled = next((r for r in rows if r["dataset"] == "all"), per_ds[0] if len(per_ds) == 1 else None)
    out: dict[str, Any] = {}

    def num(row: dict[str, str], col: str) -> float | None:
        try:
            v = float(row.get(col, ""))
        except ValueError:
            return None
        return None if v != v else v  # NaN -> None

    if pooled is not None:
        for col, key in (("net", "net_win"), ("net_lo", "net_win_lo"), ("net_hi", "net_win_hi"),
                         ("win_rate", "win_rate"), ("length_adjusted_win_rate", "length_adjusted_win_rate"),
                         ("lc_win_rate", "length_adjusted_win_rate"),  # its name in reports before the rename
                         ("n", "n"),
                         ("win_pct", "win_pct"), ("tie_pct", "tie_pct"), ("lose_pct", "lose_pct"),
                         ("mean_len_baseline", "len_baseline"), ("mean_len_candidate", "len_candidate")):
            if (v := num(pooled, col)) is not None:
                out[key] = v
    avg = next((r for r in rows if r["dataset"] == "average"), None)
    if avg is None and len(per_ds) == 1 and per_ds[0].get("gap_status"):
        avg = per_ds[0]
    if avg is not None:
        out["gap_status"] = avg.get("gap_status") or ""
        if out["gap_status"] == "defined":
            for col, key in (("gap_closed", "gap_closed"), ("gap_closed_lo", "gap_closed_lo"),
                             ("gap_closed_hi", "gap_closed_hi")):
                if (v := num(avg, col)) is not None:
                    out[key] = v
    for r in per_ds:
        if (v := num(r, "net")) is not None:
            out[f"net_win/{r['dataset']}"] = v
    return out
