"""Judge specifications: which backend, model, mode and prompt produce a verdict.

A spec is data: a YAML file, a dict, or a short string
  `hf:PATH_OR_MODEL_NAME[,mode=pairwise,batch_size=8,...]`
  `openai:MODEL@BASE_URL[,api_key_env=VLLM_KEY,concurrency=4,...]`
  `rm:PATH[,label_index=0]`
  `scorer:HEAD[,margin=0.0,batch_size=8]`   (HEAD: a head file from `train-scorer` or a packaged name)

It is read by the project's one settings mechanism (`alignez_eval.settings`): `JudgeSpec` holds
what every backend shares (model, mode, prompt, margin, length correction, scale), and its
`options` are the backend's own settings class (`OpenAIOptions`, `HFOptions`, `RMOptions`,
`ScorerOptions`). A flat mapping or short string is routed by name; a YAML file may also nest
the backend's settings under its name (`openai: {concurrency: 8}`). A setting of another backend
(`scorer:HEAD,concurrency=4`) is one error naming the backend's settings, not silently ignored.

Only fields that change a judge's raw output enter `identity()` (and so the cache key);
margins are applied when verdicts are derived, so changing one re-uses every cached judgment.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from alignez_eval.errors import ArtifactError, ConfigError
from alignez_eval.hashing import sha256_file, sha256_text
from alignez_eval.judge.prompts import Prompt, load_prompt
from alignez_eval.scorer.spec import resolve_head_path
from alignez_eval.settings import Settings, setting
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

# Body keys the backend sets itself, and what to do instead.
_RESERVED_BODY = {"model": "use the spec field model", "messages": "use the spec field prompt",
                  "temperature": "use the spec field temperature (none: not sent)",
                  "max_tokens": "use max_tokens and token_param", "max_completion_tokens": "use max_tokens and token_param",
                  "stream": "leave it out: the judge reads whole replies"}


def _extra_body(body: Any) -> dict[str, Any] | None:
    if body is None:
        return None
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
    return body


def _check_backend(backend: Any) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"judge backend {backend!r} is unknown; use one of {BACKENDS}")


def _at_least_one(obj: Settings, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"judge {name}={getattr(obj, name)} must be >= 1")


@dataclass(frozen=True)
class OpenAIOptions(Settings):
    """An OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, …)."""

    KIND: ClassVar[str] = "openai judge"

    base_url: str = setting(DEFAULT_OPENAI_URL, "the server (short form: openai:MODEL@URL)")
    api_key_env: str = setting("OPENAI_API_KEY", "environment variable that holds the API key")
    concurrency: int = setting(4, "requests in flight")
    max_retries: int = setting(5, "retries of a transient failure (429, 5xx, timeouts)")
    timeout_s: float = setting(120.0, "seconds per request")
    backoff_base_s: float = setting(1.0, "first retry delay; doubles per retry, with jitter")
    backoff_max_s: float = setting(60.0, "longest retry delay (a server's Retry-After wins)")
    # None (`temperature: none`): not sent, so the server's default applies -- reasoning models
    # accept no other. A 400 rejecting 0.0 drops it for the rest of the run (backends/openai.py).
    temperature: float | None = setting(0.0, "sampling temperature; none: not sent")
    max_tokens: int = setting(1024, "the reply's token limit, sent under the name token_param")
    # Current OpenAI models reject `max_tokens` and want `max_completion_tokens`; vLLM and llama.cpp
    # take `max_tokens`. A 400 rejecting the one sent switches to the other for the rest of the run.
    token_param: str = setting("max_tokens", "request field of the token limit", choices=TOKEN_PARAMS)
    extra_body: dict[str, Any] | None = setting(None, "merged into every request body (YAML/dict specs only)",
                                                coerce=_extra_body)
    input_cost_per_1m: float = setting(0.0, "USD per million prompt tokens (for the cost column)")
    output_cost_per_1m: float = setting(0.0, "USD per million reply tokens")

    def __post_init__(self) -> None:
        _at_least_one(self, "concurrency")
        if self.token_param not in TOKEN_PARAMS:
            raise ConfigError(f"judge token_param {self.token_param!r} is unknown; use one of {TOKEN_PARAMS}")
        _extra_body(self.extra_body)


@dataclass(frozen=True)
class LocalOptions(Settings):
    """A judge model run in this process (the hf and rm backends)."""

    KIND: ClassVar[str] = "local judge"

    device: str | None = setting(None, "torch device; none: cuda if present, else cpu")
    # `auto`: bf16 where it is fast (GPU, CPUs with native bf16), else fp32 (alignez_eval.dtypes).
    # Verdict/grade logits are always computed in fp32.
    dtype: str = setting("auto", "weights dtype: auto | float32 | bfloat16 | float16")
    batch_size: int = setting(4, "inputs per forward pass")
    max_answer_tokens: int = setting(1024, "longer answers are cut (and the cut recorded) to bound cost")

    def __post_init__(self) -> None:
        _at_least_one(self, "batch_size", "max_answer_tokens")


@dataclass(frozen=True)
class HFOptions(LocalOptions):
    KIND: ClassVar[str] = "hf judge"

    prefix_cache: int = setting(1, "compute the prompt prefix all inputs share once (0: off)")


@dataclass(frozen=True)
class RMOptions(LocalOptions):
    KIND: ClassVar[str] = "rm judge"

    label_index: int = setting(0, "which output of the classification head is the reward")


@dataclass(frozen=True)
class ScorerOptions(Settings):
    """A scorer head: its feature model, layers, dtype and answer cut are the head's own (its
    provenance), so only the batch size is the user's."""

    KIND: ClassVar[str] = "scorer judge"

    batch_size: int = setting(4, "answers per forward pass of the feature model")

    def __post_init__(self) -> None:
        _at_least_one(self, "batch_size")


OPTIONS: dict[str, type[Settings]] = {"openai": OpenAIOptions, "hf": HFOptions, "rm": RMOptions,
                                      "scorer": ScorerOptions}
# Runtime objects, not settings: never parsed, never recorded.
_OBJECTS = ("model_obj", "tokenizer_obj")


@dataclass(frozen=True)
class JudgeSpec(Settings):
    """What every backend shares; the backend's own settings are `options`. `None` fields take the
    mode's and backend's defaults in `__post_init__`, so a spec always says what it will do."""

    KIND: ClassVar[str] = "judge"

    backend: str = setting("", f"one of {'|'.join(BACKENDS)}", choices=BACKENDS)
    model: str = setting("", "hf/rm: a path or embedded model name; openai: the served model; scorer: a head")
    mode: str | None = setting(None, "pairwise | single; default pairwise (hf, openai), single (rm, scorer)",
                               choices=MODES)
    prompt: str | None = setting(None, "packaged prompt name or YAML path; default: the mode's")
    margin: float | None = setting(None, "tie band of a verdict (default per backend and mode)")
    # Verdict-time length correction β (see judge/verdicts.py): score - β·tanh(ln(len_cand/len_base)).
    # Like the margin it is not part of identity(): cached judgments are re-used under any β.
    length_debias: float | None = setting(None, "length correction β; default 0.05 for hf pairwise, else 0")
    scale: int | None = setting(None, "top grade in single mode: default 9 for hf (see prompts/single.yaml), else 10")
    options: Any = setting(None, "the backend's own settings (OPTIONS[backend])", cli=False)
    # An already-loaded model and tokenizer (hf/rm/scorer), e.g. to share a judge with the demo. Not data.
    model_obj: Any = field(default=None, repr=False, compare=False)
    tokenizer_obj: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        _check_backend(self.backend)
        if not self.model:
            raise ConfigError("judge spec names no model; e.g. hf:qwen2.5-coder-1.5b-instruct or openai:gpt-4o@URL")
        if self.backend == "scorer":
            try:  # a missing head fails here, before any model loads, not at the first judgment
                resolve_head_path(self.model)
            except ArtifactError as exc:
                raise ConfigError(str(exc)) from None
        kind = OPTIONS[self.backend]
        if self.options is None:
            put("options", kind())
        elif type(self.options) is not kind:
            raise ConfigError(f"judge options of type {type(self.options).__name__} do not fit the {self.backend} "
                              f"backend; it takes {kind.__name__}")
        scoring = self.backend in SCORING_BACKENDS
        if self.mode is None:
            put("mode", "single" if scoring else "pairwise")
        if self.mode not in MODES:
            raise ConfigError(f"judge mode {self.mode!r} is unknown; use pairwise or single")
        if scoring and self.mode != "single":
            raise ConfigError(f"the {self.backend} backend scores one answer at a time; use mode=single with it")
        hf = self.backend == "hf"
        if self.prompt is None:
            put("prompt", HF_DEFAULTS["prompt"].get(self.mode, self.mode) if hf else self.mode)
        if self.scale is None:
            put("scale", 9 if hf else 10)
        if self.margin is None:
            margin = HF_DEFAULTS["margin"].get(self.mode) if hf else None
            put("margin", DEFAULT_MARGIN["rm" if scoring else self.mode] if margin is None else margin)
        if self.length_debias is None:
            put("length_debias", HF_DEFAULTS["length_debias"].get(self.mode, 0.0) if hf else 0.0)

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The shared settings (the backend's are `OPTIONS[backend].names()`)."""
        return tuple(n for n in super().names() if n != "options" and n not in _OBJECTS)

    @classmethod
    def from_mapping(cls, values: Any) -> JudgeSpec:
        """A checked spec from a flat mapping (each name routed to the spec or to the backend's
        options) or one that nests the backend's settings under `options:` or the backend's name."""
        data = {str(k).replace("-", "_"): v for k, v in dict(values).items()}
        objs = {k: data.pop(k) for k in _OBJECTS if k in data}
        backend = data.get("backend")
        if backend is not None:
            _check_backend(backend)
        if backend is None or not data.get("model"):
            raise ConfigError("judge spec needs at least backend and model (e.g. backend: hf, model: NAME)")
        kind = OPTIONS[backend]
        given: dict[str, Any] = {}
        for key in ("options", backend):
            nested = data.pop(key, None)
            if isinstance(nested, kind):
                nested = dataclasses.asdict(nested)
            if nested is not None and not isinstance(nested, dict):
                raise ConfigError(f"judge spec {key}: must be a mapping of {backend} settings, got {nested!r}")
            given.update(nested or {})
        given.update({k: data.pop(k) for k in list(data) if k not in cls.names()})
        stray = sorted(set(given) - set(kind.names()))
        if stray:
            owners = sorted({b for b in BACKENDS for k in stray if k in OPTIONS[b].names()})
            where = f" ({', '.join(stray)} belong to the {'/'.join(owners)} backend)" if owners else ""
            raise ConfigError(f"judge setting(s) {', '.join(stray)} do not apply to the {backend} backend{where}; "
                              f"its settings are {', '.join(cls.names() + kind.names())}")
        return cls(**cls.typed_values(data), options=kind.from_mapping(given), **objs)

    def replace(self, **changes: Any) -> JudgeSpec:
        """A copy with `changes` read as `from_mapping` reads them; a preloaded model is kept."""
        if not changes:
            return self
        data = self.public_dict()
        data.pop("model_preloaded")
        return type(self).from_mapping({**data, **changes, "model_obj": self.model_obj,
                                        "tokenizer_obj": self.tokenizer_obj})

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

        return resolve_dtype(self.options.dtype, self.options.device)

    def identity(self) -> dict[str, Any]:
        """Everything that changes a raw judgment; hashed into every cache key."""
        # An embedded model is keyed by its registry name, not this machine's path to it, so
        # `hf:NAME` and `hf:$ALIGNEZ_HOME/models/NAME` share judgments (and caches travel).
        model = shareable_text(self.model) if self.backend != "openai" else self.model
        opts = self.options
        if self.backend == "scorer":
            # A head is its content: retraining changes every key, renaming or moving it changes none.
            return {"backend": "scorer", "model": "sha256:" + sha256_file(resolve_head_path(self.model)),
                    "mode": self.mode, "prompt": None, "format": "score"}
        ident: dict[str, Any] = {"backend": self.backend, "model": model, "mode": self.mode,
                                 "prompt": self.load_prompt().tag if self.backend != "rm" else None,
                                 "format": self.output_format}
        if self.backend == "openai":
            ident.update(base_url=opts.base_url.rstrip("/"), temperature=opts.temperature,
                         max_tokens=opts.max_tokens, scale=self.scale)
            # token_param only names the limit, so it stays out. extra_body enters only when set,
            # so the keys of judgments cached before it existed do not change.
            if opts.extra_body:
                ident["extra_body"] = opts.extra_body
        elif self.backend == "hf":
            ident.update(dtype=self.resolved_dtype, max_answer_tokens=opts.max_answer_tokens, scale=self.scale)
        else:
            ident.update(dtype=self.resolved_dtype, max_answer_tokens=opts.max_answer_tokens,
                         label_index=opts.label_index)
        return ident

    def identity_hash(self) -> str:
        # not canonical_json: this text keys every cached judgment, so it stays as first written
        return sha256_text(json.dumps(self.identity(), sort_keys=True))

    def public_dict(self) -> dict[str, Any]:
        """The spec as data (for manifests; `from_mapping` reads it back); loaded objects are left out."""
        d: dict[str, Any] = {name: getattr(self, name) for name in self.names()}
        d["options"] = dataclasses.asdict(self.options)
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
        """A copy that judges with an already-loaded model and tokenizer (hf / rm / scorer backends)."""
        return dataclasses.replace(self, model_obj=model, tokenizer_obj=tokenizer)


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
    data.pop("model_preloaded", None)  # written by public_dict, for readers of a manifest
    return JudgeSpec.from_mapping(data)


def with_overrides(spec: JudgeSpec | str | dict[str, Any], mode: str | None = None,
                   margin: float | None = None) -> JudgeSpec:
    """`spec` with the CLI's --mode / --margin overrides (`judge`, `judge-agreement`): a new mode takes
    that mode's defaults (prompt, margin, length correction); a preloaded model is kept."""
    spec = parse_judge_spec(spec)
    changes: dict[str, Any] = {}
    if mode and mode != spec.mode:
        changes.update(mode=mode, prompt=None, margin=None, length_debias=None)
    if margin is not None:
        changes["margin"] = margin
    return spec.replace(**changes)
