"""A network model for distributed runs, and the all-reduce counter that feeds it.

    modelled time = compute + collectives · latency + bytes / bandwidth

``compute`` is the measured time of the rounds on this machine (in-process: every shard's work
done one after another by one process, so it is an upper bound on one worker's compute);
``collectives`` the all-reduce calls one worker made (every round's message plus the set-up and
check collectives: normalisation, probe, residual checks); ``bytes`` what one worker contributed
to them. A real all-reduce moves about ``2(M − 1)/M`` times the message over each link (ring) and
pays ``log₂ M`` to ``2(M − 1)`` latencies depending on the algorithm: give the effective
per-collective latency and bandwidth of *your* cluster with ``--latency`` / ``--bandwidth``;
the named networks below are nominal figures, not measurements.

:class:`CountingComm` wraps a run's all-reduce: it counts calls and bytes and, when given a
:class:`Network`, sleeps for that network's cost after each call — the injected delay that
checks the model against a measured wall time (``eagle-dist bench rounds --validate-network``).

Floor 1: imports nothing of ours.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch


@dataclass(frozen=True)
class Network:
    """Effective per-collective ``latency_s`` and per-worker ``bandwidth_Bps`` (bytes/s)."""

    name: str
    latency_s: float
    bandwidth_Bps: float

    def __post_init__(self):
        if not (isinstance(self.latency_s, (int, float)) and math.isfinite(self.latency_s)
                and self.latency_s >= 0):
            raise ValueError(f"latency={self.latency_s!r} must be a finite number of seconds "
                             ">= 0, e.g. 2e-5 (20 µs)")
        if not (isinstance(self.bandwidth_Bps, (int, float)) and self.bandwidth_Bps > 0
                and math.isfinite(self.bandwidth_Bps)):
            raise ValueError(f"bandwidth={self.bandwidth_Bps!r} must be a positive, finite "
                             "number of bytes per second, e.g. 1.25e9 (10 Gb/s)")

    def transfer_s(self, collectives: int, nbytes: float) -> float:
        return collectives * self.latency_s + nbytes / self.bandwidth_Bps

    def time_s(self, compute_s: float, collectives: int, nbytes: float) -> float:
        return compute_s + self.transfer_s(collectives, nbytes)


#: nominal figures (effective per-collective latency, per-link bandwidth); override with your own
NETWORKS: Dict[str, Network] = {
    "1GbE": Network("1GbE", 100e-6, 1.25e8),
    "10GbE": Network("10GbE", 30e-6, 1.25e9),
    "100Gb-IB": Network("100Gb-IB", 3e-6, 1.25e10),
    "WAN": Network("WAN", 20e-3, 1.25e7),
}


def network(name: Optional[str] = None, *, latency: Optional[float] = None,
            bandwidth: Optional[float] = None) -> Network:
    """A named network, or a custom one from ``latency`` (s) and ``bandwidth`` (bytes/s)."""
    if name is not None:
        if name not in NETWORKS:
            raise ValueError(f"network {name!r} is unknown; choose one of {sorted(NETWORKS)} "
                             "or give --latency SECONDS --bandwidth BYTES_PER_S")
        return NETWORKS[name]
    if latency is None or bandwidth is None:
        raise ValueError("a custom network needs both latency (s) and bandwidth (bytes/s)")
    return Network("custom", float(latency), float(bandwidth))


#: an injected delay sleeps until this long before its deadline, then spins to it: ``time.sleep``
#: alone wakes 0.1-0.5 ms late on a loaded machine, which over CG's ~2,000 all-reduces added 20-55 %
#: to a 1 ms-per-call delay (measured, benchmarks/results/network) — an error of the injection,
#: not of the network model
SPIN_S = 1e-3


def wait(seconds: float) -> float:
    """Block for ``seconds`` (sleep, then spin to the deadline); returns the time it took."""
    t0 = time.perf_counter()
    deadline = t0 + seconds
    if seconds > 2 * SPIN_S:                  # a short sleep itself wakes late: spin instead
        time.sleep(seconds - SPIN_S)
    while time.perf_counter() < deadline:
        pass
    return time.perf_counter() - t0


class CountingComm:
    """``comm(x, op)`` that counts calls and bytes; with a ``delay`` network it also waits that
    network's cost after each call (every rank alike, so ranks stay in step; :func:`wait`).
    ``delayed_s``: the nominal delay injected; ``waited_s``: the time the waits took."""

    def __init__(self, comm: Callable[[torch.Tensor, str], torch.Tensor],
                 delay: Optional[Network] = None):
        self.comm, self.delay = comm, delay
        self.calls = 0
        self.nbytes = 0
        self.delayed_s = 0.0
        self.waited_s = 0.0

    def __call__(self, x: torch.Tensor, op: str) -> torch.Tensor:
        out = self.comm(x, op)
        n = x.numel() * x.element_size()
        self.calls += 1
        self.nbytes += n
        if self.delay is not None:
            pause = self.delay.transfer_s(1, n)
            self.waited_s += wait(pause)
            self.delayed_s += pause
        return out


__all__ = ["Network", "NETWORKS", "network", "CountingComm", "wait", "SPIN_S"]
