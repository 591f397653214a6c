"""The network model of distributed runs: counted all-reduces, the injected delay, and the
``eagle-dist bench network`` / ``bench rounds`` columns built on them."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from eagle_dist import solve
from eagle_dist.bench.network import network_sweep
from eagle_dist.distributed import alpha_problem
from eagle_dist.distributed.network import NETWORKS, CountingComm, Network, network
from eagle_dist.distributed.runtime import solve_distributed
from eagle_dist.options import SolveOptions


def test_network_arithmetic_and_errors():
    net = Network("x", 1e-3, 1e6)
    assert net.time_s(0.5, 10, 2e6) == pytest.approx(0.5 + 0.01 + 2.0)
    assert network("10GbE") is NETWORKS["10GbE"]
    assert network(latency=1e-4, bandwidth=1e9).name == "custom"
    with pytest.raises(ValueError, match="unknown; choose one of"):
        network("token-ring")
    with pytest.raises(ValueError, match="latency=-1"):
        Network("bad", -1.0, 1e9)
    with pytest.raises(ValueError, match="bandwidth=0"):
        Network("bad", 1e-3, 0)
    with pytest.raises(ValueError, match="needs both"):
        network(latency=1e-3)


def test_counting_comm_counts_and_sleeps_the_modelled_time():
    net = Network("t", 2e-3, 1e6)
    c = CountingComm(lambda x, op: x, net)
    for k in (10, 100, 1000):
        c(torch.zeros(k, dtype=torch.float64), "sum")
    assert c.calls == 3 and c.nbytes == 8 * 1110
    assert c.delayed_s == pytest.approx(net.transfer_s(3, 8 * 1110))
    assert c.waited_s >= c.delayed_s            # a wait never ends before its deadline


def test_wait_blocks_at_least_the_time_asked():
    from eagle_dist.distributed.network import SPIN_S, wait
    for s in (0.0, SPIN_S / 4, 3 * SPIN_S):     # spin only, and sleep + spin
        assert wait(s) >= s


@pytest.mark.parametrize("method, mode", [("eagle", "paper"), ("eagle", "gram"), ("cg", None)])
def test_distributed_runs_count_their_all_reduces_and_a_delay_changes_nothing_else(method, mode):
    prob, shards = alpha_problem(20, 20, 3, alpha=1.0, kappa_max=1e2, n_query=2, d_query=1,
                                 seed=1)
    kw = dict(method=method, workers=3, shards=[np.asarray(s) for s in shards])
    if mode:
        kw["mode"] = mode
    opts = SolveOptions(tol=1e-10, max_iter=400).validate()
    plain = solve_distributed(prob, opts, **kw)
    net = Network("t", 1e-4, 1e8)
    slow = solve_distributed(prob, opts, network=net, **kw)
    i, j = plain.info, slow.info
    assert plain.converged and slow.converged
    # every round is one all-reduce at least; the message of a round is counted in the bytes
    assert i["collectives"] >= plain.iterations
    assert i["collective_bytes_per_worker"] >= plain.iterations * plain.bytes_per_worker_per_round
    # the delay is the model's transfer time of exactly the counted traffic, and nothing else moves
    assert (j["collectives"], j["collective_bytes_per_worker"]) == \
        (i["collectives"], i["collective_bytes_per_worker"])
    assert j["injected_delay_s"] == pytest.approx(
        net.transfer_s(i["collectives"], i["collective_bytes_per_worker"]))
    assert j["rounds_time_s"] >= j["injected_delay_s"]
    assert np.array_equal(plain.D, slow.D) and "injected_network" not in i


def test_bench_network_smoke_validates_the_model(tmp_path):
    res = network_sweep(str(tmp_path), smoke=True, validate=True, latency=5e-4, bandwidth=1e8)
    with open(tmp_path / "network.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"eagle-paper", "eagle-gram", "cg"}
    assert all(r["validation_same_counts"] == "True" for r in rows)
    assert res.headline["validation_counts_identical"] is True
    # the model's rounds/bytes columns are those of a fresh run through the public API
    r = next(r for r in rows if r["method"] == "cg" and r["workers"] == "2")
    prob, shards = alpha_problem(24, 24, 2, alpha=1.0, kappa_max=1e3, n_query=2, d_query=1, seed=0)
    again = solve(prob, "cg", workers=2, shards=shards, target_error=1e-8, max_iter=400)
    assert int(r["rounds"]) == again.iterations
    assert int(r["collectives"]) == again.info["collectives"]
    for key in ("t_10GbE_s", "t_100Gb-IB_s", "t_custom_s"):
        assert float(r[key]) >= float(r["compute_per_worker_s"])
    summary = (tmp_path / "summary.md").read_text()
    assert "Fastest method per network" in summary and "injected delay" in summary
