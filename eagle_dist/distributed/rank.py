"""One rank of a distributed run, whatever launched it (torchrun, the ``torch`` backend's spawned
processes, Ray actors): read torchrun's environment, join the process group, run the rounds.

Environment (set by torchrun, or by the launchers exactly as torchrun would): ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (the rank's index on its node: it picks the GPU),
``LOCAL_WORLD_SIZE`` (ranks on this node: they share its cores), ``GROUP_RANK`` / ``NODE_RANK``
(the node's index), ``MASTER_ADDR`` / ``MASTER_PORT``. Where the group meets:

* ``EAGLE_DIST_STORE_FILE`` — a ``FileStore`` in a private folder (the local ``torch`` backend:
  no port is opened at all);
* ``EAGLE_DIST_TCP_STORE=1`` — a ``TCPStore`` at ``MASTER_ADDR:MASTER_PORT`` (Ray actors); rank 0
  serves it on the listening socket its launcher bound to that one address
  (``EAGLE_DIST_MASTER_FD``), loopback when every rank is on one host — never every interface;
* otherwise torchrun's ``env://`` rendezvous.

Both private stores first meet at a start barrier bound by ``EAGLE_DIST_STARTUP_TIMEOUT``, so that
a rank slow to start is governed by the start-up deadline, not by the collective ``timeout``.
The group is destroyed when the rank's work ends, so no socket outlives a run.
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..control import resolve_dtype
from ..options import STARTUP_TIMEOUT_S
from .protocol import RankResult, RankTask
from .worker import ShardWorker, run_rounds


def local_layout() -> "tuple[int, int, int]":
    """``(local_rank, local_world, node_rank)`` from torchrun's variables (single node when
    unset)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    node = os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0"))
    return (int(os.environ.get("LOCAL_RANK", rank)), int(os.environ.get("LOCAL_WORLD_SIZE", world)),
            int(node))


def select_device(device: str, local_rank: int, local_world: int) -> torch.device:
    """The rank's device: ``cuda:<local_rank mod visible GPUs>`` unless ``device="cpu"`` or no GPU
    is visible (a Ray actor sees only its own GPU, as ``cuda:0``); on CPU the node's cores are
    shared among its ranks (unless ``OMP_NUM_THREADS`` says otherwise)."""
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return torch.device("cpu")


def init_group(device: str, timeout: float, expected_world: Optional[int] = None,
               on_round: Optional[Callable[[int], None]] = None):
    """Join this rank's process group (module docstring) and return ``(rank, world, device,
    backend)``: NCCL on a CUDA device (one GPU per local rank), gloo on CPU. ``on_round(0)`` marks
    the end of start-up."""
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank, local_world, _ = local_layout()
    dev = select_device(device, local_rank, local_world)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if expected_world is not None and expected_world != world:
        raise ValueError(f"config says workers={expected_world} but WORLD_SIZE={world}; launch "
                         f"{expected_world} processes (torchrun --nproc_per_node={expected_world})")
    store = _private_store(rank, world, timeout)
    if store is not None:
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
    else:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    if on_round is not None:
        on_round(0)                                   # the group is formed: start-up is over
    return rank, world, dev, backend


def rendezvous() -> str:
    """How this rank's group met: ``file``, ``tcp`` or ``env`` (torchrun)."""
    if os.environ.get("EAGLE_DIST_STORE_FILE"):
        return "file"
    return "tcp" if os.environ.get("EAGLE_DIST_TCP_STORE") == "1" else "env"


def _private_store(rank: int, world: int, timeout: float):
    """The launcher's store (file or TCP, see the module docstring) after the start barrier, or
    ``None`` for torchrun's ``env://``."""
    import torch.distributed as dist
    startup = float(os.environ.get("EAGLE_DIST_STARTUP_TIMEOUT", STARTUP_TIMEOUT_S))
    kind = rendezvous()
    if kind == "file":
        store = dist.FileStore(os.environ["EAGLE_DIST_STORE_FILE"], world)
    elif kind == "tcp":
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        fd = os.environ.pop("EAGLE_DIST_MASTER_FD", None)
        if rank == 0:
            if fd is None:
                raise RuntimeError("rank 0 of a Ray group has no listening socket "
                                   "(EAGLE_DIST_MASTER_FD); the launcher binds it")
            store = dist.TCPStore(host, port, world, True, timedelta(seconds=startup),
                                  wait_for_workers=False, master_listen_fd=int(fd))
        else:
            store = dist.TCPStore(host, port, world, False, timedelta(seconds=startup))
    else:
        return None
    _start_barrier(store, rank, world, startup)
    store.set_timeout(timedelta(seconds=timeout))
    return store


def _start_barrier(store, rank: int, world: int, startup_timeout: float) -> None:
    """Wait (up to ``startup_timeout``) until every rank has started, so that a rank slow to
    start (imports on a busy machine) is governed by the start-up deadline, not by the
    collective ``timeout`` that the process group's own rendezvous would apply."""
    keys = [f"eagle_dist/started/{r}" for r in range(world)]
    store.set(keys[rank], "1")
    try:
        store.wait(keys, timedelta(seconds=startup_timeout))
    except RuntimeError:
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        raise RuntimeError(f"rank(s) {missing} did not start within startup_timeout = "
                           f"{startup_timeout:g} s") from None


def worker_main(task: RankTask, on_round: Optional[Callable[[int], None]] = None) -> RankResult:
    """Run one rank of a distributed solve: join the group, run :func:`run_rounds` on this
    rank's shard, leave the group. ``on_round`` is the launcher's liveness heartbeat."""
    import torch.distributed as dist
    rank, world, dev, backend = init_group(task.device, task.timeout, task.cfg.workers, on_round)
    try:
        tdt = resolve_dtype(task.dtype, np.float64)
        A, B, loaded = shard_arrays(task)
        A_t, B_t = (as_tensor(x, tdt, dev, copy=not loaded) for x in (A, B))
        del A, B

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}

        def comm(x: torch.Tensor, op: str) -> torch.Tensor:
            dist.all_reduce(x, op=ops[op])
            return x

        ref = None if task.reference is None else \
            torch.tensor(task.reference, dtype=torch.float64, device=dev)
        D0 = torch.zeros(B_t.shape[0], task.C.shape[1], dtype=tdt, device=dev)
        out = run_rounds([ShardWorker(A_t, B_t, task.kernel, rank)],
                         as_tensor(task.C, tdt, dev, copy=True), D0, comm, task.cfg, ref,
                         task.denominator, is_main=(rank == 0), on_round=on_round)
        local_rank, _, node_rank = local_layout()
        me = dict(rank=rank, local_rank=local_rank, node_rank=node_rank,
                  host=socket.gethostname(), device=str(dev))
        placement = [None] * world                  # where every rank ran (one small gather)
        dist.all_gather_object(placement, me)
        return RankResult(rounds=out, rank=rank, backend=backend, device=str(dev),
                          rendezvous=rendezvous(),
                          shard_bytes=(A_t.numel() + B_t.numel()) * A_t.element_size(),
                          peak_rss_bytes=peak_rss_bytes(), loaded_by_worker=loaded,
                          local_rank=local_rank, node_rank=node_rank, host=me["host"],
                          placement=placement)
    finally:
        dist.destroy_process_group()


def describe_rank(device: str = "auto", timeout: float = 30.0,
                  on_round: Optional[Callable[[int], None]] = None) -> dict:
    """A launcher check: join the group, all-reduce each rank's number once, and report where
    this rank runs (``run_ranks([{"entry": "eagle_dist.distributed.rank:describe_rank"}] * M,
    "ray")``): rank, local rank, node rank, host, process, device, backend, rendezvous, the
    Ray node id inside an actor, and the all-reduced sum ``0 + 1 + … + (M − 1)``."""
    import torch.distributed as dist
    rank, world, dev, backend = init_group(device, timeout, None, on_round)
    try:
        x = torch.tensor([float(rank)], dtype=torch.float64, device=dev)
        dist.all_reduce(x)
        local_rank, local_world, node_rank = local_layout()
        node_id = ""
        try:
            import ray
            if ray.is_initialized():
                node_id = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass
        return dict(rank=rank, world=world, local_rank=local_rank, local_world=local_world,
                    node_rank=node_rank, host=socket.gethostname(), pid=os.getpid(),
                    device=str(dev), backend=backend, rendezvous=rendezvous(),
                    rank_sum=float(x[0]), node_id=node_id)
    finally:
        dist.destroy_process_group()


def shard_arrays(task: RankTask):
    """``(A, B, loaded)``: the rank's own arrays, read from the column store by the rank itself
    when it was sent a :class:`eagle_dist.data.store.ShardRef` instead of arrays."""
    from ..data.store import ShardRef
    if isinstance(task.A, ShardRef):
        A, B = task.A.load()
        return A, B, True
    return task.A, task.B, False


def as_tensor(x: np.ndarray, tdt, dev, copy: bool) -> torch.Tensor:
    """A tensor of ``x``: over the array itself when the rank owns it (``copy=False``: no second
    copy of a shard read from a store), else a copy (the caller's arrays are never aliased)."""
    return torch.tensor(x, dtype=tdt, device=dev) if copy else torch.as_tensor(x, dtype=tdt,
                                                                                 device=dev)


def call_entry(payload: Any, on_round: Optional[Callable[[int], None]] = None):
    """Run a rank's work: a :class:`RankTask` (a distributed solve: :func:`worker_main`) or a dict
    naming ``entry="module:function"`` and its keyword arguments (e.g. a training rank; imported
    here, so this package never imports its callers such as ``eagle_dist.model``)."""
    if isinstance(payload, RankTask):
        return worker_main(payload, on_round=on_round)
    if isinstance(payload, dict) and "entry" in payload:
        import importlib
        kwargs = dict(payload)
        mod, _, fn = kwargs.pop("entry").partition(":")
        return getattr(importlib.import_module(mod), fn)(**kwargs, on_round=on_round)
    raise TypeError(f"a rank payload is a RankTask or a dict with 'entry'; got "
                    f"{type(payload).__name__}")


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes: Linux ``VmHWM`` (reset by exec, so
    a fresh process does not inherit the peak of the process that forked it, as ``ru_maxrss``
    does), elsewhere ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


__all__ = ["worker_main", "init_group", "call_entry", "select_device", "local_layout", "describe_rank",
           "peak_rss_bytes", "STARTUP_TIMEOUT_S"]
