"""sweep on a user's own prompt set: `include_path:` in the sweep YAML (relative to the file) and
`--include_path DIR` on the command line; one task YAML serves both models (no _base twin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_compare_include_path import write_task

from alignez_eval import cli
from alignez_eval.pipeline.sweep import SweepPipeline
from alignez_eval.pipeline.sweep_config import load_sweep

ROWS = [{"id": f"u{i}", "instruction": text} for i, text in enumerate([
    "How do I bake bread?", "Write a haiku about the sea.", "What is 2 + 3?", "Explain what a hash function is.",
    "Name three primary colours.", "How do plants make food?", "Give me a tip for sleeping well.",
    "What is the capital of France?"])]


def _config(tiny_dir, path: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": "mine_sweep", "base": f"pretrained={tiny_dir('llama')}", "tasks": ["only_mine"],
        "judge": f"hf:{tiny_dir('llama', 2)},dtype=float32", "heldout": 0.5, "seed": 0, "metric": "net_win",
        "batch_size": 4, "gen_kwargs": {"max_gen_toks": 6},
        "fixed": {"method": "alignez", "layers": "auto", "min_pairs": 1, "n_layers": 1},
        "fit": {"answer_tokens": 6, "char_tokens": 6, "gen_batch_size": 4},
        "parameters": {"alpha": [1.0]}, **extra,
    }))
    return path


def test_sweep_config_include_path_is_relative_to_the_file(tiny_dir, tmp_path: Path) -> None:
    write_task(tmp_path / "mine" / "tasks", "only_mine", ROWS, base=False)
    cfg = load_sweep(_config(tiny_dir, tmp_path / "mine" / "sweeps" / "s.yaml", include_path=["../tasks"]))
    assert cfg.include_path == (str(tmp_path / "mine" / "sweeps" / "../tasks"),)
    pipe = SweepPipeline(cfg, work_dir=tmp_path / "runs", report_root=tmp_path / "reports", use_wandb=False)
    assert pipe.compare.variants == {"only_mine": ("only_mine", "only_mine")}
    split = pipe.splits["sweep"]["only_mine"] + pipe.splits["heldout"]["only_mine"]
    assert sorted(split) == sorted(r["id"] for r in ROWS)


def test_sweep_cli_include_path_end_to_end(tiny_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    tasks = write_task(tmp_path / "tasks", "only_mine", ROWS, base=False)
    config = _config(tiny_dir, tmp_path / "s.yaml")
    # the native wandb config cannot carry a command-line --include_path: say so instead of losing it
    code = cli.main(["sweep", "--config", str(config), "--include_path", str(tasks),
                     "--emit-wandb-sweep", str(tmp_path / "native.yaml")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("alignez-eval")]
    assert code == 1 and len(err) == 1 and "put `include_path: [DIR]` in the sweep YAML" in err[0]

    code = cli.main(["sweep", "--config", str(config), "--include_path", str(tasks), "--no-wandb",
                     "--work-dir", str(tmp_path / "runs"), "--report-root", str(tmp_path / "reports")])
    assert code == 0
    results = json.loads((tmp_path / "reports" / "mine_sweep" / "results.json").read_text())
    assert any(k.endswith(":only_mine") for k in results["results"])
    judged = {json.loads(line)["doc_id"] for p in (tmp_path / "runs" / "judge").glob("mine_sweep_heldout*/*.jsonl")
              for line in p.read_text().splitlines() if line.strip()}
    summary = json.loads((tmp_path / "runs" / "sweep_summary.json").read_text())
    assert summary["splits"] == {"sweep": {"only_mine": 4}, "heldout": {"only_mine": 4}}
    assert len(judged) == 4 and judged <= {r["id"] for r in ROWS}


def test_sweep_judge_batch_size_reaches_the_judge_and_not_its_cache_key(tiny_dir, tmp_path: Path) -> None:
    """`judge_batch_size:` in a sweep YAML was once parsed and then dropped; it now sets the local
    judge's batch size, and judgments cached at another batch size are still found."""
    write_task(tmp_path / "mine" / "tasks", "only_mine", ROWS, base=False)
    plain = load_sweep(_config(tiny_dir, tmp_path / "mine" / "sweeps" / "a.yaml", include_path=["../tasks"]))
    sized = load_sweep(_config(tiny_dir, tmp_path / "mine" / "sweeps" / "b.yaml", include_path=["../tasks"],
                               judge_batch_size=3))
    specs = [SweepPipeline(c, work_dir=tmp_path / "runs" / n, report_root=tmp_path / "reports", use_wandb=False).spec
             for n, c in (("a", plain), ("b", sized))]
    assert (specs[0].options.batch_size, specs[1].options.batch_size) == (4, 3)
    assert specs[0].identity_hash() == specs[1].identity_hash()
