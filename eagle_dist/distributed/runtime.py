"""Running distributed solves and other multi-rank work: the entry points.

* ``inprocess`` — all M shard workers in this process; the all-reduce is a sum over the local
  workers. The fast path for sweeps and tests, with the same iterates as the others.
* ``torch`` — M local processes with torchrun's environment (:mod:`.launch_torch`).
* ``ray`` — M Ray actors, locally or on a cluster (:mod:`.launch_ray`).

Every multi-process run goes through the one supervision loop of :mod:`.supervise` (start-up
deadline, collective timeout, liveness, failure report naming the rank, clean-up); each rank runs
:func:`.rank.worker_main` (or another entry, for training) on a typed
:class:`~.protocol.RankTask`; :mod:`.plan` validates a solve before anything starts and assembles
its result. The layout::

    runtime      solve_distributed, run_ranks, the in-process backend      (this module)
    plan         prepare (validation, one task per rank), assemble, choose_mode
    supervise    supervise(launcher, ...): deadlines and failure rules; WorkerFailure
    launch_torch TorchLauncher (spawned processes)    launch_ray  RayLauncher (actors, pool)
    rank         worker_main, init_group: one rank, whatever launched it
    worker       run_rounds: the round loop (paper / Gram / CG), EagleKernel
    protocol     LocalKernel / CertifiedKernel, RankTask / RankResult
    torchrun     the process entry points (torchrun solve; a rank of the torch launcher)
"""
from __future__ import annotations

import pickle
import time
from typing import Any, List, Optional

import numpy as np
import torch

from ..control import SolverOptions, resolve_device, resolve_dtype
from ..result import SolveResult
from .launch_ray import RayLauncher, release_ray_actors, shutdown_ray  # noqa: F401
from .launch_torch import TorchLauncher
from .network import Network
from .plan import GRAM_AUTO_MAX_ELEMENTS, Plan, assemble, choose_mode, prepare, store_reference  # noqa: F401
from .protocol import RankResult
from .rank import (STARTUP_TIMEOUT_S, as_tensor, call_entry, init_group, peak_rss_bytes,  # noqa: F401
                   shard_arrays, worker_main)
from .supervise import LIVENESS_GRACE_S, WorkerFailure, check_timeouts, supervise  # noqa: F401
from .worker import FaultInjection, ShardWorker, run_rounds

BACKENDS = ("inprocess", "torch", "ray")


def launcher(backend: str, address: Optional[str] = None):
    """The launcher of a multi-process backend."""
    if backend == "torch":
        return TorchLauncher()
    if backend == "ray":
        return RayLauncher(address)
    raise ValueError(f"backend={backend!r}; use 'torch' (local processes) or 'ray' (actors)")


def run_ranks(payloads: List[Any], backend: str = "torch", *, timeout: float = 60.0,
              startup_timeout: float = STARTUP_TIMEOUT_S,
              address: Optional[str] = None) -> List[Any]:
    """Start one rank per payload on the ``torch`` (local processes) or ``ray`` (actors)
    backend, each running :func:`.rank.call_entry` (a :class:`RankTask`, or a dict naming
    ``entry="module:function"`` and its keyword arguments), with the same start-up deadline,
    liveness checks, failure reports and clean-up as a distributed solve. Returns the ranks'
    results in rank order."""
    return supervise(launcher(backend, address), payloads, timeout, startup_timeout)


def run_inprocess(plan: Plan) -> RankResult:
    """All shard workers in this process; the all-reduce is the sum over them."""
    t0 = plan.tasks[0]
    dev = resolve_device(None if t0.device == "auto" else t0.device)
    tdt = resolve_dtype(t0.dtype, np.float64)
    workers, loaded = [], False
    for r, task in enumerate(plan.tasks):
        A, B, loaded = shard_arrays(task)
        workers.append(ShardWorker(as_tensor(A, tdt, dev, copy=not loaded),
                                   as_tensor(B, tdt, dev, copy=not loaded), task.kernel, r))
        del A, B
    ref = None if t0.reference is None else torch.tensor(t0.reference, dtype=torch.float64,
                                                         device=dev)
    D0 = torch.zeros(workers[0].B.shape[0], t0.C.shape[1], dtype=tdt, device=dev)
    out = run_rounds(workers, as_tensor(t0.C, tdt, dev, copy=True), D0, lambda x, op: x, t0.cfg,
                     ref, t0.denominator, is_main=True)
    return RankResult(rounds=out, rank=0, backend="inprocess", device=str(dev),
                      rendezvous="inprocess",
                      shard_bytes=sum((w.A.numel() + w.B.numel()) * w.A.element_size()
                                      for w in workers),
                      peak_rss_bytes=peak_rss_bytes(), loaded_by_worker=loaded)


def solve_distributed(problem, opts: SolverOptions, *, method: str = "eagle", workers: int = 2,
                      backend: str = "inprocess", shards="contiguous", eta: Optional[float] = None,
                      gamma: Optional[float] = None, normalization: str = "local",
                      accelerate: bool = False, timeout: float = 60.0,
                      address: Optional[str] = None, kernel=None,
                      fault: Optional[FaultInjection] = None, mode: str = "auto",
                      verify: bool = True, rcond: Optional[float] = None,
                      startup_timeout: float = STARTUP_TIMEOUT_S,
                      network: Optional[Network] = None) -> SolveResult:
    """Distributed EAGLE (``method="eagle"``), distributed GD (``"gd"``, η = 0) or distributed
    CG on the normal equations (``"cg"``: all-reduce ``P·A Aᵀ`` each round; see
    :mod:`eagle_dist.distributed.worker`).

    ``mode``: ``"paper"`` (all-reduce the mean (C', D'); exact on consistent data, ``verify``
    checks it with a probe column and the untransferred part of C), ``"gram"`` (all-reduce
    A Aᵀ and B Aᵀ; the centralized iterates, exact on any data) or ``"auto"``
    (:func:`choose_mode`). ``address`` (Ray): ``None`` joins ``RAY_ADDRESS`` when set, else
    starts Ray locally; ``"auto"`` or ``"host:port"`` join a running cluster. All validation
    happens in :func:`prepare`, before any process or actor starts. ``network``: inject that
    network's delay into every all-reduce (:mod:`eagle_dist.distributed.network`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; use 'inprocess', 'torch' or 'ray'")
    plan = prepare(problem, opts, method=method, workers=workers, shards=shards, eta=eta,
                   gamma=gamma, normalization=normalization, accelerate=accelerate,
                   timeout=timeout, kernel=kernel, fault=fault, mode=mode, verify=verify,
                   rcond=rcond, network=network)
    t0 = time.perf_counter()
    if backend == "inprocess":
        if fault is not None:
            raise ValueError("fault injection needs a multi-process backend ('torch' or 'ray')")
        results = [run_inprocess(plan)]
        name = "inprocess"
    else:
        if opts.callback is not None:
            try:
                pickle.dumps(opts.callback)
            except Exception as exc:  # noqa: BLE001
                raise ValueError("callback must be picklable (a module-level function) for the "
                                 f"'{backend}' backend; got {opts.callback!r}") from exc
        check_timeouts(timeout, startup_timeout)
        results = run_ranks(plan.tasks, backend, timeout=timeout,
                            startup_timeout=startup_timeout, address=address)
        name = f"{backend}/{results[0].backend}"
    return assemble(plan, results, backend=name, wall=time.perf_counter() - t0)


__all__ = ["solve_distributed", "run_ranks", "run_inprocess", "launcher", "WorkerFailure",
           "worker_main", "init_group", "call_entry", "prepare", "assemble", "choose_mode",
           "store_reference", "peak_rss_bytes", "release_ray_actors", "shutdown_ray",
           "STARTUP_TIMEOUT_S", "LIVENESS_GRACE_S", "BACKENDS"]
