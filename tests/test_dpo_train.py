"""`train-dpo`: TRL's DPOTrainer + a PEFT LoRA on a tiny random model (2 steps)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from alignez_eval.dpo.data import PrefPair  # noqa: E402
from alignez_eval.dpo.train import MANIFEST, PAIRS_FILE, DPOSettings, train_dpo  # noqa: E402

PAIRS = [PrefPair(id=f"p{i}", query=f"How do I bake bread number {i}?",
                  chosen="Mix flour, water, salt and yeast, knead, rest, then bake.",
                  rejected="The quick brown fox jumps over the lazy dog.", line=i + 1) for i in range(4)]
SETTINGS = DPOSettings(lora_r=4, lora_alpha=8, batch_size=2, max_steps=2, learning_rate=5e-2, max_length=160)


def _logprob(model, tok, prompt: str, answer: str) -> float:
    p = tok(prompt, return_tensors="pt").input_ids
    full = tok(prompt + answer, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(full).logits.float().log_softmax(-1)
    tgt = full[0, p.shape[1]:]
    return float(logits[0, p.shape[1] - 1:-1].gather(-1, tgt[:, None]).sum())


def test_two_steps_write_an_adapter_that_moves_loglikelihoods(tiny_dir, tmp_path):
    from peft import PeftModel

    base = tiny_dir("llama")
    out = tmp_path / "adapter"
    manifest = train_dpo(base, PAIRS, out, SETTINGS, data_sha256="d" * 64, progress=False)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert manifest["steps"] == 2 and manifest["n_pairs"] == 4
    assert manifest["pair_ids"] == [p.id for p in PAIRS] and manifest["data"]["sha256"] == "d" * 64
    assert json.loads((out / MANIFEST).read_text())["settings"]["lora_r"] == 4
    assert len((out / PAIRS_FILE).read_text().splitlines()) == 4
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    before = [_logprob(model, tok, p.prompt, " " + p.chosen) for p in PAIRS]
    tuned = PeftModel.from_pretrained(model, str(out)).eval()
    after = [_logprob(tuned, tok, p.prompt, " " + p.chosen) for p in PAIRS]
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-3

    # same inputs: the finished directory is returned without training
    mtime = (out / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_dpo(base, PAIRS, out, SETTINGS, data_sha256="d" * 64, progress=False)
    assert again["key"] == manifest["key"] and (out / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_cli_trains_from_a_file_and_a_bad_file_is_one_line(tiny_dir, tmp_path, capsys):
    from alignez_eval.cli import main as cli_main

    rows = [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: good answer {i}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: bad {i}"} for i in range(10)]
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "a"
    argv = ["train-dpo", "--model", str(tiny_dir("llama")), "--pref-data", str(data), "--out", str(out),
            "--eval-pairs", "2", "--eval-prompts", "2", "--share", "50%", "--max-steps", "1", "--batch-size", "2",
            "--lora-r", "2", "--max-length", "160", "--no-progress"]
    assert cli_main(argv) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["n_pairs"] == 3 and manifest["steps"] == 1  # 50% of the 6 pairs left after holding out 4
    assert manifest["settings"]["lora_r"] == 2 and manifest["data"]["path"] == str(data)
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "no turns", "rejected": "none either"}\n', encoding="utf-8")
    assert cli_main([*argv[:4], str(bad), *argv[5:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.jsonl:1" in err[0] and "HH-RLHF" in err[0]
    assert cli_main([*argv, "--lora-r", "x"]) == 1
    assert "lora_r='x' is not a int" in capsys.readouterr().err
    assert cli_main([*argv, "--max-length", "20"]) == 1
    assert "raise --max-length" in capsys.readouterr().err


def test_answer_tokens_only_gives_trls_own_numbers(tiny_dir, tmp_path):
    """The CPU shortcut scores fewer positions in TRL's LM head, never different numbers: the same
    log-probs, loss, gradient norm and rewards at both steps."""
    import dataclasses

    base = tiny_dir("llama")
    fast = train_dpo(base, PAIRS, tmp_path / "fast", SETTINGS, data_sha256="d" * 64, progress=False)
    full = train_dpo(base, PAIRS, tmp_path / "full", dataclasses.replace(SETTINGS, compact_head=False),
                     data_sha256="d" * 64, progress=False)
    keys = ("loss", "grad_norm", "logps/chosen", "logps/rejected", "rewards/margins")
    steps = [[h for h in m["log_history"] if "loss" in h] for m in (fast, full)]
    assert len(steps[0]) == len(steps[1]) == 2
    for a, b in zip(*steps, strict=True):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    assert steps[0][1]["rewards/margins"] != 0  # the second step saw a trained adapter
    import trl.trainer.utils as trl_utils

    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after training
