"""The edit rules against an independent float64 numpy computation of the paper's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignez_eval.editing import rules


def _orthonormal(rows: int, dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, rows)))
    return q.T


def _alignez_np(x, harm, help_, alpha, harm_gate=None, help_gate=None):
    """x ← x − Σ_harm ReLU(⟨x,θ⟩)θ + α Σ_help tanh(⟨x,θ⟩)θ, one vector at a time."""
    out = np.array(x, dtype=np.float64)
    harm, help_ = np.asarray(harm, dtype=np.float64), np.asarray(help_, dtype=np.float64)
    flat_x = out.reshape(-1, out.shape[-1])
    res = flat_x.copy()
    for n, v in enumerate(flat_x):
        b = n // (flat_x.shape[0] // (harm_gate.shape[0] if harm_gate is not None else 1))
        for j, th in enumerate(harm):
            g = 1.0 if harm_gate is None else harm_gate[b, j]
            res[n] -= g * max(float(v @ th), 0.0) * th
        for j, th in enumerate(help_):
            g = 1.0 if help_gate is None else help_gate[b, j]
            res[n] += g * alpha * np.tanh(float(v @ th)) * th
    return res.reshape(out.shape) - out


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_alignez_delta_matches_formula(dtype: torch.dtype, tol: float) -> None:
    d = 16
    basis = _orthonormal(5, d, 0)
    harm, help_ = basis[:2], basis[2:]
    x = np.random.default_rng(1).standard_normal((3, 4, d)) * 2
    got = rules.alignez_delta(
        torch.tensor(x, dtype=dtype), torch.tensor(harm, dtype=torch.float32), torch.tensor(help_, dtype=torch.float32), 1.5
    )
    assert got.dtype == dtype
    # the bases are float32 in artifacts; compare with the same rounded bases
    want = _alignez_np(x, harm.astype(np.float32), help_.astype(np.float32), 1.5)
    np.testing.assert_allclose(got.numpy(), want, atol=tol * 10, rtol=tol * 10)


def test_gates_mask_directions_per_row() -> None:
    d = 12
    basis = _orthonormal(4, d, 2)
    harm, help_ = basis[:2], basis[2:]
    x = np.random.default_rng(3).standard_normal((2, 3, d))
    hg = np.array([[1.0, 0.0], [0.0, 1.0]])
    pg = np.array([[0.0, 1.0], [1.0, 1.0]])
    got = rules.alignez_delta(
        torch.tensor(x), torch.tensor(harm), torch.tensor(help_), 2.0,
        torch.tensor(hg).unsqueeze(1), torch.tensor(pg).unsqueeze(1),
    )
    want = _alignez_np(x, harm, help_, 2.0, hg, pg)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_harm_removal_only_removes_positive_component() -> None:
    th = torch.tensor([[1.0, 0.0, 0.0]])
    x = torch.tensor([[2.0, 1.0, 0.0], [-2.0, 1.0, 0.0]])
    y = x + rules.remove_harm_delta(x, th)
    assert torch.equal(y, torch.tensor([[0.0, 1.0, 0.0], [-2.0, 1.0, 0.0]]))


def test_help_boost_is_sign_invariant() -> None:
    """tanh is odd: flipping θ's sign (arbitrary after an SVD) gives the same update."""
    th = torch.tensor([[0.6, 0.8, 0.0]])
    x = torch.randn(5, 3, dtype=torch.float64)
    a = rules.boost_help_delta(x, th.double(), 1.0)
    b = rules.boost_help_delta(x, -th.double(), 1.0)
    assert torch.allclose(a, b, atol=1e-15)


def test_projection_delta_sequential_form() -> None:
    d = 10
    basis = _orthonormal(2, d, 4)
    h, p = basis[:1], basis[1:]
    x = np.random.default_rng(5).standard_normal((4, d))
    y = x - np.outer(x @ h[0], h[0])
    y = y + 0.5 * np.outer(y @ p[0], p[0])
    got = rules.projection_delta(torch.tensor(x), torch.tensor(h), torch.tensor(p), 0.5)
    np.testing.assert_allclose(got.numpy(), y - x, atol=1e-12)


def test_add_delta() -> None:
    v = torch.tensor([1.0, -2.0, 0.5])
    x = torch.zeros(2, 4, 3)
    got = rules.add_delta(x, v, 3.0)
    assert got.shape == x.shape and torch.equal(got[1, 2], 3.0 * v)


def test_alpha_zero_and_empty_harm_is_identity() -> None:
    x = torch.randn(2, 3, 8)
    empty = torch.zeros(0, 8)
    help_ = torch.tensor(_orthonormal(2, 8, 6), dtype=torch.float32)
    delta = rules.alignez_delta(x, empty, help_, 0.0)
    assert torch.count_nonzero(delta) == 0 and torch.equal(x + delta, x)


# ---- the fused hot path ------------------------------------------------------------------------
@pytest.mark.parametrize("k_harm,k_help,alpha", [(3, 2, 1.0), (3, 2, -2.5), (0, 4, 1.5), (4, 0, 1.0), (3, 3, 0.0)])
def test_fused_update_equals_the_formula(k_harm: int, k_help: int, alpha: float) -> None:
    """FusedAlignEZ (stacked Θ, clamp/tanh in place, one addmm) against the formula by hand and
    against alignez_delta, with and without per-row gates."""
    g = torch.Generator().manual_seed(k_harm * 10 + k_help)
    d = 12
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    harm, help_ = q[:k_harm], q[k_harm:k_harm + k_help]
    x = 3 * torch.randn(5, d, generator=g, dtype=torch.float64)
    f = rules.FusedAlignEZ.build(harm, help_, alpha)
    got = x + f.delta_coeffs(x) @ f.theta_out
    np.testing.assert_allclose(got.numpy(), x.numpy() + _alignez_np(x.numpy(), harm.numpy(), help_.numpy(), alpha),
                               atol=1e-12)
    torch.testing.assert_close(got, x + rules.alignez_delta(x, harm, help_, alpha))
    gh = (torch.rand(5, k_harm, generator=g) > 0.5).double()
    gp = (torch.rand(5, k_help, generator=g) > 0.5).double()
    gate = torch.cat([gh, gp], dim=1)[:, : f.k]
    got = x + (f.delta_coeffs(x) * gate) @ f.theta_out
    want = _alignez_np(x.numpy(), harm.numpy(), help_.numpy(), alpha, gh.numpy(), gp.numpy())
    np.testing.assert_allclose(got.numpy(), x.numpy() + want, atol=1e-12)
    torch.testing.assert_close(got, x + rules.alignez_delta(x, harm, help_, alpha, gh, gp))


def test_fused_cast_is_made_once_per_dtype() -> None:
    """Under autocast the hook sees bf16 outputs of an fp32 model: the basis is cast once, not per call."""
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float32))
    f = rules.FusedAlignEZ.build(q[:2], q[2:4], 1.0)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    a, b = f.cast(x), f.cast(x)
    assert a is b and a.theta_in.dtype == torch.bfloat16 and f.cast(x.float()) is f
    torch.testing.assert_close(a.theta_out.float(), f.theta_out, atol=1e-2, rtol=1e-2)


def test_rules_are_objects_with_one_interface():
    """The plan and the hooks ask a rule object (no string tests): its delta is the rule's formula,
    only alignez has a fused form and takes gates; add needs a shift and no directions, clamp both."""
    from alignez_eval.errors import ArtifactError

    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 4, dtype=torch.float64))
    harm, help_, steer = q.T[:2], q.T[2:4], torch.randn(8, dtype=torch.float64)
    expect = {"alignez": rules.alignez_delta(x, harm, help_, 1.5), "projection": rules.projection_delta(x, harm, help_, 1.5),
              "add": rules.add_delta(x, steer, 1.5), "clamp": rules.clamp_delta(x, harm, steer, 1.5)}
    assert set(rules.RULES) == set(expect)
    for name, want in expect.items():
        rule = rules.get_rule(name)
        assert rule.name == name
        torch.testing.assert_close(rule.delta(x, harm, help_, steer, 1.5), want)
        assert (rule.fuse(harm, help_, 1.5) is not None) == (name == "alignez") == rule.gated
        assert rule.needs_steer == (name in ("add", "clamp"))
        assert rule.uses_directions == (name != "add")
    fused = rules.get_rule("alignez").fuse(harm, help_, 1.5)
    x2 = x.reshape(-1, 8)
    torch.testing.assert_close(x2 + fused.delta_coeffs(x2) @ fused.theta_out, x2 + expect["alignez"].reshape(-1, 8))
    # clamp by hand: the component along span(Θ_harm) is replaced by α·steer's, the rest kept
    c = rules.get_rule("clamp").delta(x, harm, help_, steer, 1.5) + x
    torch.testing.assert_close(c @ harm.T, (1.5 * steer @ harm.T).expand(3, 5, 2))
    torch.testing.assert_close(c - (c @ harm.T) @ harm, x - (x @ harm.T) @ harm + 1.5 * (steer - (steer @ harm.T) @ harm))
    with pytest.raises(ArtifactError, match="unknown edit rule 'shift'"):
        rules.get_rule("shift")
