"""The real Qwen2.5-Coder-1.5B-Instruct (from its PyPI wheels) as the hf judge on judge-check.

Small n to stay within ~1.5 minutes on 2 CPU cores. The README reports what these and a full
24-prompt run measured. The thresholds are sanity floors, far below what was measured: a judge
that fails them cannot tell a good answer from an obviously broken one.
"""

from __future__ import annotations

import pytest

from alignez_eval.dtypes import resolve_dtype
from alignez_eval.judge import judge_check, parse_judge_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def qwen():
    models = pytest.importorskip("alignez_eval.models")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.model_path("qwen2.5-coder-1.5b-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    # bf16 only where it is fast: on an AVX2-only CPU torch emulates it ~70x slower than fp32.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype("auto", "cpu")).eval()
    return model, tok


def test_single_mode_grades_good_answers_above_degraded_ones(qwen):
    spec = parse_judge_spec("hf:qwen2.5-coder-1.5b-instruct,mode=single").using(*qwen)
    res = judge_check(spec, n=2)
    print(res["summary"])
    assert res["errors"] == 0 and res["stats"]["calls"] == 2 + 2 * 4  # N+1 gradings per prompt
    assert res["overall_accuracy"] >= 0.75


def test_pairwise_mode_with_order_averaged_probabilities(qwen):
    # the default hf judge: pairwise, anchored prompt, length correction
    spec = parse_judge_spec("hf:qwen2.5-coder-1.5b-instruct").using(*qwen)
    assert (spec.mode, spec.prompt) == ("pairwise", "pairwise_anchored")
    res = judge_check(spec, n=1)
    print(res["summary"])
    assert res["errors"] == 0 and res["stats"]["calls"] == 4 * 2
    assert res["overall_accuracy"] >= 0.5
