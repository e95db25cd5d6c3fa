"""The default judge: what every command that takes --judge uses when it is omitted.

Chosen by measurement (reports/scorer/README.md): held-out agreement with GPT-4 on AlpacaEval pairs
of generators it never saw, length-balanced agreement, real-family fidelity, degradations, cost.
"""

from __future__ import annotations

from pathlib import Path

# A small MLP Bradley–Terry head on bf16 SmolLM2-135M-Instruct features, trained on every GPT-4
# (AlpacaEval 1) and GPT-4-turbo (AlpacaEval 2, soft) annotation of the training half of the
# instructions, 80 generators, plus 4,000 synthetic degradation pairs (bench/scorer_study.py `full`,
# variant 5; alignez_eval/scorer/heads/alpaca-gpt4-mlp-smollm2.json beside the head records how).
# It replaced the linear head on 1,260 pairs (scorer:alpaca-gpt4-smollm2, still packaged), which
# picked the longer answer 9 points more often than GPT-4; the new one is within 2 points.
# The generative judges stay available: --judge hf:qwen2.5-coder-1.5b-instruct.
DEFAULT_JUDGE = "scorer:alpaca-gpt4-mlp-smollm2"

# Its measured agreement with GPT-4 on held-out AlpacaEval pairs (a `judge-agreement` agreement.json),
# stated in leaderboard headers (demo, compare --judge-reference).
DEFAULT_JUDGE_AGREEMENT = Path(__file__).resolve().parent / "judge" / "data" / "agreement_scorer_default_dev.json"
