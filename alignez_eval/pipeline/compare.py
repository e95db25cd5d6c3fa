"""`compare`: models → generations → fitted edits → judgments → `reports/NAME/`, every step cached.

One loaded base model serves the unedited baseline and every edited variant (`set_edit`), so an
added method costs one fit and one generation pass, not another model load. Each step is keyed by
a hash of its inputs (see `steps`), so re-running with one more candidate or dataset runs only the
new steps, and re-running unchanged runs none. Models are loaded lazily — only when a step that
needs them is not cached — and freed before the next one is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_file
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.compare_config import CompareConfig
from alignez_eval.pipeline.external import write_external_samples
from alignez_eval.pipeline.generate import generate_run, task_manager
from alignez_eval.pipeline.identity import (
    format_model_args,
    model_identity,
    parse_model_args,
    queries_fingerprint,
)
from alignez_eval.pipeline.judging import JudgeSteps, merge_runs
from alignez_eval.pipeline.plan import (
    BASE_SUFFIX,
    Comparison,
    ModelEntry,
    ModelSlot,
    System,
    has_chat_template,
    model_label,
    select_positions,
    task_variants,
)
from alignez_eval.pipeline.reporting import ReportSteps
from alignez_eval.pipeline.steps import StepCache, StepResult
from alignez_eval.pipeline.user_tasks import (
    check_generates,
    check_same_documents,
    is_user_task,
    task_source_sha,
)
from alignez_eval.queries import load_queries

logger = logging.getLogger(__name__)

# Re-exported: `sweep` and the tests build on these pieces.
__all__ = ["BASE_SUFFIX", "CompareConfig", "ComparePipeline", "CompareResult", "Comparison", "ModelEntry",
           "ModelSlot", "System", "merge_runs", "run_compare", "select_positions", "task_variants"]


@dataclass
class CompareResult:
    report: dict[str, Path]
    reports: dict[str, dict[str, Path]]
    cache: StepCache
    stats: dict[str, int]
    gens: dict[tuple[str, str], StepResult]

    @property
    def ran(self) -> list[str]:
        return self.cache.ran



class ComparePipeline:
    """Plans and runs the steps of one compare; `sweep` reuses its pieces on a subset of prompts.

    Composed of its judge steps (`self.judging`) and report steps (`self.reporting`), which share
    its config, step cache, stats and (filled here) models, but not its code."""

    def __init__(self, cfg: CompareConfig) -> None:
        self.cfg = cfg
        assert cfg.work_dir is not None
        self.cache = StepCache(cfg.work_dir, command=cfg.command)
        self.stats: dict[str, int] = {"model_loads": 0}
        self.variants = task_variants(cfg.tasks, cfg.include_path)
        self.all_queries = {ds: self._load_queries(ds, base, chat) for ds, (base, chat) in self.variants.items()}
        tm = task_manager(tuple(n for v in self.variants.values() for n in v), cfg.include_path)
        # a user task's own files key its generations (ours are keyed by the package version)
        self.task_sources = {n: sha for v in self.variants.values() for n in v
                             if (sha := task_source_sha(tm, n)) is not None}
        self.positions = {ds: select_positions(len(q), cfg.limit, cfg.limit_mode) for ds, q in self.all_queries.items()}
        self.queries = {ds: [self.all_queries[ds][i] for i in pos] for ds, pos in self.positions.items()}
        self.models: dict[str, ModelEntry] = {}
        self.judging = JudgeSteps(cfg, self.cache, self.stats, self.variants, cfg.work_dir / "judge_cache.sqlite")
        self.reporting = ReportSteps(cfg, self.cache, self.stats, self.variants, self.models)
        self._add_model("base", cfg.base, chat=False)
        if cfg.tuned:
            self._add_model("tuned", cfg.tuned, chat=None)
        self.systems: dict[str, System] = {"base": System("base", "base")}
        if cfg.tuned:
            self.systems["tuned"] = System("tuned", "tuned")
        for m in cfg.methods:
            self.systems[m] = System(m, "base", m)
        for label, path in cfg.edit_files:
            self.systems[label] = System(label, "base", edit_file=path)
        for label, path in cfg.external_runs:
            self.systems[label] = System(label, "", run=path)
        for label, spec, also_alignez in cfg.extra_systems:
            self._add_model(label, spec, chat=False)
            self.systems[label] = System(label, label)
            if also_alignez:
                self.systems[f"{label}+alignez"] = System(f"{label}+alignez", label, "alignez")
        self.comparisons = [Comparison(cfg.name, "base", [s for s in self.systems if s != "base"],
                                       tuned="tuned" if cfg.tuned else None)]
        self.instruct_comparisons: list[Comparison] = []
        for spec in cfg.edited_instruct:
            args = parse_model_args(spec)
            label = model_label(parts.resolve_pretrained(args))
            self._add_model(label, spec, chat=None)
            self.systems[label] = System(label, label)
            self.systems[f"{label}+alignez"] = System(f"{label}+alignez", label, "alignez")
            self.instruct_comparisons.append(Comparison(f"{cfg.name}-{label}", label, [f"{label}+alignez"]))

    # -- planning -------------------------------------------------------------------------------
    def _load_queries(self, dataset: str, base: str, chat: str) -> list[dict[str, Any]]:
        """The chat variant's queries; a user's task is also checked to generate and to list the
        same documents, under the same ids, in both variants."""

        inc = self.cfg.include_path
        queries = load_queries(chat, include_path=inc)
        tm = task_manager((base, chat), inc)
        if is_user_task(tm, base) or is_user_task(tm, chat):
            for name in {base, chat}:
                check_generates(tm, name)
            base_queries = queries if base == chat else load_queries(base, include_path=inc)
            check_same_documents(dataset, base, chat, base_queries, queries)
        return queries

    def _add_model(self, key: str, spec: str, chat: bool | None) -> None:
        args = parts.resolve_pretrained(parse_model_args(spec))
        if "pretrained" not in args:
            raise ConfigError(f"model_args {spec!r} name no model; add pretrained=DIR_OR_HUB_ID")
        if key in self.models:
            raise ConfigError(f"model {key!r} given twice")
        if chat is None:
            chat = has_chat_template(args["pretrained"])
        ident = model_identity(args["pretrained"], args.get("revision"))
        if args.get("peft"):
            from alignez_eval.adapters import adapter_identity

            ident = {**ident, "adapter": adapter_identity(args["peft"])}
        self.models[key] = ModelEntry(key, args, chat, ident)

    def task_for(self, system: System, dataset: str) -> str:
        base, chat = self.variants[dataset]
        return chat if self.models[system.model].chat else base

    def _edit_settings(self) -> dict[str, Any]:
        return dict(self.cfg.edit)

    def fit_inputs(self, model: str, method: str, dataset: str, fit_settings: dict[str, Any]) -> dict[str, Any]:
        e = self.models[model]
        return {"model": e.identity, "load_args": {k: v for k, v in e.load_args.items() if k != "pretrained"},
                "method": method, "fit": fit_settings, "queries": queries_fingerprint(self.queries[dataset]),
                "seed": self.cfg.seed}

    def gen_inputs(self, system: System, dataset: str, edit_sha: str | None, edit_settings: dict[str, Any],
                   doc_ids: list[str] | None = None) -> dict[str, Any]:
        e = self.models[system.model]
        qs = self.queries[dataset] if doc_ids is None else [q for q in self.queries[dataset] if q["id"] in set(doc_ids)]
        task = self.task_for(system, dataset)
        inputs = {"model": e.identity, "load_args": {k: v for k, v in e.load_args.items() if k != "pretrained"},
                  "edit": edit_sha, "edit_settings": edit_settings if edit_sha else None,
                  "task": task, "chat": e.chat, "queries": queries_fingerprint(qs),
                  "gen_kwargs": self.cfg.gen_kwargs, "seed": self.cfg.seed}
        if task in self.task_sources:  # only then: our tasks' keys (and their caches) stay as they were
            inputs["task_source"] = self.task_sources[task]
        return inputs

    # -- steps ----------------------------------------------------------------------------------
    def fit_step(self, slot: ModelSlot, method: str, dataset: str, fit_settings: dict[str, Any] | None = None) -> StepResult:
        settings = dict(self.cfg.fit if fit_settings is None else fit_settings)
        inputs = self.fit_inputs(slot.entry.key, method, dataset, settings)

        def produce(out: Path) -> dict[str, Any]:
            meta = parts.fit_edit(slot.get(), self.queries[dataset], method, {"seed": self.cfg.seed, **settings},
                                  out / "edit.safetensors", model_name=model_label(slot.entry.args))
            self.stats["fits"] = self.stats.get("fits", 0) + 1
            return meta

        return self.cache.run("fit", f"{slot.entry.key}-{method}/{dataset}", inputs, produce)

    def gen_step(self, slot: ModelSlot, system: System, dataset: str, edit: StepResult | None,
                 edit_settings: dict[str, Any] | None = None, doc_ids: list[str] | None = None,
                 name: str | None = None) -> StepResult:
        settings = dict(self._edit_settings() if edit_settings is None else edit_settings)
        edit_sha = edit.meta["edit_sha256"] if edit is not None else None
        inputs = self.gen_inputs(system, dataset, edit_sha, settings, doc_ids)
        task = inputs["task"]
        entry = slot.entry

        def produce(out: Path) -> dict[str, Any]:
            lm = slot.get()
            edit_path = edit.path / "edit.safetensors" if edit is not None else None
            parts.set_edit(lm, edit_path, settings if edit is not None else {})
            recorded = {**entry.args, "edit": str(edit_path) if edit_path else "none",
                        **({k: v for k, v in settings.items()} if edit is not None else {})}
            pos = {q["id"]: i for i, q in enumerate(self.all_queries[dataset])}
            wanted = doc_ids if doc_ids is not None else [q["id"] for q in self.queries[dataset]]
            indices = sorted(pos[d] for d in wanted)
            meta = generate_run(lm, task=task, out_dir=out, model_args=format_model_args(recorded),
                                doc_indices=indices, apply_chat_template=entry.chat,
                                gen_kwargs=self.cfg.gen_kwargs, seed=self.cfg.seed,
                                include_path=self.cfg.include_path)
            self.stats["generations"] = self.stats.get("generations", 0) + 1
            return {**meta, "system": system.name}

        return self.cache.run("gen", name or f"{system.name}/{task}", inputs, produce, collective=True)

    def import_edit_step(self, slot: ModelSlot, system: System) -> StepResult:
        """An edit file of another tool, read against the loaded model and saved as an artifact, so the
        generation step applies it like any fitted edit (and its key follows the file's bytes)."""
        assert system.edit_file is not None
        src = Path(system.edit_file)
        inputs = {"model": slot.entry.identity, "file": src.name, "file_sha256": sha256_file(src)}

        def produce(out: Path) -> dict[str, Any]:
            # lazy: pulls torch (5.6 s, measured on AMD EPYC, 2 cores); the CLI imports this module
            from alignez_eval.editing.interop import load_edit

            lm = slot.get()
            edit = load_edit(src, lm.model, lm.layers_path)
            sha = edit.save(out / "edit.safetensors")
            return {"edit_sha256": sha, "method": edit.meta.method, "rule": edit.meta.rule,
                    "source": {"path": str(src), "sha256": inputs["file_sha256"],
                               **edit.meta.fit.get("source", {"format": "alignez-eval"})}}

        return self.cache.run("import-edit", f"{slot.entry.key}-{system.name}", inputs, produce)

    def external_run_step(self, system: System, dataset: str) -> StepResult:
        """A finished run of another engine, cut to this dataset's prompts and written as a samples
        file, so judging reads it like our own generations; where it came from goes with it."""
        assert system.run is not None
        src = Path(system.run)
        files = [src] if src.is_file() else sorted(src.rglob("*.json*"))
        task = self.task_for(self.systems["base"], dataset)
        inputs = {"run": {str(f.relative_to(src) if f != src else f.name): sha256_file(f) for f in files},
                  "task": task, "queries": queries_fingerprint(self.queries[dataset])}

        def produce(out: Path) -> dict[str, Any]:
            return write_external_samples(src, system.name, task, self.queries[dataset], out)

        return self.cache.run("external", f"{system.name}/{dataset}", inputs, produce)

    # -- the whole job --------------------------------------------------------------------------
    def run(self) -> CompareResult:
        cfg = self.cfg
        gens: dict[tuple[str, str], StepResult] = {}
        n_steps = sum(1 for s in self.systems.values() for _ in self.variants) + \
            sum(1 for s in self.systems.values() if s.method for _ in self.variants)
        logger.info("compare %s: %d datasets, systems %s, ~%d generation/fit steps + judging; work dir %s",
                    cfg.name, len(self.variants), ", ".join(self.systems), n_steps, cfg.work_dir)
        for key, entry in self.models.items():
            slot = ModelSlot(entry, cfg.batch_size, self.stats)
            try:
                for system in (s for s in self.systems.values() if s.model == key):
                    imported = self.import_edit_step(slot, system) if system.edit_file else None
                    for ds in self.variants:
                        edit = self.fit_step(slot, system.method, ds) if system.method else imported
                        gens[(system.name, ds)] = self.gen_step(slot, system, ds, edit)
            finally:
                slot.close()
        for system in (s for s in self.systems.values() if s.run is not None):
            for ds in self.variants:
                gens[(system.name, ds)] = self.external_run_step(system, ds)
        if self.cache.world_size > 1 and self.cache.rank != 0:
            # Data parallel: this rank's share of every generation is done; rank 0 judges and reports.
            logger.info("rank %d: generation done; rank 0 judges and writes the report", self.cache.rank)
            return CompareResult({}, {}, self.cache, self.stats, gens)
        spec = cfg.judge_spec()
        check = self.judging.judge_check_step(spec)
        # only when asked for: an unchanged compare keeps its report step's key
        header = {} if (agreement := self.judging.judge_agreement_step(spec)) is None else {"judge_agreement": agreement}
        reports: dict[str, dict[str, Path]] = {}
        for comp in self.comparisons:
            judged = self.judging.judge_step(comp, gens, spec)
            extra = {"commands": self.reporting.commands(), "versions": self.cache.versions, "judge_check": check,
                     **header, "settings": self.reporting.describe(comp)}
            reports[comp.name] = self.reporting.report_step([judged], comp.name, comp.tuned, extra, cfg.report_root)
        if self.instruct_comparisons:
            # Δ%: each instruct model edited vs itself unedited (the lab's v2 table); one report, one
            # section per model, no gap (there is no "tuned" above an instruct model here).
            judged_all = [self.judging.judge_step(comp, gens, spec) for comp in self.instruct_comparisons]
            name = f"{cfg.name}-instruct"
            extra = {"commands": self.reporting.commands(), "versions": self.cache.versions, "judge_check": check,
                     **header, "settings": {c.name: self.reporting.describe(c) for c in self.instruct_comparisons}}
            reports[name] = self.reporting.report_step(judged_all, name, None, extra, cfg.report_root)
        self.judging.free_judge()
        self.reporting.write_manifest_summary()
        return CompareResult(reports[cfg.name], reports, self.cache, self.stats, gens)



def run_compare(cfg: CompareConfig) -> CompareResult:
    return ComparePipeline(cfg).run()
