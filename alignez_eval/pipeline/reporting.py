"""The report steps of a compare: each report is a cached step over its judgments, published to the
report root; its header records the commands, versions and settings that produced it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_bytes, atomic_write_text
from alignez_eval.hashing import canonical_json
from alignez_eval.package import __version__
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.compare_config import CompareConfig
from alignez_eval.pipeline.identity import format_model_args
from alignez_eval.pipeline.plan import Comparison, ModelEntry
from alignez_eval.pipeline.steps import StepCache, StepResult


class ReportSteps:
    """The report steps of a compare (`ComparePipeline.reporting`): cached reports over its judgments,
    whose header describes its config, models (filled by the pipeline) and datasets (`variants`)."""

    def __init__(self, cfg: CompareConfig, cache: StepCache, stats: dict[str, int],
                 variants: dict[str, tuple[str, str]], models: dict[str, ModelEntry]) -> None:
        self.cfg, self.cache, self.stats, self.variants, self.models = cfg, cache, stats, variants, models

    def report_step(self, judged: list[StepResult], name: str, tuned: str | None, extra: dict[str, Any],
                    out_root: Path) -> dict[str, Path]:
        """One report over one or more judgment sets (one per baseline model); published to out_root/NAME."""
        inputs = {"judgments": [j.key for j in judged], "name": name, "tuned": tuned, "extra": extra}

        def produce(out: Path) -> dict[str, Any]:
            files = parts.report([j.path for j in judged], name, out, tuned, extra)
            return {"files": {k: str(Path(v).relative_to(out)) for k, v in files.items()}}

        res = self.cache.run("report", name, inputs, produce)
        published: dict[str, Path] = {}
        for kind, rel in res.meta["files"].items():
            src = res.path / rel
            dst = out_root / rel
            data = src.read_bytes()
            if not dst.exists() or dst.read_bytes() != data:
                atomic_write_bytes(dst, data)
            published[kind] = dst
        return published

    def commands(self) -> list[str]:
        """The commands that produced this report's steps (this one last), from the manifest."""
        seen: list[str] = []
        for entry in self.cache.manifest().get("steps", {}).values():
            c = entry.get("command")
            if c and c not in seen:
                seen.append(c)
        if self.cfg.command and self.cfg.command not in seen:
            seen.append(self.cfg.command)
        return seen

    def describe(self, comp: Comparison) -> dict[str, Any]:
        return {
            "baseline": comp.baseline, "candidates": comp.candidates, "tuned": comp.tuned,
            "models": {k: {"args": format_model_args(e.args), "chat_template": e.chat} for k, e in self.models.items()},
            "tasks": {ds: list(v) for ds, v in self.variants.items()}, "limit": self.cfg.limit,
            "methods": self.cfg.methods, "edit": self.cfg.edit, "fit": self.cfg.fit,
            "gen_kwargs": self.cfg.gen_kwargs, "batch_size": self.cfg.batch_size, "seed": self.cfg.seed,
            "judge": self.cfg.judge, "alignez_eval": __version__,
            **({"judge_batch_size": self.cfg.judge_batch_size} if self.cfg.judge_batch_size is not None else {}),
            **({"include_path": list(self.cfg.include_path)} if self.cfg.include_path else {}),
            # only when there are some: the report step of a compare without them keeps its key
            **({"edit_files": dict(self.cfg.edit_files)} if self.cfg.edit_files else {}),
            **({"external_runs": dict(self.cfg.external_runs)} if self.cfg.external_runs else {}),
        }

    def write_manifest_summary(self) -> None:
        text = canonical_json({"ran": self.cache.ran, "skipped": self.cache.skipped, "stats": self.stats})
        atomic_write_text(self.cfg.work_dir / "last_run.json", text + "\n")  # type: ignore[operator]
