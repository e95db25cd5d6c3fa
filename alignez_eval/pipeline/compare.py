"""`compare`: models → generations → fitted edits → judgments → `reports/NAME/`, every step cached.

One loaded base model serves the unedited baseline and every edited variant (`set_edit`), so an
added method costs one fit and one generation pass, not another model load. Each step is keyed by
a hash of its inputs (see `steps`), so re-running with one more candidate or dataset runs only the
new steps, and re-running unchanged runs none. Models are loaded lazily — only when a step that
needs them is not cached — and freed before the next one is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval import __version__
from alignez_eval.atomic import atomic_write_bytes, atomic_write_text
from alignez_eval.errors import ConfigError
from alignez_eval.hashing import canonical_json, sha256_text
from alignez_eval.pipeline import parts
from alignez_eval.pipeline.generate import generate_run, task_manager
from alignez_eval.pipeline.identity import (
    format_model_args,
    model_identity,
    parse_model_args,
    queries_fingerprint,
)
from alignez_eval.pipeline.steps import StepCache, StepResult
from alignez_eval.pipeline.user_tasks import (
    broken_yaml_hint,
    check_generates,
    check_same_documents,
    is_user_task,
    normalize_include_path,
    task_source_sha,
)

logger = logging.getLogger(__name__)

BASE_SUFFIX = "_base"
# Inference-time edit settings (set_edit); everything else about an edit is a fit setting.
EDIT_SETTINGS = ("alpha", "layers", "n_layers", "positions", "gate")


@dataclass
class CompareConfig:
    base: str
    tasks: list[str]
    judge: str
    name: str
    tuned: str | None = None
    methods: list[str] = field(default_factory=lambda: ["alignez"])
    limit: int | None = None
    # which `limit` prompts: "spread" (evenly over the task's order, so a category-sorted set such as
    # alignez_embedded keeps every category) or "first" (lm-eval's --limit)
    limit_mode: str = "spread"
    edit: dict[str, Any] = field(default_factory=dict)  # alpha, layers, n_layers, positions
    fit: dict[str, Any] = field(default_factory=dict)  # energy, keywords, component, gate, ... (fit kwargs)
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    seed: int = 0
    work_dir: Path | None = None
    report_root: Path = Path("reports")
    # instruct models to edit with AlignEZ and compare with themselves unedited (Δ% vs unedited)
    edited_instruct: list[str] = field(default_factory=list)
    judge_check: bool = True
    judge_check_n: int | None = None  # prompts of the judge check (default: all of its set)
    # The judge's agreement with a reference annotator, stated in the report header: a precomputed
    # agreement.json (`alignez-eval judge-agreement`), or reference annotations (AlpacaEval
    # annotations.json / JSONL) to measure it on here, with this judge (`judge_reference_limit` pairs).
    judge_reference: Path | None = None
    judge_reference_limit: int | None = None
    # directories of the user's own task YAMLs (lm-eval's --include_path), searched after ours
    include_path: tuple[str, ...] = ()
    command: str | None = None

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("compare needs at least one task (--tasks alignez_embedded)")
        for m in self.methods:
            parts.fit_method(m)
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {self.methods}")
        if self.limit_mode not in ("spread", "first"):
            raise ConfigError(f"limit mode {self.limit_mode!r}: use spread or first")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be a positive number of prompts, got {self.limit}")
        bad = sorted(set(self.edit) - set(EDIT_SETTINGS))
        if bad:
            raise ConfigError(f"unknown edit setting(s) {bad}; inference-time settings are {EDIT_SETTINGS}")
        self.edit = {k: v for k, v in self.edit.items() if v is not None}
        self.fit = {k: v for k, v in self.fit.items() if v is not None}
        self.include_path = normalize_include_path(self.include_path)
        if self.judge_reference is not None:
            from alignez_eval.judge.agreement import is_agreement_file, load_reference

            self.judge_reference = Path(self.judge_reference)
            if not is_agreement_file(self.judge_reference):
                load_reference(self.judge_reference)  # a bad file fails now, not after generation
        if self.work_dir is None:
            self.work_dir = Path("runs") / self.name
        self.work_dir = Path(self.work_dir)
        self.report_root = Path(self.report_root)
        if self.command is None:
            self.command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None


@dataclass
class ModelEntry:
    """One model to load: `key` names it in step names; `chat` picks the task variant."""

    key: str
    args: dict[str, str]
    chat: bool
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def load_args(self) -> dict[str, str]:
        return {k: v for k, v in self.args.items() if k not in parts.EDIT_ARG_KEYS}


@dataclass
class System:
    """One column of the leaderboard: a model, with or without an edit method."""

    name: str
    model: str
    method: str | None = None


@dataclass
class Comparison:
    """One judged group → one report: a baseline system and its candidates."""

    name: str
    baseline: str
    candidates: list[str]
    tuned: str | None = None


class ModelSlot:
    """Loads a model on first use only; `close()` frees it before the next one is loaded."""

    def __init__(self, entry: ModelEntry, batch_size: int, stats: dict[str, int]) -> None:
        self.entry, self.batch_size, self.stats = entry, batch_size, stats
        self._lm: Any = None

    def get(self) -> Any:
        if self._lm is None:
            self._lm = parts.load_lm(self.entry.load_args, self.batch_size)
            self.stats["model_loads"] = self.stats.get("model_loads", 0) + 1
            self.stats[f"loads:{self.entry.key}"] = self.stats.get(f"loads:{self.entry.key}", 0) + 1
        return self._lm

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def close(self) -> None:
        if self._lm is not None:
            lm, self._lm = self._lm, None
            parts.free(lm)


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


def has_chat_template(pretrained: str) -> bool:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(pretrained)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use a chat template"
        logger.warning("could not read the tokenizer of %s (%s); using the base prompt variant", pretrained, exc)
        return False
    return bool(getattr(tok, "chat_template", None))


def task_variants(tasks: list[str], include_path: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    """dataset -> (base-model variant, chat variant). A task without a `_base` twin serves both."""
    known = set(task_manager(tuple(tasks), include_path).all_tasks)
    out: dict[str, tuple[str, str]] = {}
    for t in tasks:
        chat = t[: -len(BASE_SUFFIX)] if t.endswith(BASE_SUFFIX) and t[: -len(BASE_SUFFIX)] in known else t
        if chat not in known:
            import difflib

            pool = sorted(n for n in known if n.startswith("alignez") or include_path)
            close = difflib.get_close_matches(chat, pool, n=4)
            where = " ".join(["$(alignez-eval tasks-path)", *include_path])
            raise ConfigError(f"unknown task {t!r}{broken_yaml_hint(chat, include_path)}; " + (
                f"did you mean {', '.join(close)}?" if close else
                f"list tasks with `lm_eval ls tasks --include_path {where}`" + (
                    "" if include_path else " or add your own with --include_path DIR")))
        base = chat + BASE_SUFFIX if chat + BASE_SUFFIX in known else chat
        out[chat] = (base, chat)
    return out


def select_positions(n: int, limit: int | None, mode: str) -> list[int]:
    """Positions of the `limit` documents used, out of `n` (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    if mode == "first":
        return list(range(limit))
    return sorted({(i * n) // limit for i in range(limit)})


def model_label(args: dict[str, str]) -> str:
    p = args.get("pretrained", "model").rstrip("/")
    return Path(p).name or p


class ComparePipeline:
    """Plans and runs the steps of one compare; `sweep` reuses its pieces on a subset of prompts."""

    def __init__(self, cfg: CompareConfig) -> None:
        self.cfg = cfg
        assert cfg.work_dir is not None
        self.cache = StepCache(cfg.work_dir, command=cfg.command)
        self.stats: dict[str, int] = {"model_loads": 0}
        self.judge_cache = cfg.work_dir / "judge_cache.sqlite"
        self._judge_model: tuple[Any, Any] | None = None
        self.variants = task_variants(cfg.tasks, cfg.include_path)
        self.all_queries = {ds: self._load_queries(ds, base, chat) for ds, (base, chat) in self.variants.items()}
        tm = task_manager(tuple(n for v in self.variants.values() for n in v), cfg.include_path)
        # a user task's own files key its generations (ours are keyed by the package version)
        self.task_sources = {n: sha for v in self.variants.values() for n in v
                             if (sha := task_source_sha(tm, n)) is not None}
        self.positions = {ds: select_positions(len(q), cfg.limit, cfg.limit_mode) for ds, q in self.all_queries.items()}
        self.queries = {ds: [self.all_queries[ds][i] for i in pos] for ds, pos in self.positions.items()}
        self.models: dict[str, ModelEntry] = {}
        self._add_model("base", cfg.base, chat=False)
        if cfg.tuned:
            self._add_model("tuned", cfg.tuned, chat=None)
        self.systems: dict[str, System] = {"base": System("base", "base")}
        if cfg.tuned:
            self.systems["tuned"] = System("tuned", "tuned")
        for m in cfg.methods:
            self.systems[m] = System(m, "base", m)
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
        from alignez_eval.queries import load_queries

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

    # -- the judge: one load shared by the check and every judging step ---------------------------
    def judge_identity(self, spec: Any) -> dict[str, Any]:
        ident = {"spec": spec.identity()}
        if spec.backend in ("hf", "rm"):
            from alignez_eval.judge.backends.loading import resolve_model_path

            ident["model"] = model_identity(resolve_model_path(spec.model))
        return ident

    def loaded_judge(self, spec: Any) -> Any:
        """`spec` with its hf/rm model loaded once (and kept until `free_judge`)."""
        if spec.backend not in ("hf", "rm") or spec.model_obj is not None:
            return spec
        if self._judge_model is None:
            import time

            from alignez_eval.judge.backends.loading import load_judge_model

            t0 = time.perf_counter()
            self._judge_model = load_judge_model(spec)
            self.stats["judge_loads"] = self.stats.get("judge_loads", 0) + 1
            logger.info("judge %s loaded in %.1f s", spec.model, time.perf_counter() - t0)
        return spec.using(*self._judge_model)

    def free_judge(self) -> None:
        if self._judge_model is not None:
            jm, self._judge_model = self._judge_model, None
            parts.free(jm)

    def judge_step(self, comp: Comparison, gens: dict[tuple[str, str], StepResult], spec: Any,
                   name: str | None = None) -> StepResult:
        from alignez_eval.judge.runs import load_run

        datasets = list(self.variants)

        def sig(system: str) -> dict[str, str]:
            return {ds: gens[(system, ds)].meta["samples_sha256"] for ds in datasets}

        inputs = {"judge": self.judge_identity(spec), "margin": spec.margin, "length_debias": spec.length_debias,
                  "baseline": sig(comp.baseline),
                  "candidates": {c: sig(c) for c in comp.candidates}}

        def produce(out: Path) -> dict[str, Any]:
            baseline = merge_runs(comp.baseline, [load_run(gens[(comp.baseline, ds)].path) for ds in datasets])
            cands = {c: merge_runs(c, [load_run(gens[(c, ds)].path) for ds in datasets]) for c in comp.candidates}
            parts.judge(baseline, cands, self.loaded_judge(spec), out, self.judge_cache)
            calls = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("stats", {})
            self.stats["judge_steps"] = self.stats.get("judge_steps", 0) + 1
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(calls.get("calls", 0))
            return {"comparison": comp.name, "judge_stats": calls}

        return self.cache.run("judge", name or comp.name, inputs, produce)

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

    def judge_check_step(self, spec: Any) -> dict[str, Any] | None:
        if not self.cfg.judge_check:
            return None
        from alignez_eval.judge import judge_check

        inputs = {"judge": self.judge_identity(spec), "n": self.cfg.judge_check_n}

        def produce(out: Path) -> dict[str, Any]:
            check = judge_check(self.loaded_judge(spec), n=self.cfg.judge_check_n, cache_path=self.judge_cache)
            # per-item verdicts stay in the step directory; the report shows the summary
            atomic_write_text(out / "judge_check.json", json.dumps(check, indent=2, default=str) + "\n")
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(check.get("stats", {}).get("calls", 0))
            return {"check": {k: v for k, v in check.items() if k not in ("items", "records")}}

        return self.cache.run("judge-check", "judge", inputs, produce).meta["check"]

    def judge_agreement_step(self, spec: Any) -> dict[str, Any] | None:
        """--judge-reference: a precomputed agreement.json is read; reference annotations are judged
        here (a cached step, sharing the judge load and the judgment cache). -> the report's summary."""
        if self.cfg.judge_reference is None:
            return None
        from alignez_eval.judge.agreement import (
            agreement_extra,
            is_agreement_file,
            load_agreement,
            load_reference,
        )

        path = Path(self.cfg.judge_reference)
        if is_agreement_file(path):
            return agreement_extra(load_agreement(path))
        reference = load_reference(path)
        inputs = {"judge": self.judge_identity(spec), "margin": spec.margin, "length_debias": spec.length_debias,
                  "reference": reference.sha256,
                  "limit": self.cfg.judge_reference_limit, "seed": self.cfg.seed}

        def produce(out: Path) -> dict[str, Any]:
            from alignez_eval.judge.agreement_run import judge_agreement

            result = judge_agreement(self.loaded_judge(spec), reference, out, cache_path=self.judge_cache,
                                     limit=self.cfg.judge_reference_limit, seed=self.cfg.seed)
            self.stats["judge_calls"] = self.stats.get("judge_calls", 0) + int(result["stats"].get("calls", 0))
            return {"agreement": agreement_extra(result)}

        return self.cache.run("judge-agreement", "judge", inputs, produce).meta["agreement"]

    # -- the whole job --------------------------------------------------------------------------
    def run(self) -> CompareResult:
        from alignez_eval.judge import parse_judge_spec

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
                    for ds in self.variants:
                        edit = self.fit_step(slot, system.method, ds) if system.method else None
                        gens[(system.name, ds)] = self.gen_step(slot, system, ds, edit)
            finally:
                slot.close()
        if self.cache.world_size > 1 and self.cache.rank != 0:
            # Data parallel: this rank's share of every generation is done; rank 0 judges and reports.
            logger.info("rank %d: generation done; rank 0 judges and writes the report", self.cache.rank)
            return CompareResult({}, {}, self.cache, self.stats, gens)
        spec = parse_judge_spec(cfg.judge)
        check = self.judge_check_step(spec)
        # only when asked for: an unchanged compare keeps its report step's key
        header = {} if (agreement := self.judge_agreement_step(spec)) is None else {"judge_agreement": agreement}
        reports: dict[str, dict[str, Path]] = {}
        for comp in self.comparisons:
            judged = self.judge_step(comp, gens, spec)
            extra = {"commands": self.commands(), "versions": self.cache.versions, "judge_check": check,
                     **header, "settings": self.describe(comp)}
            reports[comp.name] = self.report_step([judged], comp.name, comp.tuned, extra, cfg.report_root)
        if self.instruct_comparisons:
            # Δ%: each instruct model edited vs itself unedited (the lab's v2 table); one report, one
            # section per model, no gap (there is no "tuned" above an instruct model here).
            judged_all = [self.judge_step(comp, gens, spec) for comp in self.instruct_comparisons]
            name = f"{cfg.name}-instruct"
            extra = {"commands": self.commands(), "versions": self.cache.versions, "judge_check": check,
                     **header, "settings": {c.name: self.describe(c) for c in self.instruct_comparisons}}
            reports[name] = self.report_step(judged_all, name, None, extra, cfg.report_root)
        self.free_judge()
        self.write_manifest_summary()
        return CompareResult(reports[cfg.name], reports, self.cache, self.stats, gens)

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
            **({"include_path": list(self.cfg.include_path)} if self.cfg.include_path else {}),
        }

    def write_manifest_summary(self) -> None:
        text = canonical_json({"ran": self.cache.ran, "skipped": self.cache.skipped, "stats": self.stats})
        atomic_write_text(self.cfg.work_dir / "last_run.json", text + "\n")  # type: ignore[operator]


def merge_runs(name: str, runs: list[Any]) -> Any:
    """One Run over several tasks (each task generated as its own cached step)."""

    samples: dict[Any, Any] = {}
    files: dict[str, Path] = {}
    notes: list[str] = []
    for r in runs:
        samples.update(r.samples)
        files.update(r.files)
        notes.extend(r.notes)
    first = runs[0]
    return dataclasses.replace(first, name=name, samples=samples, files=files, notes=notes)


def run_compare(cfg: CompareConfig) -> CompareResult:
    return ComparePipeline(cfg).run()


def key_of(obj: Any) -> str:
    return sha256_text(canonical_json(obj))
