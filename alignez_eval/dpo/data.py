"""Preference files for DPO and the pool split.

A preference file is JSONL (optionally .gz) or a .json list of rows in any format `fit --pref-data`
reads (alignez_eval.fitting.prefdata.parse_row): HH-RLHF `chosen`/`rejected` transcripts,
`prompt`/`chosen`/`rejected`, or UltraFeedback message lists. Every pair is framed as the base-model
task variants frame a query (`frame`), so the DPO models are trained on the prompt format they are
evaluated with.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.fitting.prefdata import hh_prompts_differ, parse_row, read_rows
from alignez_eval.selfpref.clean import normalize

FORMATS_HELP = ("one JSON object per line (.jsonl or .jsonl.gz) or a .json list: HH-RLHF "
                '{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}, '
                '{"prompt": ..., "chosen": ..., "rejected": ...} or UltraFeedback message lists')
# The base-model task variants' frame (tasks/utils.py base_prompt), kept equal by a test.
BASE_PREAMBLE = "The following is a conversation between a human and an AI assistant.\n\n"


def frame(query: str) -> str:
    """The prompt a base model sees for `query` (multi-turn HH context stays inside it)."""
    return f"{BASE_PREAMBLE}Human: {query}\n\nAssistant:"


@dataclass(frozen=True)
class PrefPair:
    id: str
    query: str  # the user turn(s); earlier turns kept as "a\n\nAssistant: b\n\nHuman: c"
    chosen: str
    rejected: str
    line: int

    @property
    def prompt(self) -> str:
        return frame(self.query)

    @property
    def single_turn(self) -> bool:
        return "\n\nAssistant:" not in self.query and "\n\nHuman:" not in self.query

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_pairs(path: str | Path) -> list[PrefPair]:
    """The usable pairs of a preference file, in file order. Pairs whose answers are empty or
    identical, or whose HH transcripts lead up to different prompts, are skipped (they carry no
    preference). A missing, unreadable, empty or malformed file is one DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"preference file {str(path)!r} does not exist; pass {FORMATS_HELP}")
    rows = read_rows(path, FORMATS_HELP)
    if not rows:
        raise DataError(f"preference file {str(path)!r} is empty; expected {FORMATS_HELP}")
    out: list[PrefPair] = []
    for n, obj in rows:
        try:
            fmt, q, c, r = parse_row(obj)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: {exc}; expected {FORMATS_HELP}") from exc
        if (fmt == "hh" and hh_prompts_differ(obj)) or not c or not r or normalize(c) == normalize(r):
            continue
        pid = hashlib.sha256(json.dumps([q, c, r]).encode("utf-8")).hexdigest()[:16]
        out.append(PrefPair(id=pid, query=q, chosen=c, rejected=r, line=n))
    if not out:
        raise DataError(f"preference file {str(path)!r} has no usable pair (all empty, identical or "
                        f"mismatched); expected {FORMATS_HELP}")
    return out


def prompt_key(pair: PrefPair) -> str:
    """What makes two pairs 'the same prompt' for the split: the normalized first user turn."""
    first = pair.query.split("\n\nAssistant:", 1)[0]
    return normalize(first)


@dataclass
class PoolSplit:
    train: list[PrefPair]  # DPO shares are prefixes of this list (seeded order)
    eval_pairs: list[PrefPair]  # held-out pairs for preference accuracy
    eval_prompts: list[PrefPair]  # held-out single-turn prompts for generation + judging

    def describe(self) -> dict[str, Any]:
        return {"train": len(self.train), "eval_pairs": len(self.eval_pairs), "eval_prompts": len(self.eval_prompts)}


def split_pool(pairs: list[PrefPair], *, n_train: int, n_eval_pairs: int, n_eval_prompts: int,
               seed: int = 0) -> PoolSplit:
    """Split a preference pool once, disjoint by prompt (`prompt_key`): prompts are shuffled with
    `seed` and dealt to the evaluation side first, then to training, so no training pair shares a
    first user turn with any evaluation pair or prompt. Evaluation prompts are single-turn."""
    for name, v in (("n_train", n_train), ("n_eval_pairs", n_eval_pairs), ("n_eval_prompts", n_eval_prompts)):
        if v < 0:
            raise ConfigError(f"{name} must be ≥ 0, got {v}")
    groups: dict[str, list[PrefPair]] = {}
    for p in pairs:
        groups.setdefault(prompt_key(p), []).append(p)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    eval_prompts: list[PrefPair] = []
    eval_pairs: list[PrefPair] = []
    train: list[PrefPair] = []
    for k in keys:
        g = groups[k]
        single = [p for p in g if p.single_turn]
        if len(eval_prompts) < n_eval_prompts and single:
            eval_prompts.append(single[0])
            eval_pairs.extend(g[: max(0, n_eval_pairs - len(eval_pairs))])
        elif len(eval_pairs) < n_eval_pairs:
            eval_pairs.extend(g[: n_eval_pairs - len(eval_pairs)])
        elif len(train) < n_train:
            train.extend(g[: n_train - len(train)])
    if len(train) < n_train or len(eval_pairs) < n_eval_pairs or len(eval_prompts) < n_eval_prompts:
        raise DataError(f"the pool of {len(pairs)} pairs ({len(groups)} distinct prompts) is too small for "
                        f"{n_train} training pairs, {n_eval_pairs} evaluation pairs and {n_eval_prompts} "
                        f"evaluation prompts; got {len(train)}, {len(eval_pairs)}, {len(eval_prompts)} — "
                        "ask for fewer")
    return PoolSplit(train=train, eval_pairs=eval_pairs, eval_prompts=eval_prompts)


def take(pairs: list[PrefPair], share: str | float | int) -> list[PrefPair]:
    """The first `share` of `pairs`: "5%" or 0.05 is a share, an int ≥ 1 a count."""
    n = count_of(share, len(pairs))
    return pairs[:n]


def count_of(share: str | float | int, total: int) -> int:
    s = str(share).strip()
    try:
        if s.endswith("%"):
            v = float(s[:-1]) / 100
        elif "." in s:
            v = float(s)
        else:
            n = int(s)
            if n < 1 or n > total:
                raise ConfigError(f"pair count {n} must be between 1 and the {total} pairs available")
            return n
    except ValueError:
        raise ConfigError(f"share {share!r}: write a percentage (5%), a fraction (0.05) or a count (20)") from None
    if not 0 < v <= 1:
        raise ConfigError(f"share {share!r} must be in (0, 100%]")
    return max(1, round(v * total))
