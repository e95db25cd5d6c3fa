"""Judge specifications: which backend, model, mode and prompt produce a verdict.

A spec is data: a YAML file, a dict, or a short string
  `hf:PATH_OR_MODEL_NAME[,mode=pairwise,batch_size=8,...]`
  `openai:MODEL@BASE_URL[,api_key_env=VLLM_KEY,concurrency=4,...]`
  `rm:PATH[,label_index=0]`
  `scorer:HEAD[,margin=0.0,batch_size=8]`   (HEAD: a head file from `train-scorer` or a packaged name)
Only fields that change a judge's raw output enter `identity()` (and so the cache key);
margins are applied when verdicts are derived, so changing one re-uses every cached judgment.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignez_eval.errors import ConfigError
from alignez_eval.hashing import sha256_text
from alignez_eval.judge.prompts import Prompt, load_prompt
from alignez_eval.shareable import shareable_text

BACKENDS = ("openai", "hf", "rm", "scorer")
# Backends that score one answer at a time (single mode only, verdict = score difference).
SCORING_BACKENDS = ("rm", "scorer")
MODES = ("pairwise", "single")
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")

# Margins: a winner is called only when the evidence exceeds them (else a tie).
#   single: difference of grades (grade points; integer grades differing by >= 1 always decide)
#   pairwise with probabilities (hf): P(candidate better) - P(baseline better), averaged over orders
#   rm: difference of reward scores
DEFAULT_MARGIN = {"single": 0.5, "pairwise": 0.05, "rm": 0.0}
# The local (hf) judge's defaults were chosen by agreement with GPT-4 on real AlpacaEval pairs
# (reports/judge_agreement/README.md; tuned on two generators' pairs, reported on three others'):
# pairwise, the anchored prompt, no tie band (the order-averaged score is continuous, and a margin
# turned decisive agreements into ties), and the length correction that brings the judge's
# longer-answer preference down to GPT-4's (~72% of decisive pairs).
HF_DEFAULTS = {"prompt": {"pairwise": "pairwise_anchored"}, "margin": {"pairwise": 0.0},
               "length_debias": {"pairwise": 0.05}}


@dataclass
class JudgeSpec:
    backend: str
    model: str
    mode: str | None = None  # default: pairwise (hf, openai); rm, scorer -> single (their only mode)
    prompt: str | None = None  # packaged prompt name or YAML path; default: the mode's name
    margin: float | None = None
    # Verdict-time length correction β (see judge/verdicts.py): score - β·tanh(ln(len_cand/len_base)).
    # Like the margin it is not part of identity(): cached judgments are re-used under any β.
    length_debias: float | None = None  # default: HF_DEFAULTS for hf pairwise, else 0
    scale: int | None = None  # top grade in single mode: default 9 for hf (see prompts/single.yaml), else 10
    # openai
    base_url: str = DEFAULT_OPENAI_URL
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    max_retries: int = 5
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    # None (`temperature: none`): not sent, so the server's default applies -- reasoning models
    # accept no other. A 400 rejecting 0.0 drops it for the rest of the run (backends/openai.py).
    temperature: float | None = 0.0
    max_tokens: int = 1024  # the reply's token limit, sent under the name `token_param`
    # Current OpenAI models reject `max_tokens` and want `max_completion_tokens`; vLLM and llama.cpp
    # take `max_tokens`. A 400 rejecting the one sent switches to the other for the rest of the run.
    token_param: str = "max_tokens"
    extra_body: dict[str, Any] | None = None  # merged into every request body (YAML/dict specs only)
    input_cost_per_1m: float = 0.0  # USD per million prompt tokens (for the cost column)
    output_cost_per_1m: float = 0.0
    # hf / rm
    device: str | None = None
    # weights; `auto`: bf16 where it is fast (GPU, CPUs with native bf16), else fp32 (alignez_eval.dtypes).
    # Verdict/grade logits are always computed in fp32.
    dtype: str = "auto"
    batch_size: int = 4
    max_answer_tokens: int = 1024  # longer answers are cut (recorded) to bound judge cost
    label_index: int = 0  # rm: which output of the classification head is the reward
    prefix_cache: int = 1  # hf: compute the prompt prefix all inputs share once (0: off)
    # An already-loaded model and tokenizer (hf/rm), e.g. to share a judge with the demo. Not data.
    model_obj: Any = field(default=None, repr=False, compare=False)
    tokenizer_obj: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"judge backend {self.backend!r} is unknown; use one of {BACKENDS}")
        if not self.model:
            raise ConfigError("judge spec names no model; e.g. hf:qwen2.5-coder-1.5b-instruct or openai:gpt-4o@URL")
        scoring = self.backend in SCORING_BACKENDS
        if self.mode is None:
            self.mode = "single" if scoring else "pairwise"
        if self.mode not in MODES:
            raise ConfigError(f"judge mode {self.mode!r} is unknown; use pairwise or single")
        if scoring and self.mode != "single":
            raise ConfigError(f"the {self.backend} backend scores one answer at a time; use mode=single with it")
        hf = self.backend == "hf"
        if self.prompt is None:
            self.prompt = HF_DEFAULTS["prompt"].get(self.mode, self.mode) if hf else self.mode
        if self.scale is None:
            self.scale = 9 if self.backend == "hf" else 10
        if self.margin is None:
            self.margin = (HF_DEFAULTS["margin"].get(self.mode) if hf else None)
            if self.margin is None:
                self.margin = DEFAULT_MARGIN["rm" if scoring else self.mode]
        if self.length_debias is None:
            self.length_debias = HF_DEFAULTS["length_debias"].get(self.mode, 0.0) if hf else 0.0
        if self.concurrency < 1 or self.batch_size < 1:
            raise ConfigError("judge concurrency and batch_size must be >= 1")
        if self.token_param not in TOKEN_PARAMS:
            raise ConfigError(f"judge token_param {self.token_param!r} is unknown; use one of {TOKEN_PARAMS}")
        _check_extra_body(self.extra_body)

    # ----------------------------------------------------------------------------------------------
    def load_prompt(self) -> Prompt:
        prompt = load_prompt(str(self.prompt))
        if prompt.mode != self.mode:
            raise ConfigError(f"judge prompt {prompt.id} is for mode {prompt.mode}, but the spec's mode is "
                              f"{self.mode}; set prompt= to a {self.mode} prompt")
        return prompt

    @property
    def output_format(self) -> str:
        if self.backend == "openai":
            return "json" if self.mode == "pairwise" else "text"
        return "label"

    @property
    def uses_probabilities(self) -> bool:
        """Pairwise verdicts from averaged label probabilities (hf) rather than per-order labels."""
        return self.backend == "hf"

    @property
    def resolved_dtype(self) -> str:
        """The concrete weight dtype (`auto` decided for this machine): what the cache key records."""
        from alignez_eval.dtypes import resolve_dtype

        return resolve_dtype(self.dtype, self.device)

    def identity(self) -> dict[str, Any]:
        """Everything that changes a raw judgment; hashed into every cache key."""
        # An embedded model is keyed by its registry name, not this machine's path to it, so
        # `hf:NAME` and `hf:$ALIGNEZ_HOME/models/NAME` share judgments (and caches travel).
        model = shareable_text(self.model) if self.backend != "openai" else self.model
        if self.backend == "scorer":
            # A head is its content: retraining changes every key, renaming or moving it changes none.
            from alignez_eval.hashing import sha256_file
            from alignez_eval.scorer.head import resolve_head_path

            return {"backend": "scorer", "model": "sha256:" + sha256_file(resolve_head_path(self.model)),
                    "mode": self.mode, "prompt": None, "format": "score"}
        ident: dict[str, Any] = {"backend": self.backend, "model": model, "mode": self.mode,
                                 "prompt": self.load_prompt().tag if self.backend != "rm" else None,
                                 "format": self.output_format}
        if self.backend == "openai":
            ident.update(base_url=self.base_url.rstrip("/"), temperature=self.temperature,
                         max_tokens=self.max_tokens, scale=self.scale)
            # token_param only names the limit, so it stays out. extra_body enters only when set,
            # so the keys of judgments cached before it existed do not change.
            if self.extra_body:
                ident["extra_body"] = self.extra_body
        elif self.backend == "hf":
            ident.update(dtype=self.resolved_dtype, max_answer_tokens=self.max_answer_tokens, scale=self.scale)
        else:
            ident.update(dtype=self.resolved_dtype, max_answer_tokens=self.max_answer_tokens, label_index=self.label_index)
        return ident

    def identity_hash(self) -> str:
        # not canonical_json: this text keys every cached judgment, so it stays as first written
        return sha256_text(json.dumps(self.identity(), sort_keys=True))

    def public_dict(self) -> dict[str, Any]:
        """The spec as data (for manifests); loaded objects are left out."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("model_obj", "tokenizer_obj")}
        d["model_preloaded"] = self.model_obj is not None
        return d

    def describe(self) -> str:
        unit = {"single": f"1-{self.scale} grades", "pairwise": "both orders"}[self.mode or "single"]
        if self.backend == "rm":
            unit = "reward-model scores"
        if self.backend == "scorer":
            unit = "scorer scores, one per answer"
        debias = f", length correction {self.length_debias}" if self.length_debias else ""
        return f"{self.backend}:{self.model} ({self.mode}, {unit}, margin {self.margin}{debias})"

    def using(self, model: Any, tokenizer: Any) -> JudgeSpec:
        """A copy that judges with an already-loaded model and tokenizer (hf / rm backends)."""
        return dataclasses.replace(self, model_obj=model, tokenizer_obj=tokenizer)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(JudgeSpec)}
# Body keys the backend sets itself, and what to do instead.
_RESERVED_BODY = {"model": "use the spec field model", "messages": "use the spec field prompt",
                  "temperature": "use the spec field temperature (none: not sent)",
                  "max_tokens": "use max_tokens and token_param", "max_completion_tokens": "use max_tokens and token_param",
                  "stream": "leave it out: the judge reads whole replies"}


def _check_extra_body(body: Any) -> None:
    if body is None:
        return
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise ConfigError(f"judge extra_body must be a mapping of request fields, got {body!r}; give it in a "
                          "YAML spec file (extra_body: {reasoning_effort: low})")
    for key in body:
        if key in _RESERVED_BODY:
            raise ConfigError(f"judge extra_body sets {key!r}, which the judge sends itself; {_RESERVED_BODY[key]}")
    try:
        json.dumps(body, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"judge extra_body is not plain JSON data ({exc})") from exc


def _coerce(key: str, value: Any) -> Any:
    if key not in _FIELD_TYPES or key in ("model_obj", "tokenizer_obj"):
        raise ConfigError(f"judge spec field {key!r} is unknown; known fields: "
                          f"{sorted(k for k in _FIELD_TYPES if k not in ('model_obj', 'tokenizer_obj'))}")
    if value is None or not isinstance(value, str):
        return value
    typ = str(_FIELD_TYPES[key])
    if typ.startswith(("int", "float")) and typ.endswith("| None") and value.strip().lower() in ("none", "null"):
        return None  # e.g. temperature=none
    try:
        if typ.startswith("int"):
            return int(value)
        if typ.startswith("float"):
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"judge spec field {key}={value!r} is not a number") from exc
    return value


def _parse_short(spec: str) -> dict[str, Any]:
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in BACKENDS:
        raise ConfigError(f"judge spec {spec!r} is neither a YAML file nor BACKEND:MODEL[,key=value...] "
                          f"with BACKEND in {BACKENDS} (e.g. hf:qwen2.5-coder-1.5b-instruct,mode=pairwise)")
    head, *opts = rest.split(",")
    data: dict[str, Any] = {"backend": backend}
    if backend == "openai":
        model, at, url = head.partition("@")
        data["model"] = model
        if at:
            data["base_url"] = url
    else:
        data["model"] = head
    for opt in opts:
        key, eq, val = opt.partition("=")
        if not eq:
            raise ConfigError(f"judge spec option {opt!r} in {spec!r} must be key=value")
        data[key.strip()] = val.strip()
    return data


def parse_judge_spec(spec: str | Path | dict[str, Any] | JudgeSpec) -> JudgeSpec:
    if isinstance(spec, JudgeSpec):
        return spec
    if isinstance(spec, dict):
        data = dict(spec)
    else:
        text = str(spec)
        path = Path(text)
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"judge spec file {path} must hold a mapping (backend:, model:, ...)")
        elif path.suffix in (".yaml", ".yml") and ":" not in text:
            raise ConfigError(f"judge spec file {path} does not exist")
        else:
            data = _parse_short(text)
    objs = {k: data.pop(k) for k in ("model_obj", "tokenizer_obj") if k in data}
    kwargs = {k: _coerce(k, v) for k, v in data.items()}
    if "backend" not in kwargs or "model" not in kwargs:
        raise ConfigError("judge spec needs at least backend and model")
    return JudgeSpec(**kwargs, **objs)


def with_overrides(spec: JudgeSpec | str | dict[str, Any], mode: str | None = None,
                   margin: float | None = None) -> JudgeSpec:
    """`spec` with the CLI's --mode / --margin overrides (`judge`, `judge-agreement`): a new mode takes
    that mode's defaults (prompt, margin, length correction); a preloaded model is kept."""
    spec = parse_judge_spec(spec)
    if not mode and margin is None:
        return spec
    data = spec.public_dict()
    data.pop("model_preloaded")
    data.update(model_obj=spec.model_obj, tokenizer_obj=spec.tokenizer_obj)
    if mode and mode != spec.mode:
        data.update(mode=mode, prompt=None, margin=None, length_debias=None)
    if margin is not None:
        data["margin"] = margin
    return parse_judge_spec(data)
