"""Distributed CG on the normal equations (eagle_dist.distributed.cg_rounds): the same
iterates as the centralized CG, a true-residual certificate, and the same code path on the
in-process and Ray backends."""
import numpy as np
import pytest

from eagle_dist import Problem, solve
from eagle_dist.data import controlled
from eagle_dist.result import Status


@pytest.fixture(scope="module")
def prob():
    # n = 30 shared rows, d = 80 columns over 2 workers, n' = 2, d' = 3
    return controlled(n=30, d=80, n_query=2, d_query=3, kappa=1e2, seed=5)


def test_distributed_cg_iterates_match_centralized(prob):
    # (later iterates drift apart by rounding, as any two CG implementations on normal equations
    # with κ(A Aᵀ) = 1e4 do; the converged answers are compared below)
    for k in (1, 3, 6):
        c = solve(prob, "cg", tol=1e-300, max_iter=k, record_error=False)
        d = solve(prob, "cg", workers=2, tol=1e-300, max_iter=k, record_error=False)
        assert d.rounds == c.iterations == k
        assert np.max(np.abs(d.D - c.D)) <= 1e-10 * np.max(np.abs(c.D)), k


def test_distributed_cg_converges_to_pinv_with_a_true_residual_check(prob):
    r = solve(prob, "cg", workers=2, tol=1e-10, max_iter=2000)
    ref = prob.B @ np.linalg.pinv(prob.A) @ prob.C                 # independent reference
    assert r.status is Status.CONVERGED and r.regime == "distributed" and r.info["mode"] == "cg"
    assert np.linalg.norm(r.D - ref) <= 1e-7 * np.linalg.norm(ref)
    assert r.bytes_per_worker_per_round == 2 * 30 * 8              # P·A Aᵀ: n'·n float64
    # an unreachable tolerance within the cap is not "converged"
    short = solve(prob, "cg", workers=2, tol=1e-12, max_iter=3)
    assert short.status is Status.MAX_ITERATIONS


def test_distributed_cg_inconsistent_least_squares():
    # noisy, rank-deficient least squares (B not in A's row space): CG-NE still reaches B A⁺ C
    rng = np.random.default_rng(2)
    A = rng.standard_normal((20, 6)) @ rng.standard_normal((6, 50))     # rank 6
    B = rng.standard_normal((1, 50))
    p = Problem.from_arrays(A, B, rng.standard_normal((20, 2)))
    r = solve(p, "cg", workers=3, shards="random", tol=1e-10, max_iter=2000)
    ref = B @ np.linalg.pinv(A) @ p.C
    assert r.converged and np.linalg.norm(r.D - ref) <= 1e-6 * np.linalg.norm(ref)


def test_distributed_cg_bad_arguments(prob):
    with pytest.raises(ValueError, match="eta"):
        solve(prob, "cg", workers=2, eta=0.2)
    with pytest.raises(ValueError, match="mode='gram'"):
        solve(prob, "cg", workers=2, mode="gram")
    with pytest.raises(ValueError, match="normalization"):
        solve(prob, "cg", workers=2, normalization="global")
    with pytest.raises(ValueError, match="no distributed form"):
        solve(prob, "lsmr", workers=2)


@pytest.mark.parametrize("backend", ["ray", pytest.param("torch", marks=pytest.mark.slow)])
def test_distributed_cg_on_processes_matches_inprocess(prob, backend, request):
    """The CG rounds on Ray actors (the session's pooled ones) and on torch processes (slow: a
    process start; both run the same rank code) give the in-process iterates."""
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    base = solve(prob, "cg", workers=2, tol=1e-10, max_iter=2000)
    r = solve(prob, "cg", workers=2, backend=backend, tol=1e-10, max_iter=2000, timeout=60)
    assert r.backend.startswith(backend) and r.status is Status.CONVERGED
    assert r.rounds == base.rounds
    assert np.max(np.abs(r.D - base.D)) <= 1e-12 * np.max(np.abs(base.D))
    c = solve(prob, "cg", tol=1e-10, max_iter=2000)
    assert np.max(np.abs(r.D - c.D)) <= 1e-8 * np.max(np.abs(c.D))


def test_cli_solve_cg_with_workers(tmp_path):
    import json
    from eagle_dist.cli import main
    out = tmp_path / "cg"
    code = main(["solve", "--n", "30", "--d", "60", "--kappa", "100", "--workers", "2",
                 "--methods", "cg", "--max-iter", "2000", "--record-error", "--out", str(out)])
    assert code == 0
    s = json.loads((out / "cg.json").read_text())["summary"]
    assert s["regime"] == "distributed" and s["workers"] == 2 and s["status"] == "converged"
    assert s["mode"] == "cg" and s["error"] < 1e-6
