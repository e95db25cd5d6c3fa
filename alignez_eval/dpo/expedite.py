"""The paper's second experiment in one run: does AlignEZ expedite DPO?

One preference pool is split once, disjoint by prompt, into training pairs and held-out pairs and
prompts. LoRA adapters are DPO-trained on nested shares of the training pairs (`train_dpo`, cached).
Then one `compare` judges, against the base on the held-out prompts: base + AlignEZ, every DPO model,
DPO(small shares) + AlignEZ fitted on that DPO model's own generations, and the tuned reference —
with % of the base-to-tuned gap closed. Finally every system's preference accuracy on the held-out
pairs (judge-free: `prefacc`), edited systems with their edit applied in loglikelihood too.
Outputs: compare's leaderboard in reports/NAME/ plus expedite.md / expedite.csv / expedite.png there.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignez_eval.atomic import atomic_write_text
from alignez_eval.dpo.data import count_of, read_pairs, split_pool
from alignez_eval.dpo.train import DPOSettings, train_dpo
from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_file

logger = logging.getLogger(__name__)

TASK = "dpo_heldout"
# The pool keeps the pairs whose framed prompt leaves at least this many of max_length tokens for the
# answer: TRL drops a pair whose prompt fills max_length, and would cut most answers to nothing.
MIN_ANSWER_TOKENS = 32


def fitting_pairs(pairs: list[Any], tokenizer: Any, max_prompt_tokens: int) -> list[Any]:
    kept = [p for p in pairs if len(tokenizer(p.prompt, add_special_tokens=False).input_ids) <= max_prompt_tokens]
    logger.info("pool: %d of %d pairs have a prompt of at most %d tokens", len(kept), len(pairs), max_prompt_tokens)
    if not kept:
        raise ConfigError(f"no pair's prompt fits in {max_prompt_tokens} tokens; raise --dpo-max-length")
    return kept


@dataclass
class ExpediteConfig:
    model: str  # base model dir or embedded name
    pref_data: Path
    judge: str
    name: str = "dpo_expedite"
    tuned: str | None = None  # model_args of the tuned reference
    pool: int = 400  # training pool; shares are of this
    shares: list[str] = field(default_factory=lambda: ["5%", "25%", "100%"])
    edit_shares: list[str] | None = None  # DPO models that also get +AlignEZ (default: the smallest share)
    eval_pairs: int = 200
    eval_prompts: int = 48
    split_seed: int = 0
    dpo: DPOSettings = field(default_factory=DPOSettings)
    dtype: str = "float32"
    max_gen_toks: int = 96
    batch_size: int = 16
    fit: dict[str, Any] = field(default_factory=dict)
    edit: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    work_dir: Path | None = None
    report_root: Path = Path("reports")
    judge_check: bool = True
    judge_check_n: int | None = None
    judge_reference: Path | None = None
    train_only: bool = False  # stop after the adapters are trained
    limit: int | None = None  # judge (and fit AlignEZ on) this many of the held-out prompts, spread
    prefacc_pairs: int | None = None  # score only the first N held-out pairs (None: all)
    judge_enabled: bool = True  # False: fits, generations and preference accuracy only (no judge, no report)
    generate_enabled: bool = True  # False: fits and preference accuracy only (implies no judge)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir or Path("runs") / self.name)
        counts = [count_of(s, self.pool) for s in self.shares]
        if counts != sorted(set(counts)):
            raise ConfigError(f"--shares {','.join(self.shares)} give {counts} pairs of {self.pool}: list distinct "
                              "shares from small to large")
        self.edit_shares = self.edit_shares if self.edit_shares is not None else self.shares[:1]
        unknown = [s for s in self.edit_shares if s not in self.shares]
        if unknown:
            raise ConfigError(f"--edit-shares {unknown} are not among --shares {self.shares}")


def label_of(share: str, n: int) -> str:
    s = share.strip().rstrip("%").replace(".", "p")
    return f"dpo-{s}pct" if share.strip().endswith("%") else f"dpo-{n}"


def run_expedite(cfg: ExpediteConfig) -> dict[str, Any]:
    from alignez_eval.dpo.heldout_task import write_heldout_task
    from alignez_eval.pipeline import parts
    from alignez_eval.pipeline.compare import CompareConfig, ComparePipeline

    assert cfg.work_dir is not None
    base = parts.resolve_pretrained({"pretrained": cfg.model})["pretrained"]
    if not Path(base).expanduser().is_dir():
        raise ConfigError(f"--model {cfg.model!r} is neither a directory nor an embedded model name")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = fitting_pairs(read_pairs(cfg.pref_data), tokenizer, cfg.dpo.max_length - MIN_ANSWER_TOKENS)
    data_sha = sha256_file(cfg.pref_data)
    split = split_pool(pairs, n_train=cfg.pool, n_eval_pairs=cfg.eval_pairs, n_eval_prompts=cfg.eval_prompts,
                       seed=cfg.split_seed)
    logger.info("pool split (seed %d): %s", cfg.split_seed, split.describe())

    adapters: dict[str, tuple[str, Path, dict[str, Any]]] = {}
    for share in cfg.shares:
        n = count_of(share, cfg.pool)
        label = label_of(share, n)
        out = cfg.work_dir / "adapters" / label
        manifest = train_dpo(base, split.train[:n], out, cfg.dpo, data_sha256=data_sha, data_path=str(cfg.pref_data))
        adapters[label] = (share, out, manifest)
    if cfg.train_only:
        return {"adapters": {k: str(v[1]) for k, v in adapters.items()}}

    tasks = write_heldout_task(cfg.work_dir / "tasks", TASK, split.eval_prompts)
    model_args = f"pretrained={base},dtype={cfg.dtype}"
    ccfg = CompareConfig(
        base=model_args, tuned=cfg.tuned, tasks=[TASK], judge=cfg.judge, name=cfg.name, methods=["alignez"],
        limit=cfg.limit, edit=dict(cfg.edit), fit=dict(cfg.fit), gen_kwargs={"max_gen_toks": cfg.max_gen_toks},
        batch_size=cfg.batch_size, seed=cfg.seed, work_dir=cfg.work_dir / "compare", report_root=cfg.report_root,
        judge_check=cfg.judge_check, judge_check_n=cfg.judge_check_n, judge_reference=cfg.judge_reference,
        include_path=(str(tasks),),
        extra_systems=[(label, f"{model_args},peft={path}", share in (cfg.edit_shares or []))
                       for label, (share, path, _m) in adapters.items()],
    )
    pipeline = ComparePipeline(ccfg)
    from alignez_eval.dpo.prefacc import truncate_pairs

    # margins on what DPO saw: prompt + answer cut to max_length tokens of the base tokenizer
    eval_pairs = truncate_pairs(split.eval_pairs[: cfg.prefacc_pairs], tokenizer, cfg.dpo.max_length)
    margins = generate_and_score(pipeline, eval_pairs, cfg)
    if not (cfg.judge_enabled and cfg.generate_enabled):
        accuracy = accuracies(margins, cfg.seed)
        summary = write_summary(cfg, None, accuracy, adapters, split.describe())
        return {"margins": margins, "accuracy": accuracy, "summary": summary}
    result = pipeline.run()  # every fit and generation is cached by now: this judges and reports
    accuracy = accuracies(margins, cfg.seed)
    summary = write_summary(cfg, result.report, accuracy, adapters, split.describe())
    return {"report": result.report, "summary": summary, "accuracy": accuracy}


def generate_and_score(pipeline: Any, eval_pairs: list[Any], cfg: ExpediteConfig) -> dict[str, list[float]]:
    """Two passes over the models, each model loaded once per pass: first every system's fit and its
    margins on the held-out pairs (the judge-free result, complete before any generation), then
    every system's generations (compare's own cached steps, which `compare` then only judges)."""
    from alignez_eval.dpo.prefacc import pair_margins
    from alignez_eval.pipeline import parts
    from alignez_eval.pipeline.compare import ModelSlot

    pair_ids = [p.id for p in eval_pairs]
    ds = next(iter(pipeline.variants))
    margins: dict[str, list[float]] = {}
    edits: dict[str, Any] = {}
    for generate in (False, True) if cfg.generate_enabled else (False,):
        for key, entry in pipeline.models.items():
            slot = ModelSlot(entry, cfg.batch_size, pipeline.stats)
            try:
                for system in (s for s in pipeline.systems.values() if s.model == key):
                    if system.method and system.name not in edits:
                        edits[system.name] = pipeline.fit_step(slot, system.method, ds)
                    edit = edits.get(system.name)
                    if generate:
                        pipeline.gen_step(slot, system, ds, edit)
                        continue
                    settings = dict(cfg.edit) if edit is not None else {}
                    inputs = {"model": entry.identity, "load_args": {k: v for k, v in entry.load_args.items()
                                                                     if k != "pretrained"},
                              "edit": edit.meta["edit_sha256"] if edit is not None else None,
                              "edit_settings": settings, "pairs": pair_ids}

                    def produce(out: Path, slot=slot, edit=edit, settings=settings) -> dict[str, Any]:
                        lm = slot.get()
                        parts.set_edit(lm, edit.path / "edit.safetensors" if edit is not None else None, settings)
                        return {"margins": pair_margins(lm, eval_pairs)}

                    margins[system.name] = pipeline.cache.run("prefacc", system.name, inputs, produce).meta["margins"]
            finally:
                slot.close()
        if not generate:
            logger.info("preference accuracy: %s", {k: round(v["accuracy"], 3)
                                                     for k, v in accuracies(margins, cfg.seed).items()})
    return margins


def accuracies(margins: dict[str, list[float]], seed: int = 0) -> dict[str, dict[str, Any]]:
    from alignez_eval.dpo.prefacc import preference_accuracy

    base = margins["base"]
    return {name: preference_accuracy(m, base, seed=seed).to_dict() | {"mean_margin": sum(m) / len(m)}
            for name, m in margins.items()}


def _read_leaderboard(csv_path: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(Path(csv_path).read_text(encoding="utf-8"))))
    return {r["candidate"]: r for r in rows if r.get("dataset") == TASK}


def _f(v: Any, pct: bool = False) -> str:
    if v in (None, ""):
        return "—"
    x = float(v)
    return f"{100 * x:.1f}" if pct else f"{x:+.1f}"


def write_summary(cfg: ExpediteConfig, report: dict[str, Path] | None, accuracy: dict[str, dict[str, Any]],
                  adapters: dict[str, tuple[str, Path, dict[str, Any]]], split: dict[str, int]) -> dict[str, Path]:
    """expedite.{md,csv,png}: compare's Net and gap closed (when judged; `report` None: not judged) beside
    every system's preference accuracy."""
    from alignez_eval.report.leaderboard import safe_name

    board = _read_leaderboard(report["csv"]) if report is not None else {}
    out = Path(report["md"]).parent if report is not None else Path(cfg.report_root) / safe_name(cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    order = ["base"] + [s for s in accuracy if s not in ("base", "tuned")] + (["tuned"] if "tuned" in accuracy else [])
    rows = []
    for s in order:
        b, a = board.get(s, {}), accuracy[s]
        rows.append({
            "system": s, "n_judged": b.get("n", ""), "net": b.get("net", ""), "net_lo": b.get("net_lo", ""),
            "net_hi": b.get("net_hi", ""), "gap_closed": b.get("gap_closed", ""),
            "gap_closed_lo": b.get("gap_closed_lo", ""), "gap_closed_hi": b.get("gap_closed_hi", ""),
            "gap_status": b.get("gap_status", ""), "pref_acc": a["accuracy"] if s != "base" else "",
            "pref_acc_lo": a["ci_low"] if s != "base" else "", "pref_acc_hi": a["ci_high"] if s != "base" else "",
            "mean_margin": a["mean_margin"], "n_pairs": a["n"],
        })
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    paths = {"csv": out / "expedite.csv", "md": out / "expedite.md", "png": out / "expedite.png"}
    atomic_write_text(paths["csv"], buf.getvalue())
    lines = [f"# {cfg.name}: AlignEZ on top of DPO\n",
             f"Pool split (seed {cfg.split_seed}, disjoint by prompt): {split['train']} training pairs, "
             f"{split['eval_pairs']} held-out pairs (preference accuracy), {split['eval_prompts']} held-out "
             "prompts (judged).\n",
             "| system | Net vs base [95% CI] | gap closed % [95% CI] | pref. accuracy % [95% CI] | mean margin (nats) |",
             "|---|---|---|---|---|"]
    for r in rows:
        net = "—" if r["net"] == "" else f"{_f(r['net'])} [{_f(r['net_lo'])}, {_f(r['net_hi'])}]"
        gap = ("—" if r["gap_closed"] == "" else
               f"{float(r['gap_closed']):.0f} [{float(r['gap_closed_lo']):.0f}, {float(r['gap_closed_hi']):.0f}]"
               if r["gap_closed_lo"] != "" else r["gap_status"] or "—")
        if r["gap_closed"] == "" and r["gap_status"] not in ("", "defined"):
            gap = f"undefined ({r['gap_status']})"
        acc = "—" if r["pref_acc"] == "" else (f"{_f(r['pref_acc'], True)} [{_f(r['pref_acc_lo'], True)}, "
                                                f"{_f(r['pref_acc_hi'], True)}]")
        lines.append(f"| {r['system']} | {net} | {gap} | {acc} | {float(r['mean_margin']):+.3f} |")
    if report is None:
        lines += ["", "Not judged in this run (`--no-judge`): Net and gap closed are empty."]
    lines += ["", "Net = Win% − Lose% against the base (judge: see leaderboard.md); preference accuracy = share "
              "of held-out pairs whose log-likelihood margin (chosen − rejected, answer tokens) exceeds the base "
              "model's (DPO's implicit-reward accuracy; 50% ≈ no change in preference).", "",
              "| adapter | share | pairs | steps | train s | CPU s/pair |", "|---|---|---|---|---|---|"]
    for label, (share, _p, m) in adapters.items():
        lines.append(f"| {label} | {share} | {m['n_pairs']} | {m['steps']} | {m['train_seconds']} | "
                     f"{m.get('cpu_seconds_per_pair', '—')} |")
    lines += ["", f"DPO settings: `{json.dumps(asdict(cfg.dpo))}`", "", "![expedite](expedite.png)", ""]
    atomic_write_text(paths["md"], "\n".join(lines))
    _plot(rows, paths["png"], cfg.name)
    return paths


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["system"] != "base"]
    names = [r["system"] for r in shown]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 2), sharey=True)
    for ax, key, label in ((axes[0], "net", "Net vs base (points)"), (axes[1], "pref_acc", "preference accuracy (%)")):
        vals, lo, hi = [], [], []
        for r in shown:
            scale = 100 if key == "pref_acc" else 1
            v = float(r[key]) * scale if r[key] != "" else float("nan")
            vals.append(v)
            lo.append(v - float(r[f"{key}_lo"]) * scale if r[f"{key}_lo"] != "" else 0)
            hi.append(float(r[f"{key}_hi"]) * scale - v if r[f"{key}_hi"] != "" else 0)
        ax.barh(names, vals, xerr=[lo, hi], color="#4c72b0", capsize=3)
        if all(v != v for v in vals):  # all NaN: this half did not run
            ax.text(0.5, 0.5, "not judged", transform=ax.transAxes, ha="center", va="center", color="gray")
        ax.axvline(50 if key == "pref_acc" else 0, color="black", lw=0.8)
        ax.set_xlabel(label)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as tmp:
        fig.savefig(tmp.name, dpi=110)
    plt.close(fig)
    Path(tmp.name).replace(path)
