"""Registration with lm-eval, checked in fresh interpreters: the explicit helper, the post-import
autoload (`lm_eval --model alignez-hf` with nothing imported by hand), its switch, the entry
point, and the same autoload from a regular wheel install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from alignez_eval import _autoload

REPO = Path(__file__).resolve().parent.parent
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "tasks"


def _py(code: str, *, env_extra: dict[str, str] | None = None, cwd: Path | None = None,
        python: str = sys.executable, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != _autoload.ENV_DISABLE}
    env.update(env_extra or {})
    return subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROBE = """
    import json, sys
    at_start = {m: m in sys.modules for m in ("torch", "lm_eval", "model_adapters.alignez_hf")}
    finder = any(type(f).__name__ == "LmEvalModelsFinder" for f in sys.meta_path)
    from lm_eval.api.registry import get_model, model_registry
    import lm_eval.models
    placeholder = model_registry._objs.get("alignez-hf")
    lazy = isinstance(placeholder, str) and "model_adapters.alignez_hf" not in sys.modules
    out = dict(at_start=at_start, finder=finder, lazy=lazy, placeholder=str(placeholder))
    try:
        cls = get_model("alignez-hf")
        out["alignez"] = cls.__module__ + ":" + cls.__name__
        out["alignez_file"] = sys.modules[cls.__module__].__file__
    except ValueError as e:
        out["alignez"] = "missing"
    # a built-in stays registered (checked without importing transformers where possible)
    hf = model_registry._objs.get("hf")
    out["hf"] = hf.split(":")[-1] if isinstance(hf, str) else hf.__name__
    out["finder_left"] = any(type(f).__name__ == "LmEvalModelsFinder" for f in sys.meta_path)
    print(json.dumps(out))
"""


def test_autoload_then_plain_lm_eval_cli(tiny_dir, tmp_path: Path) -> None:
    """In one fresh interpreter that never imports our package: the finder is there, lm-eval's
    first `lm_eval.models` import registers alignez-hf lazily, and lm-eval's own CLI entry point
    (`lm_eval --model alignez-hf …`) runs it."""
    out_dir = tmp_path / "out"
    argv = ["lm_eval", "--model", "alignez-hf", "--model_args", f"pretrained={tiny_dir('llama')},edit=none",
            "--tasks", "alignez_fixture_gen", "--include_path", str(FIXTURE_TASKS), "--limit", "1",
            "--device", "cpu", "--output_path", str(out_dir), "--log_samples"]
    proc = _py(PROBE + f"""
    sys.argv = {argv!r}
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()
    """, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert out["at_start"] == {"torch": False, "lm_eval": False, "model_adapters.alignez_hf": False}
    assert out["finder"] and not out["finder_left"]
    assert out["lazy"] and out["placeholder"] == _autoload.MODEL_TARGET
    assert out["alignez"] == _autoload.MODEL_TARGET and out["hf"] == "HFLM"
    results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "alignez-hf"
    assert results["config"]["alignez_edit"]["edit"] == "none"


def test_autoload_switch_and_explicit_register(tmp_path: Path) -> None:
    proc = _py(PROBE + """
    from model_adapters.alignez_hf import register
    cls = register()
    print(json.dumps([cls.__name__, get_model("hf").__name__, get_model("dummy").__name__]))
    """, cwd=tmp_path, env_extra={_autoload.ENV_DISABLE: "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    off, explicit = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert not off["finder"] and off["alignez"] == "missing" and off["hf"] == "HFLM"
    assert explicit == ["AlignEZHFLM", "HFLM", "DummyLM"]


def test_autoload_module_is_import_light() -> None:
    proc = subprocess.run(
        [sys.executable, "-S", "-c",
         "import sys, alignez_eval._autoload; print(sorted(m for m in ('torch','lm_eval','numpy','typing',"
         "'importlib.resources') if m in sys.modules))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_entry_point_matches_class() -> None:
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="lm_eval.models") if ep.name == _autoload.MODEL_NAME]
    assert [ep.value for ep in eps] == [_autoload.MODEL_TARGET]
    from model_adapters.alignez_hf import AlignEZHFLM

    assert eps[0].load() is AlignEZHFLM
    from alignez_eval import lm_eval_compat

    assert lm_eval_compat.MODEL_TARGET == _autoload.MODEL_TARGET


def test_wheel_install_autoloads(tmp_path: Path) -> None:
    """Build a wheel from a copy of the sources, install it into a fresh venv (dependencies come
    from this environment through a path .pth), and resolve alignez-hf there."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("alignez_eval", "model_adapters"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("alignez_eval-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "alignez_eval_autoload.pth" in names and "model_adapters/alignez_hf.py" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    # dependencies (torch, lm_eval, …) from this environment, after the venv's own site-packages
    (site / "zz_alignez_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # no PYTHONPATH: a worktree run with PYTHONPATH=$PWD would put the checkout before the wheel
    out = _last_json(_py(PROBE, cwd=tmp_path, python=str(vpy), env_extra={"PYTHONPATH": ""}))
    assert out["alignez"] == _autoload.MODEL_TARGET and out["hf"] == "HFLM" and out["lazy"]
    assert out["alignez_file"].startswith(str(site))  # the wheel's copy, not the checkout
    off = _last_json(_py(PROBE, cwd=tmp_path, python=str(vpy),
                         env_extra={_autoload.ENV_DISABLE: "1", "PYTHONPATH": ""}))
    assert off["alignez"] == "missing"


@pytest.mark.parametrize("value,disabled", [("", False), ("0", False), ("1", True), ("true", True)])
def test_disable_values(monkeypatch, value: str, disabled: bool) -> None:
    monkeypatch.setenv(_autoload.ENV_DISABLE, value)
    assert _autoload.disabled() is disabled
