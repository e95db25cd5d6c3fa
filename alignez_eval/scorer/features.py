"""Frozen features of a causal LM for (instruction, answer) pairs: the scorer's input.

An answer is rendered as the feature model's chat (user = instruction, assistant = answer, the
answer cut to `max_answer_tokens`), run once through the backbone (no LM head, and only up to the
deepest layer asked for, since nothing above it is read), and pooled at each layer in `layers`:
  mean   the mean hidden state over the answer's tokens (the instruction is context, not content)
  last   the hidden state of the last token
Layer l is hidden_states[l]: 0 is the embeddings, l >= 1 the output of block l; the deepest layer
read goes through the model's final norm, as the last hidden state of a model that ends there
(the pass stops at that block, and transformers norms the last hidden state it returns).

`FeatureStore` keeps every extracted vector on disk, content-addressed by (feature identity,
instruction, answer), in safetensors shards written atomically as extraction goes: an interrupted
run resumes where it stopped and a finished one is never recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from alignez_eval.atomic import atomic_write_safetensors
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.hashing import sha256_json, sha256_text
from alignez_eval.models.paths import alignez_home
from alignez_eval.scorer.spec import FeatureSpec, answer_key

logger = logging.getLogger(__name__)

FEATURE_FORMAT = "alignez-eval/scorer-features/1"
SHARD_SIZE = 256
# Pending answers are sorted by length inside windows of this many, so batches pad little while an
# interrupted run has still covered its input in order, window by window.
SORT_WINDOW = 4096
# Instructions longer than this are cut too (a few AlpacaEval ones hold whole documents).
MAX_INSTRUCTION_TOKENS = 256


def resolve_model_dir(name: str) -> Path:
    from alignez_eval.judge.backends.loading import resolve_model_path

    return Path(resolve_model_path(name))


def model_sha256(model: str, prepare: bool = True) -> str | None:
    """sha256 of a feature model's weights as its manifest records them (embedded models; a plain
    directory has no manifest -> None). `prepare=False` never builds an embedded model to find out."""
    from alignez_eval.models import MODELS
    from alignez_eval.models.paths import prepared_dir

    if Path(model).is_dir():
        directory = Path(model)
    elif model in MODELS:
        directory = resolve_model_dir(model) if prepare else prepared_dir(model)
    else:
        return None
    try:
        manifest = json.loads((directory / "alignez-model.json").read_text())
    except (OSError, ValueError):
        return None
    weights = sorted((k, v.get("sha256")) for k, v in manifest.get("files", {}).items() if k.endswith(".safetensors"))
    return weights[0][1] if len(weights) == 1 else None


def prefix_ids(tok: Any, instruction: str) -> list[int]:
    """The tokens before an answer: the instruction (cut at MAX_INSTRUCTION_TOKENS) in the feature
    model's chat template, or a plain Human/Assistant turn for a model without one."""
    q_ids = tok(instruction, add_special_tokens=False)["input_ids"]
    if len(q_ids) > MAX_INSTRUCTION_TOKENS:
        instruction = tok.decode(q_ids[:MAX_INSTRUCTION_TOKENS])
    if getattr(tok, "chat_template", None):
        prefix = tok.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                         add_generation_prompt=True)
        return list(tok(prefix, add_special_tokens=False)["input_ids"])
    return list(tok(f"Human: {instruction}\nAssistant: ")["input_ids"])


@dataclass
class FeatureExtractor:
    """Loads the feature model's backbone once and turns (instruction, answer) pairs into vectors."""

    spec: FeatureSpec
    batch_size: int = 8
    device: str = "cpu"
    model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    forward_passes: int = 0

    def __post_init__(self) -> None:
        if self.model is None:
            self._load()
        self.dim = int(self.model.config.hidden_size)
        n_layers = int(self.model.config.num_hidden_layers)
        if max(self.spec.layers) > n_layers:
            raise ConfigError(f"scorer layer {max(self.spec.layers)} does not exist: {self.spec.model} has "
                              f"{n_layers} blocks (hidden states 0..{n_layers})")
        # Blocks above the deepest layer read are never needed: drop them for the pass.
        layers = _decoder_layers(self.model)
        if layers is not None and max(self.spec.layers) < len(layers):
            del layers[max(self.spec.layers):]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_dir(self.spec.model)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.spec.dtype]
        logger.info("loading scorer feature model %s (%s, backbone only)", self.spec.model, self.spec.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(self.device).eval()

    @property
    def width(self) -> int:
        return self.dim * len(self.spec.blocks)

    def render(self, instruction: str, answer: str) -> tuple[list[int], int]:
        """-> (token ids, index of the first answer token)."""
        tok = self.tokenizer
        ids = tok(answer, add_special_tokens=False)["input_ids"][: self.spec.max_answer_tokens]
        answer = tok.decode(ids)
        head = prefix_ids(tok, instruction)
        body = tok(answer, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
        return list(head) + list(body), len(head)

    @torch.no_grad()
    def _batch(self, rendered: list[tuple[list[int], int]]) -> np.ndarray:
        n, width = len(rendered), max(len(ids) for ids, _ in rendered)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        answer_mask = torch.zeros((n, width), dtype=torch.float32)
        for i, (ids, start) in enumerate(rendered):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            answer_mask[i, start: len(ids)] = 1.0
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                         output_hidden_states=True, use_cache=False)
        self.forward_passes += n
        hs = out.hidden_states
        last = mask.sum(1) - 1
        rows = torch.arange(n)
        cols = []
        for layer, pool in self.spec.blocks:
            h = hs[layer].float().cpu()
            if pool == "mean":
                w = answer_mask / answer_mask.sum(1, keepdim=True).clamp_min(1.0)
                cols.append(torch.einsum("nt,ntd->nd", w, h))
            else:
                cols.append(h[rows, last])
        return torch.cat(cols, dim=1).numpy().astype(np.float32)

    def extract(self, items: Sequence[tuple[str, str]], progress: bool = True) -> np.ndarray:
        """Vectors for `items` (instruction, answer), in order. Batches are formed by length."""
        rendered = [self.render(i, a) for i, a in items]
        order = sorted(range(len(items)), key=lambda k: len(rendered[k][0]))
        out = np.zeros((len(items), self.width), dtype=np.float32)
        bar = tqdm(total=len(items), desc="scorer features", unit="answer", disable=not progress, leave=False)
        for s in range(0, len(order), self.batch_size):
            idx = order[s: s + self.batch_size]
            out[idx] = self._batch([rendered[k] for k in idx])
            bar.update(len(idx))
        bar.close()
        return out


def _decoder_layers(model: Any) -> Any:
    for path in ("layers", "model.layers", "h", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    return None


def default_store_root() -> Path:
    return alignez_home() / "scorer" / "features"


class FeatureStore:
    """Vectors on disk for one FeatureSpec: `ROOT/<identity hash>/shard-NNNNN.safetensors`, each shard
    holding `features` [n, width] and its rows' answer keys in the metadata. Shards are written
    atomically; a torn or foreign file is skipped with a warning (its rows are recomputed)."""

    def __init__(self, spec: FeatureSpec, root: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.dir = Path(root or default_store_root()) / spec.identity_hash()[:24]
        self.index: dict[str, tuple[str, int]] = {}  # key -> (shard number, row)
        self._shards: dict[str, np.ndarray] = {}
        self.width: int | None = None
        self._scan()

    def _scan(self) -> None:
        from safetensors import safe_open

        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                num = path.stem.split("-", 1)[1]
                with safe_open(str(path), framework="numpy") as f:
                    meta = f.metadata() or {}
                    if meta.get("format") != FEATURE_FORMAT or meta.get("identity") != self.spec.identity_hash():
                        raise ValueError("written for other features")
                    keys = json.loads(meta["keys"])
                    shape = f.get_slice("features").get_shape()
                if len(keys) != shape[0]:
                    raise ValueError("keys and rows differ")
            except Exception as exc:  # noqa: BLE001 -- any unreadable shard is recomputed, never trusted
                logger.warning("scorer feature shard %s is unreadable (%s); its answers will be recomputed", path, exc)
                continue
            self.width = int(shape[1])
            for row, key in enumerate(keys):
                self.index[key] = (num, row)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, num: str) -> np.ndarray:
        if num not in self._shards:
            from safetensors.numpy import load_file

            self._shards[num] = load_file(str(self.dir / f"shard-{num}.safetensors"))["features"]
        return self._shards[num]

    def get(self, keys: Sequence[str]) -> np.ndarray:
        rows = [self._shard(self.index[k][0])[self.index[k][1]] for k in keys]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.width or 0), np.float32)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # Named by content, so two processes filling one store never pick the same file name.
        num = sha256_text("\n".join(keys))[:16]
        meta = {"format": FEATURE_FORMAT, "identity": self.spec.identity_hash(),
                "keys": json.dumps(list(keys))}
        atomic_write_safetensors(self.dir / f"shard-{num}.safetensors",
                                 {"features": torch.from_numpy(np.ascontiguousarray(vectors))}, metadata=meta)
        (self.dir / "spec.json").write_text(json.dumps(self.spec.identity(), indent=1))
        self._shards[num] = vectors
        self.width = int(vectors.shape[1])
        for row, key in enumerate(keys):
            self.index[key] = (num, row)


def compatible_stores(spec: FeatureSpec, root: str | os.PathLike[str] | None = None) -> list[tuple[FeatureStore, np.ndarray]]:
    """Stores under `root` whose vectors contain every block of `spec` (same model, answer cut,
    dtype and rendering; a superset of layers and poolings), with the columns that are `spec`'s.
    A head trained on some of a study's features reads them from the study's store."""
    root = Path(root or default_store_root())
    want = spec.identity()
    found = []
    for path in sorted(root.glob("*/spec.json")) if root.is_dir() else []:
        try:
            ident = json.loads(path.read_text())
            other = FeatureSpec(model=ident["model"], layers=tuple(ident["layers"]), poolings=tuple(ident["poolings"]),
                                max_answer_tokens=int(ident["max_answer_tokens"]), dtype=ident["dtype"])
        except (OSError, ValueError, KeyError, ConfigError):
            continue
        same = all(ident.get(k) == want[k] for k in ("model", "max_answer_tokens", "dtype", "render"))
        if not same or not set(spec.blocks) <= set(other.blocks):
            continue
        store = FeatureStore(other, root)
        if len(store) and store.width:
            found.append((store, other.columns(spec, store.width // len(other.blocks))))
    return found


def approx_length(item: tuple[str, str]) -> int:
    """Characters the feature model will read of (instruction, answer): a tokenizer-free proxy of the
    rendered length, with the same cuts (about 4 characters a token)."""
    instruction, answer = item
    return min(len(instruction), 4 * MAX_INSTRUCTION_TOKENS) + min(len(answer), 4 * 200)


def length_windows(pending: list[tuple[str, tuple[str, str]]], window: int) -> list[tuple[str, tuple[str, str]]]:
    out = []
    for s in range(0, len(pending), window):
        out += sorted(pending[s: s + window], key=lambda kv: approx_length(kv[1]))
    return out


def features_for(items: Sequence[tuple[str, str]], spec: FeatureSpec, *,
                 store_root: str | os.PathLike[str] | None = None, use_store: bool = True,
                 extractor: FeatureExtractor | None = None, batch_size: int = 8, shard_size: int = SHARD_SIZE,
                 progress: bool = True) -> tuple[np.ndarray, FeatureExtractor | None]:
    """Vectors of `items` (instruction, answer) in order: read from any compatible store, the rest
    computed and stored shard by shard (so an interrupted run resumes). -> (matrix, the extractor
    if one had to be loaded, else the one given)."""
    if not items:
        raise DataError("no answers to compute scorer features for")
    keys = [answer_key(i, a) for i, a in items]
    found: dict[str, np.ndarray] = {}
    own = FeatureStore(spec, store_root) if use_store else None
    for store, cols in compatible_stores(spec, store_root) if use_store else []:
        hit = [k for k in dict.fromkeys(keys) if k in store and k not in found]
        if hit:
            found.update(zip(hit, store.get(hit)[:, cols], strict=True))
    todo = {k: it for k, it in zip(keys, items, strict=True) if k not in found}
    if todo:
        extractor = extractor or FeatureExtractor(spec, batch_size=batch_size)
        pending = length_windows(list(todo.items()), SORT_WINDOW)
        logger.info("scorer features: %d of %d answers stored, %d to compute", len(set(keys)) - len(pending),
                    len(set(keys)), len(pending))
        bar = tqdm(total=len(pending), desc="scorer features", unit="answer", disable=not progress)
        for s in range(0, len(pending), shard_size):
            chunk = pending[s: s + shard_size]
            vecs = extractor.extract([it for _, it in chunk], progress=False)
            if own is not None:
                own.put([k for k, _ in chunk], vecs)
            found.update(zip([k for k, _ in chunk], vecs, strict=True))
            bar.update(len(chunk))
        bar.close()
    return np.stack([found[k] for k in keys]).astype(np.float32), extractor


EXPORT_FORMAT = "alignez-eval/scorer-features-export/1"


def _export_checksum(identity: str, keys: Sequence[str], vectors: np.ndarray) -> str:
    h = hashlib.sha256(identity.encode() + b"\n" + "\n".join(keys).encode() + b"\n")
    h.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    return h.hexdigest()


def store_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The feature stores under `root` (each a folder with spec.json and shards)."""
    root = Path(root or default_store_root())
    return sorted(p.parent for p in root.glob("*/spec.json")) if root.is_dir() else []


def export_store(store_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Every vector of one store as one safetensors file (rows sorted by answer key, the spec and a
    checksum in the metadata), so an encoding made once is reused by `train-scorer` anywhere.
    -> rows written."""
    store_dir = Path(store_dir)
    try:
        ident = json.loads((store_dir / "spec.json").read_text())
    except (OSError, ValueError):
        raise DataError(f"{store_dir} is not a scorer feature store (no readable spec.json); list the stores with "
                        "`alignez-eval scorer-features list`") from None
    identity = sha256_json(ident)
    store = FeatureStore(IdentitySpec(ident), store_dir.parent)
    if store.dir.resolve() != store_dir.resolve():
        raise DataError(f"{store_dir}'s folder name does not match its spec.json; it was moved or edited")
    keys = sorted(store.index)
    if not keys:
        raise DataError(f"feature store {store_dir} holds no vectors to export")
    vectors = store.get(keys)
    meta = {"format": EXPORT_FORMAT, "identity": identity, "spec": json.dumps(ident, sort_keys=True),
            "keys": json.dumps(keys), "checksum": _export_checksum(identity, keys, vectors)}
    atomic_write_safetensors(out, {"features": torch.from_numpy(np.ascontiguousarray(vectors))}, metadata=meta)
    return len(keys)


def import_store(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> tuple[Path, int]:
    """Load an exported file into the store it came from under `root` (rows already there are kept).
    -> (store folder, rows added)."""
    from safetensors import safe_open

    fix = "export it again with `alignez-eval scorer-features export`"
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            vectors = f.get_tensor("features") if meta.get("format") == EXPORT_FORMAT else None
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is one clear error
        raise DataError(f"{path} is not a readable scorer feature export ({exc}); {fix}") from None
    if vectors is None:
        raise DataError(f"{path} is not a scorer feature export (format {meta.get('format')!r}); {fix}")
    try:
        ident = json.loads(meta["spec"])
        keys = json.loads(meta["keys"])
    except (KeyError, ValueError):
        raise DataError(f"{path} has damaged metadata; {fix}") from None
    identity = sha256_json(ident)
    if identity != meta.get("identity") or len(keys) != len(vectors) or \
            meta.get("checksum") != _export_checksum(identity, keys, vectors):
        raise DataError(f"{path} fails its checksum: its vectors, keys or spec changed after export; {fix}")
    store = FeatureStore(IdentitySpec(ident), root or default_store_root())
    new = [i for i, k in enumerate(keys) if k not in store]
    for s in range(0, len(new), SHARD_SIZE):
        idx = new[s: s + SHARD_SIZE]
        store.put([keys[i] for i in idx], np.ascontiguousarray(vectors[idx]))
    return store.dir, len(new)


class IdentitySpec:
    """A stored spec.json as the FeatureStore's key (identity / identity_hash), whatever its kind."""

    def __init__(self, ident: dict[str, Any]) -> None:
        self.ident = ident

    def identity(self) -> dict[str, Any]:
        return self.ident

    def identity_hash(self) -> str:
        return sha256_json(self.ident)
