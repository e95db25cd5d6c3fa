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

  python bench/when_it_works.py --data ../shared/data --stage headline --limit 300
  python bench/when_it_works.py --data ../shared/data --stage why

Runs go to runs/when_it_works (not committed); reports to reports/when_it_works/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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
WORK = REPO / "runs" / "when_it_works"
REPORTS = REPO / "reports" / "when_it_works"


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the shared/data directory (AlpacaEval, HH-RLHF)")
    ap.add_argument("--stage", choices=["headline", "ablations", "harmless", "why"], required=True)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--instruct", default=",".join(INSTRUCT), help="instruct models edited vs themselves")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tasks_dir = write_tasks(args.data)
    t0 = time.time()
    if args.stage == "headline":
        instruct = tuple(m for m in args.instruct.split(",") if m)
        compare("alpaca", "study_alpaca", args.limit, tasks_dir, methods=["alignez"], tuned=TUNED, instruct=instruct)
    elif args.stage == "ablations":
        pairs = real_pairs(args.data, evaluated_instructions(args.data, 300), 256, WORK / "real_pairs.jsonl")
        files = [(f"{m}-real", str(fit_real(m, pairs, WORK / "real" / f"{m}.safetensors"))) for m in ("v2", "caa", "iti")]
        compare("ablations", "study_alpaca", args.limit, tasks_dir, methods=["alignez", "alignez-v1", "caa", "iti"],
                edit_files=files)
        compare("ablations-flipped", "study_alpaca", args.limit, tasks_dir, methods=["alignez"], fit={"gate": "flipped"})
        compare("ablations-alpha2", "study_alpaca", args.limit, tasks_dir, methods=["alignez"], edit={"alpha": 2.0})
        compare("ablations-top1", "study_alpaca", args.limit, tasks_dir, methods=["alignez"], edit={"n_layers": 1})
    elif args.stage == "harmless":
        for name, judge in (("harmless", DEFAULT_JUDGE), ("harmless-hh-judge", HH_JUDGE)):
            compare(name, "study_hh", args.limit, tasks_dir, methods=["alignez"], judge=judge,
                    fit={"keywords": "harmless"})
    logger.info("stage %s done in %.0f s on %s", args.stage, time.time() - t0, cpu())
    stamp = REPORTS / "stages.jsonl"
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with stamp.open("a") as f:
        f.write(json.dumps({"stage": args.stage, "limit": args.limit, "seconds": round(time.time() - t0),
                            "cpu": cpu(), "date": time.strftime("%Y-%m-%d %H:%M")}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

