"""When does AlignEZ work, and why: the study behind reports/when_it_works/ (issue 23).

Stages (each a cached `compare`, sharing one work dir, so a stage that adds systems only runs those):
  headline   AlpacaEval instructions (local JSON): gemma-3-270m base vs AlignEZ v2 (paper form) with
             SmolLM2-135M-Instruct as the tuned reference (% gap closed), and the instruct models
             edited vs themselves (Δ%, the v2 protocol)
  ablations  on fewer prompts of the same set: v1, CAA, ITI (self-generated), the flipped gate,
             α = 2, top-1 layer, and v2 / CAA / ITI fitted on real AlpacaEval GPT-4 pairs of other
             instructions (--edit-file)
  harmless   HH-RLHF harmless-base first turns, keywords=harmless, judged by the default judge and by
             the HH head
  why        per-query gain against pair quality and gate activity (reads the runs above)

  python bench/when_it_works.py --data ../shared/data --stage all          # everything, in order
  python bench/when_it_works.py --data ../shared/data --stage headline --limit 300

Runs go to runs/when_it_works (not committed); reports to reports/when_it_works/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignez_eval.defaults import DEFAULT_JUDGE, DEFAULT_JUDGE_AGREEMENT  # noqa: E402
from alignez_eval.package import tasks_path  # noqa: E402

logger = logging.getLogger("when_it_works")
BASE = "gemma-3-270m"
TUNED = "smollm2-135m-instruct"
INSTRUCT = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
HH_JUDGE = "scorer:hh-harmless-smollm2"
GEN = {"max_gen_toks": 64}
# self-generation is the costliest stage; the demo's shortened budget (reports/demo)
FIT = {"answer_tokens": 64, "char_tokens": 32, "gen_batch_size": 32, "act_batch_size": 32}
# The paper self-generates on every test prompt; here every fit self-generates on the first FIT_LIMIT
# evaluated prompts (7.3 s a query for gemma-3-270m on a 2-core AVX2 CPU: 300 would take 36 min a fit)
FIT_LIMIT = 100
# relative to the repository (main() runs there), so reports name run paths as a user would give them
WORK = Path("runs") / "when_it_works"
REPORTS = Path("reports") / "when_it_works"


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                platform.processor())
    flags = "AVX512-BF16" if "avx512_bf16" in text else ("AVX2 only" if "avx2" in text else "no AVX2")
    return f"{name}, {os.cpu_count()} cores, {flags}"


def write_tasks(data: Path) -> Path:
    """User tasks over the local copies: AlpacaEval's 805 instructions, HH-RLHF harmless-base test."""
    d = WORK / "tasks"
    d.mkdir(parents=True, exist_ok=True)
    tp = Path(tasks_path())
    alpaca = (data / "alpaca_eval" / "model_outputs" / "text_davinci_003.json").resolve()
    hh = (data / "hh-rlhf" / "harmless-base" / "test.jsonl.gz").resolve()
    files = {
        "study_alpaca": (f"include: {tp / 'alpaca_eval.yaml'}", alpaca, "eval"),
        "study_alpaca_base": (f"include: [{tp / 'alpaca_eval.yaml'}, {tp / '_alignez_base.yaml'}]", alpaca, "eval"),
        "study_hh": (f"include: {tp / 'hh_rlhf_harmless.yaml'}", hh, "test"),
        "study_hh_base": (f"include: [{tp / 'hh_rlhf_harmless.yaml'}, {tp / '_alignez_base.yaml'}]", hh, "test"),
    }
    for name, (include, path, split) in files.items():
        text = f"{include}\ntask: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    {split}: {path}\n"
        if "hh" in name:
            text += "test_split: test\n"
        (d / f"{name}.yaml").write_text(text)
    return d


def real_pairs(data: Path, exclude: set[str], n: int, out: Path) -> Path:
    """AlpacaEval GPT-4 preferences as (prompt, chosen, rejected), on instructions not evaluated here."""
    rows = [json.loads(x) for x in (data / "alpaca_eval" / "annotations_gpt4_dev.jsonl").read_text().splitlines()]
    seen: set[str] = set()
    pairs = []
    for r in rows:
        p = r.get("preference")
        if r["instruction"] in exclude or r["instruction"] in seen or p not in (1, 2, 1.0, 2.0):
            continue
        seen.add(r["instruction"])
        chosen, rejected = (r["output_1"], r["output_2"]) if int(p) == 1 else (r["output_2"], r["output_1"])
        pairs.append({"prompt": r["instruction"], "chosen": chosen, "rejected": rejected})
        if len(pairs) >= n:
            break
    out.write_text("".join(json.dumps(x) + "\n" for x in pairs))
    return out


def evaluated_instructions(data: Path, limit: int) -> set[str]:
    from alignez_eval.pipeline.compare import select_positions

    rows = json.loads((data / "alpaca_eval" / "model_outputs" / "text_davinci_003.json").read_text())
    return {rows[i]["instruction"] for i in select_positions(len(rows), limit, "spread")}


def fit_real(method: str, pairs: Path, out: Path) -> Path:
    """A fit on real pairs (no self-generation), on the base model, cached by content."""
    if out.exists():
        return out
    import torch  # noqa: F401 -- loads before transformers' models

    from alignez_eval.commands.fit import load_model
    from alignez_eval.fitting import FitSettings, run_fit, write_outputs

    model, tok = load_model({"pretrained": BASE, "dtype": "float32"})
    res = run_fit(model, tok, None, FitSettings.from_mapping({"method": method, **FIT}), pref_data=str(pairs),
                  model_name=BASE)
    write_outputs(res, out)
    return out


def fit_on_headline_pairs(method: str, tasks_dir: Path, out: Path, gate: str | None = None) -> Path:
    """A fit on the headline's own self-generated pairs (its first FIT_LIMIT prompts): the generation is
    a cache hit, so v1 / CAA / the flipped gate cost one activation pass each, not another self-generation."""
    if out.exists():
        return out
    from alignez_eval.commands.fit import load_model
    from alignez_eval.fitting import FitSettings, run_fit, write_outputs
    from alignez_eval.pipeline.compare import select_positions
    from alignez_eval.queries import load_queries

    queries = load_queries("study_alpaca", include_path=(str(tasks_dir),))
    chosen = [queries[i] for i in select_positions(len(queries), 300, "spread")]
    model, tok = load_model({"pretrained": BASE, "dtype": "float32"})
    settings = {"seed": 0, **FIT, "limit": FIT_LIMIT, "method": method, **({"gate": gate} if gate else {})}
    res = run_fit(model, tok, chosen, FitSettings.from_mapping(settings), model_name=BASE)
    logger.info("fit %s%s on the headline pairs: generation %s", method, f" gate={gate}" if gate else "",
                "reused" if "generate_answers" not in res.timings else f"{res.timings['generate_answers']:.0f} s")
    write_outputs(res, out)
    return out


def compare(name: str, task: str, limit: int, tasks_dir: Path, *, methods: list[str], judge: str = DEFAULT_JUDGE,
            tuned: str | None = None, instruct: tuple[str, ...] = (), fit: dict[str, Any] | None = None,
            edit: dict[str, Any] | None = None, edit_files: list[tuple[str, str]] | None = None) -> Any:
    from alignez_eval.pipeline.compare import CompareConfig, run_compare

    cfg = CompareConfig(
        base=f"pretrained={BASE},dtype=float32", tuned=f"pretrained={tuned},dtype=float32" if tuned else None,
        tasks=[task], judge=judge, name=name, methods=methods, limit=limit, gen_kwargs=dict(GEN), batch_size=32,
        fit={**FIT, **(fit or {})}, edit=dict(edit or {}), work_dir=WORK, report_root=REPORTS,
        edited_instruct=[f"pretrained={m},dtype=float32" for m in instruct], judge_check_n=4,
        judge_reference=DEFAULT_JUDGE_AGREEMENT if judge == DEFAULT_JUDGE else None,
        include_path=(str(tasks_dir),), edit_files=list(edit_files or []),
        command=f"python bench/when_it_works.py (stage {name})")
    t0 = time.time()
    res = run_compare(cfg)
    logger.info("%s: %.0f s, steps run %d, skipped %d", name, time.time() - t0, len(res.ran), len(res.cache.skipped))
    return res


def steps() -> list[dict[str, Any]]:
    """Every finished step of the study's work dir (kind, name, inputs, meta, seconds, dir)."""
    out = []
    for f in sorted(WORK.glob("*/*/step.json")):
        rec = json.loads(f.read_text())
        rec["dir"] = f.parent
        out.append(rec)
    return out


def _gain(verdict: str) -> float | None:
    return {"win": 1.0, "tie": 0.0, "lose": -1.0}.get(verdict)


def _corr_ci(x: list[float], y: list[float], n_boot: int = 2000) -> dict[str, Any]:
    """Spearman's ρ with a bootstrap 95% interval (pairs resampled)."""
    import numpy as np
    from scipy.stats import spearmanr

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) < 5 or np.std(xa) == 0 or np.std(ya) == 0:
        return {"rho": None, "ci95": None, "n": len(xa)}
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(xa), len(xa))
        if np.std(xa[i]) > 0 and np.std(ya[i]) > 0:
            boots.append(spearmanr(xa[i], ya[i]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"rho": round(float(spearmanr(xa, ya).statistic), 3), "ci95": [round(float(lo), 3), round(float(hi), 3)],
            "n": len(xa)}


def _mean_ci(v: list[float], n_boot: int = 2000) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(v, float)
    if not len(a):
        return {"mean": None, "ci95": None, "n": 0}
    rng = np.random.default_rng(0)
    b = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(axis=1)
    return {"mean": round(float(a.mean()), 3), "ci95": [round(float(np.percentile(b, 2.5)), 3),
                                                         round(float(np.percentile(b, 97.5)), 3)], "n": len(a)}


def why(data: Path) -> dict[str, Any]:
    """Per model: pair quality of its self-generated data, gate activity on the evaluated prompts,
    and what of those (and of the length change) goes with the per-prompt gain of the edit."""
    import torch

    from alignez_eval.commands.fit import load_model
    from alignez_eval.editing.artifact import Edit
    from alignez_eval.fitting.diagnostics import gate_activity
    from alignez_eval.judge.pair_quality import pair_quality
    from alignez_eval.judge.runner import load_judgments
    from alignez_eval.judge.runs import load_run

    all_steps = steps()
    out: dict[str, Any] = {"cpu": cpu(), "models": {}}
    gen_by_sha = {s["meta"].get("samples_sha256"): s for s in all_steps if s["kind"] == "gen"}
    fit_by_sha = {s["meta"].get("edit_sha256"): s for s in all_steps if s["kind"] == "fit"}
    # each comparison's judge step names its runs by samples sha256; a run names its edit by sha256
    cells = []
    for s in all_steps:
        if s["kind"] != "judge" or not (s["name"].startswith("alpaca") or s["name"] == "harmless"):
            continue
        for cand, shas in s["inputs"]["candidates"].items():
            ds = next(iter(shas))
            gen = gen_by_sha.get(shas[ds])
            fit = fit_by_sha.get(gen["inputs"].get("edit")) if gen else None
            if fit is None or not cand.endswith("alignez"):
                continue
            base_gen = gen_by_sha[s["inputs"]["baseline"][ds]]
            model = BASE if cand == "alignez" else cand.split("+")[0]
            cells.append((model, fit, cand, s, base_gen))
    for model, fit, cand, judged, gen in cells:
        cell = f"{model} · {'HH harmless' if judged['name'] == 'harmless' else 'AlpacaEval'}"
        pairs = [json.loads(x) for x in (fit["dir"] / "edit.pairs.jsonl").read_text().splitlines()]
        quality = pair_quality(pairs, DEFAULT_JUDGE, cache_path=WORK / "pair_quality.sqlite")
        _manifest, records = load_judgments(judged["dir"])
        recs = records[cand]
        prompts = {smp.doc_id: smp.prompt for smp in load_run(gen["dir"]).samples.values()}
        mtok = load_model({"pretrained": model if model != BASE else BASE, "dtype": "float32"})
        edit = Edit.load(fit["dir"] / "edit.safetensors")
        ids = [str(r["doc_id"]) for r in recs]
        with torch.no_grad():
            gates = gate_activity(mtok[0], mtok[1], edit, [prompts[i] for i in ids])
        gain = [_gain(r["verdict"]) for r in recs]
        dlen = [r["len_candidate"] - r["len_baseline"] for r in recs]
        keep = [i for i, g in enumerate(gain) if g is not None]
        open_q = gates["open_by_query"] if gates else []
        by_pair = {str(k): v for k, v in quality["verdicts"].items()}
        pv = [(gain[i], by_pair[ids[i]]) for i in keep if ids[i] in by_pair]
        out["models"][cell] = {
            "candidate": cand, "prompts": len(recs), "net": _mean_ci([gain[i] for i in keep]),
            "pair_quality": {k: v for k, v in quality.items() if k != "verdicts"},
            "gate_open_mean": gates["open_mean"] if gates else None,
            "gate_open_by_layer": gates["open_by_layer"] if gates else None,
            "gain_vs_gate_open": _corr_ci([open_q[i] for i in keep], [gain[i] for i in keep]) if gates else None,
            "gain_vs_length_change": _corr_ci([dlen[i] for i in keep], [gain[i] for i in keep]),
            "mean_length_change_words": _mean_ci([float(d) for d in dlen]),
            "gain_when_pair_helpful_wins": _mean_ci([g for g, v in pv if v == "win"]),
            "gain_when_pair_harmful_wins": _mean_ci([g for g, v in pv if v == "lose"]),
            "energy_kept_by_layer": {str(i): le.stats.get("energy_kept") for i, le in sorted(edit.layers.items())},
            "pairs_per_layer": fit["meta"].get("pairs_kept"),
            "fit_seconds": round(fit["seconds"]),
        }
        del mtok
    out["stage_seconds"] = {f"{s['kind']}/{s['name']}": round(s["seconds"]) for s in all_steps}
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "why.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def prefacc(data: Path, n: int) -> dict[str, Any]:
    """Judge-free: each system's preference accuracy against the base on held-out real pairs (AlpacaEval
    GPT-4 preferences on instructions neither evaluated nor used by the real-pair fits)."""
    from alignez_eval.dpo.data import read_pairs
    from alignez_eval.dpo.prefacc import pair_margins, preference_accuracy, truncate_pairs
    from alignez_eval.pipeline.parts import load_lm

    used = evaluated_instructions(data, 300)
    fit_pairs = WORK / "real_pairs.jsonl"
    if fit_pairs.exists():
        used |= {json.loads(x)["prompt"] for x in fit_pairs.read_text().splitlines()}
    held = real_pairs(data, used, n, WORK / "heldout_pairs.jsonl")
    lm = load_lm({"pretrained": str(_model_dir(BASE)), "dtype": "float32"}, batch_size=16)
    pairs = truncate_pairs(read_pairs(held), lm.tokenizer, 384)
    systems: dict[str, tuple[Path, dict[str, Any]]] = {}
    names = {"v2": "alignez", "v2-flipped": "alignez-flipped", "v1": "v1", "caa": "caa", "iti": "iti"}
    for f in sorted((WORK / "own").glob("*.safetensors")):
        systems[names.get(f.stem, f.stem)] = (f, {})
    if (WORK / "own" / "v2.safetensors").exists():
        systems["alignez-alpha2"] = (WORK / "own" / "v2.safetensors", {"alpha": 2.0})
        systems["alignez-top1"] = (WORK / "own" / "v2.safetensors", {"n_layers": 1})
    for f in sorted((WORK / "real").glob("*.safetensors")):
        systems[f"{f.stem}-real"] = (f, {})
    # the systems of the leaderboards: those that were generated
    generated = {st["meta"].get("system") for st in steps() if st["kind"] == "gen"}
    systems = {k: v for k, v in systems.items() if k in generated}
    lm.set_edit(edit="none")
    base = pair_margins(lm, pairs)
    out: dict[str, Any] = {"pairs": len(pairs), "source": "AlpacaEval GPT-4 dev annotations, held-out instructions",
                           "systems": {}}
    for label, (path, settings) in systems.items():
        lm.set_edit(edit=str(path), **settings)
        t0 = time.time()
        acc = preference_accuracy(pair_margins(lm, pairs), base)
        out["systems"][label] = {**acc.to_dict(), "seconds": round(time.time() - t0)}
        logger.info("prefacc %s: %.1f%% [%.1f, %.1f]", label, 100 * acc.accuracy, 100 * acc.ci[0], 100 * acc.ci[1])
    lm.set_edit(edit="none")
    (REPORTS / "prefacc.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def _model_dir(name: str) -> Path:
    from alignez_eval.models import model_path

    return model_path(name)


def _ci(v: str, lo: str, hi: str, signed: bool = True) -> str:
    if v in ("", None):
        return "n/a"
    f = (lambda x: f"{float(x):+.1f}") if signed else (lambda x: f"{float(x):.1f}")
    return f"{f(v)} [{f(lo)}, {f(hi)}]" if lo not in ("", None) else f(v)


def summary() -> Path:
    """reports/when_it_works/summary.md: every compare's rows in one table, the why figures, and a
    screenshot of the headline's answers.html (headless Chromium, where installed)."""
    import csv
    import shutil

    lines = ["# The study's figures (generated by `bench/when_it_works.py --stage summary`)", "",
             f"Machine: {cpu()}. Judge: the default, `{DEFAULT_JUDGE}` (its dev agreement with GPT-4: "
             "reports/scorer), except the HH judge's rows.", "",
             "| report | baseline | system | prompts | W / T / L | net [95% CI] | length-controlled win % | "
             "words: baseline → system | % gap closed [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    forest: list[tuple[str, float, float, float]] = []
    for csv_path in sorted(REPORTS.glob("*/leaderboard.csv")):
        for r in csv.DictReader(csv_path.open()):
            if r["dataset"] == "all":
                continue
            forest.append((f"{csv_path.parent.name}: {r['candidate']} vs {r['model']} (n={r['n']})", float(r["net"]),
                           float(r["net_lo"]), float(r["net_hi"])))
            lines.append(
                f"| {csv_path.parent.name} | {r['model']} | {r['candidate']} | {r['n']} | "
                f"{r['wins']} / {r['ties']} / {r['losses']} | {_ci(r['net'], r['net_lo'], r['net_hi'])} | "
                f"{_ci(r['length_adjusted_win_rate'], r['length_adjusted_win_rate_lo'], r['length_adjusted_win_rate_hi'], False)} | "
                f"{float(r['mean_len_baseline']):.0f} → {float(r['mean_len_candidate']):.0f} | "
                f"{_ci(r['gap_closed'], r['gap_closed_lo'], r['gap_closed_hi']) if r['gap_closed'] else '—'} |")
    if forest:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 0.42 * len(forest) + 1.2))
        ys = list(range(len(forest)))[::-1]
        for y, (_label, v, lo, hi) in zip(ys, forest, strict=True):
            ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], fmt="o", color="#c62828" if hi < 0 else
                        ("#2e7d32" if lo > 0 else "#455a64"), capsize=3)
        ax.axvline(0, color="#999", lw=1)
        ax.set_yticks(ys, [f[0] for f in forest], fontsize=8)
        ax.set_xlabel("net = win% − lose% vs the baseline, 95% bootstrap CI")
        ax.set_title("When it works: every system of the study")
        fig.tight_layout()
        fig.savefig(REPORTS / "nets.png", dpi=110)
        plt.close(fig)
        lines += ["", "![nets](nets.png)"]
    why_path = REPORTS / "why.json"
    if why_path.exists():
        w = json.loads(why_path.read_text())
        lines += ["", "## Why: per model (AlpacaEval prompts of the headline)", "",
                  "| model | pair quality [95% CI] (pairs) | gate open (mean share of directions) | "
                  "ρ(gain, gate open) [95% CI] | ρ(gain, Δwords) [95% CI] | mean gain, helpful pair won / harmful won |",
                  "|---|---|---|---|---|---|"]
        for m, d in w["models"].items():
            q = d["pair_quality"]
            pq = f"{q['quality']:.0%} [{q['ci95'][0]:.0%}, {q['ci95'][1]:.0%}] ({q['judged']})" if q["quality"] is not None else "n/a"

            def rho(c: dict[str, Any] | None) -> str:
                return "n/a" if not c or c["rho"] is None else f"{c['rho']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"

            def mean(c: dict[str, Any]) -> str:
                return "n/a" if c["mean"] is None else f"{c['mean']:+.2f} (n={c['n']})"

            go = "n/a" if d["gate_open_mean"] is None else f"{d['gate_open_mean']:.0%}"
            lines.append(f"| {m} | {pq} | {go} | {rho(d['gain_vs_gate_open'])} | {rho(d['gain_vs_length_change'])} | "
                         f"{mean(d['gain_when_pair_helpful_wins'])} / {mean(d['gain_when_pair_harmful_wins'])} |")
        lines += ["", "Wall time of every step (s): " + ", ".join(f"{k} {v}" for k, v in w["stage_seconds"].items())]
    pa_path = REPORTS / "prefacc.json"
    if pa_path.exists():
        pa = json.loads(pa_path.read_text())
        lines += ["", f"## Judge-free: preference accuracy against the base on {pa['pairs']} held-out real pairs",
                  "", f"({pa['source']}; share of pairs where the system's log-likelihood margin chosen − rejected "
                  "exceeds the base's; 50% = no change)", "", "| system | accuracy [95% CI] | mean margin gain (nats) |",
                  "|---|---|---|"]
        for label, a in pa["systems"].items():
            lines.append(f"| {label} | {a['accuracy']:.1%} [{a['ci_low']:.1%}, {a['ci_high']:.1%}] | "
                         f"{a['mean_margin_gain']:+.3f} |")
    shot = REPORTS / "answers.png"
    page = REPORTS / "alpaca" / "answers.html"
    if page.exists() and shutil.which("chromium") and shutil.which("chromedriver"):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
            opts.add_argument(a)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            driver.get(page.resolve().as_uri() + "#system=alignez&verdict=lose")
            driver.save_screenshot(str(shot))
        finally:
            driver.quit()
    out = REPORTS / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


ORDER = ("headline", "harmless", "ablations", "why", "prefacc", "summary")
LIMITS = {"headline": 300, "harmless": 300, "ablations": 150, "prefacc": 100}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the shared/data directory (AlpacaEval, HH-RLHF)")
    ap.add_argument("--stage", choices=[*ORDER, "all"], required=True,
                    help="one stage, or all of them in order (each skips what its cache holds)")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--instruct", default=",".join(INSTRUCT), help="instruct models edited vs themselves")
    ap.add_argument("--quick", action="store_true", help="ablations: only v1, CAA, real pairs, the flipped gate")
    ap.add_argument("--only", default=None, metavar="LABELS",
                    help="ablations: only these systems (v2-real,caa-real,v1,caa,alignez-flipped,alignez)")
    args = ap.parse_args()
    args.data = args.data.resolve()
    os.chdir(REPO)
    if args.stage == "all":
        for stage in ORDER:
            argv = [sys.executable, __file__, "--data", str(args.data), "--stage", stage,
                    "--limit", str(LIMITS.get(stage, 0)), "--instruct", args.instruct]
            if stage == "ablations":
                argv.append("--quick")
            subprocess.run(argv, check=True)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tasks_dir = write_tasks(args.data)
    t0 = time.time()
    if args.stage == "headline":
        instruct = tuple(m for m in args.instruct.split(",") if m)
        compare("alpaca", "study_alpaca", args.limit, tasks_dir, methods=["alignez"], tuned=TUNED, instruct=instruct,
                fit={"limit": FIT_LIMIT})
    elif args.stage == "ablations":
        pairs = real_pairs(args.data, evaluated_instructions(args.data, 300), 256, WORK / "real_pairs.jsonl")
        files = [(f"{m}-real", str(fit_real(m, pairs, WORK / "real" / f"{m}.safetensors"))) for m in ("v2", "caa")]
        # the cheapest first: each compare reuses the base generation and the shared self-generation
        own = WORK / "own"
        files += [("v1", str(fit_on_headline_pairs("v1", tasks_dir, own / "v1.safetensors"))),
                  ("caa", str(fit_on_headline_pairs("caa", tasks_dir, own / "caa.safetensors"))),
                  ("alignez-flipped", str(fit_on_headline_pairs("v2", tasks_dir, own / "v2-flipped.safetensors",
                                                                gate="flipped"))),
                  ("alignez", str(fit_on_headline_pairs("v2", tasks_dir, own / "v2.safetensors")))]
        if args.only:
            files = [f for f in files if f[0] in args.only.split(",")]
        compare("ablations", "study_alpaca", args.limit, tasks_dir, methods=[], edit_files=files)
        if not args.quick:
            v2 = own / "v2.safetensors"
            compare("ablations-alpha2", "study_alpaca", args.limit, tasks_dir, methods=[],
                    edit_files=[("alignez-alpha2", str(v2))], edit={"alpha": 2.0})
            compare("ablations-top1", "study_alpaca", args.limit, tasks_dir, methods=[],
                    edit_files=[("alignez-top1", str(v2))], edit={"n_layers": 1})
            compare("ablations-iti", "study_alpaca", args.limit, tasks_dir, methods=[],
                    edit_files=[("iti", str(fit_on_headline_pairs("iti", tasks_dir, own / "iti.safetensors")))])
    elif args.stage == "why":
        print(json.dumps(why(args.data), indent=1)[:4000])
    elif args.stage == "harmless":
        for name, judge in (("harmless", DEFAULT_JUDGE), ("harmless-hh-judge", HH_JUDGE)):
            compare(name, "study_hh", args.limit, tasks_dir, methods=["alignez"], judge=judge,
                    fit={"keywords": "harmless", "limit": FIT_LIMIT})
    logger.info("stage %s done in %.0f s on %s", args.stage, time.time() - t0, cpu())
    stamp = REPORTS / "stages.jsonl"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with stamp.open("a") as f:
        f.write(json.dumps({"stage": args.stage, "limit": args.limit, "seconds": round(time.time() - t0),
                            "cpu": cpu(), "date": time.strftime("%Y-%m-%d %H:%M")}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

