"""Ground-truth preference pairs for `fit --pref-data` (AlignEZ with real data; CAA/ITI baselines).

Accepted JSONL (or a JSON list) rows, detected per row:
- {"prompt": str, "chosen": str, "rejected": str}                    plain pairs
- {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": "…"}   Anthropic HH-RLHF transcripts
- {"prompt": str, "chosen": [{role, content}…], "rejected": […]}     UltraFeedback-binarized messages

Each becomes a record shaped like a self-generated one: `query`, answers {pos: chosen, neg: rejected}.
A pair whose answers answer different prompts is kept as a dropped record (`prompt_mismatch`): some
real HH-RLHF rows have an extra turn glued into one transcript ("…  Human: …" without the "\\n\\n").
Multi-turn context is kept inside `query` as "turn\\n\\nAssistant: …\\n\\nHuman: turn", so that the
activation frame "Human: {query}\\nAssistant: {answer}" reproduces the dialogue.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from alignez_eval.errors import ConfigError, DataError
from alignez_eval.hh_rlhf import ASSISTANT, split_last_reply, without_human_tag
from alignez_eval.selfpref.clean import normalize

logger = logging.getLogger(__name__)

def split_hh(transcript: str) -> tuple[str, str]:
    """(prompt part, final assistant answer) of an HH-RLHF transcript; the prompt is everything
    before the last "\\n\\nAssistant:"."""
    split = split_last_reply(transcript)
    if split is None:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return split


def _content(msg: Any) -> str:
    if isinstance(msg, dict):
        c = msg.get("content", "")
        if isinstance(c, list):  # content parts [{"type": "text", "text": …}]
            return "".join(p.get("text", "") for p in c if isinstance(p, dict))
        return str(c)
    return str(msg)


def _from_messages(prompt: Any, chosen: list[Any], rejected: list[Any]) -> tuple[str, str, str]:
    def last_assistant(msgs: list[Any]) -> tuple[int, str]:
        for i in range(len(msgs) - 1, -1, -1):
            if isinstance(msgs[i], dict) and msgs[i].get("role") == "assistant":
                return i, _content(msgs[i]).strip()
        raise ValueError("no assistant message")

    ci, c = last_assistant(chosen)
    _, r = last_assistant(rejected)
    if isinstance(prompt, str) and prompt.strip():
        q = prompt
    else:
        turns = chosen[:ci]
        parts = []
        for m in turns:
            role = m.get("role") if isinstance(m, dict) else "user"
            if role == "system":
                continue
            parts.append(_content(m) if role == "user" and not parts else
                         f"{'Human' if role == 'user' else 'Assistant'}: {_content(m)}")
        q = "\n\n".join(parts)
        if not q.strip():
            raise ValueError("no user turn before the answer")
    return q.strip(), c, r


def parse_row(obj: Any) -> tuple[str, str, str, str]:
    """(format, query, chosen, rejected) of one row; ValueError says what is missing."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "chosen" not in obj or "rejected" not in obj:
        raise ValueError("needs 'chosen' and 'rejected' fields")
    ch, rj = obj["chosen"], obj["rejected"]
    prompt = obj.get("prompt", obj.get("instruction", obj.get("query")))
    if isinstance(ch, list) and isinstance(rj, list):
        q, c, r = _from_messages(prompt, ch, rj)
        return "messages", q, c, r
    if isinstance(ch, str) and isinstance(rj, str):
        if isinstance(prompt, str) and prompt.strip():
            return "plain", prompt.strip(), ch.strip(), rj.strip()
        if ASSISTANT in ch and ASSISTANT in rj:
            pc, c = split_hh(ch)
            _, r = split_hh(rj)
            return "hh", without_human_tag(pc), c, r
        raise ValueError("string chosen/rejected need a 'prompt' field or HH-style '\\n\\nAssistant:' turns")
    raise ValueError("'chosen'/'rejected' must both be strings or both be message lists")


def hh_prompts_differ(obj: dict[str, Any]) -> bool:
    """Whether an HH row's chosen and rejected transcripts lead up to different prompts (the answers
    then answer different questions, so the pair says nothing about the preference)."""
    return split_hh(obj["chosen"])[0].strip() != split_hh(obj["rejected"])[0].strip()


FIT_FORMATS = ("one JSON object per line (or a .json list, optionally .gz): prompt/chosen/rejected rows, HH-RLHF "
               "transcripts or UltraFeedback message lists")


def read_rows(path: Path, expected: str = FIT_FORMATS) -> list[tuple[int, Any]]:
    """(line or list index, JSON value) of a preference file: a JSON list (`.json`) or JSONL,
    optionally gzipped (the real HH-RLHF files are `.jsonl.gz`). A file that cannot be read or
    parsed is one DataError naming the line and `expected`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"preference file {str(path)!r} cannot be read ({exc}); expected {expected}") from exc
    name = path.name[:-3] if path.suffix == ".gz" else path.name
    if name.endswith(".json") and text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); expected {expected}") from exc
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}); expected {expected}") from exc
    return out


def load_pref_pairs(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference pairs as fit records (first `limit` usable rows, file order). Rows with an empty or
    identical chosen/rejected are kept as `dropped` records (counted in the report)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"preference file {str(path)!r} does not exist; pass {FIT_FORMATS}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--pref-limit must be ≥ 1, got {limit}")
    records: list[dict[str, Any]] = []
    kept = 0
    for n, obj in read_rows(path):
        try:
            fmt, q, c, r = parse_row(obj)
        except ValueError as exc:
            raise DataError(f"{path}:{n}: {exc}; see `alignez-eval fit --help` for the accepted formats") from exc
        reason = None
        if fmt == "hh" and hh_prompts_differ(obj):
            reason = "prompt_mismatch"
        elif not c or not r:
            reason = "empty"
        elif normalize(c) == normalize(r):
            reason = "identical"
        given = obj.get("id", obj.get("prompt_id")) if isinstance(obj, dict) else None
        rid = str(given) if given not in (None, "") else "p-" + hashlib.sha256(
            json.dumps([q, c, r]).encode("utf-8")).hexdigest()[:16]
        records.append({
            "id": rid,
            "query": q,
            "category": str(obj.get("category", "") or ""),
            "source": f"pref-data:{fmt}",
            "line": n,
            "characteristics": {"pos": "", "neg": ""},
            "answers": {"pos": c, "neg": r},
            "flags": {"echo_pos": False, "echo_neg": False, "near_identical": reason == "identical",
                      "loops_collapsed": False, "degenerate": reason is not None},
            "status": "dropped" if reason else "kept",
            "reason": reason,
        })
        kept += reason is None
        if limit is not None and kept >= limit:
            break
    if not records:
        raise DataError(f"preference file {str(path)!r} is empty; write one JSON object per line")
    if kept == 0:
        raise DataError(f"preference file {str(path)!r} has no usable pair (all empty or identical)")
    seen: dict[str, int] = {}
    for rec in records:  # duplicate ids (same pair twice): suffix them, ids key the pairs file
        if rec["id"] in seen:
            seen[rec["id"]] += 1
            rec["id"] = f"{rec['id']}-{seen[rec['id']]}"
        else:
            seen[rec["id"]] = 1
    return records
