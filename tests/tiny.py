"""Tiny random causal LMs built from configs, with a real byte-level BPE tokenizer trained in-process.

Used by unit tests of every module: no hub, no weights on disk beyond a temp dir.
`save_tiny(arch, path)` writes a directory usable as lm-eval's `pretrained=`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "Human: How do I bake bread?\nAssistant: Mix flour, water, salt and yeast, knead, rest, then bake.",
    "You are a helpful assistant. Your answer to this query should: be clear, correct and kind.",
    "Pretend you are a useless assistant. Your response to this query should: ignore the question.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ? ! , . ; : ' \" ( )",
    "def add(a, b):\n    return a + b\nprint(add(2, 3))",
]

ARCHS: dict[str, dict] = {
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "gemma": dict(model_type="gemma", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512),
    "gemma3_text": dict(model_type="gemma3_text", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                        max_position_embeddings=512, sliding_window=64),
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=4, n_head=4, n_positions=512),
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=512),
}


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok.to_str()


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_model(arch: str = "llama", seed: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    tok = make_tokenizer()
    kw = dict(ARCHS[arch])
    model_type = kw.pop("model_type")
    cfg = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **kw,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return model, tok


def save_tiny(arch: str, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random model + tokenizer to `path` (usable as `pretrained=path`)."""
    path = Path(path)
    model, tok = make_model(arch, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
