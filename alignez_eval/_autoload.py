"""Make `lm_eval --model alignez-hf` work on lm-eval 0.4.13, which reads no plugin entry points.

The installed `alignez_eval_autoload.pth` runs `install()` at interpreter start-up. That only puts
a small finder on `sys.meta_path`; nothing else is imported. When (and only when) some program
first imports `lm_eval.models`, the finder lets the normal import run and then registers
`alignez-hf` in lm-eval's model registry as a *lazy* placeholder ("module:Class", the same value
as our `lm_eval.models` entry point), so even lm-eval pays nothing until `alignez-hf` is asked for.
The finder removes itself after that one import.

Switch it off with ALIGNEZ_EVAL_NO_AUTOLOAD=1. This module must stay import-light: it runs in
every Python process of the environment (a test checks that it imports neither torch nor lm_eval).
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

# No importlib.abc / typing imports: this runs at every start-up, and importlib.abc alone pulls in
# importlib.resources (~20 ms). The import system needs only the duck-typed methods below.

ENV_DISABLE = "ALIGNEZ_EVAL_NO_AUTOLOAD"
TARGET_MODULE = "lm_eval.models"
MODEL_NAME = "alignez-hf"
MODEL_TARGET = "model_adapters.alignez_hf:AlignEZHFLM"  # == the lm_eval.models entry point


def disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no")


def register_lazy() -> None:
    """Register alignez-hf as a lazy placeholder (no-op if it is already there)."""
    # lazy: runs at every interpreter start-up: must not import lm-eval until asked
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


class _RegisterAfterLoader:
    """Delegates to the real loader, then registers alignez-hf."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            register_lazy()
        except Exception as exc:  # never break lm-eval because of us
            sys.stderr.write(
                f"alignez-eval: could not register {MODEL_NAME} with lm-eval ({exc!r}); "
                f"use `alignez-eval run` or import model_adapters.alignez_hf yourself\n"
            )

    def __getattr__(self, name: str) -> object:  # resources, get_code, is_package, …
        return getattr(self._loader, name)


class LmEvalModelsFinder:
    def find_spec(self, fullname: str, path: object, target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != TARGET_MODULE:
            return None
        uninstall()  # one shot, and no recursion into ourselves below
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Called from the .pth file. Cheap: an env lookup and a list insert."""
    if disabled() or any(isinstance(f, LmEvalModelsFinder) for f in sys.meta_path):
        return
    if TARGET_MODULE in sys.modules:  # already imported (e.g. install() called late)
        try:
            register_lazy()
        except Exception:  # never break lm-eval because of us
            pass
        return
    sys.meta_path.insert(0, LmEvalModelsFinder())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, LmEvalModelsFinder)]
