"""The EAGLE UPDATE kernel (SPEC §2, §2a), checked against independent NumPy float64 algebra."""
import math
import platform

import numpy as np
import pytest
import torch

from eagle_dist import kernels
from eagle_dist.data import controlled
from eagle_dist.kernels import (eagle_update, orthonormal_sketch, sampling_sketch,
                                spectral_norm_sq)


def _blocks(n=12, d=9, nq=2, dq=3, seed=0, kappa=1e2):
    p = controlled(n, d, nq, dq, kappa=kappa, seed=seed)
    return p, tuple(torch.tensor(x) for x in (p.A, p.B, p.C, np.zeros((nq, dq))))


def _normalised(p):
    """A, B scaled by 1/‖A‖₂ (numpy's 2-norm, independent of the kernel's power iteration)."""
    s = np.linalg.norm(p.A, 2)
    return (torch.tensor(p.A / s), torch.tensor(p.B / s), torch.tensor(p.C),
            torch.zeros(p.n_query, p.d_query, dtype=torch.float64))


def _np(*ts):
    return [t.numpy().astype(np.float64) for t in ts]


# ---------------------------------------------------------------------------------------------
# never modifies its inputs

@pytest.mark.parametrize("shape", [(12, 9), (9, 12)], ids=["tall", "wide"])
@pytest.mark.parametrize("sketch_kind", [None, "index", "index32", "orthonormal"])
@pytest.mark.parametrize("eta,scale,update_ab", [(1 / 3, 1.5, True), (0.5, 1.0, True),
                                                  (0.0, 1.0, True), (1 / 3, 2.0, False)])
def test_update_never_modifies_inputs(shape, sketch_kind, eta, scale, update_ab):
    n, d = shape
    _, (A, B, C, D) = _blocks(n, d)
    D = D + 0.25                                             # a nonzero D must also stay put
    g = torch.Generator().manual_seed(3)
    sketch = {None: None,
              "index": sampling_sketch(d, 4, generator=g, device="cpu"),
              "index32": sampling_sketch(d, 4, generator=g, device="cpu").to(torch.int32),
              "orthonormal": orthonormal_sketch(d, 4, generator=g, dtype=torch.float64,
                                                device="cpu")}[sketch_kind]
    before = [x.clone() for x in (A, B, C, D)]
    s_before = None if sketch is None else sketch.clone()
    out = eagle_update(A, B, C, D, eta=eta, gamma=1.0, rho=0.7, sketch=sketch, scale=scale,
                       update_ab=update_ab)
    for x, x0 in zip((A, B, C, D), before):
        assert torch.equal(x, x0)
    if sketch is not None:
        assert torch.equal(sketch, s_before)
    # and the outputs actually moved (the check above is not vacuous)
    assert not torch.equal(out[3], D)
    assert [o.shape for o in out] == [x.shape for x in (A, B, C, D)]


# ---------------------------------------------------------------------------------------------
# the invariant D_ℓ + B_ℓ A_ℓ⁺ C_ℓ = B A⁺ C (SPEC §2, "Why it works")

def _invariant_error(A, B, C, D, ref):
    A, B, C, D = _np(A, B, C, D)
    return np.linalg.norm(D + B @ np.linalg.pinv(A) @ C - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("shape", [(30, 30), (40, 25), (25, 40)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("form", ["stable", "power", "power-eta0.5-gamma1.5"])
def test_invariant_along_unsketched_iteration(shape, form):
    n, d = shape
    p = controlled(n, d, 2, 3, kappa=1e3, seed=11)          # consistent: B = W A
    ref = p.B @ np.linalg.pinv(p.A) @ p.C                   # independent float64 reference
    A, B, C, D = _normalised(p)
    eta, gamma = (0.5, 1.5) if form.startswith("power-eta") else (1 / 3, 1.0)
    errs = []
    for _ in range(30):
        if form == "stable":
            rho, scale = 1.0, 1.0 / (1.0 - eta)
        else:
            rho, scale = 1.0 / np.linalg.norm(A.numpy(), 2) ** 2, 1.0
        A, B, C, D = eagle_update(A, B, C, D, eta=eta, gamma=gamma, rho=rho, scale=scale)
        errs.append(_invariant_error(A, B, C, D, ref))
    assert max(errs) < 1e-9, errs
    # ... and the mass has actually moved into D: C → 0, D → D̂
    assert np.linalg.norm(D.numpy() - ref) / np.linalg.norm(ref) < 1e-9
    assert np.linalg.norm(C.numpy()) < 1e-9 * np.linalg.norm(p.C)


@pytest.mark.parametrize("kind", ["index", "orthonormal"])
def test_invariant_along_sketched_iteration_full_rank_square(kind):
    # A (I − ηρ S ÃᵀÃ Sᵀ) right-multiplies A and B alike, and B A⁺ A = B for invertible A, so the
    # invariant holds with a fresh sketch every step too.
    p = controlled(24, 24, 2, 2, kappa=1e3, seed=5)
    ref = p.B @ np.linalg.inv(p.A) @ p.C
    A, B, C, D = _normalised(p)
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        S = (sampling_sketch(24, 6, generator=g, device="cpu") if kind == "index"
             else orthonormal_sketch(24, 6, generator=g, dtype=torch.float64, device="cpu"))
        As = A[:, S] if kind == "index" else A @ S
        rho = 1.0 / np.linalg.norm(As.numpy(), 2) ** 2
        A, B, C, D = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=rho, sketch=S)
        assert _invariant_error(A, B, C, D, ref) < 1e-9


# ---------------------------------------------------------------------------------------------
# Newton–Schulz form: η = 1/3, ρ = 1, s = 3/2 keeps ‖A‖₂ = 1

@pytest.mark.parametrize("shape", [(20, 20), (30, 18), (18, 30)], ids=["square", "tall", "wide"])
def test_newton_schulz_form_keeps_unit_norm(shape):
    n, d = shape
    p = controlled(n, d, 2, 2, kappa=1e4, seed=2)
    A, B, C, D = _normalised(p)
    sv0 = np.linalg.svd(A.numpy(), compute_uv=False)
    A1, *_ = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=1.0, scale=1.5)
    # one step maps every singular value σ → (3σ − σ³)/2
    sv1 = np.linalg.svd(A1.numpy(), compute_uv=False)
    np.testing.assert_allclose(np.sort(sv1), np.sort((3 * sv0 - sv0 ** 3) / 2), rtol=1e-12)
    for _ in range(40):
        A, B, C, D = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=1.0, scale=1.5)
        assert np.linalg.norm(A.numpy(), 2) == pytest.approx(1.0, abs=1e-12)
    # the polar iteration converged: every singular value is 1 (A is a partial isometry U Vᵀ)
    np.testing.assert_allclose(np.linalg.svd(A.numpy(), compute_uv=False), 1.0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# sketched update == the dense formula with an explicit S

def _dense_update(A, B, C, D, S, eta, gamma, rho, scale):
    At, Bt = A @ S, B @ S
    A_new = scale * (A - eta * rho * At @ At.T @ At @ S.T)
    B_new = scale * (B - eta * rho * Bt @ At.T @ At @ S.T)
    C_new = C - gamma * rho * At @ At.T @ C
    D_new = D + gamma * rho * Bt @ At.T @ C
    return A_new, B_new, C_new, D_new


@pytest.mark.parametrize("kind", ["index", "index32", "orthonormal", "none"])
@pytest.mark.parametrize("shape", [(10, 16), (16, 10)], ids=["wide", "tall"])
@pytest.mark.parametrize("eta,gamma,scale", [(1 / 3, 1.0, 1.0), (0.9, 1.7, 1.3), (0.0, 1.0, 1.0)])
def test_sketched_update_equals_dense_formula(kind, shape, eta, gamma, scale):
    n, d = shape
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((n, d)), rng.standard_normal((3, d))
    C, D = rng.standard_normal((n, 2)), rng.standard_normal((3, 2))
    r = 5
    if kind.startswith("index"):
        idx = np.sort(rng.choice(d, r, replace=False))
        S = np.eye(d)[:, idx]                               # explicit d x r column selector
        sk = torch.tensor(idx, dtype=torch.int32 if kind == "index32" else torch.int64)
    elif kind == "orthonormal":
        S = np.linalg.qr(rng.standard_normal((d, r)))[0]
        sk = torch.tensor(S)
    else:
        S, sk = np.eye(d), None
    rho = 1.0 / np.linalg.norm(A @ S, 2) ** 2
    got = eagle_update(*(torch.tensor(x) for x in (A, B, C, D)), eta=eta, gamma=gamma, rho=rho,
                       sketch=sk, scale=scale)
    want = _dense_update(A, B, C, D, S, eta, gamma, rho, scale)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-11, atol=1e-12 * np.abs(w).max())


def test_update_ab_false_only_moves_c_and_d():
    _, (A, B, C, D) = _blocks()
    A1, B1, C1, D1 = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=0.5, update_ab=False)
    assert torch.equal(A1, A) and torch.equal(B1, B)
    An, Bn, Cn, Dn = _np(A, B, C, D)
    np.testing.assert_allclose(C1.numpy(), Cn - 0.5 * An @ An.T @ Cn, rtol=1e-12)
    np.testing.assert_allclose(D1.numpy(), Dn + 0.5 * Bn @ An.T @ Cn, rtol=1e-12)


def test_float32_stays_float32():
    _, blocks = _blocks()
    out = eagle_update(*(x.float() for x in blocks), eta=1 / 3, gamma=1.0, rho=1.0, scale=1.5)
    assert all(o.dtype == torch.float32 for o in out)


# ---------------------------------------------------------------------------------------------
# η = 0 is gradient descent: D_k = W_k C with W_{k+1} = W_k − lr (W_k A − B) Aᵀ

@pytest.mark.parametrize("shape", [(15, 15), (20, 12), (12, 20)], ids=["square", "tall", "wide"])
def test_eta_zero_is_gradient_descent(shape):
    n, d = shape
    p = controlled(n, d, 2, 3, kappa=5, seed=4)
    A, B, C = p.A, p.B, p.C
    lr = 1.0 / np.linalg.norm(A, 2) ** 2
    W = np.zeros((2, n))
    blocks = tuple(torch.tensor(x) for x in (A, B, C, np.zeros((2, 3))))
    for k in range(60):
        W = W - lr * (W @ A - B) @ A.T                       # independent NumPy GD
        blocks = eagle_update(*blocks, eta=0.0, gamma=1.0, rho=lr)
        np.testing.assert_allclose(blocks[3].numpy(), W @ C, rtol=1e-10,
                                   atol=1e-12 * np.abs(W @ C).max())
    assert torch.equal(blocks[0], torch.tensor(A))           # GD never touches A, B
    assert torch.equal(blocks[1], torch.tensor(B))


# ---------------------------------------------------------------------------------------------
# helpers: power iteration and sketches

@pytest.mark.parametrize("scale", [1.0, 1e-25, 1e20], ids=["unit", "tiny", "huge"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(30, 20), (20, 300), (150, 140)],
                         ids=["exact-tall", "exact-wide", "power"])
def test_spectral_norm_sq_matches_svd_at_any_scale(scale, dtype, shape):
    # Regression: in float32, ‖MᵀM v‖ of data with ‖M‖ ~ 1e20 overflowed to inf (and ~1e-25
    # underflowed to 0); EAGLE then zeroed A and B and reported "converged" with D = 0.
    # Both paths: exact (smaller dimension ≤ EXACT_NORM_MAX_DIM) and power iteration.
    n, d = shape
    assert (min(shape) <= kernels.EXACT_NORM_MAX_DIM) == (shape != (150, 140))
    p = controlled(n, d, 1, 1, kappa=10, seed=0)
    M = torch.tensor(p.A * scale, dtype=dtype)
    est, v = spectral_norm_sq(M, iters=500, rtol=1e-12)
    true = np.linalg.norm(p.A, 2) ** 2 * scale ** 2
    assert est == pytest.approx(true, rel=1e-5 if dtype == torch.float32 else 1e-10)
    assert v.shape == (d,) and bool(torch.isfinite(v).all())
    v64 = v.double() / torch.linalg.vector_norm(v.double())        # a top right singular vector
    gain = float(torch.linalg.vector_norm(torch.tensor(p.A) @ v64)) ** 2 * scale ** 2
    assert gain == pytest.approx(true, rel=1e-4 if dtype == torch.float32 else 1e-8)


@pytest.mark.parametrize("scale", [1.0, 1e-170, 1e-120, 1e120, 1e200])
def test_norm64_is_the_frobenius_norm_at_any_scale(scale):
    """The one-pass path (a float64 norm inside (1e-100, 1e100)) and the scaled path agree with
    NumPy's norm of the unscaled matrix, times the scale."""
    from eagle_dist.control import norm64
    x = np.random.default_rng(0).standard_normal((40, 30))
    assert norm64(torch.tensor(x * scale)) == pytest.approx(np.linalg.norm(x) * scale, rel=1e-13)
    assert norm64(torch.zeros(3, 3)) == 0.0 and norm64(torch.zeros(0, 3)) == 0.0
    assert math.isinf(norm64(torch.tensor([1.0, math.inf])))
    assert math.isnan(norm64(torch.tensor([1.0, math.nan])))


def test_orthonormal_sketch_has_orthonormal_columns_and_is_seeded():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    S = orthonormal_sketch(40, 7, generator=g1, dtype=torch.float64, device="cpu")
    np.testing.assert_allclose(S.T @ S, np.eye(7), atol=1e-13)
    assert torch.equal(S, orthonormal_sketch(40, 7, generator=g2, dtype=torch.float64, device="cpu"))
    assert not torch.equal(S, orthonormal_sketch(40, 7, generator=g1, dtype=torch.float64,
                                                 device="cpu"))


def test_sampling_sketch_is_r_distinct_sorted_indices():
    g = torch.Generator().manual_seed(1)
    idx = sampling_sketch(50, 12, generator=g, device="cpu")
    assert idx.dtype == torch.int64 and idx.shape == (12,)
    assert len(set(idx.tolist())) == 12 and 0 <= int(idx.min()) and int(idx.max()) < 50
    assert torch.equal(idx, idx.sort().values)


# ---------------------------------------------------------------------------------------------
# the CPU SYRK/SYMM path (kernels._SymmetricBlas) computes the same update as the dense formula

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(460, 420), (420, 460)], ids=["tall", "wide"])
@pytest.mark.parametrize("eta,scale", [(1 / 3, 1.5), (0.2, 1.0)])
def test_symmetric_blas_update_equals_dense_formula(dtype, shape, eta, scale):
    n, d = shape
    assert min(shape) >= kernels.SYMMETRIC_MIN_DIM          # the sizes really take that path
    rng = np.random.default_rng(7)
    A64 = rng.standard_normal((n, d)) / np.sqrt(n + d)
    B64, C64, D64 = rng.standard_normal((3, d)), rng.standard_normal((n, 2)), rng.standard_normal((3, 2))
    A, B, C, D = (torch.tensor(x, dtype=dtype) for x in (A64, B64, C64, D64))
    before = [x.clone() for x in (A, B, C, D)]
    out = eagle_update(A, B, C, D, eta=eta, gamma=1.0, rho=0.9, scale=scale)
    for x, x0 in zip((A, B, C, D), before):                 # inputs untouched (SYMM writes a copy)
        assert torch.equal(x, x0)
    want = _dense_update(*(x.astype(np.float64) for x in (A64, B64, C64, D64)), np.eye(d),
                         eta, 1.0, 0.9, scale)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for got, w in zip(_np(*out), want):
        assert np.abs(got - w).max() <= tol * np.abs(w).max()
    # and it agrees with torch's GEMM path
    old = kernels.use_symmetric_blas(False)
    try:
        ref = eagle_update(A, B, C, D, eta=eta, gamma=1.0, rho=0.9, scale=scale)
    finally:
        kernels.use_symmetric_blas(old)
    for got, r in zip(out, ref):
        assert float((got - r).abs().max()) <= tol * float(r.abs().max())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available(),
                    reason="the SYRK/SYMM path needs the MKL inside x86-64 CPU builds of torch")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetric_blas_is_found_where_torch_has_mkl(dtype, monkeypatch):
    # regression guard: a failed symbol lookup or self-test silently loses the SYRK/SYMM path; whether
    # it is *used* is a timing decision (kernels.SYRK_TIMING) forced on here to check the gates
    assert kernels.symmetric_blas_found(dtype)
    monkeypatch.setitem(kernels._SYRK_PAYS, dtype, True)
    A = torch.zeros(kernels.SYMMETRIC_MIN_DIM, kernels.SYMMETRIC_MIN_DIM, dtype=dtype)
    assert kernels.symmetric_blas(A) is not None
    assert kernels.symmetric_blas(A[:, :-1]) is None              # not contiguous
    assert kernels.symmetric_blas(A[:100, :100].contiguous()) is None   # too small to pay off
    assert kernels.symmetric_blas(A.requires_grad_()) is None     # autograd needs torch ops


# ---------------------------------------------------------------------------------------------
# the filtered C/D step and the Gram (outer) form, against the formula in NumPy-free torch

def _filtered_reference(A, B, C, D, eta, gamma, rho, S, scale, update_ab, m):
    At = A if S is None else A @ S
    Bt = B if S is None else B @ S
    Gm = torch.linalg.matrix_power(At.T @ At, m)
    C1 = C - gamma * rho ** (m + 1) * At @ Gm @ At.T @ C
    D1 = D + gamma * rho ** (m + 1) * Bt @ Gm @ At.T @ C
    if not update_ab:
        return A * scale, B * scale, C1, D1
    St = torch.eye(A.shape[1], dtype=A.dtype) if S is None else S
    G = At.T @ At
    return (scale * (A - eta * rho * At @ G @ St.T), scale * (B - eta * rho * Bt @ G @ St.T), C1, D1)


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("shape", [(30, 20), (20, 30), (450, 420), (420, 450)])
@pytest.mark.parametrize("sketch", [None, "orthonormal", "sample"])
@pytest.mark.parametrize("update_ab", [True, False])
def test_filtered_step_matches_its_formula(m, shape, sketch, update_ab):
    n, d = shape
    g = torch.Generator().manual_seed(n + d)
    A, B = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    C, D = torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    S = Sm = None
    if sketch == "orthonormal":
        S = Sm = orthonormal_sketch(d, d // 2, generator=g, dtype=torch.float64, device="cpu")
    elif sketch == "sample":
        S = sampling_sketch(d, d // 2, generator=g, device="cpu")
        Sm = torch.eye(d, dtype=torch.float64)[:, S]
    scale = 1.2 if update_ab else 1.0
    got = eagle_update(A, B, C, D, eta=0.3, gamma=0.9, rho=0.01, sketch=S, scale=scale,
                       update_ab=update_ab, filter_order=m)
    want = _filtered_reference(A, B, C, D, 0.3, 0.9, 0.01, Sm, scale, update_ab, m)
    for x, y in zip(got, want):
        assert float((x - y).abs().max()) <= 1e-12 * float(y.abs().max())


@pytest.mark.parametrize("m", [0, 1, 2])
def test_gram_form_on_shards_equals_the_whole_update(m):
    """Gram mode: each shard's update from the all-reduced A Aᵀ and B Aᵀ is the centralized
    update restricted to that shard's columns."""
    g = torch.Generator().manual_seed(7)
    A, B = torch.randn(20, 60, generator=g, dtype=torch.float64), torch.randn(2, 60, generator=g, dtype=torch.float64)
    C, D = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    whole = eagle_update(A, B, C, D, eta=1 / 3, gamma=1.0, rho=0.01, scale=1.5, filter_order=m)
    K, X = A @ A.T, B @ A.T
    parts = [eagle_update(A[:, s], B[:, s], C, D, eta=1 / 3, gamma=1.0, rho=0.01, scale=1.5,
                          filter_order=m, gram=K, cross=X) for s in (slice(0, 25), slice(25, 60))]
    tol = 1e-14 * float(whole[0].abs().max())
    assert float((torch.cat([parts[0][0], parts[1][0]], 1) - whole[0]).abs().max()) <= tol
    assert float((torch.cat([parts[0][1], parts[1][1]], 1) - whole[1]).abs().max()) <= 1e-13
    for p in parts:
        assert float((p[2] - whole[2]).abs().max()) <= 1e-13 * float(whole[2].abs().max())
        assert float((p[3] - whole[3]).abs().max()) <= 1e-13 * float(whole[3].abs().max())
