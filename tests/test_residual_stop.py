"""The ``target_residual`` stopping rule (eagle_dist.control): one rule, checked on the TRUE
residual ‖W A − B‖_F / ‖B‖_F, for every iterative method."""
from __future__ import annotations

import numpy as np
import pytest

from eagle_dist import Problem, solve
from eagle_dist.data import controlled
from eagle_dist.result import Status


def _system(n=80, kappa=1e3, nq=2, seed=0):
    A = controlled(n=n, d=n, n_query=1, d_query=1, kappa=kappa, seed=seed).A
    W = np.random.default_rng(seed).standard_normal((nq, n))
    return Problem.from_arrays(A, W @ A, np.eye(n))


def _rel_residual(p, D):
    return np.linalg.norm(D @ p.A - p.B) / np.linalg.norm(p.B)


@pytest.mark.parametrize("method", ["eagle", "cg", "lsmr", "lsqr"])
def test_target_residual_is_met_on_the_true_residual(method):
    p = _system()
    iters = []
    for target in (1e-2, 1e-6, 1e-9):
        r = solve(p, method, target_residual=target, max_iter=20000, record_error=False)
        assert r.status is Status.CONVERGED, (method, target, r.status)
        true = _rel_residual(p, r.D)
        assert true <= target, (method, target, true)
        assert r.info["rel_residual"] == pytest.approx(true, rel=1e-6, abs=1e-15)
        iters.append(r.iterations)
    # a tighter target takes more iterations (EAGLE's fast path: the same lift, certified on the
    # true residual at once, so never fewer)
    assert iters[0] < iters[-1] if method != "eagle" else iters[0] <= iters[-1]


def test_target_residual_history_and_loose_target_stops_early():
    p = _system()
    r = solve(p, "cg", target_residual=1e-2, max_iter=20000)
    assert len(r.history.residual) == r.iterations
    assert r.history.residual[-1] <= 1e-2 < r.history.residual[0]
    # the rule does stop on the residual: a loose target leaves a clearly larger residual
    assert _rel_residual(p, r.D) > 1e-6


def test_target_residual_unreachable_is_not_converged():
    p = _system(kappa=1e4)
    for method in ("cg", "eagle"):
        r = solve(p, method, target_residual=1e-12, max_iter=3, record_error=False)
        assert r.status is Status.MAX_ITERATIONS, method
        assert _rel_residual(p, r.D) > 1e-12


def test_target_residual_bad_arguments():
    p = _system(n=20)
    with pytest.raises(ValueError, match="target_residual"):
        solve(p, "cg", target_residual=-1.0)
    with pytest.raises(ValueError, match="target_residual"):
        solve(p, "cg", target_residual=1e-3, target_error=1e-3)
    with pytest.raises(ValueError, match="target_residual"):
        solve(p, "eagle", target_residual=1e-3, workers=2)
    q = controlled(n=20, d=30, n_query=1, d_query=3, kappa=10, seed=1)   # C is not I
    with pytest.raises(ValueError, match="target_residual.*identity"):
        solve(q, "eagle", target_residual=1e-3)
    r = solve(q, "cg", target_residual=1e-8, max_iter=5000)            # CG tracks W: any C
    assert r.converged and r.error < 1e-5   # D = W C matches B A⁺ C
