"""The default judge: what every command that takes --judge uses when it is omitted.

Chosen by measurement (reports/scorer/README.md): held-out agreement with GPT-4 on AlpacaEval pairs
of generators it never saw, length-balanced agreement, real-family fidelity, degradations, cost.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_JUDGE = "hf:qwen2.5-coder-1.5b-instruct"

# Its measured agreement with GPT-4 on held-out AlpacaEval pairs (a `judge-agreement` agreement.json),
# stated in leaderboard headers (demo, compare --judge-reference).
DEFAULT_JUDGE_AGREEMENT = Path(__file__).resolve().parent / "judge" / "data" / "agreement_hf_default_test.json"
