"""compare on a user's own prompt set: task YAMLs in a directory passed as --include_path.

The task directory is written here (a JSONL file and lm-eval YAMLs, as a user would write them);
the models are tiny random ones from tests/tiny.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignez_eval import cli
from alignez_eval.errors import ConfigError, DataError
from alignez_eval.pipeline.compare import CompareConfig, ComparePipeline, run_compare, task_variants

FIT = {"answer_tokens": 6, "char_tokens": 6, "min_pairs": 1, "gen_batch_size": 4}
PROMPTS = [
    {"id": "p1", "instruction": "How do I bake bread?", "category": "cooking"},
    {"id": "p2", "instruction": "Write a haiku about the sea.", "category": "writing"},
    {"id": "p3", "instruction": "What is 2 + 3?", "category": "math"},
    {"id": "p4", "instruction": "Explain what a hash function is.", "category": "explanation"},
]
CHAT_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "{text}"
doc_to_target: ""
generation_kwargs:
  until: ["<|end|>"]
  do_sample: false
  max_gen_toks: 8
metric_list:
  - metric: bypass
metadata:
  version: 1
"""
BASE_YAML = """\
include: {chat}.yaml
task: {chat}_base
doc_to_text: "{preamble}Human: {{{{instruction}}}}\\nAssistant:"
generation_kwargs:
  until: ["\\nHuman:"]
  do_sample: false
  max_gen_toks: 8
"""


def write_task(folder: Path, name: str, rows: list[dict], *, base: bool = True, preamble: str = "",
               output_type: str = "generate_until", base_rows: list[dict] | None = None,
               text: str = "{{instruction}}") -> Path:
    """A user's task directory: NAME.yaml (chat variant) and, with `base`, NAME_base.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(CHAT_YAML.format(name=name, data=data, output_type=output_type, text=text))
    if base:
        (folder / f"{name}_base.yaml").write_text(BASE_YAML.format(chat=name, preamble=preamble))
        if base_rows is not None:  # the base variant reads a different file
            other = folder / f"{name}_base.jsonl"
            other.write_text("".join(json.dumps(r) + "\n" for r in base_rows), encoding="utf-8")
            text = (folder / f"{name}_base.yaml").read_text()
            (folder / f"{name}_base.yaml").write_text(
                text + f"dataset_kwargs:\n  data_files:\n    test: {other}\n")
    return folder


def _cfg(tiny_dir, tmp_path: Path, tasks: list[str], include: Path, **kw) -> CompareConfig:
    return CompareConfig(
        base=f"pretrained={tiny_dir('llama')}", tuned=f"pretrained={tiny_dir('qwen2', 1)}", tasks=tasks,
        judge=f"hf:{tiny_dir('llama', 2)},dtype=float32", name="mine", methods=["alignez"], limit=4,
        gen_kwargs={"max_gen_toks": 6}, batch_size=4, fit=dict(FIT), work_dir=tmp_path / "runs" / "mine",
        report_root=tmp_path / "reports", judge_check=False, command="test", include_path=(str(include),), **kw)


def _samples(step_path: Path) -> list[dict]:
    (path,) = step_path.rglob("samples_*.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_compare_runs_a_user_task_dir_with_base_and_chat_variants(tiny_dir, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path / "home"))
    mine = write_task(tmp_path / "my_tasks", "my_prompts", PROMPTS)
    res = run_compare(_cfg(tiny_dir, tmp_path, ["my_prompts"], mine))

    results = json.loads((tmp_path / "reports" / "mine" / "results.json").read_text())
    assert {"alignez:my_prompts", "tuned:my_prompts"} <= set(results["results"])
    # the base model gets the base variant (its own prompt template), the tuned model the chat one
    base_samples = _samples(res.gens[("base", "my_prompts")].path)
    assert next(res.gens[("base", "my_prompts")].path.rglob("samples_*.jsonl")).name.startswith(
        "samples_my_prompts_base_")
    assert [s["doc"]["id"] for s in base_samples] == ["p1", "p2", "p3", "p4"]
    assert base_samples[0]["arguments"]["gen_args_0"]["arg_0"] == "Human: How do I bake bread?\nAssistant:"
    tuned_samples = _samples(res.gens[("tuned", "my_prompts")].path)
    assert "<|user|>How do I bake bread?<|end|>" in tuned_samples[0]["arguments"]["gen_args_0"]["arg_0"]
    # every answer was judged, paired by the user's ids
    judged = [json.loads(line) for p in res.cache.root.glob("judge/mine*/*.jsonl")
              for line in p.read_text().splitlines() if line.strip()]
    assert {j["doc_id"] for j in judged} == {"p1", "p2", "p3", "p4"}

    # editing the base variant's template reruns the base model's generations only
    (mine / "my_prompts_base.yaml").write_text(BASE_YAML.format(chat="my_prompts", preamble="A dialogue.\\n\\n"))
    res2 = run_compare(_cfg(tiny_dir, tmp_path, ["my_prompts"], mine))
    assert sorted(s for s in res2.cache.ran if s.startswith(("gen/", "fit/"))) == [
        "gen/alignez/my_prompts_base", "gen/base/my_prompts_base"]
    assert "gen/tuned/my_prompts" in res2.cache.skipped
    assert _samples(res2.gens[("base", "my_prompts")].path)[0]["arguments"]["gen_args_0"]["arg_0"].startswith(
        "A dialogue.\n\nHuman: How do I bake bread?")


def test_single_variant_serves_both_models_and_bad_dirs(tmp_path: Path) -> None:
    one = write_task(tmp_path / "one", "only_chat", PROMPTS, base=False)
    assert task_variants(["only_chat"], (str(one),)) == {"only_chat": ("only_chat", "only_chat")}
    # our tasks stay available next to the user's
    assert task_variants(["alignez_embedded", "only_chat"], (str(one),))["alignez_embedded"] == (
        "alignez_embedded_base", "alignez_embedded")
    with pytest.raises(ConfigError, match="is not a directory"):
        CompareConfig(base="pretrained=x", tasks=["only_chat"], judge="hf:x", name="x",
                      include_path=(str(tmp_path / "nope"),))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no .yaml task file"):
        CompareConfig(base="pretrained=x", tasks=["only_chat"], judge="hf:x", name="x",
                      include_path=(str(tmp_path / "empty"),))


def _pipeline(tiny_dir, tmp_path: Path, task: str, include: Path) -> ComparePipeline:
    return ComparePipeline(_cfg(tiny_dir, tmp_path, [task], include))


def test_user_task_errors_name_the_problem(tiny_dir, tmp_path: Path) -> None:
    # documents without the fields compare needs: one error naming them
    bad = write_task(tmp_path / "bad", "no_fields", [{"question": "What is 2 + 3?"}] * 4, base=False,
                     text="{{question}}")
    with pytest.raises(DataError, match=r"'no_fields'.* no 'id', 'instruction' field .*has question"):
        _pipeline(tiny_dir, tmp_path, "no_fields", bad)
    # ... also when the prompt template itself asks for the missing field (lm-eval renders it first)
    tpl = write_task(tmp_path / "tpl", "no_field_tpl", [{"question": "What is 2 + 3?"}] * 4, base=False)
    with pytest.raises(DataError, match=r"'no_field_tpl'.*'instruction' is undefined.*id and instruction"):
        _pipeline(tiny_dir, tmp_path, "no_field_tpl", tpl)
    noid = write_task(tmp_path / "noid", "no_ids", [{"instruction": p["instruction"]} for p in PROMPTS], base=False)
    with pytest.raises(DataError, match=r"no 'id' field"):
        _pipeline(tiny_dir, tmp_path, "no_ids", noid)
    # a base variant over other documents cannot be paired with the chat one
    other = write_task(tmp_path / "other", "drift", PROMPTS,
                       base_rows=[{**p, "id": p["id"] + "x"} for p in PROMPTS])
    with pytest.raises(DataError, match=r"'drift_base' and 'drift' do not list the same documents"):
        _pipeline(tiny_dir, tmp_path, "drift", other)
    dup = write_task(tmp_path / "dup", "dups", [PROMPTS[0], PROMPTS[0] | {"instruction": "again"}], base=False)
    with pytest.raises(DataError, match=r"doc id 'p1' appears twice"):
        _pipeline(tiny_dir, tmp_path, "dups", dup)
    mc = write_task(tmp_path / "mc", "scored", PROMPTS, base=False, output_type="loglikelihood")
    with pytest.raises(ConfigError, match=r"output_type 'loglikelihood'.*generate_until"):
        _pipeline(tiny_dir, tmp_path, "scored", mc)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "typo.yaml").write_text("task: typo_task\ndoc_to_text: [unclosed\n")
    with pytest.raises(ConfigError, match=r"unknown task 'typo_task' \(.*typo.yaml names it but does not load"):
        _pipeline(tiny_dir, tmp_path, "typo_task", broken)


def test_cli_include_path_error_is_one_line(tiny_dir, tmp_path: Path, capsys) -> None:
    bad = write_task(tmp_path / "bad", "no_fields", [{"question": "What is 2 + 3?"}] * 4, base=False,
                     text="{{question}}")
    code = cli.main(["compare", "--base", f"pretrained={tiny_dir('llama')}", "--tasks", "no_fields",
                     "--include_path", str(bad), "--judge", "hf:unused", "--name", "x",
                     "--work-dir", str(tmp_path / "w"), "--report-root", str(tmp_path / "r")])
    # (datasets' progress bars also write to stderr; the error itself is one line)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("alignez-eval")]
    assert code == 1 and len(err) == 1
    assert err[0].startswith("alignez-eval compare: error: task 'no_fields'") and "'id', 'instruction'" in err[0]
    assert err[0].endswith("add them to the data or set them in the task's process_docs")
