"""Backends that run :func:`eagle_dist.distributed.worker.run_rounds` (SPEC §2b, §6).

* ``inprocess`` — all M shard workers in this process; the all-reduce is a sum over the local
  workers. The fast path for sweeps and tests, with the same iterates as the others.
* ``torch`` — M processes spawned here, each given torchrun's environment (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and running
  :func:`worker_main`, which forms a torch.distributed process group exactly as under ``torchrun``
  (gloo on CPU, NCCL when every rank has a GPU).
* ``ray`` — M Ray actors (one per shard, ``num_gpus=1`` each when the cluster has GPUs) learn rank
  0's address, set the same variables and call the same :func:`worker_main` (the pattern of Ray
  Train's torch backend). ``address=None`` starts a local Ray instance; otherwise connects.

Failure handling: the process group has an explicit ``timeout``; a worker that dies makes its
peers' all-reduce fail at once, a worker that hangs makes it fail after ``timeout`` seconds. The
driver watches the processes / actors, and on the first failure terminates all of them and raises
:class:`WorkerFailure` naming the rank.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from datetime import timedelta
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..result import History, SolveResult, Status
from ..solvers.common import SolverOptions, resolve_device, resolve_dtype
from .shards import make_shards
from .worker import MODES, EagleKernel, FaultInjection, RoundConfig, ShardWorker, run_rounds

log = logging.getLogger(__name__)


class WorkerFailure(RuntimeError):
    """A distributed worker died, hung past the timeout, or raised."""


# ------------------------------------------------------------------------------------------------
# The per-process entry point shared by torchrun, the spawned-process backend and Ray actors.
# ------------------------------------------------------------------------------------------------
def worker_main(A: np.ndarray, B: np.ndarray, C: np.ndarray, reference: Optional[np.ndarray],
                denominator: Optional[float], kernel, cfg: RoundConfig, dtype: str = "float64",
                device: str = "auto", timeout: float = 60.0) -> Dict[str, Any]:
    """Run one rank: read torchrun's environment, join the process group, run the rounds.

    ``A``/``B`` are this rank's column shard, ``C`` the replicated block. Returns a dict (rank,
    bytes, and on every rank the full :class:`RoundsOutput` fields).
    """
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    backend = "nccl" if use_cuda else "gloo"
    if cfg.workers != world:
        raise ValueError(f"config says workers={cfg.workers} but WORLD_SIZE={world}; launch "
                         f"{cfg.workers} processes (torchrun --nproc_per_node={cfg.workers})")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    try:
        tdt = resolve_dtype(dtype, np.float64)

        def t(x):
            return torch.tensor(x, dtype=tdt, device=dev)

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}

        def comm(x: torch.Tensor, op: str) -> torch.Tensor:
            dist.all_reduce(x, op=ops[op])
            return x

        ref = None if reference is None else torch.tensor(reference, dtype=torch.float64, device=dev)
        D0 = torch.zeros(B.shape[0], C.shape[1], dtype=tdt, device=dev)
        out = run_rounds([ShardWorker(t(A), t(B), kernel, rank)], t(C), D0, comm, cfg, ref,
                         denominator, is_main=(rank == 0))
        res = dict(out.__dict__)
        res.update(rank=rank, backend=backend, device=str(dev))
        return res
    finally:
        dist.destroy_process_group()


_PEER_ERRORS = ("gloo", "nccl", "Connection closed", "Read error", "Timed out", "timed out",
                "Connection reset")


def _failure(backend: str, failures: Dict[int, str], silent: List[int]) -> WorkerFailure:
    """One error naming the rank that failed first-hand; ranks that only lost a peer (their
    all-reduce errored or timed out) are listed after it, and ranks that never answered (hung)
    are named as the suspects when every reported error is only a lost peer."""
    def secondary(msg: str) -> bool:
        return any(k in msg for k in _PEER_ERRORS)
    order = sorted(failures, key=lambda r: (secondary(failures[r]), r))
    lines = [f"rank {r}: {failures[r]}" for r in order]
    lines += [f"rank {r}: never answered (hung or blocked in a collective)" for r in silent]
    culprit = order[0]
    if secondary(failures[culprit]) and silent:
        culprit = silent[0]
    return WorkerFailure(f"{backend} backend: worker rank {culprit} failed; the run was aborted and "
                         "all workers stopped.\n  " + "\n  ".join(lines))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_env(rank: int, world: int, addr: str, port: int) -> Dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": addr, "MASTER_PORT": str(port)}


def spawned_worker(path: str) -> None:
    """Entry of a worker process started by the ``torch`` backend (``python -m
    eagle_dist.distributed.runtime PAYLOAD``): a fresh interpreter, like torchrun's, so the
    caller's ``__main__`` is never re-imported. Writes ``PAYLOAD.out`` (result or error)."""
    import pickle
    with open(path, "rb") as f:
        kwargs = pickle.load(f)
    try:
        result = ("ok", worker_main(**kwargs))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, then re-raised
        result = ("error", f"{type(exc).__name__}: {exc}")
        with open(path + ".out.tmp", "wb") as f:
            pickle.dump(result, f)
        os.replace(path + ".out.tmp", path + ".out")
        raise
    with open(path + ".out.tmp", "wb") as f:
        pickle.dump(result, f)
    os.replace(path + ".out.tmp", path + ".out")


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------
def _run_inprocess(payload: List[dict]) -> Dict[str, Any]:
    """All shard workers in this process; the all-reduce is the sum over them."""
    p0 = payload[0]
    dev = resolve_device(None if p0["device"] == "auto" else p0["device"])
    tdt = resolve_dtype(p0["dtype"], np.float64)

    def t(x):
        return torch.tensor(x, dtype=tdt, device=dev)

    workers = [ShardWorker(t(p["A"]), t(p["B"]), p["kernel"], r) for r, p in enumerate(payload)]
    ref = p0["reference"]
    ref_t = None if ref is None else torch.tensor(ref, dtype=torch.float64, device=dev)
    D0 = torch.zeros(p0["B"].shape[0], p0["C"].shape[1], dtype=tdt, device=dev)
    out = run_rounds(workers, t(p0["C"]), D0, lambda x, op: x, p0["cfg"], ref_t, p0["denominator"],
                     is_main=True)
    res = dict(out.__dict__)
    res.update(rank=0, backend="inprocess", device=str(dev))
    return res


def _run_torch(payload: List[dict], world: int, timeout: float) -> List[Dict[str, Any]]:
    import pickle
    import subprocess
    import sys
    import tempfile
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="eagle_dist_")
    procs, paths = [], []
    try:
        for r in range(world):
            path = os.path.join(tmp, f"rank{r}.pkl")
            with open(path, "wb") as f:
                pickle.dump(payload[r], f)
            env = dict(os.environ, **_torch_env(r, world, "127.0.0.1", port))
            procs.append(subprocess.Popen([sys.executable, "-m", "eagle_dist.distributed.runtime", path],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            paths.append(path)
        results: Dict[int, Any] = {}
        failures: Dict[int, str] = {}
        deadline = None
        while len(results) + len(failures) < world:
            time.sleep(0.05)
            for r, (p, path) in enumerate(zip(procs, paths)):
                if r in results or r in failures:
                    continue
                if os.path.exists(path + ".out"):
                    with open(path + ".out", "rb") as f:
                        kind, value = pickle.load(f)
                    if kind == "error":
                        failures[r] = value
                    else:
                        results[r] = value
                elif p.poll() not in (None, 0):
                    err = p.stderr.read().decode(errors="replace").strip().splitlines()
                    failures[r] = f"died (exit code {p.returncode}){': ' + err[-1] if err else ''}"
            if failures:
                # give peers a moment to report, so the first-hand failure can be named
                deadline = deadline or time.monotonic() + 2.0
                if time.monotonic() > deadline:
                    break
        if failures:
            raise _failure("torch", failures,
                           [r for r in range(world) if r not in results and r not in failures])
        return [results[r] for r in range(world)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            if p.stderr:
                p.stderr.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


_RAY_STARTED_HERE = False


def _ray_actor_class():
    import ray

    @ray.remote
    class ShardActor:
        """One column shard; sets torchrun's variables and runs :func:`worker_main`."""

        def address(self):
            import ray as _ray
            return _ray.util.get_node_ip_address(), _free_port()

        def pid(self):
            return os.getpid()

        def run(self, env: Dict[str, str], kwargs: dict):
            os.environ.update(env)
            return worker_main(**kwargs)

    return ShardActor


def _run_ray(payload: List[dict], world: int, timeout: float, address: Optional[str]) -> List[Dict[str, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise ValueError("backend='ray' needs Ray: pip install 'eagle-dist[ray]'") from exc
    global _RAY_STARTED_HERE
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, min(os.cpu_count() or 2, world)), include_dashboard=False,
                     log_to_driver=False)
            _RAY_STARTED_HERE = True
    res = ray.cluster_resources()
    gpus = res.get("GPU", 0)
    opts = {"num_cpus": min(1.0, res.get("CPU", 1) / world)}
    if gpus >= world:
        opts["num_gpus"] = 1
    Actor = _ray_actor_class()
    actors = [Actor.options(**opts).remote() for _ in range(world)]
    try:
        addr, port = ray.get(actors[0].address.remote(), timeout=timeout)
        refs = [a.run.remote(_torch_env(r, world, addr, port), payload[r])
                for r, a in enumerate(actors)]
        results: Dict[int, Any] = {}
        failures: Dict[int, str] = {}
        pending = list(refs)
        deadline = None
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                r = refs.index(ref)
                try:
                    results[r] = ray.get(ref)
                except Exception as exc:  # RayActorError (death) or RayTaskError (raised)
                    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                    failures[r] = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
            if failures:
                deadline = deadline or time.monotonic() + 2.0
                if time.monotonic() > deadline:
                    break
        if failures:
            raise _failure("ray", failures,
                           [r for r in range(world) if r not in results and r not in failures])
        return [results[r] for r in range(world)]
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead
                pass


def shutdown_ray() -> None:
    """Stop the local Ray instance this module started (no-op when connected to a cluster)."""
    global _RAY_STARTED_HERE
    if _RAY_STARTED_HERE:
        import ray
        ray.shutdown()
        _RAY_STARTED_HERE = False


# ------------------------------------------------------------------------------------------------
#: ``mode="auto"`` picks the Gram mode while its per-round message, (n + n')·n numbers, stays
#: at or below this many (32 MiB in float64) — or whenever n ≤ d', where the paper's message is
#: no smaller anyway — and the paper's mode beyond (large n: the paper's message is d'/n of the
#: Gram message, at the price of α-dependent rounds and exactness on consistent data only).
GRAM_AUTO_MAX_ELEMENTS = 4_194_304


def choose_mode(mode: str, n: int, n_query: int, d_query: int, method: str = "eagle") -> str:
    """Resolve ``mode`` (``"auto"`` by the cost model above; GD always runs the paper's loop,
    whose mean gradient is already exact)."""
    if mode not in ("auto",) + MODES:
        raise ValueError(f"mode={mode!r}; use 'auto', 'paper' or 'gram'")
    if method == "gd":
        if mode == "gram":
            raise ValueError("mode='gram' is for method='eagle'; distributed GD (all-reduced mean "
                             "gradients) is exact in the paper's loop already")
        return "paper"
    if mode != "auto":
        return mode
    return "gram" if (n <= d_query or (n + n_query) * n <= GRAM_AUTO_MAX_ELEMENTS) else "paper"


def prepare(problem, opts: SolverOptions, *, method: str = "eagle", workers: int = 2,
            shards="contiguous", eta: Optional[float] = None, gamma: Optional[float] = None,
            normalization: str = "local", accelerate: bool = False, timeout: float = 60.0,
            kernel=None, fault: Optional[FaultInjection] = None, mode: str = "auto",
            verify: bool = True, rcond: Optional[float] = None) -> List[dict]:
    """Validate everything and build each rank's :func:`worker_main` arguments (no process
    is started here: bad shards, step sizes or timeouts fail before any worker exists).

    Every block is divided by its largest power of two first (exact); ``unscale`` in the payload
    says how to undo it on D (``B A⁺ C`` scales as ``s_B s_C / s_A``)."""
    import numbers
    from ..result import pow2_of

    def real(v):
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)

    if method not in ("eagle", "gd"):
        raise ValueError(f"method={method!r} has no distributed form; use 'eagle' or 'gd'")
    if method == "gd":
        if eta is not None and eta != 0:
            raise ValueError(f"eta={eta!r}: method='gd' is EAGLE with eta = 0; drop eta")
        eta = 0.0
    eta = 1.0 / 3.0 if eta is None else eta
    gamma = 1.0 if gamma is None else gamma
    if not real(eta) or not (0.0 <= eta <= 1.0 / 3.0):
        raise ValueError(f"eta={eta!r}: the distributed rounds use the normalised form (ρ_μ = 1 with "
                         "the 1/(1-η) rescale), valid for 0 <= eta <= 1/3")
    if not real(gamma) or not (0.0 < gamma < 2.0):
        raise ValueError(f"gamma={gamma!r} must lie in (0, 2); use 1")
    eta, gamma = float(eta), float(gamma)
    if normalization not in ("local", "global"):
        raise ValueError(f"normalization={normalization!r}; use 'local' or 'global'")
    if not real(timeout) or not (timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a positive, finite number of seconds "
                         "(how long a collective may wait for a silent worker)")
    if not isinstance(verify, (bool, np.bool_)):
        raise ValueError(f"verify={verify!r} must be True or False")
    if rcond is not None and not (real(rcond) and 0.0 < rcond < 1.0):
        raise ValueError(f"rcond={rcond!r} must lie in (0, 1) (default sqrt(eps))")
    custom = kernel is not None and not isinstance(kernel, EagleKernel)
    if custom and mode == "auto":
        mode = "paper"                     # a learned/custom layer is the paper's local kernel
    mode = choose_mode(mode, problem.n, problem.n_query, problem.d_query, method)
    if custom and mode == "gram":
        raise ValueError("a custom kernel runs in the paper's mode (mode='paper'): the Gram mode "
                         "is the centralized EAGLE update")
    shard_idx = make_shards(problem.d, workers, shards, seed=opts.seed)
    if kernel is None:
        kernel = EagleKernel(eta=eta, gamma=gamma, rcond=rcond)
    elif not callable(kernel):
        raise TypeError("kernel must be callable as kernel(A, B, C, D) -> (A, B, C, D)")
    dtype = "float32" if resolve_dtype(opts.dtype, problem.dtype) == torch.float32 else "float64"
    want_ref = opts.record_error or opts.target_error is not None
    s_a, s_b, s_c = pow2_of(problem.A), pow2_of(problem.B), pow2_of(problem.C)
    unscale = s_b * s_c / s_a
    cfg = RoundConfig(workers=workers, normalization=normalization, accelerate=accelerate,
                      opts=opts, fault=fault, mode=mode, verify=bool(verify), unscale=unscale)
    A = problem.A.astype(np.float64) / s_a
    B = problem.B.astype(np.float64) / s_b
    C = problem.C.astype(np.float64) / s_c
    ref = problem.reference / unscale if want_ref else None
    den = problem.error_denominator / unscale if want_ref else None
    return [dict(A=np.ascontiguousarray(A[:, s]), B=np.ascontiguousarray(B[:, s]), C=C,
                 reference=ref, denominator=den, kernel=kernel, cfg=cfg, dtype=dtype,
                 device=opts.device or "auto", timeout=timeout)
            for s in shard_idx]


def assemble(problem, outs: List[Dict[str, Any]], *, method: str, backend: str, wall: float,
             shards) -> SolveResult:
    """One :class:`SolveResult` from the ranks' outputs (rank 0's history; every rank's freeze)."""
    out = outs[0]
    cfg: RoundConfig = out["cfg"]
    kernel = out["kernel"]
    hist = History(step=list(out["history"]["step"]), error=list(out["history"]["error"]),
                   time=list(out["history"]["time"]), rho=[1.0] * len(out["history"]["step"]))
    status = Status(out["status"])
    D = np.asarray(out["D"], dtype=np.float64) * cfg.unscale
    D = D.astype(np.float32 if out["dtype"] == "float32" else np.float64)
    if not np.isfinite(D).all():
        status, D = Status.NON_FINITE, np.zeros_like(D)
    itemsize = np.dtype(out["dtype"]).itemsize
    info = dict(mode=out.get("mode", cfg.mode), normalization=cfg.normalization,
                shards=shards if isinstance(shards, str) else "explicit",
                setup_bytes_per_worker=out["setup_bytes"], rounds_time_s=out["time_s"],
                wall_time_s=wall, message_elements=out["bytes_per_round"] // itemsize,
                bytes_sent_per_worker=out.get("bytes_sent", 0),
                probe_gap=out.get("probe_gap", float("nan")),
                certified_at=out.get("certified_at", -1),
                best_iteration=out.get("best_iteration", 0), device=out.get("device", ""))
    if isinstance(kernel, EagleKernel):
        info.update(eta=kernel.eta, gamma=kernel.gamma)
    else:
        info["kernel"] = type(kernel).__name__
    if cfg.accelerate:
        frozen = [f for o in outs for f in o["frozen_at"]]
        info["ab_frozen_at_min"], info["ab_frozen_at_max"] = int(min(frozen)), int(max(frozen))
    has_ref = outs[0]["reference"] is not None
    return SolveResult(
        D=D, status=status, iterations=out["rounds"], time_s=wall, history=hist,
        method=method, regime="distributed", backend=backend, workers=cfg.workers,
        bytes_per_worker_per_round=out["bytes_per_round"],
        bytes_total=cfg.workers * (out.get("bytes_sent", 0) + out["setup_bytes"]),
        error=problem.error(D) if has_ref else float("nan"), info=info)


def solve_distributed(problem, opts: SolverOptions, *, method: str = "eagle", workers: int = 2,
                      backend: str = "inprocess", shards="contiguous", eta: Optional[float] = None,
                      gamma: Optional[float] = None, normalization: str = "local",
                      accelerate: bool = False, timeout: float = 60.0,
                      address: Optional[str] = None, kernel=None,
                      fault: Optional[FaultInjection] = None, mode: str = "auto",
                      verify: bool = True, rcond: Optional[float] = None) -> SolveResult:
    """Distributed EAGLE (``method="eagle"``) or distributed GD (``"gd"``, η = 0).

    ``mode``: ``"paper"`` (all-reduce the mean (C', D'); exact on consistent data, ``verify``
    checks it with a probe column), ``"gram"`` (all-reduce A Aᵀ and B Aᵀ; the centralized
    iterates, exact on any data) or ``"auto"`` (:func:`choose_mode`).
    All validation happens in :func:`prepare`, before any process or actor starts.
    """
    payload = prepare(problem, opts, method=method, workers=workers, shards=shards, eta=eta,
                      gamma=gamma, normalization=normalization, accelerate=accelerate,
                      timeout=timeout, kernel=kernel, fault=fault, mode=mode, verify=verify,
                      rcond=rcond)
    t0 = time.perf_counter()
    if backend == "inprocess":
        if fault is not None:
            raise ValueError("fault injection needs a multi-process backend ('torch' or 'ray')")
        outs = [_run_inprocess(payload)]
        name = "inprocess"
    elif backend in ("torch", "ray"):
        if opts.callback is not None:
            import pickle
            try:
                pickle.dumps(opts.callback)
            except Exception as exc:  # noqa: BLE001
                raise ValueError("callback must be picklable (a module-level function) for the "
                                 f"'{backend}' backend; got {opts.callback!r}") from exc
        outs = _run_torch(payload, workers, timeout) if backend == "torch" else \
            _run_ray(payload, workers, timeout, address)
        name = f"{backend}/{outs[0]['backend']}"
    else:
        raise ValueError(f"backend={backend!r}; use 'inprocess', 'torch' or 'ray'")
    for o, p in zip(outs, payload):
        o.update(cfg=p["cfg"], kernel=p["kernel"], dtype=p["dtype"], reference=p["reference"])
    return assemble(problem, outs, method=method, backend=name, wall=time.perf_counter() - t0,
                    shards=shards)


if __name__ == "__main__":  # a worker process of the torch backend
    import sys
    spawned_worker(sys.argv[1])
