"""Where the decoder blocks and their MLPs live in a model.

Resolution order: an explicit `layers_path` (the user knows best) → a table of known paths (tried
on the model and on the unwrapped model under PEFT / DDP / multimodal wrappers) → a guess (the
`nn.ModuleList` whose length equals the config's layer count). Unknown → ArchitectureError naming
every path tried and how to pass `layers_path=`.

Φ_l (the paper's hidden state) is the forward *output* of `find_components(model, "mlp")[l]`: the
MLP output before the residual add, or with `component="block"` the decoder block's output
(the residual stream after layer l).
"""

from __future__ import annotations

import logging

import torch

from alignez_eval.errors import ArchitectureError

logger = logging.getLogger(__name__)

# Dotted paths to the decoder-block ModuleList, relative to a (possibly unwrapped) model.
KNOWN_LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma 1-3 (text), Phi, Phi-3, OLMo, SmolLM
    "transformer.h",  # GPT-2, GPT-J, Falcon, BLOOM
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.language_model.layers",  # transformers 5 multimodal (Gemma3ForConditionalGeneration, LLaVA)
    "language_model.model.layers",  # transformers 4 multimodal
    "language_model.layers",
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "model.transformer.blocks",  # OLMo (original)
    "layers",  # a bare decoder (LlamaModel) passed directly
    "h",  # a bare GPT2Model
)

# Attribute names of the feed-forward submodule inside a decoder block.
MLP_NAMES: tuple[str, ...] = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "ff")

COMPONENTS = ("mlp", "block")


def _get_path(root: torch.nn.Module, path: str) -> torch.nn.Module | None:
    obj: object = root
    for part in path.split("."):
        if part.isdigit() and isinstance(obj, (torch.nn.ModuleList, torch.nn.Sequential)):
            idx = int(part)
            if idx >= len(obj):
                return None
            obj = obj[idx]
        else:
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.nn.Module) else None


def _unwrapped(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model itself, then what wrappers hold (DDP `.module`, PEFT `get_base_model()` /
    `.base_model.model`), without duplicates."""
    out: list[torch.nn.Module] = []
    todo = [model]
    while todo:
        m = todo.pop(0)
        if any(m is o for o in out):
            continue
        out.append(m)
        inner = getattr(m, "module", None)  # DistributedDataParallel / accelerate wrappers
        if isinstance(inner, torch.nn.Module):
            todo.append(inner)
        get_base = getattr(m, "get_base_model", None)  # PEFT
        if callable(get_base):
            try:
                base = get_base()
            except Exception:  # a wrapper's own failure just means "not this path"
                base = None
            if isinstance(base, torch.nn.Module):
                todo.append(base)
        base_model = getattr(m, "base_model", None)  # PEFT LoraModel: .base_model.model
        if isinstance(base_model, torch.nn.Module) and base_model is not m:
            todo.append(base_model)
            inner_model = getattr(base_model, "model", None)
            if isinstance(inner_model, torch.nn.Module):
                todo.append(inner_model)
    return out


def _config_num_layers(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    get_text = getattr(cfg, "get_text_config", None)
    text_cfg = get_text() if callable(get_text) else cfg
    for c in (text_cfg, cfg):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            v = getattr(c, key, None)
            if isinstance(v, int):
                return v
    return None


def _as_layer_list(obj: torch.nn.Module | None) -> list[torch.nn.Module] | None:
    if isinstance(obj, (torch.nn.ModuleList, torch.nn.Sequential)) and len(obj) > 0:
        return list(obj)
    return None


def _guess_layers(model: torch.nn.Module) -> tuple[str, list[torch.nn.Module]] | None:
    """The ModuleList of identical blocks whose length is the config's layer count (or, without a
    config, the longest such list that is not inside a vision tower)."""
    want = _config_num_layers(model)
    best: tuple[str, list[torch.nn.Module]] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if len({type(c) for c in mod}) != 1:
            continue
        if any(v in name for v in ("vision", "visual", "image", "audio", "encoder")):
            continue
        if want is not None and len(mod) != want:
            continue
        if best is None or len(mod) > len(best[1]):
            best = (name, list(mod))
    return best


def find_layers(model: torch.nn.Module, layers_path: str | None = None) -> list[torch.nn.Module]:
    """The decoder blocks, in order."""
    tried: list[str] = []
    roots = _unwrapped(model)
    if layers_path:
        for root in roots:
            found = _as_layer_list(_get_path(root, layers_path))
            if found is not None:
                return found
        raise ArchitectureError(
            f"layers_path={layers_path!r} does not name a non-empty ModuleList in {type(model).__name__}; "
            "print(model) to see its module names and pass the dotted path of the decoder-block list"
        )
    for root in roots:
        for path in KNOWN_LAYER_PATHS:
            tried.append(f"{type(root).__name__}.{path}")
            found = _as_layer_list(_get_path(root, path))
            if found is not None and _looks_like_decoder(found, root):
                return found
    for root in roots:
        guess = _guess_layers(root)
        if guess is not None:
            logger.info("decoder layers of %s guessed at %r", type(root).__name__, guess[0])
            return guess[1]
    tried.append("guess: a ModuleList of identical blocks with config.num_hidden_layers entries")
    raise ArchitectureError(
        f"cannot find the decoder layers of {type(model).__name__}; tried: {', '.join(tried)}. "
        "Pass the dotted path of the decoder-block ModuleList, e.g. model_args layers_path=model.layers "
        "(or find_layers(model, layers_path=...))"
    )


def _looks_like_decoder(layers: list[torch.nn.Module], root: torch.nn.Module) -> bool:
    want = _config_num_layers(root)
    return want is None or len(layers) == want


def _mlp_of(block: torch.nn.Module) -> torch.nn.Module | None:
    for name in MLP_NAMES:
        sub = getattr(block, name, None)
        if isinstance(sub, torch.nn.Module):
            return sub
    return None


def find_components(
    model: torch.nn.Module, component: str = "mlp", layers_path: str | None = None
) -> list[torch.nn.Module]:
    """One module per decoder layer whose forward output is Φ_l: the MLP for "mlp", the whole
    decoder block for "block"."""
    if component not in COMPONENTS:
        raise ArchitectureError(f"unknown component {component!r}; choose one of {COMPONENTS}")
    layers = find_layers(model, layers_path)
    if component == "block":
        return layers
    mlps = [_mlp_of(b) for b in layers]
    missing = [i for i, m in enumerate(mlps) if m is None]
    if missing:
        names = sorted({n for n, _ in layers[missing[0]].named_children()})
        raise ArchitectureError(
            f"decoder block {missing[0]} ({type(layers[missing[0]]).__name__}) has no MLP submodule "
            f"named any of {MLP_NAMES} (its children: {names}); use component=block, "
            "or report the architecture"
        )
    return [m for m in mlps if m is not None]


def hidden_size(model: torch.nn.Module) -> int:
    """d of the decoder's residual stream (the text config's for multimodal models)."""
    for root in _unwrapped(model):
        cfg = getattr(root, "config", None)
        if cfg is None:
            continue
        get_text = getattr(cfg, "get_text_config", None)
        for c in ((get_text() if callable(get_text) else cfg), cfg):
            for key in ("hidden_size", "n_embd", "d_model"):
                v = getattr(c, key, None)
                if isinstance(v, int):
                    return v
    raise ArchitectureError(
        f"cannot read the hidden size of {type(model).__name__} from its config (tried hidden_size, "
        "n_embd, d_model, also on the text config)"
    )


def num_layers(model: torch.nn.Module, layers_path: str | None = None) -> int:
    """Number of decoder blocks (counted on the module list, so it agrees with find_layers)."""
    return len(find_layers(model, layers_path))
