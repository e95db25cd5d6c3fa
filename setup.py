"""Only here to ship `alignez_eval_autoload.pth` (see alignez_eval/_autoload.py); all metadata is in
pyproject.toml. A .pth file must sit at the top of site-packages, which pyproject-only setuptools
configuration cannot express, so build_py writes it into the wheel root (regular installs) and
editable_wheel adds it to the editable wheel (pip install -e .)."""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME = "alignez_eval_autoload.pth"
# One line; .pth lines starting with "import" are executed by `site` at start-up.
PTH_LINE = "import alignez_eval._autoload as _a; _a.install(); del _a\n"


def _write_pth(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PTH_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            _write_pth(self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


class EditableWheelWithPth(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix):  # type: ignore[no-untyped-def]
        # `installation_dir` is the unpacked editable wheel: a file placed there lands at the top
        # of site-packages, next to setuptools' own __editable__ .pth. (tests/test_registration.py
        # fails if a setuptools upgrade stops calling this.)
        super()._install_namespaces(installation_dir, pth_prefix)
        _write_pth(str(installation_dir))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
