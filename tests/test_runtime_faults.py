"""The distributed runtime never blocks and never orphans: every failure ends in a WorkerFailure
naming the rank within a bounded time, and no process or pickled payload outlives the driver.

Process checks look only at this test process's own descendants, never at other people's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from _procs import cmdline, descendants
from eagle_dist.distributed import FaultInjection, WorkerFailure, alpha_problem
from eagle_dist.distributed.runtime import solve_distributed
from eagle_dist.solvers.common import SolverOptions

ray = pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")


def rank_processes(root: int) -> list:
    return [p for p in descendants(root) if "eagle_dist.distributed._spawn" in cmdline(p)]


@pytest.fixture(scope="module")
def small():
    return alpha_problem(20, 20, 2, alpha=1.0, seed=0)


def _expect_failure(prob, shards, workers, backend, fault, timeout=3.0, **kw):
    t0 = time.monotonic()
    with pytest.raises(WorkerFailure) as exc:
        solve_distributed(prob, SolverOptions(max_iter=100000, tol=1e-300), workers=workers,
                          backend=backend, shards=shards, timeout=timeout, fault=fault, **kw)
    return exc.value, time.monotonic() - t0


def test_all_ranks_stopped_torch(small):
    prob, shards = small
    err, took = _expect_failure(prob, shards, 2, "torch", FaultInjection(-1, 3, "stop"))
    assert "stopped" in str(err) and "rank 0" in str(err)
    assert took < 30
    assert not rank_processes(os.getpid())


def test_single_rank_hang_torch_is_caught_by_the_driver(small):
    """workers = 1: no peer to time out, the driver's liveness deadline must end it."""
    prob, _ = small
    err, took = _expect_failure(prob, "contiguous", 1, "torch", FaultInjection(0, 3, "hang"),
                                timeout=2.0)
    assert "rank 0" in str(err) and "no progress" in str(err)
    assert took < 2.0 + 5.0 + 25                          # timeout + grace + start-up
    assert not rank_processes(os.getpid())


def test_all_ranks_stopped_ray(small):
    prob, shards = small
    err, took = _expect_failure(prob, shards, 2, "ray", FaultInjection(-1, 3, "stop"), timeout=3.0)
    assert "liveness" in str(err) or "progress" in str(err) or "timed out" in str(err).lower()
    assert took < 60


def test_unreachable_ray_address_fails_fast(small):
    prob, shards = small
    t0 = time.monotonic()
    with pytest.raises(WorkerFailure, match="did not accept a connection"):
        solve_distributed(prob, SolverOptions(max_iter=5), workers=2, backend="ray", shards=shards,
                          address="127.0.0.1:1", timeout=5)
    assert time.monotonic() - t0 < 10


def test_ray_startup_slower_than_its_deadline_is_a_worker_failure(small):
    prob, shards = small
    with pytest.raises(WorkerFailure, match="startup_timeout"):
        solve_distributed(prob, SolverOptions(max_iter=5), workers=2, backend="ray", shards=shards,
                          timeout=5, startup_timeout=0.001)


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0, -1])
def test_timeouts_are_validated(small, bad):
    prob, shards = small
    with pytest.raises(ValueError, match="timeout"):
        solve_distributed(prob, SolverOptions(max_iter=5), workers=2, backend="torch",
                          shards=shards, timeout=bad)
    with pytest.raises(ValueError, match="startup_timeout"):
        solve_distributed(prob, SolverOptions(max_iter=5), workers=2, backend="torch",
                          shards=shards, startup_timeout=bad)


def test_local_torch_backend_opens_no_port(small):
    prob, shards = small
    res = solve_distributed(prob, SolverOptions(max_iter=3, tol=1e-300), workers=2,
                            backend="torch", shards=shards, timeout=10)
    assert res.info["rendezvous"] == "file"           # a FileStore in a private folder


def test_worker_error_is_the_real_error_not_a_runpy_warning(tmp_path):
    r = subprocess.run([sys.executable, "-m", "eagle_dist.distributed._spawn",
                        str(tmp_path / "missing.pkl")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "FileNotFoundError" in r.stderr and "RuntimeWarning" not in r.stderr


DRIVER = textwrap.dedent("""
    import sys
    from eagle_dist.distributed import FaultInjection, alpha_problem
    from eagle_dist.distributed.runtime import solve_distributed
    from eagle_dist.solvers.common import SolverOptions
    prob, shards = alpha_problem(20, 20, 2, alpha=1.0, seed=0)
    print("started", flush=True)
    solve_distributed(prob, SolverOptions(max_iter=10**6, tol=1e-300), workers=2,
                      backend="torch", shards=shards, timeout=600,
                      fault=FaultInjection(-1, 5, "hang"))
""")


def _start_driver(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    drv = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    assert drv.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    while len(rank_processes(drv.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = rank_processes(drv.pid)
    assert len(ranks) == 2
    # wait until both ranks have read (and deleted) their payloads
    while list(tmp_path.rglob("*.pkl")) and time.monotonic() < deadline:
        time.sleep(0.2)
    return drv, ranks


def _gone(pids, within=15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and "_spawn" in cmdline(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_sigkill_of_the_driver_leaves_no_rank_and_no_pickled_data(tmp_path):
    drv, ranks = _start_driver(tmp_path)
    drv.kill()
    drv.wait(timeout=10)
    assert _gone(ranks), "ranks outlived a SIGKILLed driver"
    assert not list(tmp_path.rglob("*.pkl"))


def test_sigterm_of_the_driver_cleans_up(tmp_path):
    drv, ranks = _start_driver(tmp_path)
    drv.send_signal(signal.SIGTERM)
    drv.wait(timeout=30)
    assert _gone(ranks)
    assert not list(tmp_path.glob("eagle_dist_*")), "temp folder left behind"
