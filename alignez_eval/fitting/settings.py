"""What decides a fit: `FitSettings`, each field's default, help text and choices written once.

The `alignez-eval fit` flags and the `fit_*` model_args of `alignez-hf` are both built from these
fields. This module imports no torch, so `alignez-eval fit --help` stays fast; the editing modules
that own the choice lists are imported only when a settings object is checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from alignez_eval.editing.config import COMPONENTS, GATES
from alignez_eval.errors import ConfigError
from alignez_eval.sampling import Sampling
from alignez_eval.settings import Settings, setting

if TYPE_CHECKING:
    from alignez_eval.selfpref.pipeline import SelfPrefSettings

METHODS = ("v2", "v1", "caa", "iti")
RULE_OF = {"v2": "alignez", "v1": "projection", "caa": "add", "iti": "add"}
DEFAULT_GATE = {"v2": "paper", "v1": "none", "caa": "none", "iti": "none"}

# Shown by `fit --help`. Three lists belong to torch-importing modules (fitting.subspaces,
# fitting.capture, selfpref.generate), so they are restated here for the help only;
# tests/test_fit_cli.py checks they still match, and validation below uses the owners' lists.
HELP_CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS,
    "harm_basis": ("neg_align", "harm_orth"),
    "component": COMPONENTS,
    "read": ("last", "mean"),
    "gate": ("auto", *GATES),
    "chat": ("auto", "yes", "no"),
}

# argparse groups of `alignez-eval fit`, in help order
GROUPS = ("data", "method", "generation")


def _setting(default: Any, help: str, group: str, *, flag: str | None = None, cli: bool = True,
             coerce: Any = None) -> Any:
    """A FitSettings field (alignez_eval.settings.setting) in one of the `fit` command's GROUPS."""
    return setting(default, help, group=group, flag=flag, cli=cli, coerce=coerce)


def _gate(raw: Any) -> str:
    # lm-eval's model_args parser turns `none` into None; here none is a gate of its own
    return "none" if raw is None else str(raw).strip()


@dataclass(frozen=True)
class FitSettings(Settings):
    """Everything that decides a fit. Names are the CLI flags (dashes → underscores) and the
    `fit_*` model_args of `alignez-hf`; read from loose values by `Settings.from_mapping`."""

    KIND: ClassVar[str] = "fit"

    method: str = _setting(
        "v2", "v2: AlignEZ's helpful/harmful subspaces; v1: RoboShot's projection; caa, iti: additive steering",
        "method")
    keywords: str = _setting("helpful", "the characteristics asked for: helpful | harmless | humor | POS/NEG",
                             "data")
    energy: float = _setting(0.90, "v2: fraction of Σσ² the helpful basis keeps", "method")
    cos_threshold: float = _setting(
        0.8, "v1/v2: per layer, drop pairs whose two embeddings have cosine above this", "method")
    min_pairs: int = _setting(4, "a layer resting on fewer surviving pairs is not edited", "method")
    harm_basis: str = _setting("neg_align", "v2: the harmful basis, opposite the helpful one or orthogonal to it",
                               "method")
    component: str = _setting("mlp", "where Φ is read and the edit applies", "method")
    layers_path: str | None = _setting(None, "dotted path of the decoder-block list", "method", cli=False)
    read: str = _setting("last", "Φ at the last token, or the mean over the answer tokens", "method")
    gate: str = _setting("auto", "recorded in the artifact; auto: paper for v2, none otherwise", "method",
                         coerce=_gate)
    n_layers: int = _setting(5, "per-query top-n layers for layers=auto, recorded in the artifact", "method")
    top_k: int = _setting(5, "iti/caa: layers kept by probe accuracy", "method")
    probe_folds: int = _setting(5, "cross-validation folds of the per-layer probe", "method")
    probe_l2: float = _setting(1e-2, "L2 penalty of the per-layer probe", "method")
    char_tokens: int = _setting(50, "new tokens per characteristic", "generation")
    answer_tokens: int = _setting(200, "new tokens per answer", "generation")
    gen_batch_size: int = _setting(16, "queries per generate call", "generation", flag="--batch-size")
    act_batch_size: int = _setting(16, "texts per activation forward", "generation")
    chat: str = _setting("auto", "prompt with the tokenizer's chat template (auto: when it has one)", "generation")
    do_sample: bool = _setting(Sampling.do_sample, "greedy decoding instead of sampling", "generation",
                               flag="--greedy")
    temperature: float = _setting(Sampling.temperature, "sampling temperature", "generation")
    top_p: float = _setting(Sampling.top_p, "nucleus sampling mass", "generation")
    repetition_penalty: float = _setting(Sampling.repetition_penalty, "1.0: no penalty", "generation")
    seed: int = _setting(Sampling.seed, "generation and probe seed", "generation")
    limit: int | None = _setting(None, "use only the first N queries", "data")
    pref_limit: int | None = _setting(None, "use only the first N usable real pairs", "data")

    def __post_init__(self) -> None:
        # lazy: `fit --help` reads these settings without torch (5.6 s, measured on AMD EPYC, 2 cores)
        from alignez_eval.fitting.capture import READS
        from alignez_eval.fitting.subspaces import HARM_BASES
        from alignez_eval.selfpref.templates import parse_keywords

        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 < float(self.energy) <= 1.0:
            raise ConfigError(f"energy={self.energy} must be in (0, 1], e.g. 0.9")
        if not -1.0 <= float(self.cos_threshold) <= 1.0:
            raise ConfigError(f"cos_threshold={self.cos_threshold} must be a cosine in [-1, 1]")
        if self.harm_basis not in HARM_BASES:
            raise ConfigError(f"harm_basis={self.harm_basis!r}; choose one of {', '.join(HARM_BASES)}")
        if self.component not in COMPONENTS:
            raise ConfigError(f"component={self.component!r}; choose one of {', '.join(COMPONENTS)}")
        if self.read not in READS:
            raise ConfigError(f"read={self.read!r}; choose one of {', '.join(READS)}")
        if self.gate != "auto" and self.gate not in GATES:
            raise ConfigError(f"gate={self.gate!r}; choose one of auto, {', '.join(GATES)}")
        if self.gate not in ("auto", "none") and RULE_OF[self.method] != "alignez":
            raise ConfigError(f"gate={self.gate} applies to method v2 only; use gate=none with {self.method}")
        for name in ("min_pairs", "n_layers", "top_k", "probe_folds", "char_tokens", "answer_tokens",
                     "gen_batch_size", "act_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be ≥ 1")
        for name in ("limit", "pref_limit"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name}={v} must be ≥ 1")
        parse_keywords(self.keywords)

    @property
    def effective_gate(self) -> str:
        return DEFAULT_GATE[self.method] if self.gate == "auto" else self.gate

    def selfpref(self) -> SelfPrefSettings:
        # lazy: `fit --help` reads these settings without torch (5.6 s, measured on AMD EPYC, 2 cores)
        from alignez_eval.selfpref.pipeline import SelfPrefSettings

        return SelfPrefSettings(
            keywords=self.keywords, char_tokens=self.char_tokens, answer_tokens=self.answer_tokens,
            batch_size=self.gen_batch_size, chat=self.chat,
            sampling=Sampling(do_sample=self.do_sample, temperature=self.temperature, top_p=self.top_p,
                              repetition_penalty=self.repetition_penalty, seed=self.seed),
        )

    def fit_inputs(self) -> dict[str, Any]:
        """The settings that change the artifact once the pairs are fixed (the fit cache key)."""
        skip = {"keywords", "char_tokens", "answer_tokens", "gen_batch_size", "act_batch_size", "chat", "do_sample",
                "temperature", "top_p", "repetition_penalty", "seed", "limit", "pref_limit"}
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["gate"] = self.effective_gate
        return d
