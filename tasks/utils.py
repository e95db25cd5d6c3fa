"""Doc processing, prompts and length metrics for the alignez lm-eval tasks.

lm-eval loads this file by path (`!function utils.NAME` in the YAMLs next to it). Every processed doc
carries `id` (stable, equal across the base and chat variants of a dataset), `instruction` (the bare
user query the judge sees), `category` ("" if the dataset has none) and `reference` (a reference
answer where the dataset has one, else ""), plus the dataset's own useful fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import datasets

from alignez_eval.hh_rlhf import first_turn
from alignez_eval.queries import query_id

# A neutral preamble: it frames a dialogue for a base model without asking for any particular
# behaviour, so base and edited models see the same, unopinionated context.
BASE_PREAMBLE = "The following is a conversation between a human and an AI assistant.\n\n"

EMBEDDED_FILE = Path(__file__).resolve().parent / "data" / "embedded_prompts.jsonl"


# ---------------------------------------------------------------- prompts


def chat_prompt(doc: dict[str, Any]) -> str:
    """The bare instruction: lm-eval wraps it in the model's chat template (`--apply_chat_template`)."""
    return doc["instruction"]


def base_prompt(doc: dict[str, Any]) -> str:
    """A plain-text dialogue turn for base models, which have no chat template."""
    return f"{BASE_PREAMBLE}Human: {doc['instruction']}\n\nAssistant:"


# ---------------------------------------------------------------- metrics


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """Length statistics of the answer, so a plain lm-eval run says something before any judging."""
    text = results[0] if results else ""
    stripped = text.strip()
    return {
        "chars": float(len(stripped)),
        "words": float(len(stripped.split())),
        "empty": float(stripped == ""),
    }


# ---------------------------------------------------------------- shared helpers


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _finalize(rows: Iterable[dict[str, Any]], source: str) -> datasets.Dataset:
    """Drop repeated queries and make ids unique, then build the Dataset lm-eval expects.

    A repeated id with the same instruction is the same query asked twice (hh-rlhf conversations
    often open identically): evaluating it once keeps pairs one-to-one. A repeated id with a
    different instruction gets a deterministic suffix.
    """
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for row in rows:
        if not row["instruction"].strip():
            continue
        rid = row["id"]
        if rid in seen:
            if seen[rid] == row["instruction"]:
                continue
            n = 2
            while f"{rid}-{n}" in seen:
                n += 1
            rid = f"{rid}-{n}"
            row = {**row, "id": rid}
        seen[rid] = row["instruction"]
        out.append(row)
    if not out:
        raise ValueError(f"{source}: no usable documents after processing; is this the right split/file?")
    return datasets.Dataset.from_list(out)


def _base_row(rid: str, instruction: str, category: str = "", reference: str = "") -> dict[str, Any]:
    return {"id": rid, "instruction": instruction, "category": category, "reference": reference}


# ---------------------------------------------------------------- embedded offline set


def load_embedded(**_: Any) -> datasets.DatasetDict:
    """The embedded prompts as a one-split DatasetDict (lm-eval `custom_dataset`; extra kwargs are
    lm-eval metadata and are ignored)."""
    rows = [json.loads(line) for line in EMBEDDED_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_embedded(dataset: datasets.Dataset) -> datasets.Dataset:
    return _finalize(
        (_base_row(str(r["id"]), _text(r["instruction"]), _text(r.get("category"))) for r in dataset),
        "embedded",
    )


# ---------------------------------------------------------------- Anthropic/hh-rlhf

# one reading of the transcripts for the tasks, the fit, DPO and the scorer (alignez_eval/hh_rlhf.py)
hh_first_turn = first_turn


def process_hh_rlhf(dataset: datasets.Dataset) -> datasets.Dataset:
    def rows():
        for r in dataset:
            instruction, reply = hh_first_turn(_text(r.get("chosen")))
            yield _base_row(query_id(instruction), instruction, "", reply)

    return _finalize(rows(), "hh-rlhf")


# ---------------------------------------------------------------- OpenAssistant/oasst1


def process_oasst1(dataset: datasets.Dataset) -> datasets.Dataset:
    """English root prompter messages; reference = the rank-0 assistant reply to the root, if any."""
    best_reply: dict[str, str] = {}
    for r in dataset:
        if r.get("role") == "assistant" and r.get("parent_id") and r.get("rank") == 0:
            best_reply[r["parent_id"]] = _text(r.get("text"))

    def rows():
        for r in dataset:
            if r.get("parent_id") is not None or r.get("lang") != "en" or r.get("role", "prompter") != "prompter":
                continue
            if r.get("deleted"):
                continue
            row = _base_row(str(r["message_id"]), _text(r.get("text")).strip(), "", best_reply.get(r["message_id"], ""))
            row["message_tree_id"] = _text(r.get("message_tree_id"))
            yield row

    return _finalize(rows(), "oasst1")


# ---------------------------------------------------------------- re-align/just-eval-instruct


def _just_eval_row(r: dict[str, Any]) -> dict[str, Any]:
    row = _base_row(str(r["id"]), _text(r.get("instruction")), _text(r.get("category")))
    row["source_id"] = _text(r.get("source_id"))
    row["dataset"] = _text(r.get("dataset"))
    # Safety rows carry no tags (null); keep the list type so the Arrow schema stays uniform.
    row["task"] = [str(t) for t in (r.get("task") or [])]
    row["topic"] = [str(t) for t in (r.get("topic") or [])]
    return row


def just_eval_filter(slice_name: str) -> Callable[[datasets.Dataset], datasets.Dataset]:
    """process_docs for one slice: a task type (coding, math, …), "math_coding", "safety" or "regular"."""
    wanted = {
        "math_coding": {"math", "coding"},
        "role_play": {"role-play"},
        "info_seek": {"info-seek"},
    }.get(slice_name, {slice_name})

    def keep(row: dict[str, Any]) -> bool:
        if slice_name in ("safety", "regular"):
            return row["category"] == slice_name
        # Task types slice the regular set only (as just-eval's own tables do): a safety prompt
        # that happens to carry task tags stays in the safety slice.
        return row["category"] == "regular" and bool(wanted & set(row["task"]))

    def process(dataset: datasets.Dataset) -> datasets.Dataset:
        return _finalize((row for row in map(_just_eval_row, dataset) if keep(row)), f"just-eval:{slice_name}")

    process.__name__ = f"process_just_eval_{slice_name}"
    return process


def process_just_eval(dataset: datasets.Dataset) -> datasets.Dataset:
    return _finalize(map(_just_eval_row, dataset), "just-eval")


process_just_eval_info_seek = just_eval_filter("info_seek")
process_just_eval_reasoning = just_eval_filter("reasoning")
process_just_eval_procedure = just_eval_filter("procedure")
process_just_eval_writing = just_eval_filter("writing")
process_just_eval_role_play = just_eval_filter("role_play")
process_just_eval_coding = just_eval_filter("coding")
process_just_eval_math = just_eval_filter("math")
process_just_eval_math_coding = just_eval_filter("math_coding")
process_just_eval_safety = just_eval_filter("safety")
process_just_eval_regular = just_eval_filter("regular")


# ---------------------------------------------------------------- HuggingFaceH4/ultrafeedback_binarized


def _last_assistant(messages: Any) -> str:
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "assistant":
                return _text(m.get("content"))
    return ""


def process_ultrafeedback(dataset: datasets.Dataset) -> datasets.Dataset:
    def rows():
        for r in dataset:
            instruction = _text(r.get("prompt"))
            rid = _text(r.get("prompt_id")) or query_id(instruction)
            yield _base_row(rid, instruction, "", _last_assistant(r.get("chosen")))

    return _finalize(rows(), "ultrafeedback")


# ---------------------------------------------------------------- tatsu-lab/alpaca_eval


def process_alpaca_eval(dataset: datasets.Dataset) -> datasets.Dataset:
    def rows():
        for r in dataset:
            instruction = _text(r.get("instruction"))
            row = _base_row(query_id(instruction), instruction, "", _text(r.get("output")))
            row["dataset"] = _text(r.get("dataset"))
            row["generator"] = _text(r.get("generator"))
            yield row

    return _finalize(rows(), "alpaca_eval")


# ---------------------------------------------------------------- HuggingFaceH4/mt_bench_prompts


def process_mt_bench(dataset: datasets.Dataset) -> datasets.Dataset:
    """First turn only: the edit and the judge compare single answers.

    `reference` is per turn (`[]` when there is none, `["", "…"]` when only turn 2 has one, e.g.
    question 133), so the first turn's reference is `reference[0]`, never the first non-empty one.
    """

    def rows():
        for r in dataset:
            turns = [str(t) for t in (r.get("prompt") or [])]
            refs = list(r.get("reference") or [])
            rid = str(r["prompt_id"]) if r.get("prompt_id") is not None else query_id(turns[0] if turns else "")
            row = _base_row(rid, turns[0] if turns else "", _text(r.get("category")), _text(refs[0]) if refs else "")
            row["turns"] = turns
            yield row

    return _finalize(rows(), "mt_bench")


# ---------------------------------------------------------------- PKU-Alignment/BeaverTails-Evaluation


def process_beavertails(dataset: datasets.Dataset) -> datasets.Dataset:
    def rows():
        for r in dataset:
            instruction = _text(r.get("prompt"))
            row = _base_row(query_id(instruction), instruction, _text(r.get("category")))
            # Upstream rows carry category_id (int) beside the category name; keep it when present
            # but never rely on it (local copies of the split may drop it).
            if r.get("category_id") is not None:
                row["category_id"] = int(r["category_id"])
            yield row

    return _finalize(rows(), "beavertails")


# ---------------------------------------------------------------- truthfulqa/truthful_qa (generation)


def process_truthfulqa(dataset: datasets.Dataset) -> datasets.Dataset:
    def rows():
        for r in dataset:
            question = _text(r.get("question"))
            row = _base_row(query_id(question), question, _text(r.get("category")), _text(r.get("best_answer")))
            row["type"] = _text(r.get("type"))
            row["correct_answers"] = [str(a) for a in (r.get("correct_answers") or [])]
            row["incorrect_answers"] = [str(a) for a in (r.get("incorrect_answers") or [])]
            row["source"] = _text(r.get("source"))
            yield row

    return _finalize(rows(), "truthfulqa")

