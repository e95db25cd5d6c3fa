"""The task YAMLs travel inside a non-editable install: build the wheel, install it into a bare
directory, and load the embedded tasks from there in a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import alignez_eval

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_tasks_and_loads_them_offline(tmp_path: Path) -> None:
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    wheel_dir, target, src = tmp_path / "whl", tmp_path / "site", tmp_path / "src"
    # Build from a clean copy: setuptools reuses an in-tree build/ directory, whose stale files
    # could hide a packaging mistake (and the checkout is shared with other builds).
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    for name in ("alignez_eval", "model_adapters", "tasks"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    # No build isolation: the build needs only setuptools, which the venv has, and no network.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(src), "-w", str(wheel_dir)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheel_dir.glob("alignez_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_yaml = {Path(n).name for n in names if n.startswith("alignez_eval/tasks/") and n.endswith(".yaml")}
    assert shipped_yaml == {p.name for p in (REPO / "tasks").glob("*.yaml")}
    assert {"alignez_eval/tasks/utils.py", "alignez_eval/tasks/data/embedded_prompts.jsonl"} <= names
    assert not any(n.startswith("tasks/") for n in names)  # nothing lands as a top-level package

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    probe = (
        "import json, alignez_eval; from alignez_eval.queries import load_queries;"
        "rows = load_queries('alignez_embedded', limit=3);"
        "base = load_queries('alignez_embedded_base', limit=3);"
        "print(json.dumps({'file': alignez_eval.__file__, 'tasks': alignez_eval.tasks_path(),"
        " 'ids': [r['id'] for r in rows], 'base_ids': [r['id'] for r in base]}))"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # The installed copy answered, not the editable checkout.
    assert Path(got["file"]).is_relative_to(target) and Path(got["tasks"]).is_relative_to(target)
    assert Path(alignez_eval.__file__).resolve().parent != Path(got["file"]).resolve().parent
    assert got["ids"] == got["base_ids"] == ["emb-advice-01", "emb-advice-02", "emb-advice-03"]


def test_tasks_path_is_the_repo_tasks_dir_in_a_checkout() -> None:
    path = Path(alignez_eval.tasks_path())
    assert (path / "embedded.yaml").is_file() and (path / "utils.py").is_file()
    if (REPO / "tasks").is_dir():
        assert path == (REPO / "tasks").resolve()


def test_tasks_path_command_prints_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "alignez_eval", "tasks-path"], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == alignez_eval.tasks_path()
