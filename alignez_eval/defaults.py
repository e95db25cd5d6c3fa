"""The default judge: what every command that takes --judge uses when it is omitted.

Chosen by measurement (reports/scorer/README.md): held-out agreement with GPT-4 on AlpacaEval pairs
of generators it never saw, length-balanced agreement, real-family fidelity, degradations, cost.
"""

from __future__ import annotations

from pathlib import Path

# A Bradley–Terry head on SmolLM2-135M-Instruct features, trained on GPT-4's AlpacaEval-1 preferences
# of 42 generators plus synthetic degradation pairs (alignez_eval/scorer/heads/alpaca-gpt4-smollm2.json
# beside the head records how). The generative judges stay available: --judge hf:qwen2.5-coder-1.5b-instruct.
DEFAULT_JUDGE = "scorer:alpaca-gpt4-smollm2"

# Its measured agreement with GPT-4 on held-out AlpacaEval pairs (a `judge-agreement` agreement.json),
# stated in leaderboard headers (demo, compare --judge-reference).
DEFAULT_JUDGE_AGREEMENT = Path(__file__).resolve().parent / "judge" / "data" / "agreement_scorer_default_dev.json"
