"""alignez_embedded through lm-eval itself with a tiny random model (`--model hf`): the samples a
judge reads carry the doc's id and instruction, one record per prompt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alignez_eval import tasks_path

PREAMBLE = "The following is a conversation between a human and an AI assistant.\n\n"


def test_base_variant_via_lm_eval_cli_writes_samples(tiny_dir, tmp_path: Path, monkeypatch) -> None:
    from lm_eval.__main__ import cli_evaluate

    model = tiny_dir("llama")
    out = tmp_path / "run"
    # lm-eval's own CLI entry point, in-process (a fresh interpreter would re-import torch for ~10 s).
    argv = ["lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
            "--device", "cpu", "--tasks", "alignez_embedded_base", "--limit", "3", "--include_path", tasks_path(),
            "--output_path", str(out), "--log_samples", "--gen_kwargs", "max_gen_toks=6"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(tmp_path)
    cli_evaluate()
    samples = list(out.rglob("samples_alignez_embedded_base_*.jsonl"))
    assert len(samples) == 1
    records = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(records) == 3
    assert [r["doc"]["id"] for r in records] == ["emb-advice-01", "emb-advice-02", "emb-advice-03"]
    for r in records:
        # The samples file serialises each request's arguments as {"gen_args_0": {"arg_0": …, "arg_1": …}}.
        args = r["arguments"]["gen_args_0"]
        prompt, gen_kwargs = args["arg_0"], args["arg_1"]
        assert prompt == f"{PREAMBLE}Human: {r['doc']['instruction']}\n\nAssistant:"
        assert gen_kwargs["until"][:2] == ["\nHuman:", "\nAssistant:"] and gen_kwargs["max_gen_toks"] == 6
        assert isinstance(r["filtered_resps"][0], str)
        assert r["words"] == len(r["filtered_resps"][0].split())
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["alignez_embedded_base"]
    assert {"words,none", "chars,none", "empty,none"} <= set(results)


def test_chat_variant_with_chat_template_in_process(tiny_dir) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    model = tiny_dir("llama")
    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model},dtype=float32", device="cpu",
        tasks=["alignez_embedded"], limit=2, log_samples=True, apply_chat_template=True,
        gen_kwargs="max_gen_toks=4", task_manager=TaskManager(include_path=tasks_path(), include_defaults=False),
    )
    records = res["samples"]["alignez_embedded"]
    assert [r["doc"]["id"] for r in records] == ["emb-advice-01", "emb-advice-02"]
    for r in records:
        prompt = r["arguments"][0][0]
        # tests/tiny.py's chat template: the bare instruction as the user turn, then the assistant tag.
        assert prompt == f"<|user|>{r['doc']['instruction']}<|end|><|assistant|>"
        assert r["arguments"][0][1]["until"][0] == "<|im_end|>"
    assert res["results"]["alignez_embedded"]["empty,none"] in (0.0, 0.5, 1.0)


def test_alignez_eval_run_finds_the_tasks_without_include_path(tiny_dir, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("alignez_eval.commands.run")
    from lm_eval.tasks import manager

    from alignez_eval.cli import main

    # `run` puts our directory on every TaskManager of the process; undo that after the test.
    monkeypatch.setattr(manager.TaskManager, "__init__", manager.TaskManager.__init__)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    rc = main(["run", "--model", "hf", "--model_args", f"pretrained={tiny_dir('llama')},dtype=float32",
               "--device", "cpu", "--tasks", "alignez_embedded_base", "--limit", "2", "--output_path", str(out),
               "--log_samples", "--gen_kwargs", "max_gen_toks=2"])
    assert rc == 0
    (samples,) = out.rglob("samples_alignez_embedded_base_*.jsonl")
    ids = [json.loads(line)["doc"]["id"] for line in samples.read_text().splitlines()]
    assert ids == ["emb-advice-01", "emb-advice-02"]
