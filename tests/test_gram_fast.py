"""The Gram mode on a linear system (eagle_dist.distributed.gram_fast): the answer from one
all-reduce, refined and certified on the true residual, or the iteration when it cannot be."""
from __future__ import annotations

import numpy as np
import pytest

from eagle_dist import Problem, solve, solve_least_squares


def _ls(rng, m=300, k=40, kappa=1e3, noise=1e-3):
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((k, k)))
    A = (U * np.geomspace(1.0, 1.0 / kappa, k)) @ V.T
    b = A @ rng.standard_normal(k) + noise * rng.standard_normal(m)
    return A, b, np.linalg.lstsq(A, b, rcond=None)[0]


def _rel(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


@pytest.mark.parametrize("kappa", [1e1, 1e4, 1e6])
def test_fast_path_matches_lapack_in_a_few_rounds(rng, kappa):
    A, b, xs = _ls(rng, kappa=kappa)
    x, r = solve_least_squares(A, b, workers=3, return_result=True)
    assert r.converged and r.info["mode"] == "gram"
    assert r.info["fast_path"].startswith("gram: ")
    assert r.iterations <= 5 and r.info["collectives"] == r.iterations
    # within what a backward-stable solver promises (κ u), as the iteration
    assert _rel(x, xs) <= max(1e-12, 20 * kappa * np.finfo(float).eps)
    x_it, r_it = solve_least_squares(A, b, workers=3, fast_path=False, return_result=True)
    assert r_it.converged and "fast_path" not in r_it.info and r_it.iterations > r.iterations
    assert r.info["collective_bytes_per_worker"] < r_it.info["collective_bytes_per_worker"]


def test_beyond_its_reach_the_iteration_runs_and_says_so(rng):
    A, b, xs = _ls(rng, kappa=1e9, noise=1e-3)
    x, r = solve_least_squares(A, b, workers=3, return_result=True)
    assert "not certified" in r.info["fast_path"] and "iteration ran" in r.info["fast_path"]
    x_it, r_it = solve_least_squares(A, b, workers=3, fast_path=False, return_result=True)
    assert r.status == r_it.status and np.array_equal(x, x_it)
    assert r.info["collectives"] > r_it.info["collectives"]        # the attempt is counted


def test_rank_deficient_gives_the_minimum_norm_answer(rng):
    A, b, _ = _ls(rng, m=200, k=30)
    A = np.hstack([A, A[:, :5]])                       # 5 repeated features: rank 30 of 35
    x, r = solve_least_squares(A, b, workers=2, return_result=True)
    assert r.converged and "5 direction(s) truncated" in r.info["fast_path"]
    assert _rel(x, np.linalg.pinv(A) @ b) < 1e-10


def test_target_error_is_checked_on_the_reference(rng):
    A, b, xs = _ls(rng, noise=0.0, kappa=1e2)
    x, r = solve_least_squares(A, b, workers=3, target_error=1e-9, return_result=True)
    assert r.converged and r.info["fast_path"].startswith("gram: ")
    assert r.error <= 1e-9 and _rel(x, xs) <= 1e-9


def test_only_linear_systems_take_it(rng):
    A = rng.standard_normal((20, 60))
    p = Problem.from_arrays(A, rng.standard_normal((2, 20)) @ A, rng.standard_normal((20, 3)))
    r = solve(p, "eagle", workers=3, mode="gram")
    assert r.converged and "fast_path" not in r.info and r.iterations > 5


def test_torch_ranks_agree_with_inprocess(rng):
    A, b, xs = _ls(rng, m=120, k=20, kappa=1e3)
    x_t, r_t = solve_least_squares(A, b, workers=2, backend="torch", return_result=True)
    x_i, r_i = solve_least_squares(A, b, workers=2, return_result=True)
    assert r_t.converged and r_t.info["fast_path"] == r_i.info["fast_path"]
    assert r_t.iterations == r_i.iterations and _rel(x_t, x_i) < 1e-13
