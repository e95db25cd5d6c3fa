"""`alignez-eval run` = lm-eval's CLI + alignez-hf + our tasks, in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignez_eval.commands.run import build_argv, check_model_args
from alignez_eval.editing.random_edit import random_edit
from alignez_eval.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "tasks"


def test_run_with_edit_writes_results_with_edit_config(tiny_dir, tmp_path: Path) -> None:
    from tiny import make_model

    model, _ = make_model("llama")
    edit_path = tmp_path / "edit.safetensors"
    sha = random_edit(model, seed=3).save(edit_path)
    out = tmp_path / "D"
    proc = subprocess.run(
        [sys.executable, "-m", "alignez_eval", "run", "--model", "alignez-hf", "--model_args",
         f"pretrained={tiny_dir('llama')},edit={edit_path},alpha=4,layers=1-3,positions=all",
         "--tasks", "alignez_fixture_gen", "alignez_fixture_mc", "--include_path", str(FIXTURE_TASKS),
         "--limit", "2", "--output_path", str(out), "--log_samples", "--device", "cpu", "--batch_size", "2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=400,
        env={**os.environ, "ALIGNEZ_EVAL_NO_AUTOLOAD": "1"},  # `run` registers by itself
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    cfg = results["config"]
    assert cfg["model"] == "alignez-hf"
    edit = cfg["alignez_edit"]
    assert edit["sha256"] == sha == cfg["alignez_edit_sha256"]
    assert (edit["alpha"], edit["layers"], edit["positions"], edit["rule"]) == (4.0, "1;2;3", "all", "alignez")
    assert set(results["results"]) == {"alignez_fixture_gen", "alignez_fixture_mc"}
    samples = [json.loads(line) for line in next(out.rglob("samples_alignez_fixture_gen_*.jsonl")).open()]
    assert len(samples) == 2 and all(isinstance(s["resps"][0][0], str) for s in samples)


def test_comma_layer_list_is_explained_before_lm_eval_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alignez_eval", "run", "--model", "alignez-hf", "--model_args",
         "pretrained=x,layers=3,5,7", "--tasks", "t"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "layers=3;5;7" in proc.stderr and "commas" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["--model_args", "pretrained=x,layers=3,5"],
    ["-a", "pretrained=x", "layers=1-2,4"],
    ["--model_args=layers=2,-1"],
])
def test_check_model_args_rejects(argv) -> None:
    with pytest.raises(ConfigError, match="layers=3;5;7"):
        check_model_args(argv)


@pytest.mark.parametrize("argv", [
    ["--model_args", "pretrained=x,layers=3;5;7,alpha=2"],
    ["--model_args", '{"pretrained": "x", "layers": [3, 5]}'],
    ["--model_args", "pretrained=x,layers=[3,5]"],
    ["--tasks", "a,b"],
])
def test_check_model_args_accepts(argv) -> None:
    check_model_args(argv)


def test_packaged_tasks_join_the_users_include_path(monkeypatch) -> None:
    from lm_eval.tasks import manager

    from alignez_eval.commands.run import add_tasks_dir
    from alignez_eval.lm_eval_compat import tasks_dir

    ours = tasks_dir()
    assert ours is not None and Path(ours).is_dir()
    monkeypatch.setattr(manager.TaskManager, "__init__", manager.TaskManager.__init__)  # restored after
    add_tasks_dir(ours)
    add_tasks_dir(ours)  # idempotent
    tm = manager.TaskManager(include_path=str(FIXTURE_TASKS), include_defaults=False)
    assert "alignez_fixture_gen" in tm.all_tasks
    packaged = {p.stem for p in Path(ours).glob("*.yaml") if not p.stem.startswith("_")}
    assert packaged and any(t in tm.all_tasks for t in ("alignez_embedded", *packaged))
    assert [str(p) for p in tm.include_path] == [ours, str(FIXTURE_TASKS)]  # the user's path comes last and wins


def test_build_argv_inserts_run() -> None:
    assert build_argv(["--model", "hf"]) == ["run", "--model", "hf"]
    assert build_argv(["run", "--model", "hf"]) == ["run", "--model", "hf"]
    assert build_argv(["ls", "tasks"]) == ["ls", "tasks"]


# ---- bad input ends in one line and a non-zero exit (issue 12 item 7) -------------------------
def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignez_eval", "run", *args], capture_output=True, text=True, cwd=cwd, timeout=400,
        env={**os.environ, "ALIGNEZ_EVAL_NO_AUTOLOAD": "1"},
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_unknown_task_is_one_line_naming_it_and_how_to_list(tmp_path: Path) -> None:
    proc = _run_cli(["--model", "alignez-hf", "--model_args", "pretrained=x", "--tasks", "no_such_task"], tmp_path)
    line = _one_error_line(proc)
    assert "no_such_task" in line and "alignez-eval run ls tasks" in line


def test_alpha_not_a_number_is_one_line(tiny_dir, tmp_path: Path) -> None:
    proc = _run_cli(["--model", "alignez-hf", "--model_args", f"pretrained={tiny_dir('llama')},edit=none,alpha=abc",
                     "--tasks", "alignez_fixture_gen", "--include_path", str(FIXTURE_TASKS), "--limit", "1",
                     "--device", "cpu"], tmp_path)
    assert "alpha='abc' must be a finite number" in _one_error_line(proc)


def test_nan_artifact_is_one_line_and_writes_no_results(tiny_dir, tmp_path: Path) -> None:
    from tiny import make_model

    model, _ = make_model("llama")
    edit = random_edit(model, seed=3)
    edit.layers[1].help[0, 3] = float("nan")
    path = tmp_path / "nan.safetensors"
    edit.save(path)
    out = tmp_path / "D"
    proc = _run_cli(["--model", "alignez-hf", "--model_args", f"pretrained={tiny_dir('llama')},edit={path}",
                     "--tasks", "alignez_fixture_gen", "--include_path", str(FIXTURE_TASKS), "--limit", "1",
                     "--device", "cpu", "--output_path", str(out)], tmp_path)
    line = _one_error_line(proc)
    assert "layer.1.help has 1 non-finite value" in line and str(path) in line
    assert not list(tmp_path.rglob("results_*.json"))
