"""Data parallel on CPU: two gloo processes split the documents (each evaluated once) and give the
single-process results."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from alignez_eval.editing.random_edit import random_edit

SCRIPT = Path(__file__).resolve().parent / "fixtures" / "dp_eval.py"


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    # own process group, so a hang kills torchrun's workers too instead of leaving them behind
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-4000:]


def _first_resps(samples: dict) -> dict:
    # lm-eval pads an uneven split by repeating a request on the shorter rank; the repeats are
    # appended to that instance's resps, so compare the first response of every instance.
    return {t: sorted((s["doc_id"], [r[0] for r in s["resps"]]) for s in v) for t, v in samples.items()}


def test_two_gloo_processes_split_the_work(tiny_dir, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    from tiny import make_model

    edit = tmp_path / "edit.safetensors"
    random_edit(make_model("llama")[0], seed=5).save(edit)
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir()
    multi.mkdir()
    model = str(tiny_dir("llama"))
    # the single-process reference runs in this process (the script's main), saving an interpreter
    spec = importlib.util.spec_from_file_location("dp_eval", SCRIPT)
    dp_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dp_eval)
    dp_eval.main(model, str(edit), str(single))
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), model, str(edit), str(multi)],
         tmp_path)
    one = json.loads((single / "rank0.json").read_text())
    ranks = [json.loads((multi / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert one["world"] == 1 and all(r["world"] == 2 for r in ranks)
    # 4 generation docs split 2 + 2: nobody evaluates everything
    assert [r["seen"]["generate_until"] for r in ranks] == [2, 2] and one["seen"]["generate_until"] == 4
    assert max(r["seen"]["loglikelihood"] for r in ranks) < one["seen"]["loglikelihood"]
    a = json.loads((single / "results.json").read_text())
    b = json.loads((multi / "results.json").read_text())
    assert _first_resps(a["samples"]) == _first_resps(b["samples"])
    for task in ("alignez_fixture_gen", "alignez_fixture_mc"):
        ids = [s["doc_id"] for s in b["samples"][task]]
        assert sorted(ids) == sorted(set(ids))  # each doc once
    assert a["results"]["alignez_fixture_mc"]["acc,none"] == b["results"]["alignez_fixture_mc"]["acc,none"]


def test_fit_self_is_fitted_once_on_the_pooled_prompts(tiny_dir, tmp_path: Path) -> None:
    """Under data parallel, fit=self pools every rank's prompts; rank 0 fits, rank 1 reads the same
    artifact from the shared cache, and both ranks edit with it."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "multi"
    out.mkdir()
    cache = tmp_path / "fitcache"
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tiny_dir("llama")),
          f"fit={cache}", str(out)], tmp_path)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["fits"] for r in ranks] == [[False], [True]]  # one real fit, one cache hit
    assert ranks[0]["edit_sha256"] and ranks[0]["edit_sha256"] == ranks[1]["edit_sha256"]
    assert [r["seen"]["generate_until"] for r in ranks] == [2, 2]
    # the fit saw all 4 generation prompts, not one rank's share
    pairs = list(cache.rglob("*.jsonl"))
    assert pairs, "the fit cache holds the generated pairs"
    assert max(sum(1 for line in p.read_text().splitlines() if line.strip()) for p in pairs) >= 4

