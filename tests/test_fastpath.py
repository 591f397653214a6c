"""The linear-system fast path and ``factorize`` (issue 16): exactness against numpy, the
certificate, mixed precision, rank deficiency, the fallback, and the bench's smoke run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eagle_dist import Problem, factorize, solve, solve_least_squares
from eagle_dist.data import controlled


@pytest.mark.parametrize("shape", [(60, 60), (40, 90), (90, 40)], ids=["square", "wide", "tall"])
@pytest.mark.parametrize("kappa", [1e2, 1e5])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_factorize_solves_like_pinv(shape, kappa, precision):
    """W = B A⁺ for square, wide (n < d: left factor) and tall A, both lift precisions; the
    finish is exact for any factor, so float32 lifts give float64 answers."""
    n, d = shape
    p = controlled(n, d, 2, 2, kappa=kappa, seed=1)
    f = factorize(p.A, precision=precision)
    rng = np.random.default_rng(0)
    for B in (p.B, rng.standard_normal((3, d))):          # consistent and inconsistent
        W, info = f.solve(B, tol=1e-12)
        ref = B @ np.linalg.pinv(p.A)
        assert info["status"] == "converged"
        # least-squares sensitivity: κ·eps, plus κ²·eps·‖r‖/(‖A‖‖W‖) when B is inconsistent
        r = np.linalg.norm(B - ref @ p.A) / (np.linalg.norm(p.A, 2) * np.linalg.norm(ref))
        bound = 100 * 2.2e-16 * (kappa + kappa ** 2 * r)
        assert np.linalg.norm(W - ref) <= bound * np.linalg.norm(ref) + 1e-14
    assert f.info.side == ("left" if n < d else "right")


def test_lift_invariant_and_polynomial_step_match_the_svd():
    """kernels.lift_step maps singular values by p and keeps B A⁺ (the invariant) exactly up to
    rounding; F accumulates the product of the factors."""
    from eagle_dist.kernels import lift_step
    rng = np.random.default_rng(2)
    A = torch.tensor(rng.standard_normal((30, 20)) / 10, dtype=torch.float64)
    B = torch.tensor(rng.standard_normal((2, 20)), dtype=torch.float64)
    a, b, c = 1.9, -1.2, 0.3
    X, F = lift_step(A, torch.eye(20, dtype=torch.float64), A.T @ A, (a, b, c))
    s0, s1 = torch.linalg.svdvals(A), torch.linalg.svdvals(X)
    assert torch.allclose(torch.sort(s1).values, torch.sort(a * s0 + b * s0 ** 3 + c * s0 ** 5).values,
                          atol=1e-13)
    assert torch.allclose(X, A @ F, atol=1e-14)
    inv0 = B @ torch.linalg.pinv(A)
    inv1 = (B @ F) @ torch.linalg.pinv(X)
    assert torch.allclose(inv0, inv1, atol=1e-11)


def test_solve_on_a_linear_system_takes_the_fast_path_and_certifies_it():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 30))
    b = A @ np.arange(30.0) + 0.01 * rng.standard_normal(300)
    x, res = solve_least_squares(A, b, return_result=True)
    xs = np.linalg.lstsq(A, b, rcond=None)[0]
    assert res.converged and res.info["fast_path"] is True
    assert res.info["check"] <= 1e-12 and np.linalg.norm(x - xs) <= 1e-13 * np.linalg.norm(xs)
    # the certificate is recomputed independently: LSQR's tests on the true residual
    from eagle_dist.solvers.baselines import lsq_check
    val, _ = lsq_check(A.T, b[None, :], x[None, :], 1e-12)
    assert val <= 1e-12
    r = solve(Problem.from_linear_system(A, b), "eagle", target_residual=0.03)
    assert r.converged and r.info["rel_residual"] <= 0.03
    slow = solve(Problem.from_linear_system(A, b), "eagle", fast_path=False)
    assert "fast_path" not in slow.info and slow.converged


def test_an_uncertifiable_fast_path_falls_back_to_the_cd_iteration():
    """Rank-deficient, inconsistent least squares: the lift's rounding floor (directions of B
    outside A's row space amplified) keeps the fast path's check above tol = 1e-14; it says so
    and the C/D iteration answers."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 10)) @ rng.standard_normal((10, 40))
    y = X @ rng.standard_normal(40) + 0.1 * rng.standard_normal(200)
    x, res = solve_least_squares(X, y, tol=1e-14, return_result=True)
    xs = np.linalg.lstsq(X, y, rcond=None)[0]
    assert "C/D iteration" in res.info["fast_path"]
    assert np.linalg.norm(x - xs) <= 1e-9 * np.linalg.norm(xs)


def test_factorize_refuses_bad_input():
    with pytest.raises(ValueError, match="precision"):
        factorize(np.eye(3), precision="half")
    with pytest.raises(ValueError, match="all zeros"):
        factorize(np.zeros((3, 3)))
    f = factorize(np.eye(4))
    with pytest.raises(ValueError, match="expected"):
        f.solve(np.ones((1, 5)))


def test_fastpath_bench_smoke(tmp_path):
    """The bench runs end to end; the counted GEMM-equivalents favour the fast path at κ = 1e4
    (a count, not a time) and every certified answer is accurate."""
    from eagle_dist.cli import main
    assert main(["bench", "fastpath", "--smoke", "--out", str(tmp_path)]) == 0
    import csv
    rows = list(csv.DictReader(open(tmp_path / "gemm.csv")))
    by = {(r["kappa"], r["method"]): r for r in rows}
    assert float(by[("10000.0", "fast path")]["gemm_equivalents"]) < \
        float(by[("10000.0", "EAGLE C/D")]["gemm_equivalents"])
    assert all(float(r["final_error"]) < 1e-10 for r in rows)
    assert (tmp_path / "summary.md").exists()
    only = tmp_path / "only"
    assert main(["bench", "fastpath", "--smoke", "--only", "tiny", "--out", str(only)]) == 0
    assert sorted(p.name for p in only.glob("*.csv")) == ["tiny.csv"]
    assert "--only tiny" in (only / "summary.md").read_text()
    with pytest.raises(SystemExit):             # the CLI names the sections, exit code 2
        main(["bench", "fastpath", "--smoke", "--only", "tiney", "--out", str(only)])


def test_the_gram_is_the_same_by_syrk_and_by_gemm():
    """factor._gram mirrors the triangle SYRK sets (the column-major upper one: row-major lower)
    — checked on both sides against torch, whether or not SYRK won its timing here."""
    import eagle_dist.kernels as K
    from eagle_dist.solvers import factor
    X = torch.randn(450, 420, dtype=torch.float64)
    old = K._syrk_pays
    K._syrk_pays = lambda blas, dtype: True                 # force the SYRK path if it exists
    K._SYRK_PAYS.pop(torch.float64, None)
    try:
        for side, want in (("right", X.T @ X), ("left", X @ X.T)):
            assert torch.allclose(factor._gram(X, side), want, rtol=1e-12, atol=1e-10)
    finally:
        K._syrk_pays = old
        K._SYRK_PAYS.pop(torch.float64, None)
