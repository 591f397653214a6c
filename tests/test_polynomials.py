"""eagle_dist.polynomials: minimax quintic steps, their promised intervals, schedules, the Gram-form
update's invariant and the Cholesky certificate — each against an independent reference (published
coefficients, dense grids, numpy SVD / pinv)."""
import math

import numpy as np
import pytest
import torch

from eagle_dist import polynomials as P
from eagle_dist.kernels import eagle_update


def _grid(lo, hi, n=20001):
    """Dense grid on [lo, hi]: geometric (resolves tiny lo) and linear, endpoints included."""
    return np.unique(np.concatenate([np.geomspace(lo, hi, n), np.linspace(lo, hi, n)]))


def _spread(n, d, kappa, seed, rank=None):
    """A with singular values geometric from 1 to 1/kappa (Haar factors)."""
    rng = np.random.default_rng(seed)
    r = min(n, d) if rank is None else rank
    U, _ = np.linalg.qr(rng.standard_normal((n, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return (U * np.logspace(0, -math.log10(kappa), r)) @ V.T


def test_minimax_matches_polar_express_coefficients():
    # Polar Express's first polynomial (ℓ = 1e-3, cushion 0.02407…, recentred), as published
    p, E = P.minimax_quintic(P.CUSHION, 1.0)
    s = 2.0 / (p(1e-3) + p(1.0))
    got = np.array(p.scaled(s).coefficients)
    want = np.array([8.28721201814563, -23.595886519098837, 17.300387312530933])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # equioscillation: |1 − p| ≤ E on a dense grid, = E at both ends and at the critical points
    x = _grid(P.CUSHION, 1.0)
    assert np.max(np.abs(1.0 - p(x))) <= E * (1 + 1e-9)
    q, r = p.critical_points()
    for pt, sign in ((P.CUSHION, -1), (q, 1), (r, -1), (1.0, 1)):
        assert p(pt) - 1.0 == pytest.approx(sign * E, rel=1e-8)


@pytest.mark.parametrize("lo", [1.5e-8, 1e-4, 1e-2, 0.3, 0.95, 1 - 1e-6])
@pytest.mark.parametrize("hi", [1.0, 1.7])
def test_step_maps_its_interval_into_the_promised_one(lo, hi):
    lo = lo * hi
    st = P.quintic_step(lo, hi)
    top = hi * (1.0 + st.margin)
    y = st.poly(_grid(lo, top))
    tol = 1e-13
    assert y.min() >= st.lo_next - tol and y.max() <= st.hi_next + tol
    assert st.lo_next + st.hi_next == pytest.approx(2.0, abs=1e-12)        # centred about 1
    assert st.hi_next < 1.0 + max(1.0 - lo / hi, 1e-12)                    # and narrower
    assert st.lo_next / st.hi_next > lo / hi                                # relative lift


@pytest.mark.parametrize("lo", [1.5e-8, 1e-4, 1e-2, 0.5])
def test_below_lo_the_step_is_increasing_and_lifts(lo):
    st = P.quintic_step(lo, 1.0)
    x = np.geomspace(1e-30, lo, 5001)
    y = st.poly(x)
    assert np.all(np.diff(y) > 0) and np.all(y > x) and y[-1] <= st.lo_next * (1 + 1e-12)
    # positive and below the top everywhere up to the margin: no sign change, no blow-up
    z = st.poly(np.linspace(1e-12, 1.0 + st.margin, 20001))
    assert np.all(z > 0) and z.max() <= st.hi_next * (1 + 1e-12)
    assert st.poly.critical_points()[0] > lo                                 # monotone on [0, q]


def test_top_margin_tolerates_an_underestimated_norm():
    # σ_max up to 1% above the assumed top (a low power-iteration estimate) stays in the interval
    st = P.quintic_step(1e-4, 1.0, safety=0.01)
    assert st.margin == pytest.approx(0.01 * (1 - 1e-4))
    assert st.poly(1.0 + st.margin) <= st.hi_next * (1 + 1e-12)


def test_schedule_reaches_the_band_and_grows_like_log_one_over_ell():
    ells = [10.0 ** -k for k in range(1, 9)]
    lens = []
    for ell in ells:
        steps = P.lift_schedule(ell, delta=0.1)
        assert 0.9 <= steps[-1].lo_next and steps[-1].hi_next <= 1.1
        for a, b in zip(steps, steps[1:]):                # each step starts where the last ended
            assert (b.lo, b.hi) == (a.lo_next, a.hi_next)
        lens.append(len(steps))
    assert lens == sorted(lens)
    slope = (lens[-1] - lens[1]) / 6.0                    # steps per decade, 1e-2 … 1e-8
    assert 1.0 / math.log10(5.0) <= slope <= 1.0 / math.log10(3.5)   # lift ≈ 4.1-4.6 per step
    cubic = [len(P.newton_schulz_schedule(ell, delta=0.1)) for ell in ells]
    c_slope = (cubic[-1] - cubic[1]) / 6.0
    assert c_slope == pytest.approx(1.0 / math.log10(1.5), rel=0.1)  # the cubic: 1.5 per step
    # to full accuracy the quintic schedule needs about 2.3x fewer GEMM-equivalents than the cubic
    q, c = P.lift_schedule(1e-4, delta=1e-12), P.newton_schulz_schedule(1e-4, delta=1e-12)
    assert q[-1].delta_next <= 1e-12 and 2.0 * len(q) < 0.5 * 1.5 * len(c)


def test_plan_hybrid_switch_rules_and_breakpoints():
    for sw in (0.1, None):
        plan = P.plan_hybrid(1e-4, switch=sw)
        last = plan.steps[-1]
        assert last.delta_next <= 1e-12 and plan.cost == 2 * len(plan.quintic) + 1.5 * len(plan.cubic)
    wide = P.plan_hybrid(1e-4, switch=0.5)                 # lift ends above 1.15: top-normalised
    assert wide.quintic[-1].hi_next == 1.0 and wide.quintic[-1].lo_next >= 0.3
    bp = P.plan_breakpoints(P._TABLE_FLOOR, P.DEFAULT_SWITCH)     # the certificate's table
    c = [P.plan_hybrid(l, switch=0.1).cost for l in bp]
    assert all(x > y for x, y in zip(c, c[1:]))
    assert all(P.plan_hybrid(l * (1 - 1e-3), switch=0.1).cost > cl for l, cl in zip(bp[1:], c[1:]))
    # the fixed band is not monotone in ℓ (1e-4 costs 20, 6.8e-5 costs 19); plan_for takes the
    # cheapest valid plan, and between breakpoints no plan_hybrid is cheaper than it
    assert P.plan_hybrid(1e-4, switch=0.1).cost > P.plan_for(1e-4).cost == 19.0
    for ell in np.geomspace(2e-7, 0.5, 12):
        assert P.plan_for(float(ell)).cost <= P.plan_hybrid(float(ell), switch=0.1).cost
        assert P.plan_for(float(ell)).quintic[0].lo <= ell


def _invariant(A, B, C, D):
    return D + (B @ np.linalg.pinv(A)) @ C


@pytest.mark.parametrize("shape", [(60, 40), (50, 50), (30, 70)])   # tall, square, wide
def test_gram_form_update_keeps_b_pinv_a_and_maps_singular_values(shape):
    n, d = shape
    A0 = _spread(n, d, 1e3, seed=1)
    rng = np.random.default_rng(2)
    B0 = rng.standard_normal((3, d))                        # generic: also outside A's row space
    C0 = rng.standard_normal((n, 2))
    ref = B0 @ np.linalg.pinv(A0) @ C0
    A, B = torch.tensor(A0), torch.tensor(B0)
    steps = P.lift_schedule(1e-3, delta=0.1)
    for st in steps:
        A_new, B_new, G = P.apply_right_factor(A, B, st.poly)
        # singular values mapped by p, singular vectors kept: compare with the SVD formula
        U, s, Vt = np.linalg.svd(A.numpy(), full_matrices=False)
        np.testing.assert_allclose(A_new.numpy(), (U * st.poly(s)) @ Vt, atol=1e-12, rtol=0)
        A, B = A_new, B_new
    got = B.numpy() @ np.linalg.pinv(A.numpy()) @ C0
    assert np.linalg.norm(got - ref) <= 1e-10 * np.linalg.norm(ref)
    sv = np.linalg.svd(A.numpy(), compute_uv=False)
    assert sv.min() >= steps[-1].lo_next * (1 - 1e-10) and sv.max() <= steps[-1].hi_next * (1 + 1e-10)


def test_hybrid_loop_keeps_the_invariant_and_converges():
    # the lift phase with EAGLE's C/D step (ρ = 1/top²), then the kernel's cubic steps
    n = 48
    A0 = _spread(n, n, 1e4, seed=3)
    rng = np.random.default_rng(4)
    B0 = rng.standard_normal((2, n)) @ A0 + 1e-3 * rng.standard_normal((2, n))
    C0 = A0 @ rng.standard_normal((n, 2))
    ref = B0 @ np.linalg.pinv(A0) @ C0
    A, B, C = (torch.tensor(x) for x in (A0, B0, C0))
    D = torch.zeros(2, 2, dtype=torch.float64)
    plan = P.plan_hybrid(1e-4, switch=0.1)
    for st in plan.steps:
        if st.kind == "quintic":
            top = st.hi * (1.0 + st.margin)
            _, _, C, D = eagle_update(A, B, C, D, eta=0.0, gamma=1.0, rho=1.0 / top ** 2,
                                      update_ab=False, filter_order=1)
            A, B, _ = P.apply_right_factor(A, B, st.poly)
        else:
            A, B, C, D = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=1.0, scale=1.5,
                                      filter_order=1)
        inv = _invariant(*(x.numpy() for x in (A, B, C, D)))
        assert np.linalg.norm(inv - ref) <= 1e-10 * np.linalg.norm(ref)
    assert np.linalg.norm(D.numpy() - ref) <= 1e-11 * np.linalg.norm(ref)


def test_certified_lower_bound_is_a_lower_bound_and_tight():
    sig = np.logspace(0, -3, 40)
    A = torch.tensor(_spread(40, 40, 1e3, seed=5))
    ell, tests = P.certified_lower_bound(A.T @ A)
    bp = np.array(P.plan_breakpoints(P._TABLE_FLOOR, P.DEFAULT_SWITCH))
    best = bp[bp <= sig.min()].max()                      # the best breakpoint σ_min allows
    assert ell == pytest.approx(best) and ell <= sig.min() and tests <= 7
    # k = 300: candidates below the rounding bound (~3e-6) are skipped, the rest searched
    Q, _ = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    lam = torch.logspace(0, -8, 300, dtype=torch.float64)            # σ from 1 to 1e-4
    ell3, _ = P.certified_lower_bound((Q * lam) @ Q.T)
    assert ell3 == pytest.approx(bp[bp <= 1e-4].max())
    # rank deficient: nothing above the floor can be certified
    Ar = torch.tensor(_spread(40, 40, 1e2, seed=6, rank=30))
    ell_r, _ = P.certified_lower_bound(Ar.T @ Ar)
    assert ell_r == pytest.approx(math.sqrt(torch.finfo(torch.float64).eps))
    # float32: the rounding bound (~5e-5 here) leaves σ_min = 1e-3 uncertified
    ell_32, _ = P.certified_lower_bound((A.T @ A).float())
    assert ell_32 == pytest.approx(math.sqrt(torch.finfo(torch.float32).eps))


def test_bad_input_is_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="lo"):
        P.quintic_step(0.0, 1.0)
    with pytest.raises(ValueError, match="lo"):
        P.quintic_step(1.2, 1.0)
    with pytest.raises(TypeError, match="lo"):
        P.quintic_step(True, 1.0)
    with pytest.raises(ValueError, match="delta"):
        P.lift_schedule(1e-3, delta=0.0)
    with pytest.raises(ValueError, match="switch"):
        P.plan_hybrid(1e-3, switch=1.5)
    with pytest.raises(ValueError, match="hi"):
        P.newton_schulz_step(0.5, 1.8)
    with pytest.raises(ValueError, match="G"):
        P.certified_lower_bound(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="columns"):
        P.apply_right_factor(torch.zeros(3, 4), torch.zeros(2, 5), P.NEWTON_SCHULZ)
