"""Metric arithmetic on hand-made verdicts, bootstrap reproducibility, and the gap formula."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from alignez_eval.judge.verdicts import candidate_view, pairwise_verdict, single_verdict
from alignez_eval.metrics import LENGTH_ADJ_RIDGE
from alignez_eval.report import average_gap, gap_closed, gap_ratio, head_to_head, length_adjusted_win_rate


def recs(verdicts: str, len_b: list[int] | None = None, len_c: list[int] | None = None,
         inconsistent: list[bool | None] | None = None) -> list[dict]:
    names = {"W": "win", "T": "tie", "L": "lose", "E": "error"}
    n = len(verdicts)
    len_b = len_b or [10] * n
    len_c = len_c or [10] * n
    inconsistent = inconsistent or [None] * n
    return [{"family": "d", "doc_id": str(i), "verdict": names[v], "len_baseline": len_b[i],
             "len_candidate": len_c[i], "inconsistent": inconsistent[i], "identical": False}
            for i, v in enumerate(verdicts)]


def test_counts_percentages_net_and_win_rate():
    # 5 wins, 3 ties, 2 losses, 1 error
    r = head_to_head(recs("WWWWWTTTLLE"), "c", "d", "pairwise", n_boot=200)
    assert (r.n, r.wins, r.ties, r.losses, r.errors) == (10, 5, 3, 2, 1)
    assert r.win_pct == pytest.approx(50.0) and r.tie_pct == pytest.approx(30.0) and r.lose_pct == pytest.approx(20.0)
    assert r.net == pytest.approx(30.0)
    assert r.win_rate == pytest.approx(100 * (5 + 1.5) / 10)
    assert r.mean_len_baseline == 10 and r.mean_len_candidate == 10


def test_swap_inconsistency_and_lengths():
    r = head_to_head(recs("WTLW", len_b=[10, 20, 30, 40], len_c=[12, 20, 25, 47],
                          inconsistent=[False, True, False, True]), "c", "d", "pairwise", n_boot=100)
    assert r.swap_inconsistency == pytest.approx(0.5)
    assert r.mean_len_baseline == pytest.approx(25.0)
    assert r.mean_len_candidate == pytest.approx(26.0)
    single = head_to_head(recs("WTL"), "c", "d", "single", n_boot=100)
    assert single.swap_inconsistency is None


def test_length_adjusted_win_rate_equals_win_rate_without_length_differences():
    values = np.array([1, 1, 1, 0, -1, 1, 0, -1, 1, 1], dtype=float)
    assert length_adjusted_win_rate(values, np.zeros(10))[0] == pytest.approx(100 * np.mean((values + 1) / 2), abs=1e-4)


def test_length_adjusted_win_rate_matches_scipy_fit_of_the_same_likelihood():
    rng = np.random.default_rng(1)
    dlen = rng.normal(0, 30, 60)
    values = np.where(dlen + rng.normal(0, 30, 60) > 10, 1.0, np.where(rng.random(60) < 0.3, 0.0, -1.0))
    scale = float(np.std(dlen))
    x, y = dlen / scale, (values + 1) / 2

    def loss(b):
        z = b[0] + b[1] * x
        return np.sum(np.logaddexp(0, z) - y * z) + LENGTH_ADJ_RIDGE / 2 * b[1] ** 2 + 1e-6 / 2 * b[0] ** 2

    ref = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert length_adjusted_win_rate(values, dlen, scale)[0] == pytest.approx(100 / (1 + np.exp(-ref[0])), abs=1e-4)


def test_length_adjusted_win_rate_removes_a_pure_length_effect():
    # The candidate wins exactly when it is longer, symmetric around zero: at equal length, 50%.
    dlen = np.array([-40, -30, -20, -10, 10, 20, 30, 40], dtype=float)
    values = np.where(dlen > 0, 1.0, -1.0)
    assert length_adjusted_win_rate(values, dlen)[0] == pytest.approx(50.0, abs=1.0)
    # and a judge that rewards length: raw win rate 75%, LC well below it
    dlen2 = np.array([5, 10, 20, 30, 40, 50, -5, -10] * 3, dtype=float)
    values2 = np.where(dlen2 > 0, 1.0, -1.0)
    values2[:2] = -1.0
    raw = 100 * np.mean((values2 + 1) / 2)
    assert length_adjusted_win_rate(values2, dlen2)[0] < raw - 10


def test_bootstrap_is_seeded_and_covers_the_point():
    rs = recs("WWWWWWTTTLLLLW" * 3)
    a = head_to_head(rs, "c", "d", "pairwise", n_boot=500, seed=7)
    b = head_to_head(rs, "c", "d", "pairwise", n_boot=500, seed=7)
    c = head_to_head(rs, "c", "d", "pairwise", n_boot=500, seed=8)
    assert a.ci == b.ci and a.se == b.se
    assert a.ci != c.ci
    for name in ("net", "win_rate", "length_adjusted_win_rate", "win_pct"):
        lo, hi = a.ci[name]
        assert lo <= getattr(a, name) <= hi
    # against a direct computation of the same resamples
    vals = np.array([{"win": 1, "tie": 0, "lose": -1}[r["verdict"]] for r in rs], dtype=float)
    idx = np.random.default_rng(7).integers(0, len(vals), size=(500, len(vals)))
    nets = 100 * vals[idx].mean(1)
    assert a.ci["net"] == pytest.approx(tuple(np.quantile(nets, [0.025, 0.975])))


def test_pairwise_verdict_rules():
    assert candidate_view("B", "AB") == "win" and candidate_view("A", "BA") == "win"
    assert candidate_view("A", "AB") == "lose" and candidate_view("tie", "BA") == "tie"
    agree = pairwise_verdict({"label": "B"}, {"label": "A"}, use_probs=False, margin=0)
    assert agree["verdict"] == "win" and agree["inconsistent"] is False
    # a position-biased judge says "A" both times: inconsistent -> tie
    biased = pairwise_verdict({"label": "A"}, {"label": "A"}, use_probs=False, margin=0)
    assert biased["verdict"] == "tie" and biased["inconsistent"] is True
    half = pairwise_verdict({"label": "B"}, {"label": "tie"}, use_probs=False, margin=0)
    assert half["verdict"] == "tie" and half["inconsistent"] is True
    err = pairwise_verdict({"label": "B"}, {"error": "HTTP 500"}, use_probs=False, margin=0)
    assert err["verdict"] == "error" and "HTTP 500" in err["error"]
    # probabilities averaged over orders: the constant bias towards A cancels
    ab = {"label": "A", "probs": {"A": 0.70, "B": 0.25, "tie": 0.05}}
    ba = {"label": "A", "probs": {"A": 0.85, "B": 0.10, "tie": 0.05}}
    v = pairwise_verdict(ab, ba, use_probs=True, margin=0.05)
    assert v["score"] == pytest.approx((0.25 + 0.85) / 2 - (0.70 + 0.10) / 2)
    assert v["verdict"] == "win" and v["inconsistent"] is True
    assert pairwise_verdict(ab, ba, use_probs=True, margin=0.2)["verdict"] == "tie"


def test_single_verdict_margin():
    assert single_verdict({"grade": 5.0}, {"grade": 6.0}, margin=0.5)["verdict"] == "win"
    assert single_verdict({"grade": 5.0}, {"grade": 5.4}, margin=0.5)["verdict"] == "tie"
    assert single_verdict({"grade": 5.0}, {"grade": 4.2}, margin=0.5)["verdict"] == "lose"
    assert single_verdict({"error": "x"}, {"grade": 4.2}, margin=0.5)["verdict"] == "error"


def test_length_correction_by_hand():
    from alignez_eval.judge.verdicts import length_term

    assert length_term("abc", " abc ") == 0.0  # surrounding whitespace is not length
    t = length_term("x" * 99, "y" * 399)  # tanh(ln(400/100)) = (16 - 1) / (16 + 1)
    assert t == pytest.approx(15 / 17)
    assert length_term("y" * 399, "x" * 99) == pytest.approx(-15 / 17)
    ab = {"label": "B", "probs": {"A": 0.30, "B": 0.60, "tie": 0.10}}
    ba = {"label": "A", "probs": {"A": 0.55, "B": 0.35, "tie": 0.10}}
    # raw score (0.60 + 0.55)/2 - (0.30 + 0.35)/2 = 0.25 for the 4x longer candidate: a win
    assert pairwise_verdict(ab, ba, use_probs=True, margin=0.05, length=t)["verdict"] == "win"
    v = pairwise_verdict(ab, ba, use_probs=True, margin=0.05, length_debias=0.3, length=t)
    assert v["score"] == pytest.approx(0.25 - 0.3 * 15 / 17)  # -0.0147: inside the margin
    assert v["verdict"] == "tie"
    assert pairwise_verdict(ab, ba, use_probs=True, margin=0.05, length_debias=0.5, length=t)["verdict"] == "lose"
    g = single_verdict({"grade": 5.0}, {"grade": 6.0}, margin=0.5, length_debias=1.0, length=t)
    assert g["score"] == pytest.approx(1.0 - 15 / 17) and g["verdict"] == "tie"


def test_gap_closed_formula_and_ci():
    assert gap_ratio(10.0, 40.0) == pytest.approx(25.0)
    tuned = np.array([1] * 30 + [0] * 6 + [-1] * 4, dtype=float)  # net +65
    align = np.array([1] * 10 + [0] * 24 + [-1] * 6, dtype=float)  # net +10
    g = gap_closed(align, tuned, n_boot=500, seed=0)
    assert g.defined and g.reason is None
    assert g.net_tuned == pytest.approx(65.0) and g.net_alignez == pytest.approx(10.0)
    assert g.value == pytest.approx(100 * 10 / 65)
    assert g.ci[0] < g.value < g.ci[1]
    # joint resampling: recompute from the same indices
    idx = np.random.default_rng(0).integers(0, 40, size=(500, 40))
    ratios = 100 * align[idx].mean(1) / tuned[idx].mean(1)
    assert g.ci == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])))


def test_gap_undefined_cases():
    align = np.array([1, 0, 0, 1, -1, 0, 1, 0], dtype=float)
    neg = gap_closed(align, np.array([-1, 0, 0, 0, 0, 0, 1, -1], dtype=float), n_boot=200)
    assert not neg.defined and neg.value is None and "does not beat" in neg.reason
    weak = gap_closed(align, np.array([1, 0, 0, 0, 0, 0, 0, 0, ], dtype=float), n_boot=200, min_tuned_net=5)
    assert not weak.defined and "not clearly positive" in weak.reason  # net +12.5 but CI reaches 0
    small = gap_closed(align, np.array([1] * 1 + [0] * 7, dtype=float), n_boot=200, min_tuned_net=20)
    assert not small.defined and "below the minimum" in small.reason


def test_average_gap_excludes_undefined_datasets():
    strong = np.array([1] * 20 + [-1] * 2, dtype=float)
    per = {"a": (np.array([1] * 8 + [0] * 14, dtype=float), strong),
           "b": (np.array([1] * 4 + [0] * 18, dtype=float), strong),
           "c": (np.zeros(22), np.array([1, -1] * 11, dtype=float))}  # tuned net 0: undefined
    avg = average_gap(per, n_boot=300)
    ga, gb = gap_closed(*per["a"], n_boot=300), gap_closed(*per["b"], n_boot=300)
    assert avg.defined and avg.datasets == ["a", "b"] and "c" in avg.excluded
    assert avg.value == pytest.approx((ga.value + gb.value) / 2)
    assert avg.ci[0] < avg.value < avg.ci[1]


def test_old_lc_win_rate_name_still_reads(tmp_path) -> None:
    """Reports and sweep configs written before the rename keep working under the new name."""
    from alignez_eval.pipeline.sweep import point_metrics
    from alignez_eval.pipeline.sweep_config import parse_sweep

    cfg = parse_sweep({"base": "pretrained=/m", "tasks": ["t"], "judge": "hf:/j", "parameters": {"alpha": [1]},
                       "metric": "lc_win_rate"})
    assert cfg.metric == "length_adjusted_win_rate"
    old_csv = tmp_path / "leaderboard.csv"
    old_csv.write_text("candidate,dataset,net,win_rate,lc_win_rate,n\nalignez,d,10.0,55.0,52.5,8\n", encoding="utf-8")
    assert point_metrics({"csv": old_csv}, "alignez")["length_adjusted_win_rate"] == pytest.approx(52.5)
