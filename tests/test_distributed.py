"""Distributed EAGLE / GD (SPEC §2b): backends agree, convergence, α, rounds, bytes, failures."""
import os
import time

import numpy as np
import pytest

from eagle_dist import Problem, solve
from eagle_dist.distributed import (FaultInjection, WorkerFailure, alpha_problem, diversity_index,
                                    make_shards, max_alpha_below_one,
                                    solve_distributed, validate_shards)
from eagle_dist.control import SolverOptions

ray = pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")


@pytest.fixture(scope="module")
def small():
    return alpha_problem(40, 40, 3, alpha=1.0, kappa_max=1e2, n_query=2, d_query=2, seed=3)


def test_backends_produce_the_same_iterates(small):
    """in-process, torch (3 gloo processes) and Ray (3 actors): same per-round errors and D."""
    prob, shards = small
    runs = {be: solve(prob, "eagle", workers=3, shards=shards, backend=be, tol=1e-300, max_iter=12,
                      timeout=30, mode="paper") for be in ("inprocess", "torch", "ray")}
    base = runs["inprocess"]
    assert base.rounds == 12
    for be in ("torch", "ray"):
        r = runs[be]
        assert r.rounds == base.rounds
        assert r.backend.startswith(be) and r.backend.endswith("gloo")
        # per-round D agreement through the recorded relative errors and steps, and the final D
        np.testing.assert_allclose(r.history.step, base.history.step, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r.history.error, base.history.error, rtol=1e-10, atol=1e-15)
        assert np.max(np.abs(r.D - base.D)) <= 1e-12 * np.max(np.abs(base.D))


@pytest.mark.parametrize("mode", ["paper", "gram"])
@pytest.mark.parametrize("M", [1, 2, 4])
def test_converges_to_nystrom_on_consistent_data(M, mode):
    prob, shards = alpha_problem(30, 30, M, alpha=1.0, kappa_max=1e3, seed=M)
    res = solve(prob, "eagle", workers=M, shards=shards, tol=1e-13, max_iter=500, mode=mode)
    ref = prob.B @ np.linalg.pinv(prob.A) @ prob.C          # independent reference
    assert res.converged
    assert np.linalg.norm(res.D - ref) <= 1e-8 * np.linalg.norm(ref)
    assert res.rounds == len(res.history)


def test_random_and_explicit_shards_converge():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 60))
    W = rng.standard_normal((2, 20))
    prob = Problem.from_arrays(A, W @ A, A @ rng.standard_normal((60, 1)))
    for shards in ("random", [list(range(0, 60, 2)), list(range(1, 60, 2))]):
        res = solve(prob, "eagle", workers=2, shards=shards, tol=1e-13, max_iter=2000,
                    mode="paper")
        assert res.converged and res.error < 1e-8


def test_alpha_hand_built_cases():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((10, 10))
    same = np.concatenate([A, A @ rng.standard_normal((10, 10))], axis=1)   # identical ranges
    assert diversity_index(same, [np.arange(10), np.arange(10, 20)]) == pytest.approx(1.0)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    orth = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]              # complementary
    assert diversity_index(Q, orth) == pytest.approx(1 / 3)


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.35, 0.01])
def test_alpha_generator_hits_target(alpha):
    prob, shards = alpha_problem(30, 30, 3, alpha=alpha, kappa_max=1e3, seed=0)
    assert diversity_index(prob.A, shards) == pytest.approx(alpha, rel=0.1)
    assert prob.meta["kappa_max"] == pytest.approx(1e3, rel=1e-6)


def test_alpha_above_cap_is_rejected():
    assert max_alpha_below_one(3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="alpha"):
        alpha_problem(30, 30, 3, alpha=0.8)


def test_eagle_needs_far_fewer_rounds_than_gd():
    """α ≈ 1, κ_max = 1e3, M = 4: EAGLE rounds to 1e-6 ≤ 1/50 of distributed GD's."""
    prob, shards = alpha_problem(40, 40, 4, alpha=1.0, kappa_max=1e3, d_query=1, seed=0)
    eagle = solve(prob, "eagle", workers=4, shards=shards, target_error=1e-6, max_iter=1000,
                  mode="paper")
    assert eagle.converged and eagle.error <= 1e-6
    gd = solve(prob, "gd", workers=4, shards=shards, target_error=1e-6,
               max_iter=50 * eagle.rounds)
    assert gd.status.value == "max_iterations" and gd.error > 1e-6


def test_bytes_per_round_are_the_message_size():
    prob, shards = alpha_problem(30, 30, 3, alpha=1.0, n_query=2, d_query=3, seed=0)
    n, nq, dq = prob.n, prob.n_query, prob.d_query
    # the paper's message: (n + n')·d' numbers; its verification probe adds one column
    for verify, cols in ((False, dq), (True, dq + 1)):
        res = solve(prob, "eagle", workers=3, shards=shards, max_iter=5, tol=1e-300, mode="paper",
                    verify=verify)
        assert res.bytes_per_worker_per_round == (n + nq) * cols * 8
        assert res.info["message_elements"] == (n + nq) * cols
        assert res.bytes_total == 3 * (res.bytes_per_worker_per_round * res.rounds
                                       + res.info["setup_bytes_per_worker"])
    # the Gram mode: one triangle of A Aᵀ and B Aᵀ, only while A and B still move
    res = solve(prob, "eagle", workers=3, shards=shards, max_iter=60, tol=1e-300, mode="gram")
    per_round = (n * (n + 1) // 2 + nq * n) * 8
    assert res.bytes_per_worker_per_round == per_round
    # round 1 uses the start-up Grams; A, B move for lift_cap = 51 rounds in float64
    assert res.info["bytes_sent_per_worker"] == per_round * (min(res.rounds, 51) - 1)
    assert res.info["setup_bytes_per_worker"] == per_round


def test_gd_matches_independent_distributed_gd():
    """Distributed GD = W ← W − (γ/M) Σ_μ (W A^μ − B^μ) A^μᵀ / ‖A^μ‖²; D = W C."""
    prob, shards = alpha_problem(20, 20, 2, alpha=0.5, kappa_max=10, seed=2)
    res = solve(prob, "gd", workers=2, shards=shards, tol=1e-300, max_iter=25)
    W = np.zeros((prob.n_query, prob.n))
    for _ in range(25):
        G = sum((W @ prob.A[:, s] - prob.B[:, s]) @ prob.A[:, s].T / np.linalg.norm(prob.A[:, s], 2) ** 2
                for s in shards)
        W = W - G / 2
    # ‖A^μ‖₂ comes from power iteration (relative accuracy ~1e-8), hence rtol 1e-7
    np.testing.assert_allclose(res.D, W @ prob.C, rtol=1e-7, atol=1e-12)


def test_global_normalization_and_accelerate_converge():
    prob, shards = alpha_problem(30, 30, 3, alpha=1.0, kappa_max=1e3, seed=5)
    g = solve(prob, "eagle", workers=3, shards=shards, normalization="global", target_error=1e-10,
              max_iter=500, mode="paper")
    a = solve(prob, "eagle", workers=3, shards=shards, accelerate=True, target_error=1e-10,
              max_iter=500, mode="paper")
    assert g.converged and a.converged
    # one max-norm scalar, and the probe's A x and B x (n + n' numbers)
    assert g.info["setup_bytes_per_worker"] == 8 * (1 + prob.n + prob.n_query)
    assert a.info["ab_frozen_at_min"] > 0


@pytest.mark.parametrize("bad, match", [
    ([[0, 1], [1, 2, 3]], "overlap"),
    ([[0, 1], [3]], "miss"),
    ([[0, 1, 2, 3], []], "empty"),
    ([[0, 1], [2, 9]], "outside"),
])
def test_invalid_shards_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_shards(bad, 4)


def test_invalid_distributed_arguments_rejected_before_start():
    prob, _ = alpha_problem(10, 10, 2, seed=0)
    with pytest.raises(ValueError, match="workers"):
        make_shards(prob.d, prob.d + 1)
    with pytest.raises(ValueError, match="lsmr"):     # (CG has a distributed form)
        solve(prob, "lsmr", workers=2)
    with pytest.raises(ValueError, match="eta"):
        solve(prob, "eagle", workers=2, eta=0.9)
    with pytest.raises(ValueError, match="timeout"):
        solve(prob, "eagle", workers=2, timeout=0)
    with pytest.raises(ValueError, match="backend"):
        solve(prob, "eagle", workers=2, backend="mpi")


def _leftover_workers() -> int:
    """Live worker processes of either backend among THIS test process's descendants (spawned
    ranks, or Ray actor processes, which Ray names ``ray::ShardActor``): other people's processes
    on a shared machine are never counted."""
    from _procs import cmdline, descendants
    return sum(("eagle_dist.distributed" in cmdline(p) or "ray::ShardActor" in cmdline(p))
               for p in descendants(os.getpid()))


def _release_pooled_actors() -> None:
    from eagle_dist.distributed.runtime import release_ray_actors
    release_ray_actors()
    assert _no_leftover_workers(), "released actors did not exit"


def test_ray_actors_are_reused_after_a_clean_run_and_killed_after_a_failure():
    import ray
    from eagle_dist.distributed import runtime
    _release_pooled_actors()
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    first = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    (key, actors), = runtime._RAY_POOL.items()
    pids = ray.get([a.pid.remote() for a in actors])
    again = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    assert first.converged and again.converged and np.array_equal(first.D, again.D)
    assert ray.get([a.pid.remote() for a in runtime._RAY_POOL[key]]) == pids   # same processes
    with pytest.raises(WorkerFailure, match="rank 1"):
        solve_distributed(prob, SolverOptions(max_iter=200, tol=1e-300), workers=2,
                          backend="ray", shards=shards, timeout=3.0,
                          fault=FaultInjection(1, 3, "exit"))
    assert key not in runtime._RAY_POOL                       # a failed run's actors are not kept
    assert _no_leftover_workers()


def _no_leftover_workers(within: float = 15.0) -> bool:
    deadline = time.monotonic() + within              # ray.kill returns before the process exits
    while _leftover_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    return _leftover_workers() == 0


@pytest.mark.parametrize("backend", ["torch", "ray"])
@pytest.mark.parametrize("mode", ["exit", pytest.param("hang", marks=pytest.mark.slow)])
def test_dead_or_hung_worker_fails_fast(backend, mode):
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    _release_pooled_actors()        # healthy actors kept for reuse are not the failed run's
    if backend == "ray":            # warm actors: the timed run below is rounds + failure only,
        solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)  # not start-up
    timeout = 3.0
    t0 = time.monotonic()
    with pytest.raises(WorkerFailure, match="rank 1") as exc:
        solve_distributed(prob, SolverOptions(max_iter=200, tol=1e-300), workers=2, backend=backend,
                          shards=shards, timeout=timeout, fault=FaultInjection(1, 3, mode))
    elapsed = time.monotonic() - t0
    # bounded: (torch: process start-up +) the collective timeout + clean-up, never a hang
    assert elapsed < (30 if backend == "ray" else 60), f"failure took {elapsed:.1f}s to surface"
    assert "aborted" in str(exc.value)
    assert _no_leftover_workers()


def test_gram_mode_gives_the_centralized_answer_whatever_alpha_on_every_backend():
    """α = 1e-6: the paper's mode would need ~1e7 rounds per decade; the Gram mode runs the
    centralized iteration (same rounds, same D) on in-process workers, torch processes and Ray."""
    prob, shards = alpha_problem(24, 24, 2, alpha=1e-6, kappa_max=1e2, seed=4)
    central = solve(prob, "eagle", tol=1e-12)
    assert central.converged
    for backend in ("inprocess", "torch", "ray"):
        res = solve(prob, "eagle", workers=2, shards=shards, backend=backend, mode="gram",
                    tol=1e-12, timeout=30)
        assert res.converged and res.info["mode"] == "gram", backend
        assert abs(res.rounds - central.iterations) <= 1, (backend, res.rounds, central.iterations)
        np.testing.assert_allclose(res.D, central.D, rtol=0, atol=1e-12 * np.abs(central.D).max())
        ref = prob.B @ np.linalg.pinv(prob.A) @ prob.C
        assert np.linalg.norm(res.D - ref) <= 1e-10 * np.linalg.norm(ref)


def test_pooled_actors_of_another_shape_do_not_starve_a_new_run():
    """Two pooled actors holding both CPUs of the local Ray must be released for a 3-worker run
    (whose actors need 2/3 of a CPU each)."""
    from eagle_dist.distributed import runtime
    _release_pooled_actors()
    prob, shards = alpha_problem(12, 12, 2, alpha=1.0, seed=1)
    assert solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30).converged
    prob3, shards3 = alpha_problem(12, 12, 3, alpha=1.0, seed=1)
    res = solve(prob3, "eagle", workers=3, shards=shards3, backend="ray", timeout=30,
                startup_timeout=90)
    assert res.converged and [k[0] for k in runtime._RAY_POOL] == [3]
