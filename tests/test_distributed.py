"""Distributed EAGLE / GD (SPEC §2b): backends agree, convergence, α, rounds, bytes, failures.

Ray tests run on the session's two-node cluster (``ray_cluster`` in conftest.py) and reuse its
pooled actors; the ones that kill them are marked ``ray_teardown`` and run last."""
import logging
import os
import time

import numpy as np
import pytest

from eagle_dist import Problem, solve
from eagle_dist.distributed import (FaultInjection, WorkerFailure, alpha_problem, diversity_index,
                                    make_shards, max_alpha_below_one,
                                    solve_distributed, validate_shards)
from eagle_dist.distributed import launch_ray
from eagle_dist.control import SolverOptions


@pytest.fixture(scope="module")
def small():
    return alpha_problem(40, 40, 2, alpha=1.0, kappa_max=1e2, n_query=2, d_query=2, seed=3)


def test_backends_produce_the_same_iterates(small, ray_cluster):
    """in-process, torch (2 gloo processes) and Ray (2 actors, one on each node of the session's
    cluster): same per-round errors and D. The local torch group meets through a file store (no
    TCP port at all); the Ray group through rank 0's TCP store."""
    prob, shards = small
    runs = {be: solve(prob, "eagle", workers=2, shards=shards, backend=be, tol=1e-300, max_iter=12,
                      timeout=30, mode="paper", record_error=True)
            for be in ("inprocess", "torch", "ray")}
    base = runs["inprocess"]
    assert np.all(np.isfinite(base.history.error))
    assert runs["torch"].info["rendezvous"] == "file"
    assert runs["ray"].info["rendezvous"] == "tcp" and runs["ray"].info["nodes"] == 2
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
    # (solve_distributed: M = 1 through solve() is the centralized regime)
    res = solve_distributed(prob, SolverOptions(tol=1e-13, max_iter=500), workers=M,
                            shards=shards, mode=mode)
    ref = prob.B @ np.linalg.pinv(prob.A) @ prob.C          # independent reference
    assert res.converged
    assert np.linalg.norm(res.D - ref) <= 1e-8 * np.linalg.norm(ref)
    assert res.rounds == len(res.history)


def _one_small_singular_value(n=40, d=40, sigma=3e-8, seed=1):
    """Consistent data (A square, full rank; B = W A, C random, D = W C) whose A has one singular
    value ``sigma`` (κ = 1/sigma) and all others 1."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((d, n)))
    s = np.ones(n)
    s[-1] = sigma
    A = (U * s) @ V.T
    W = rng.standard_normal((2, n))
    C = rng.standard_normal((n, 2))
    return Problem.from_arrays(A, W @ A, C, W @ C)


def test_paper_mode_is_not_converged_on_a_direction_no_round_can_move():
    """Regression (issue 17): κ = 3.3e7 (inside the documented range), M = 2. Each contiguous
    shard is well conditioned, but the two shards' ranges meet at an angle ~3e-8, so the mean
    projector has an eigenvalue ~1e-16 there and the paper's rounds never move that part of C.
    The probe c = A x weighs the direction by σ = 3e-8 and cannot see it: the run said
    `converged` after 35 rounds with 4.8 % error. The untransferred C weighs every direction
    equally and says the run is not done; the Gram mode solves it."""
    prob = _one_small_singular_value()
    res = solve(prob, "eagle", workers=2, mode="paper", max_iter=500)
    ref = prob.B @ np.linalg.pinv(prob.A, rcond=1e-12) @ prob.C          # independent reference
    err = np.linalg.norm(res.D - ref) / np.linalg.norm(ref)
    assert err > 0.01                                 # the paper's mode cannot get there ...
    assert res.status.value == "unverified" and not res.converged        # ... and says so
    assert res.info["probe_gap"] < 1e-8               # the probe alone would have passed it
    assert res.info["c_remainder"] > 0.05             # the part of C the rounds never moved
    gram = solve(prob, "eagle", workers=2, mode="gram", max_iter=500)
    assert gram.converged and np.linalg.norm(gram.D - ref) <= 1e-7 * np.linalg.norm(ref)


@pytest.mark.parametrize("mode", ["gram", "paper"])
def test_tiny_scales_keep_their_answer(mode):
    """Regression (issue 17): with blocks near 1e-200 the factor s_B·s_C/s_A underflowed to 0
    and D = 0 came back `converged`; the exponent is now kept as an integer (BlockScale)."""
    rng = np.random.default_rng(0)
    A, W, Z = rng.standard_normal((10, 30)), rng.standard_normal((2, 10)), rng.standard_normal((30, 2))
    s = 1e-200
    prob = Problem.from_arrays(A * s, (W @ A) * s, (A @ Z) * s)
    res = solve(prob, "eagle", workers=2, mode=mode)
    ref = W @ A @ Z * s                                   # B A⁺ C, known by construction
    assert res.converged and np.abs(res.D - ref).max() <= 1e-10 * np.abs(ref).max()


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
    ranks, or Ray actor processes, which Ray names ``ray::ShardActor``; the session's cluster runs
    under this process), not counting the actors pooled for reuse: other people's processes on a
    shared machine are never counted."""
    from _procs import cmdline, descendants
    pooled = set()
    if launch_ray._RAY_POOL:
        import ray
        pooled = set(ray.get([a.pid.remote() for acts in launch_ray._RAY_POOL.values()
                              for a in acts]))
    return sum(("--rank-payload" in cmdline(p) or "ray::ShardActor" in cmdline(p))
               and p not in pooled for p in descendants(os.getpid()))


def _listening(pids) -> set:
    from _procs import listening
    return set(listening(pids))


def test_ray_actors_are_reused_after_a_clean_run(ray_cluster):
    """(A failed run's actors are killed, not kept: test_dead_or_hung_worker_fails_fast and
    test_ray_rendezvous_listens_on_loopback_only_and_closes_with_the_run.)"""
    import ray
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    first = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    (key, actors), = launch_ray._RAY_POOL.items()
    pids = ray.get([a.pid.remote() for a in actors])
    again = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    assert first.converged and again.converged and np.array_equal(first.D, again.D)
    assert ray.get([a.pid.remote() for a in launch_ray._RAY_POOL[key]]) == pids   # same processes


def _no_leftover_workers(within: float = 15.0) -> bool:
    deadline = time.monotonic() + within              # ray.kill returns before the process exits
    while _leftover_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    return _leftover_workers() == 0


@pytest.mark.parametrize("backend, mode", [
    ("torch", "exit"),
    pytest.param("torch", "hang", marks=pytest.mark.slow),
    pytest.param("ray", "exit", marks=[pytest.mark.slow, pytest.mark.ray_teardown]),
    pytest.param("ray", "hang", marks=[pytest.mark.slow, pytest.mark.ray_teardown])])
def test_dead_or_hung_worker_fails_fast(backend, mode, request):
    """(The default suite's Ray failure: test_ray_rendezvous_listens_on_loopback_only_and_...)"""
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    if backend == "ray":            # warm actors: the timed run below is rounds + failure only,
        request.getfixturevalue("ray_cluster")                                  # not start-up
        solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
        key = next(iter(launch_ray._RAY_POOL))
    timeout = 3.0
    t0 = time.monotonic()
    with pytest.raises(WorkerFailure, match="rank 1") as exc:
        solve_distributed(prob, SolverOptions(max_iter=200, tol=1e-300), workers=2, backend=backend,
                          shards=shards, timeout=timeout, fault=FaultInjection(1, 3, mode))
    elapsed = time.monotonic() - t0
    # bounded: (torch: process start-up +) the collective timeout + clean-up, never a hang
    assert elapsed < (30 if backend == "ray" else 60), f"failure took {elapsed:.1f}s to surface"
    assert "aborted" in str(exc.value)
    if backend == "ray":
        assert key not in launch_ray._RAY_POOL                 # a failed run's actors are not kept
    assert _no_leftover_workers()


@pytest.mark.ray_teardown
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_ray_rendezvous_listens_on_loopback_only_and_closes_with_the_run(ray_cluster):
    """Regression (issue 17): rank 0's TCP store listened on every interface, unauthenticated,
    for the whole solve. Now it is bound to loopback when every rank is on one host (here: two
    nodes of one machine), and the group is destroyed when a run ends, so a pooled actor holds
    no rendezvous between runs. Also the default suite's Ray failure: rank 1 hangs at round 3,
    the collective timeout ends the run, naming rank 1, within a bounded time; the failed run's
    actors are killed, not pooled."""
    import threading
    import ray
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    (key, actors), = launch_ray._RAY_POOL.items()
    pids = ray.get([a.pid.remote() for a in actors])
    idle = _listening(pids)                              # Ray's own servers (not ours)
    again = solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
    assert again.converged and _listening(pids) == idle  # nothing of ours is left open
    box, seen = {}, set()

    def run():
        t0 = time.monotonic()
        try:
            solve_distributed(prob, SolverOptions(max_iter=10**6, tol=1e-300), workers=2,
                              backend="ray", shards=shards, timeout=3.0,
                              fault=FaultInjection(1, 3, "hang"))
        except BaseException as exc:  # noqa: BLE001
            box["exc"], box["took"] = exc, time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    while t.is_alive():
        seen |= _listening(pids) - idle
        time.sleep(0.2)
    t.join()
    assert isinstance(box.get("exc"), WorkerFailure) and "rank 1" in str(box["exc"])
    assert box["took"] < 30, box["took"]
    assert seen, "rank 0's rendezvous socket was never seen listening"
    from _procs import loopback
    assert all(loopback(a) for a, _ in seen), sorted(seen)
    assert key not in launch_ray._RAY_POOL
    assert _no_leftover_workers()

@pytest.mark.parametrize("backend", ["inprocess", "ray",
                                     pytest.param("torch", marks=pytest.mark.slow)])
def test_gram_mode_gives_the_centralized_answer_whatever_alpha_on_every_backend(backend, request):
    """α = 1e-6: the paper's mode would need ~1e7 rounds per decade; the Gram mode runs the
    centralized iteration (same rounds, same D) on in-process workers, Ray actors and torch
    processes (slow: a process start; the torch and Ray ranks run the same rank code)."""
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    prob, shards = alpha_problem(24, 24, 2, alpha=1e-6, kappa_max=1e2, seed=4)
    central = solve(prob, "eagle", tol=1e-12)
    assert central.converged
    res = solve(prob, "eagle", workers=2, shards=shards, backend=backend, mode="gram",
                tol=1e-12, timeout=30)
    assert res.converged and res.info["mode"] == "gram", backend
    assert abs(res.rounds - central.iterations) <= 1, (backend, res.rounds, central.iterations)
    np.testing.assert_allclose(res.D, central.D, rtol=0, atol=1e-12 * np.abs(central.D).max())
    ref = prob.B @ np.linalg.pinv(prob.A) @ prob.C
    assert np.linalg.norm(res.D - ref) <= 1e-10 * np.linalg.norm(ref)


@pytest.mark.slow           # three new actors (a torch import each); the CPU check below is quick
@pytest.mark.ray_teardown
def test_pooled_actors_of_another_shape_do_not_starve_a_new_run(ray_cluster):
    """Two pooled actors holding both CPUs of the cluster must be released for a 3-worker run
    (whose actors need 1/2 of a CPU each: one node holds two, the other one)."""
    prob, shards = alpha_problem(12, 12, 2, alpha=1.0, seed=1)
    assert solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30).converged
    prob3, shards3 = alpha_problem(12, 12, 3, alpha=1.0, seed=1)
    res = solve(prob3, "eagle", workers=3, shards=shards3, backend="ray", timeout=30,
                startup_timeout=90)
    assert res.converged and [k[0] for k in launch_ray._RAY_POOL] == [3]
    assert res.info["nodes"] == 2


@pytest.mark.ray_teardown
def test_cpus_held_elsewhere_are_reported_at_once_with_the_numbers(ray_cluster, monkeypatch,
                                                                   caplog):
    """Regression (issues 17, 18): with one of the cluster's two CPUs held by another actor, a
    2-worker run's actors (1 CPU each) can never all start; they used to wait out
    startup_timeout (120 s) with no word. A Ray started here now refuses at once naming the
    numbers and the holder; on a cluster (an autoscaler may add nodes) the numbers are logged at
    once and repeated at the start-up deadline."""
    import ray
    launch_ray.release_ray_actors()

    @ray.remote(num_cpus=1)
    class Hog:
        def pid(self):
            return os.getpid()

    hog = Hog.remote()
    try:
        ray.get(hog.pid.remote(), timeout=120)
        prob, shards = alpha_problem(12, 12, 2, alpha=1.0, seed=1)
        monkeypatch.setattr(launch_ray, "_RAY_STARTED_HERE", True)
        t0 = time.monotonic()
        with pytest.raises(WorkerFailure) as exc:
            solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30)
        assert time.monotonic() - t0 < launch_ray.RELEASE_WAIT_S + 5
        msg = str(exc.value)
        assert "2 actors need 2 CPU (1 each) but only 1 of the cluster's 2 CPUs are free" in msg
        assert "Hog actors of this driver" in msg
        monkeypatch.setattr(launch_ray, "_RAY_STARTED_HERE", False)
        caplog.set_level(logging.WARNING, logger="eagle_dist.distributed.launch_ray")
        with pytest.raises(WorkerFailure) as exc:
            solve(prob, "eagle", workers=2, shards=shards, backend="ray", timeout=30,
                  startup_timeout=3)
        assert "only 1 of the cluster's 2 CPUs are free" in caplog.text
        assert "actor did not start within startup_timeout = 3 s" in str(exc.value)
        assert "only 1 of the cluster's 2 CPUs are free" in str(exc.value)
    finally:
        ray.kill(hog)
    assert _no_leftover_workers()
