"""Subspace math on planted data, checked against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignez_eval.editing import rules
from alignez_eval.fitting.subspaces import (
    caa_steer,
    cosine_keep,
    energy_rank,
    harm_basis,
    iti_steer,
    orient,
    orthonormalize,
    svd_basis,
    theta_help,
    tie_break,
    v1_directions,
)

D = 48


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def planted(n: int = 40, d: int = D, seed: int = 0, strength: float = 4.0, noise: float = 0.05):
    """H_help − H_harm = a_i·u + small noise, with a shared (large) base activation per pair."""
    rng = np.random.default_rng(seed)
    u = _unit(rng.normal(size=d))
    base = rng.normal(size=(n, d)) * 3 + 5 * _unit(rng.normal(size=d))
    a = strength * (1 + rng.random(n))  # all positive: helpful is +u
    h_harm = base - 0.5 * a[:, None] * u
    h_help = base + 0.5 * a[:, None] * u + noise * rng.normal(size=(n, d))
    return torch.tensor(h_help), torch.tensor(h_harm), u


def test_theta_help_recovers_the_planted_direction_oriented_towards_helpful():
    hh, hr, u = planted()
    fit = theta_help(hh, hr, energy=0.9)
    assert fit.basis.shape[0] == 1
    cos = float(fit.basis[0].numpy() @ u)
    assert cos > 0.99  # recovered AND oriented: not −u
    # the same data with the roles swapped gives the opposite direction
    swapped = theta_help(hr, hh, energy=0.9)
    assert float(swapped.basis[0].numpy() @ u) < -0.99


def test_energy_rank_counts():
    s = torch.tensor([3.0, 2.0, 1.0])  # σ² = 9, 4, 1 → cumulative 9/14, 13/14, 1
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 13 / 14) == 2
    assert energy_rank(s, 0.95) == 3
    assert energy_rank(s, 1.0) == 3
    assert energy_rank(torch.zeros(3), 0.9) == 0


def test_energy_selection_keeps_the_planted_rank_and_spans_it():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(D, 3)))
    u1, u2, u3 = q.T
    n = 60
    # variances along u1, u2, u3: 100, 36, 1 → energies ≈ .73, .99, 1
    coef = rng.normal(size=(n, 3)) * np.array([10.0, 6.0, 1.0])
    diff = coef @ np.stack([u1, u2, u3])
    zeros = torch.zeros(n, D, dtype=torch.float64)
    fit = theta_help(torch.tensor(diff), zeros, energy=0.9)
    s = np.linalg.svd(diff, compute_uv=False)
    k_hand = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= 0.9)) + 1
    assert fit.basis.shape[0] == k_hand == 2
    p_fit = fit.basis.numpy().T @ fit.basis.numpy()
    p_true = np.outer(u1, u1) + np.outer(u2, u2)
    assert np.abs(p_fit - p_true).max() < 0.05
    assert fit.energy_kept == pytest.approx(float(np.sum(s[:2] ** 2) / np.sum(s**2)))
    assert np.allclose(fit.basis.numpy() @ fit.basis.numpy().T, np.eye(2), atol=1e-10)
    assert theta_help(torch.tensor(diff), zeros, energy=0.999).basis.shape[0] == 3


def test_orientation_and_deterministic_tie_break():
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    towards = torch.tensor([-2.0, -3.0, 0.0], dtype=torch.float64)
    out, ties = orient(b, towards)
    assert ties == 1
    assert out.tolist() == [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]
    assert tie_break(torch.tensor([0.1, -0.9, 0.5])).tolist() == pytest.approx([-0.1, 0.9, -0.5])
    # an SVD sign flip of the input gives the same oriented output
    out2, _ = orient(-b, towards)
    assert torch.equal(out, out2)


def test_harm_basis_readings():
    hh, hr, u = planted()
    help_fit = theta_help(hh, hr, 0.9)
    neg = harm_basis(hh, hr, help_fit, 0.9, "neg_align")
    assert torch.equal(neg.basis, -help_fit.basis)
    orth = harm_basis(hh, hr, help_fit, 0.9, "harm_orth")
    k = orth.basis.shape[0]
    assert k >= 1
    assert torch.allclose(orth.basis @ orth.basis.T, torch.eye(k, dtype=torch.float64), atol=1e-10)
    assert float((orth.basis @ help_fit.basis.T).abs().max()) < 1e-10  # ⟂ Θ_help
    assert bool(((orth.basis @ hr.mean(0)) > 0).all())  # towards mean(H_harm)
    with pytest.raises(ValueError):
        harm_basis(hh, hr, help_fit, 0.9, "other")


def test_neg_align_update_clips_harmful_side_and_boosts_helpful_side():
    """With Θ_harm = −Θ_help and both inner products on the original x, the alignez rule changes the
    coefficient c = ⟨x,θ⟩ by ReLU(−c) + α·tanh(c) and leaves the orthogonal part alone."""
    hh, hr, _ = planted()
    help_fit = theta_help(hh, hr, 0.9)
    theta = help_fit.basis.float()
    harm = harm_basis(hh, hr, help_fit, 0.9, "neg_align").basis.float()
    x = torch.randn(5, 1, D)
    alpha = 1.5
    delta = rules.alignez_delta(x, harm, theta, alpha)
    c = (x @ theta.T).squeeze(-1)
    want_dc = torch.relu(-c) + alpha * torch.tanh(c)
    got_dc = (delta @ theta.T).squeeze(-1)
    assert torch.allclose(got_dc, want_dc, atol=1e-5)
    ortho = delta - (delta @ theta.T) @ theta
    assert float(ortho.abs().max()) < 1e-5


def test_v1_equals_numpy_top_singular_vectors():
    hh, hr, _ = planted(seed=3)
    harm, help_ = v1_directions(hh, hr)
    for fit, m in ((harm, hr.numpy()), (help_, hh.numpy())):
        top = np.linalg.svd(m, full_matrices=False)[2][0]
        assert fit.basis.shape == (1, D)
        assert abs(float(fit.basis[0].numpy() @ top)) > 1 - 1e-9
    diff = (hh - hr).mean(0).numpy()
    assert float(help_.basis[0].numpy() @ diff) > 0
    assert float(harm.basis[0].numpy() @ -diff) > 0


def test_caa_is_the_unnormalised_mean_difference():
    hh, hr, _ = planted(seed=4)
    want = np.mean(hh.numpy() - hr.numpy(), axis=0)
    assert np.allclose(caa_steer(hh, hr).numpy(), want, atol=1e-12)


def test_iti_is_unit_direction_times_activation_std():
    hh, hr, u = planted(seed=5)
    rng = np.random.default_rng(0)
    direction = torch.tensor(-(u + 0.1 * rng.normal(size=D)))  # flipped: must be re-oriented
    steer = iti_steer(hh, hr, direction).numpy()
    v = _unit(-direction.numpy())
    proj = np.concatenate([hh.numpy(), hr.numpy()]) @ v
    assert np.allclose(steer, v * proj.std(), atol=1e-10)


def test_cosine_filter_counts():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    # cosines 1, .707, 0, −1
    assert cosine_keep(a, b, 0.8).tolist() == [False, True, True, True]
    assert cosine_keep(a, b, 0.5).tolist() == [False, False, True, True]
    assert int(cosine_keep(a, b, -1.0).sum()) == 1


def test_orthonormalize_and_degenerate_inputs():
    rows = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    q = orthonormalize(rows)
    assert q.shape == (2, 3)
    assert torch.allclose(q @ q.T, torch.eye(2, dtype=torch.float64))
    assert svd_basis(torch.zeros(3, 4), 0.9).basis.shape == (0, 4)
    assert theta_help(torch.zeros(0, 4), torch.zeros(0, 4)).basis.shape == (0, 4)
