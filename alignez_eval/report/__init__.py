"""Metrics, % gap closed, bootstrap intervals and leaderboard writers for judgments.

Public API:
  write_report(judgments_dir, name, out_root="reports", tuned=None, extra=None) -> dict[str, Path]
  gap_closed(alignez_values, tuned_values, ...) -> GapResult   (per-doc verdict values, aligned)
  gap_ratio(net_alignez, net_tuned) -> float                    (the formula alone)
"""

from __future__ import annotations

from alignez_eval.gap import GapResult, average_gap, gap_closed, gap_ratio
from alignez_eval.metrics import HeadToHead, head_to_head, length_adjusted_win_rate, net_win, win_rate
from alignez_eval.report.leaderboard import build_report, write_report

__all__ = [
    "GapResult",
    "HeadToHead",
    "average_gap",
    "build_report",
    "gap_closed",
    "gap_ratio",
    "head_to_head",
    "length_adjusted_win_rate",
    "net_win",
    "win_rate",
    "write_report",
]
