"""`auto` weight dtype: decided by measurement, and recorded concretely wherever it keys a cache."""

from __future__ import annotations

import torch

from alignez_eval import dtypes
from alignez_eval.judge.spec import parse_judge_spec


def test_auto_picks_the_faster_of_bf16_and_fp32_on_cpu() -> None:
    dtypes.fast_dtype.cache_clear()
    choice = dtypes.resolve_dtype("auto", "cpu")
    assert choice in ("bfloat16", "float32")
    # Re-measure independently: the choice must not be slower than the other by a wide margin
    # (timing noise allowed; a 70x emulated-bf16 slowdown must never be picked).
    fp32, bf16 = dtypes._time_matmul(torch.float32, 5), dtypes._time_matmul(torch.bfloat16, 5)
    chosen, other = (bf16, fp32) if choice == "bfloat16" else (fp32, bf16)
    assert chosen <= other * 3


def test_concrete_names_pass_through_and_auto_is_cached() -> None:
    assert dtypes.resolve_dtype("float16") == "float16"
    assert dtypes.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert dtypes.resolve_dtype(None, "cpu") == dtypes.fast_dtype("cpu")
    assert dtypes.fast_dtype.cache_info().currsize >= 1


def test_judge_identity_records_the_resolved_dtype() -> None:
    auto = parse_judge_spec("hf:/m,mode=pairwise")
    assert auto.dtype == "auto"
    assert auto.identity()["dtype"] == dtypes.fast_dtype("cpu")
    pinned = parse_judge_spec(f"hf:/m,mode=pairwise,dtype={dtypes.fast_dtype('cpu')}")
    assert pinned.identity_hash() == auto.identity_hash()  # same weights -> same cache entries
    other = "float32" if dtypes.fast_dtype("cpu") == "bfloat16" else "bfloat16"
    assert parse_judge_spec(f"hf:/m,mode=pairwise,dtype={other}").identity_hash() != auto.identity_hash()


def test_judge_identity_keys_an_embedded_model_by_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ALIGNEZ_HOME", str(tmp_path))
    by_path = parse_judge_spec(f"hf:{tmp_path}/models/qwen2.5-coder-1.5b-instruct,mode=pairwise")
    by_name = parse_judge_spec("hf:qwen2.5-coder-1.5b-instruct,mode=pairwise")
    assert by_path.identity()["model"] == "qwen2.5-coder-1.5b-instruct"
    assert by_path.identity_hash() == by_name.identity_hash()
    other = parse_judge_spec(f"hf:{tmp_path}/elsewhere/qwen2.5-coder-1.5b-instruct,mode=pairwise")
    assert other.identity_hash() != by_name.identity_hash()  # a user's own directory stays a path


def test_torch_dtype_takes_auto() -> None:
    from alignez_eval.judge.backends.hf import torch_dtype

    assert torch_dtype("auto") == getattr(torch, dtypes.fast_dtype("cpu"))
    assert torch_dtype("fp32") == torch.float32
