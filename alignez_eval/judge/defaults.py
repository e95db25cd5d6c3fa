"""The default judge: what every command that takes --judge uses when it is omitted.

Chosen by measurement (reports/scorer/README.md): held-out agreement with GPT-4 on AlpacaEval pairs
of generators it never saw, length-balanced agreement, real-family fidelity, degradations, cost.
"""

from __future__ import annotations

DEFAULT_JUDGE = "hf:qwen2.5-coder-1.5b-instruct"
