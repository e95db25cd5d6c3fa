"""A word-level tokenizer (tokenizers' WordLevel): transformers' StopStringCriteria cannot be built
from such a vocabulary (`clean_tokenizer_vocab`: `ValueError: substring not found`), so turn
markers are cut from the text after generation instead, and `alignez-eval fit` runs to the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import _CORPUS
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from alignez_eval.cli import main as cli_main
from alignez_eval.editing.artifact import Edit
from alignez_eval.selfpref.generate import Sampling, cut_after_stop, generate_texts, stop_string_criteria
from alignez_eval.selfpref.templates import turn_markers

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def word_level(first: str | None = None) -> PreTrainedTokenizerFast:
    """Whitespace-split words of the test corpus, one id each; `first` gets id 0."""
    words = sorted({w for text in _CORPUS for w in text.split()} | {"Human:", "Assistant:"})
    if first is not None:
        words = [first] + [w for w in words if w != first]
    vocab = {w: i for i, w in enumerate(words + SPECIALS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")


def tiny_llama(tok: PreTrainedTokenizerFast, seed: int = 0) -> torch.nn.Module:
    cfg = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def test_stop_string_criteria_cannot_be_built_from_a_word_level_vocabulary() -> None:
    # The premise: transformers fails on this layout; we get None instead of its ValueError.
    assert stop_string_criteria(word_level(), ["Human:"]) is None


@pytest.mark.parametrize("text,want", [
    ("be kind Human: and more", "be kind Human:"),
    ("no marker at all", "no marker at all"),
    ("a\nuser: b Human: c", "a\nuser:"),  # the marker that completes first wins, not the first listed
    ("Assistant: hi Human: x", "Assistant:"),
    ("", ""),
])
def test_cut_after_stop(text: str, want: str) -> None:
    assert cut_after_stop(text, [m for m in turn_markers() if m.strip()]) == want


def test_generation_is_cut_at_the_first_turn_marker() -> None:
    """A model whose every greedy step emits "Human:" (id 0, all-zero logits): generation runs to the
    token budget, and the text is cut right after the first marker, where the criteria would stop."""
    tok = word_level(first="Human:")
    model = tiny_llama(tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert tok.convert_ids_to_tokens(0) == "Human:"
    texts = generate_texts(model, tok, ["How do I bake bread?", "hi"], 5, Sampling(do_sample=False), seed=0,
                           chat=False)
    assert texts == ["Human:", "Human:"]


def test_sampled_generation_keeps_no_text_past_a_marker() -> None:
    tok = word_level()
    model = tiny_llama(tok)
    texts = generate_texts(model, tok, ["How do I bake bread?", "Format the answer", "hi"], 24,
                           Sampling(do_sample=True, seed=1), seed=1, chat=False)
    stops = [m for m in turn_markers() if m.strip()]
    assert len(texts) == 3 and any(texts)
    for t in texts:
        assert cut_after_stop(t, stops) == t


def test_cli_fit_on_a_word_level_model(tmp_path: Path, capsys) -> None:
    tok = word_level()
    model_dir = tmp_path / "wordlevel-llama"
    tiny_llama(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    qfile = tmp_path / "q.jsonl"
    queries = ["How do I bake bread?", "The quick brown fox", "def add(a, b):", "Your answer should be clear"]
    qfile.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in queries))
    out = tmp_path / "out" / "e.safetensors"
    argv = ["fit", "--model_args", f"pretrained={model_dir},dtype=float32", "--queries", str(qfile),
            "--char-tokens", "6", "--answer-tokens", "10", "--min-pairs", "2", "--out", str(out),
            "--no-cache", "--no-progress", "--pair-judge", "none"]
    assert cli_main(argv) == 0, capsys.readouterr().err[-3000:]
    edit = Edit.load(out)
    assert edit.layers and edit.meta.num_layers == 4
