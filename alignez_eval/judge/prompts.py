"""Judge prompts as versioned data files (`alignez_eval/judge/prompts/*.yaml`).

A prompt names its mode (pairwise | single), a system message, a user template and output
formats: `json`/`text` for judges that write a reply, `label` for judges scored from next-token
probabilities (a `prefill` for the assistant turn and the label strings whose first token is read).
Templates use `{placeholder}` replaced literally (not str.format), so JSON braces need no escaping.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignez_eval.errors import ConfigError

PROMPT_DIR = Path(__file__).parent / "prompts"


def _fill(template: str, values: dict[str, str]) -> str:
    out = template
    for key, val in values.items():
        out = out.replace("{" + key + "}", val)
    return out


@dataclass(frozen=True)
class Prompt:
    id: str
    version: int
    mode: str
    system: str
    user: str
    formats: dict[str, dict[str, Any]]
    sha256: str  # of the file's bytes: an edit without a version bump still changes cache keys

    @property
    def tag(self) -> str:
        return f"{self.id}-v{self.version}-{self.sha256[:12]}"

    def format(self, name: str) -> dict[str, Any]:
        if name not in self.formats:
            raise ConfigError(f"prompt {self.id} v{self.version} has no output format {name!r} "
                              f"(has {sorted(self.formats)}); add it to the prompt file")
        return self.formats[name]

    def messages(self, fmt: str, *, instruction: str, answer_a: str = "", answer_b: str = "",
                 answer: str = "", max_grade: int = 10) -> list[dict[str, str]]:
        values = {"instruction": instruction, "answer_a": answer_a, "answer_b": answer_b, "answer": answer,
                  "max_grade": str(max_grade)}
        # format_instructions first, so placeholders inside it (max_grade) are filled too.
        instructions = _fill(str(self.format(fmt)["instructions"]).strip(), {"max_grade": str(max_grade)})
        user = _fill(self.user.replace("{format_instructions}", instructions), values).strip()
        system = _fill(self.system, {"max_grade": str(max_grade)}).strip()
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def load_prompt(name_or_path: str) -> Prompt:
    """`pairwise`, `single` (packaged files) or a path to a YAML file of the same shape."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPT_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        packaged = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise ConfigError(f"judge prompt {name_or_path!r} not found; use one of {packaged} or a YAML file path")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    missing = [k for k in ("id", "version", "mode", "system", "user", "formats") if k not in data]
    if missing:
        raise ConfigError(f"judge prompt {path} lacks {missing}; see {PROMPT_DIR / 'pairwise.yaml'} for the shape")
    if data["mode"] not in ("pairwise", "single"):
        raise ConfigError(f"judge prompt {path}: mode must be pairwise or single, not {data['mode']!r}")
    return Prompt(id=str(data["id"]), version=int(data["version"]), mode=str(data["mode"]),
                  system=str(data["system"]), user=str(data["user"]), formats=dict(data["formats"]),
                  sha256=hashlib.sha256(raw).hexdigest())
