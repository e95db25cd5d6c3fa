"""alignez_eval.lm_eval_compat against the installed lm-eval: every name the repository takes from
lm-eval still exists where we take it from (each failure names the symbol), the pyproject bound
is the compat module's, and no module outside compat imports an lm-eval name that is not public."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from alignez_eval import lm_eval_compat as compat

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("alignez_eval", "model_adapters", "tasks", "bench")


def _resolve(module: str, name: str | None) -> str | None:
    """None when `module.name` exists, else what is wrong with it."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return f"{module}: cannot import ({exc})"
    if name is not None and not hasattr(mod, name):
        return f"{module}.{name}: no such attribute"
    return None


def test_pyproject_requires_the_lm_eval_range_compat_is_written_for() -> None:
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ours = [Requirement(d) for d in deps if Requirement(d).name == "lm-eval"]
    want = Requirement(compat.LM_EVAL_REQUIREMENT)
    assert [str(r.specifier) for r in ours] == [str(want.specifier)]
    assert not any(s.operator in ("==", "===") for s in want.specifier), "no exact lm-eval pin"
    assert want.specifier.contains(version("lm-eval")), f"installed lm-eval {version('lm-eval')} is outside {want}"


def test_every_public_name_we_import_exists() -> None:
    problems = [p for module, names in compat.PUBLIC_API.items()
                for name in (sorted(names) if names is not None else [None]) if (p := _resolve(module, name))]
    assert not problems, "lm-eval moved names the repository imports: " + "; ".join(problems)


def test_every_internal_name_compat_uses_exists() -> None:
    problems = [p for module, name in compat.INTERNAL_API if (p := _resolve(module, name))]
    assert not problems, "lm-eval moved internals used by alignez_eval.lm_eval_compat: " + "; ".join(problems)


def test_hflm_methods_the_adapter_overrides_keep_their_parameters() -> None:
    from lm_eval.models.huggingface import HFLM

    from model_adapters.alignez_hf import AlignEZHFLM

    for method, params in compat.HFLM_OVERRIDES.items():
        assert hasattr(HFLM, method), f"lm_eval.models.huggingface.HFLM.{method} is gone (alignez-hf overrides it)"
        have = list(inspect.signature(getattr(HFLM, method)).parameters)
        missing = [p for p in params if p not in have]
        assert not missing, f"HFLM.{method} lost parameter(s) {missing}; it now takes {have}"
    # The list is complete: every private HFLM method the adapter redefines is in it.
    redefined = {n for n, v in vars(AlignEZHFLM).items()
                 if inspect.isfunction(v) and n.startswith("_") and not n.startswith("__") and hasattr(HFLM, n)}
    assert redefined <= set(compat.HFLM_OVERRIDES), f"add {sorted(redefined - set(compat.HFLM_OVERRIDES))} to HFLM_OVERRIDES"


def test_hflm_instance_has_the_attributes_the_adapter_uses(tiny_dir) -> None:
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_dir("llama")), device="cpu", batch_size=1)
    missing = [a for a in compat.HFLM_ATTRIBUTES if not hasattr(lm, a)]
    assert not missing, f"HFLM instances no longer have {missing} (model_adapters/alignez_hf.py reads them)"
    assert (lm._rank, lm._world_size) == (0, 1)


def test_registry_takes_a_lazy_target() -> None:
    from lm_eval.api.registry import model_registry

    params = inspect.signature(model_registry.register).parameters
    assert "target" in params, "lm_eval.api.registry.model_registry.register(target=) is gone (alignez_eval/_autoload.py)"


def test_wrappers_behave_as_the_callers_expect(tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    assert compat.split_top_level("pretrained=x,layers=[3,5],name='a,b'") == ["pretrained=x", "layers=[3,5]",
                                                                             "name='a,b'"]
    (tmp_path / "base.yaml").write_text("output_type: generate_until\nnum_fewshot: 0\n")
    (tmp_path / "t.yaml").write_text("include: base.yaml\ntask: compat_probe\nnum_fewshot: 2\n")
    assert compat.load_yaml(tmp_path / "t.yaml") == {"output_type": "generate_until", "num_fewshot": 2,
                                                     "task": "compat_probe"}
    assert "include" in compat.load_yaml(tmp_path / "t.yaml", resolve_func=False, recursive=False)

    ours = compat.tasks_dir()
    tm = TaskManager(include_path=ours, include_defaults=False)
    path = compat.task_yaml_path(tm, "alignez_embedded")
    assert path is not None and path.is_file() and Path(ours) in path.resolve().parents
    assert compat.task_config(tm, "alignez_suite")["task"], "a group's config lists its tasks"
    assert compat.task_yaml_path(tm, "no_such_task") is None and compat.task_config(tm, "no_such_task") == {}
    assert callable(compat.cli_evaluate)


def _lm_eval_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every lm-eval import in a file; name None for `import lm_eval.x`."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "lm_eval"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lm_eval":
            out += [(node.lineno, node.module or "", a.name) for a in node.names]
    return out


def test_only_compat_imports_lm_eval_internals() -> None:
    files = [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py"))
             if p.resolve() != Path(compat.__file__).resolve()]
    assert len(files) > 20
    bad = []
    for path in files:
        for line, module, name in _lm_eval_imports(path):
            allowed = compat.PUBLIC_API.get(module, frozenset())
            if module not in compat.PUBLIC_API or (name is not None and allowed is not None and name not in allowed):
                bad.append(f"{path.relative_to(REPO)}:{line} {module}{'.' + name if name else ''}")
    assert not bad, ("lm-eval names outside PUBLIC_API imported directly; route them through "
                     "alignez_eval.lm_eval_compat: " + "; ".join(bad))
