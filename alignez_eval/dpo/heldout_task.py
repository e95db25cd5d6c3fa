"""The held-out evaluation prompts of a pool split as an lm-eval task pair (a user task under
`--include_path`): NAME (the bare instruction, for chat models) and NAME_base (the base frame that
DPO trained on, `alignez_eval.dpo.data.frame`), cut at the next turn as the packaged base variants are."""

from __future__ import annotations

import json
from pathlib import Path

from alignez_eval.atomic import atomic_write_text
from alignez_eval.dpo.data import BASE_PREAMBLE, PrefPair

CHAT_YAML = """\
# written by alignez-eval dpo-expedite: held-out prompts of the preference pool (never trained on)
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{instruction}}}}"
doc_to_target: reference
generation_kwargs:
  until: ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "</s>"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 256
metric_list:
  - metric: bypass
metadata:
  version: 1
"""
BASE_YAML = """\
include: {name}.yaml
task: {name}_base
doc_to_text: {text}
generation_kwargs:
  until: ["\\nHuman:", "\\nAssistant:", "\\nUser:", "\\n\\n\\n\\n"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 256
"""


def write_heldout_task(folder: Path, name: str, prompts: list[PrefPair]) -> Path:
    """Write NAME.jsonl, NAME.yaml and NAME_base.yaml into `folder`; return `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    rows = [{"id": p.id, "instruction": p.query, "category": "", "reference": p.chosen} for p in prompts]
    atomic_write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(folder / f"{name}.yaml", CHAT_YAML.format(name=name, data=json.dumps(str(data))))
    text = json.dumps(BASE_PREAMBLE + "Human: {{instruction}}\n\nAssistant:")
    atomic_write_text(folder / f"{name}_base.yaml", BASE_YAML.format(name=name, text=text))
    return folder
