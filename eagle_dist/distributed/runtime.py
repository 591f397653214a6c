"""Backends that run :func:`eagle_dist.distributed.worker.run_rounds`.

* ``inprocess`` — all M shard workers in this process; the all-reduce is a sum over the local
  workers. The fast path for sweeps and tests, with the same iterates as the others.
* ``torch`` — M processes spawned here (``python -m eagle_dist.distributed._spawn``), each given
  torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, …) and running
  :func:`worker_main`, which forms a torch.distributed process group as under ``torchrun`` (gloo
  on CPU, NCCL when every rank has a GPU). Locally the group meets through a ``FileStore`` in a
  private (0700) temp folder, so no port is opened at all.
* ``ray`` — M Ray actors (one per shard, ``num_gpus=1`` each when the cluster has GPUs) learn rank
  0's address, set the same variables and call the same :func:`worker_main` (the pattern of Ray
  Train's torch backend). ``address=None`` starts a local Ray instance; otherwise connects.

Deadlines — every wait of the driver is bounded, and each failure ends in :class:`WorkerFailure`
naming the rank(s). Three clocks, in plain words:

* ``startup_timeout`` (default 120 s, :data:`STARTUP_TIMEOUT_S`) — how long the ranks may take to
  get going: processes spawned, Python and torch imported, payload read, every rank present and
  the process group formed (torch backend); Ray connected, actors placed and answering (Ray
  backend). A torch rank that is slow to start only has to beat this deadline (the ranks meet at
  a start barrier before the group's own rendezvous, which would apply ``timeout``); at the
  deadline the ranks that never started are named, and those that did are listed as waiting.
  A Ray ``address`` that refuses TCP within 5 s is refused at once, and the first connection is
  tried in a throw-away process killed after ``startup_timeout`` (``ray.init`` itself retries
  for many minutes against a port that is open but is not a Ray head).
* ``timeout`` (default 60 s) — the collective timeout: once the group is formed, an all-reduce
  waits at most this long for a silent peer. A peer that dies breaks the others' all-reduce at
  once; one that hangs makes them fail after ``timeout``.
* the driver's liveness deadline, ``timeout`` + :data:`LIVENESS_GRACE_S` (5 s) — every rank
  reports each round (torch: a heartbeat file written by the rank; Ray: a ``progress()`` call
  answered by a second actor thread). A rank that reports no round for that long fails the run
  even when no collective would notice: ``workers=1``, every rank stopped with SIGSTOP, or a
  rank hung after its peers finished. A stopped local torch rank (process state ``T``) is named
  at once. So a hang is reported after at most ``timeout`` + 5 s (+ 2 s in which the other ranks
  may report, so that the first-hand failure is the one named), and a rank that never starts
  after ``startup_timeout`` (+ 2 s).
* Clean-up: on any failure (or SIGTERM of the driver, which is then re-delivered to the previous
  handler — by default the driver dies of it) every process / actor is stopped and the temp
  folder removed. Spawned ranks die with the driver even on SIGKILL (Linux parent-death signal,
  elsewhere a watchdog thread polling the parent) and delete their pickled payload as soon as
  they have read it; a rank that finds its driver already gone removes the run folder. Payload
  files are created 0600 in a 0700 folder. Ranks' stderr goes to a file in that folder (never a
  pipe that could fill); a rank that dies is reported with its exit code or signal and the last
  line of its stderr that is not a warning.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from datetime import timedelta
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..result import History, SolveResult, Status
from ..control import SolverOptions, resolve_device, resolve_dtype
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
                device: str = "auto", timeout: float = 60.0,
                on_round: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Run one rank: read torchrun's environment, join the process group, run the rounds.

    ``A``/``B`` are this rank's column shard, ``C`` the replicated block. Returns a dict (rank,
    bytes, and on every rank the full :class:`RoundsOutput` fields). ``on_round`` is the
    launcher's liveness heartbeat. With ``EAGLE_DIST_STORE_FILE`` set the group meets through that
    ``FileStore`` (local runs: no TCP port), otherwise through torchrun's ``env://`` variables.
    """
    import torch.distributed as dist
    rank, world, dev, backend = init_group(device, timeout, cfg.workers, on_round)
    store_file = os.environ.get("EAGLE_DIST_STORE_FILE")
    try:
        tdt = resolve_dtype(dtype, np.float64)

        def t(x):
            return torch.tensor(x, dtype=tdt, device=dev)

        A, B, loaded = _shard_arrays(A, B)
        A_t, B_t = (_own(x, tdt, dev) for x in (A, B)) if loaded else (t(A), t(B))
        del A, B

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}

        def comm(x: torch.Tensor, op: str) -> torch.Tensor:
            dist.all_reduce(x, op=ops[op])
            return x

        ref = None if reference is None else torch.tensor(reference, dtype=torch.float64, device=dev)
        D0 = torch.zeros(B_t.shape[0], C.shape[1], dtype=tdt, device=dev)
        shard_bytes = (A_t.numel() + B_t.numel()) * A_t.element_size()
        out = run_rounds([ShardWorker(A_t, B_t, kernel, rank)], t(C), D0, comm, cfg, ref,
                         denominator, is_main=(rank == 0), on_round=on_round)
        res = dict(out.__dict__)
        res.update(rank=rank, backend=backend, device=str(dev), store="file" if store_file else "env",
                   shard_bytes=shard_bytes, peak_rss_bytes=peak_rss_bytes(),
                   loaded_by_worker=loaded)
        return res
    finally:
        dist.destroy_process_group()


def _shard_arrays(A, B):
    """``(A, B, loaded)``: a worker's own arrays, read from the store by the worker itself when
    it was sent a :class:`eagle_dist.data.store.ShardRef` instead of arrays."""
    from ..data.store import ShardRef
    if isinstance(A, ShardRef):
        A, B = A.load()
        return A, B, True
    return A, B, False


def _own(x: np.ndarray, tdt, dev) -> torch.Tensor:
    """A tensor over an array this worker owns (no second copy of the shard on CPU)."""
    return torch.as_tensor(x, dtype=tdt, device=dev)


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


def init_group(device: str, timeout: float, expected_world: Optional[int] = None,
               on_round: Optional[Callable[[int], None]] = None):
    """Join the process group of this rank (every launcher: torchrun, the spawned-process
    backend, Ray actors) and return ``(rank, world, device, backend)``: NCCL on a CUDA device
    (one GPU per local rank), gloo on CPU with the cores shared among the local ranks. With
    ``EAGLE_DIST_STORE_FILE`` set the group meets through that ``FileStore`` after a start-up
    barrier bound by ``EAGLE_DIST_STARTUP_TIMEOUT`` (local runs: no TCP port), otherwise through
    torchrun's ``env://`` variables. ``on_round(0)`` marks the end of start-up."""
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
    if expected_world is not None and expected_world != world:
        raise ValueError(f"config says workers={expected_world} but WORLD_SIZE={world}; launch "
                         f"{expected_world} processes (torchrun --nproc_per_node={expected_world})")
    store_file = os.environ.get("EAGLE_DIST_STORE_FILE")
    if store_file:
        store = dist.FileStore(store_file, world)
        _start_barrier(store, rank, world,
                       float(os.environ.get("EAGLE_DIST_STARTUP_TIMEOUT", STARTUP_TIMEOUT_S)))
        store.set_timeout(timedelta(seconds=timeout))
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
    else:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))
    if on_round is not None:
        on_round(0)                                   # the group is formed: start-up is over
    return rank, world, dev, backend


def call_entry(kwargs: dict, on_round: Optional[Callable[[int], None]] = None):
    """Run a rank's work: ``kwargs["entry"]`` (``"module:function"``, imported here, so this
    package never imports its callers, e.g. ``eagle_dist.model``) or :func:`worker_main`."""
    kwargs = dict(kwargs)
    entry = kwargs.pop("entry", None)
    if entry is None:
        return worker_main(**kwargs, on_round=on_round)
    import importlib
    mod, _, fn = entry.partition(":")
    return getattr(importlib.import_module(mod), fn)(**kwargs, on_round=on_round)


#: seconds a rank may stay silent beyond ``timeout`` before the driver declares it lost
LIVENESS_GRACE_S = 5.0
#: default deadline for processes / actors to start and form the process group
STARTUP_TIMEOUT_S = 120.0


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


_PEER_ERRORS = ("gloo", "nccl", "Connection closed", "Read error", "Timed out", "timed out",
                "Connection reset")


def _failure(backend: str, failures: Dict[int, str], silent: List[int],
             notes: Optional[Dict[int, str]] = None) -> WorkerFailure:
    """One error naming the rank that failed first-hand; ranks that only lost a peer (their
    all-reduce errored or timed out) are listed after it, and ranks that never answered (hung)
    are named as the suspects when every reported error is only a lost peer. ``notes`` says
    what a silent rank was doing where that is known (e.g. waiting for its peers to start)."""
    def secondary(msg: str) -> bool:
        return any(k in msg for k in _PEER_ERRORS)
    notes = notes or {}
    order = sorted(failures, key=lambda r: (secondary(failures[r]), r))
    lines = [f"rank {r}: {failures[r]}" for r in order]
    lines += [f"rank {r}: {notes.get(r, 'never answered (hung or blocked in a collective)')}"
              for r in silent]
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


class _Heartbeat:
    """Writes the rank's last round to ``path`` (atomically; at most every 0.5 s, but always when
    the rank leaves start-up): ``-1`` while it starts and waits for its peers, ``r >= 0`` once the
    group is formed. The driver reads the phase from the content and liveness from the mtime."""

    def __init__(self, path: str):
        self.path, self._last, self._rnd = path, 0.0, None
        self(-1)

    def __call__(self, rnd: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or self._rnd is None or (self._rnd < 0) != (rnd < 0):
            self._last, self._rnd = now, rnd
            with open(self.path + ".tmp", "w") as f:
                f.write(str(rnd))
            os.replace(self.path + ".tmp", self.path)


def spawned_worker(path: str) -> None:
    """Entry of a worker process started by the ``torch`` backend (``python -m
    eagle_dist.distributed._spawn PAYLOAD``): a fresh interpreter, like torchrun's, so the caller's
    ``__main__`` is never re-imported. Reads then deletes the payload, beats ``PAYLOAD.hb`` every
    round, and writes ``PAYLOAD.out`` (result or error)."""
    import pickle
    import traceback
    with open(path, "rb") as f:
        kwargs = pickle.load(f)
    os.remove(path)                                   # nothing pickled lingers after start-up
    beat = _Heartbeat(path + ".hb")
    try:
        result = ("ok", call_entry(kwargs, on_round=beat))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, then re-raised
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
        result = ("error", f"{type(exc).__name__}: {exc}{where}")
        _write_result(path, result)
        raise
    _write_result(path, result)


def _write_result(path: str, result) -> None:
    import pickle
    with open(path + ".out.tmp", "wb") as f:
        pickle.dump(result, f)
    os.replace(path + ".out.tmp", path + ".out")


def _last_error_line(stderr: str) -> str:
    """The rank's own error from its stderr: the last line that is not part of a warning (a
    ``file:line: SomeWarning: ...`` line and the source line printed under it), without torch's
    ``[rankN]:`` prefix."""
    import re
    warning = re.compile(r":\d+: \w*Warning: |^\w*Warning: ")
    keep, source_next = [], False
    for ln in stderr.splitlines():
        ln = re.sub(r"^\[rank\d+\]:\s?", "", ln)
        if source_next and ln[:1].isspace():
            source_next = False
            continue
        source_next = bool(warning.search(ln))
        if not source_next and ln.strip() and not ln.strip().startswith("warnings.warn("):
            keep.append(ln.strip())
    return keep[-1] if keep else ""


def _death(code: int, err_path: str) -> str:
    """What a rank that exited without a result died of: its signal or exit code, and the last
    meaningful line of its stderr (the exception, not a warning)."""
    import signal
    try:
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - 65536))
            err = _last_error_line(f.read().decode(errors="replace"))
    except OSError:
        err = ""
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    elif code == 0:
        how = "exited (code 0) without a result"
    else:
        how = f"died (exit code {code})"
    return how + (f": {err}" if err else "")


def _loopback_env() -> Dict[str, str]:
    """Keep a local run's gloo connections on the loopback interface (gloo otherwise binds the
    address the host name resolves to, which may face the network)."""
    try:
        names = [n for _, n in socket.if_nameindex() if n.startswith("lo")]
    except (OSError, AttributeError):
        names = []
    return {"GLOO_SOCKET_IFNAME": names[0]} if names else {}


def _process_state(pid: int) -> str:
    """Linux process state letter ('T' stopped, 'Z' zombie, …) or '' when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _check_timeouts(timeout, startup_timeout) -> None:
    import numbers
    for name, v in (("timeout", timeout), ("startup_timeout", startup_timeout)):
        if not (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}={v!r} must be a positive, finite number of seconds")


def _read_phase(hb: str) -> Optional[int]:
    """A rank's heartbeat: ``None`` (no file yet: still starting the interpreter), ``-1`` (started,
    waiting for its peers) or the last round (the group is formed)."""
    try:
        with open(hb) as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return None


class _Terminated(BaseException):
    """Raised in the driver's main thread by SIGTERM so that clean-up runs."""

    def __init__(self, signum: int, old):
        super().__init__(f"driver received signal {signum}")
        self.signum, self.old = signum, old


def _on_sigterm():
    """Install a SIGTERM handler (main thread only, and only where SIGTERM is not ignored) that
    unwinds the driver through its clean-up; returns a restore function. After the clean-up,
    :func:`_die_of` hands the signal to the previous handler (the default: die of SIGTERM)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.getsignal(signal.SIGTERM)
    if old is None or old == signal.SIG_IGN:          # installed outside Python, or ignored
        return lambda: None

    def handler(signum, frame):
        raise _Terminated(signum, old)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def _die_of(term: "_Terminated", backend: str):
    """After the clean-up: re-deliver SIGTERM as the previous handler would have had it."""
    import signal
    signal.signal(signal.SIGTERM, term.old)
    if callable(term.old):
        term.old(term.signum, None)
    else:                                            # SIG_DFL: terminate as if never caught
        os.kill(os.getpid(), term.signum)
        time.sleep(1.0)
    raise WorkerFailure(f"{backend} backend: interrupted by signal {term.signum}; the run was "
                        "aborted and all workers stopped")


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

    workers = []
    for r, p in enumerate(payload):
        A, B, loaded = _shard_arrays(p["A"], p["B"])
        workers.append(ShardWorker(*((_own(x, tdt, dev) for x in (A, B)) if loaded
                                     else (t(A), t(B))), p["kernel"], r))
        del A, B
    ref = p0["reference"]
    ref_t = None if ref is None else torch.tensor(ref, dtype=torch.float64, device=dev)
    D0 = torch.zeros(workers[0].B.shape[0], p0["C"].shape[1], dtype=tdt, device=dev)
    out = run_rounds(workers, t(p0["C"]), D0, lambda x, op: x, p0["cfg"], ref_t, p0["denominator"],
                     is_main=True)
    res = dict(out.__dict__)
    res.update(rank=0, backend="inprocess", device=str(dev), peak_rss_bytes=peak_rss_bytes(),
               shard_bytes=sum((w.A.numel() + w.B.numel()) * w.A.element_size() for w in workers),
               loaded_by_worker=not isinstance(p0["A"], np.ndarray))
    return res


def _run_torch(payload: List[dict], world: int, timeout: float,
               startup_timeout: float = STARTUP_TIMEOUT_S) -> List[Dict[str, Any]]:
    import pickle
    import shutil
    import subprocess
    import sys
    import tempfile
    _check_timeouts(timeout, startup_timeout)
    tmp = tempfile.mkdtemp(prefix="eagle_dist_")          # 0700: private to this user
    procs, paths = [], []
    restore = _on_sigterm()
    terminated = None
    try:
        store = os.path.join(tmp, "store")
        t_start = time.monotonic()
        for r in range(world):
            path = os.path.join(tmp, f"rank{r}.pkl")
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                pickle.dump(payload[r], f)
            env = dict(os.environ, **_torch_env(r, world, "127.0.0.1", 0), **_loopback_env(),
                       EAGLE_DIST_STORE_FILE=store, EAGLE_DIST_PARENT_PID=str(os.getpid()),
                       EAGLE_DIST_STARTUP_TIMEOUT=repr(float(startup_timeout)))
            # stderr to a file, not a pipe: a chatty rank can never block on a full pipe
            with open(path + ".err", "wb") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "eagle_dist.distributed._spawn", path], env=env,
                    stdout=subprocess.DEVNULL, stderr=err))
            paths.append(path)
        results: Dict[int, Any] = {}
        failures: Dict[int, str] = {}
        notes: Dict[int, str] = {}
        judged = False
        limit = timeout + LIVENESS_GRACE_S
        deadline = None
        while len(results) + len(failures) < world:
            time.sleep(0.05)
            now = time.monotonic()
            starting: Dict[int, Optional[int]] = {}
            for r, (p, path) in enumerate(zip(procs, paths)):
                if r in results or r in failures:
                    continue
                code = p.poll()
                if os.path.exists(path + ".out"):
                    with open(path + ".out", "rb") as f:
                        kind, value = pickle.load(f)
                    if kind == "error":
                        failures[r] = value
                    else:
                        results[r] = value
                elif code is not None:
                    if code == 0 and os.path.exists(path + ".out"):
                        continue                          # wrote its result just now
                    failures[r] = _death(code, path + ".err")
                elif _process_state(p.pid) == "T":
                    failures[r] = "stopped (SIGSTOP / job control): it cannot make progress"
                else:
                    hb = path + ".hb"
                    phase = _read_phase(hb)
                    if phase is None or phase < 0:
                        starting[r] = phase
                    elif time.time() - os.path.getmtime(hb) > limit:
                        failures[r] = (f"no progress for more than timeout + {LIVENESS_GRACE_S:g} s"
                                       f" = {limit:g} s (hung outside a collective; last "
                                       f"heartbeat at round {phase})")
            if starting and now - t_start > startup_timeout and not judged:
                judged = True                             # one verdict on the whole start-up
                late = [r for r, ph in starting.items() if ph is None]
                for r, ph in starting.items():
                    if not late:
                        failures[r] = (f"did not form the process group within startup_timeout"
                                       f" = {startup_timeout:g} s")
                    elif ph is None:
                        failures[r] = (f"did not start within startup_timeout = "
                                       f"{startup_timeout:g} s (interpreter / imports not done)")
                    else:
                        notes[r] = f"started, waiting for rank(s) {late} to start"
            if failures:
                # give peers a moment to report, so the first-hand failure can be named
                deadline = deadline or time.monotonic() + 2.0
                if time.monotonic() > deadline:
                    break
        if failures:
            raise _failure("torch", failures,
                           [r for r in range(world) if r not in results and r not in failures],
                           notes)
        return [results[r] for r in range(world)]
    except _Terminated as exc:
        terminated = exc
    finally:
        restore()
        import signal as _signal
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(_signal.SIGCONT)        # a stopped rank cannot act on SIGTERM
                except OSError:
                    pass
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    if terminated is not None:                        # cleaned up; now die of the signal
        _die_of(terminated, "torch")


_RAY_STARTED_HERE = False


def _ray_actor_class():
    import ray

    @ray.remote(max_concurrency=2)          # a second thread answers progress() during run()
    class ShardActor:
        """One column shard; sets torchrun's variables and runs :func:`worker_main`."""

        def __init__(self):
            self._round, self._beat = -1, time.monotonic()

        def address(self):
            import ray as _ray
            return _ray.util.get_node_ip_address(), _free_port()

        def pid(self):
            return os.getpid()

        def progress(self):
            """``(last round, seconds since it)``: the driver's liveness probe."""
            return self._round, time.monotonic() - self._beat

        def _on_round(self, rnd: int) -> None:
            self._round, self._beat = rnd, time.monotonic()

        def run(self, env: Dict[str, str], kwargs: dict):
            os.environ.update(env)
            self._on_round(-1)                  # start-up; worker_main reports 0 once grouped
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():   # a pooled actor's last group
                dist.destroy_process_group()
            return call_entry(kwargs, on_round=self._on_round)

    return ShardActor


def _check_ray_address(address: str, wait_s: float = 5.0) -> None:
    """Refuse an unreachable cluster address within ``wait_s`` (``ray.init`` itself retried for
    minutes). ``auto``/``local`` are left to Ray."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address={address!r}: expected 'host:port' or 'ray://host:port' (or None "
                         "to start Ray locally)")
    try:
        with socket.create_connection((host, int(port)), timeout=wait_s):
            pass
    except OSError as exc:
        raise WorkerFailure(f"ray backend: the cluster address {address!r} did not accept a "
                            f"connection within {wait_s:g} s ({exc}); check that the Ray head is "
                            "running and reachable, or pass address=None to start Ray locally") from None


def _connect_ray(address: str, wait_s: float) -> None:
    """``ray.init(address=...)`` retries for many minutes against a port that is open but is not
    (or no longer) a Ray head: connect once in a throw-away process first, killed after
    ``wait_s``, so that this process never blocks."""
    import subprocess
    import sys
    code = ("import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, "
            "logging_level='ERROR'); ray.shutdown()")
    try:
        r = subprocess.run([sys.executable, "-c", code, address], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=wait_s)
    except subprocess.TimeoutExpired:
        raise WorkerFailure(f"ray backend: could not connect to the Ray cluster at address="
                            f"{address!r} within startup_timeout = {wait_s:g} s; check that it is a "
                            "running Ray head (ray status), or pass address=None to start Ray "
                            "locally") from None
    if r.returncode != 0:
        why = _last_error_line(r.stderr.decode(errors="replace"))
        raise WorkerFailure(f"ray backend: could not connect to the Ray cluster at address="
                            f"{address!r}: {why}")


def _run_ray(payload: List[dict], world: int, timeout: float, address: Optional[str],
             startup_timeout: float = STARTUP_TIMEOUT_S) -> List[Dict[str, Any]]:
    try:
        import ray
        from ray.exceptions import GetTimeoutError
    except ImportError as exc:
        raise ValueError("backend='ray' needs Ray: pip install 'eagle-dist[ray]'") from exc
    _check_timeouts(timeout, startup_timeout)
    global _RAY_STARTED_HERE
    if address:
        _check_ray_address(address)
    if not ray.is_initialized():
        _RAY_POOL.clear()                     # handles from an earlier Ray session are stale
        if address:
            _connect_ray(address, startup_timeout)
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
    key = (world, tuple(sorted(opts.items())))
    pooled = _RAY_POOL.pop(key, None)
    if pooled is not None:
        actors = pooled
    else:
        # pooled actors of another shape hold their CPUs/GPUs: free them first, or the new
        # actors may never be placed (one pooled shape at a time)
        release_ray_actors()
        Actor = _ray_actor_class()
        actors = [Actor.options(**opts).remote() for _ in range(world)]
    restore = _on_sigterm()
    terminated = None
    reusable = False
    try:
        if pooled is not None:                # reused actors must still answer, or start afresh
            try:
                ray.get([a.pid.remote() for a in actors], timeout=min(10.0, startup_timeout))
            except Exception:  # noqa: BLE001 - dead / stale handles: replace them all
                _kill_actors(actors)
                Actor = _ray_actor_class()
                actors = [Actor.options(**opts).remote() for _ in range(world)]
        # start-up: every actor placed and answering, within one deadline; name the ones not
        ready = [a.pid.remote() for a in actors]
        t_end = time.monotonic() + startup_timeout
        waiting = list(ready)
        while waiting and time.monotonic() < t_end:
            _, waiting = ray.wait(waiting, num_returns=len(waiting),
                                  timeout=max(0.0, min(1.0, t_end - time.monotonic())))
        failures = {}
        for r, ref in enumerate(ready):
            if ref in waiting:
                failures[r] = (f"actor did not start within startup_timeout = {startup_timeout:g} s"
                               f" (it needs {opts}; cluster resources: {dict(res)})")
            else:
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the actor died while starting
                    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                    failures[r] = f"actor failed to start: {type(exc).__name__}: " + \
                        (lines[-1] if lines else "")
        if failures:
            raise _failure("ray", failures, [])
        try:
            addr, port = ray.get(actors[0].address.remote(), timeout=startup_timeout)
        except GetTimeoutError:
            raise _failure("ray", {0: f"did not answer within startup_timeout = "
                                      f"{startup_timeout:g} s"}, []) from None
        refs = [a.run.remote(_torch_env(r, world, addr, port), payload[r])
                for r, a in enumerate(actors)]
        results: Dict[int, Any] = {}
        failures: Dict[int, str] = {}
        pending = list(refs)
        probes: Dict[int, Any] = {}                         # rank -> (ref, sent at)
        limit = timeout + LIVENESS_GRACE_S
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
            # liveness: a rank that does not report progress for `timeout` + grace is lost
            now = time.monotonic()
            for r, a in enumerate(actors):
                if r in results or r in failures:
                    continue
                if r in probes:
                    ref, sent = probes[r]
                    ready, _ = ray.wait([ref], timeout=0)
                    if ready:
                        del probes[r]
                        try:
                            rnd, silent = ray.get(ref)
                        except Exception:  # noqa: BLE001 - its run() reports the death
                            continue
                        if silent > (startup_timeout if rnd < 0 else limit):
                            failures[r] = (f"no progress for {silent:.0f} s after round {rnd} "
                                           "(hung outside a collective)")
                    elif now - sent > limit:
                        failures[r] = (f"did not answer a liveness probe for {now - sent:.0f} s "
                                       "(process stopped or wedged)")
                else:
                    probes[r] = (a.progress.remote(), now)
            if failures:
                deadline = deadline or time.monotonic() + 2.0
                if time.monotonic() > deadline:
                    break
        if failures:
            raise _failure("ray", failures,
                           [r for r in range(world) if r not in results and r not in failures])
        reusable = RAY_REUSE_ACTORS
        return [results[r] for r in range(world)]
    except _Terminated as exc:
        terminated = exc
    finally:
        restore()
        if reusable and key not in _RAY_POOL:
            _RAY_POOL[key] = actors          # healthy: the next run of this shape reuses them
        else:
            _kill_actors(actors)
    if terminated is not None:                        # cleaned up; now die of the signal
        _die_of(terminated, "ray")


def run_ranks(payloads: List[dict], backend: str = "torch", *, timeout: float = 60.0,
              startup_timeout: float = STARTUP_TIMEOUT_S,
              address: Optional[str] = None) -> List[Dict[str, Any]]:
    """Start one rank per payload on the ``torch`` (local processes) or ``ray`` (actors)
    backend, each running :func:`call_entry` (``payload["entry"]``; default the solver's
    :func:`worker_main`), with the same start-up deadline, liveness checks, failure reports and
    clean-up as a distributed solve. Returns the ranks' results in rank order."""
    world = len(payloads)
    if backend == "torch":
        return _run_torch(payloads, world, timeout, startup_timeout)
    if backend == "ray":
        return _run_ray(payloads, world, timeout, address, startup_timeout)
    raise ValueError(f"backend={backend!r}; use 'torch' (local processes) or 'ray' (actors)")


#: Reuse the Ray actors of a run that ended cleanly for the next run with the same number of
#: ranks and resources (an actor's start-up — a Python interpreter importing torch — costs
#: seconds per actor, often more than the solve). One shape is kept at a time: a run of another
#: shape releases them first, since pooled actors hold their CPU/GPU reservations. Actors of a
#: run that failed, hung or was interrupted are always killed. False: fresh actors every run.
RAY_REUSE_ACTORS = True
_RAY_POOL: Dict[tuple, list] = {}


def release_ray_actors() -> None:
    """Kill the pooled actors kept for reuse (Ray itself stays up)."""
    while _RAY_POOL:
        _kill_actors(_RAY_POOL.popitem()[1])


def _kill_actors(actors) -> None:
    import ray
    for a in actors:
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001 - already dead, or Ray gone
            pass


def shutdown_ray() -> None:
    """Stop the local Ray instance this module started (no-op when connected to a cluster);
    pooled actors are released either way."""
    global _RAY_STARTED_HERE
    release_ray_actors()
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
    if method == "cg":
        if mode != "auto":
            raise ValueError(f"mode={mode!r} is for method='eagle'; distributed CG has one form "
                             "(all-reduce P·A Aᵀ, n'·n numbers a round): leave mode='auto'")
        return "cg"
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

    if method not in ("eagle", "gd", "cg"):
        raise ValueError(f"method={method!r} has no distributed form; use 'eagle', 'gd' or 'cg'")
    if method == "cg":
        given = [k for k, v in (("eta", eta), ("gamma", gamma), ("kernel", kernel),
                                ("rcond", rcond)) if v is not None]
        given += [k for k, v in (("accelerate", accelerate),
                                 ("normalization", normalization != "local")) if v]
        if given:
            raise ValueError(f"{given} do not apply to method='cg' (CG on the normal equations "
                             "has no step sizes, kernel or normalisation)")
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
    custom = kernel is not None and not isinstance(kernel, EagleKernel)
    if normalization not in ("local", "global") and not (custom and normalization == "none"):
        raise ValueError(f"normalization={normalization!r}; use 'local' or 'global' ('none' only "
                         "with a custom kernel that works on the data's own scale)")
    if custom and getattr(kernel, "fixed_shape", False) and verify:
        raise ValueError(f"{type(kernel).__name__} works on blocks of a fixed shape and cannot "
                         "carry the probe column of verify=True; pass verify=False (its result is "
                         "then reported as unverified)")
    if not real(timeout) or not (timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a positive, finite number of seconds "
                         "(how long a collective may wait for a silent worker)")
    if not isinstance(verify, (bool, np.bool_)):
        raise ValueError(f"verify={verify!r} must be True or False")
    if rcond is not None and not (real(rcond) and 0.0 < rcond < 1.0):
        raise ValueError(f"rcond={rcond!r} must lie in (0, 1) (default sqrt(eps))")
    if custom and mode == "auto":
        mode = "paper"                     # a learned/custom layer is the paper's local kernel
    mode = choose_mode(mode, problem.n, problem.n_query, problem.d_query, method)
    if custom and mode == "gram":
        raise ValueError("a custom kernel runs in the paper's mode (mode='paper'): the Gram mode "
                         "is the centralized EAGLE update")
    from ..data.store import ColumnStore, ShardRef
    store = problem if isinstance(problem, ColumnStore) else None
    shard_idx = make_shards(problem.d, workers, shards, seed=opts.seed)
    if kernel is None:
        kernel = EagleKernel(eta=eta, gamma=gamma, rcond=rcond)
    elif not callable(kernel):
        raise TypeError("kernel must be callable as kernel(A, B, C, D) -> (A, B, C, D)")
    dtype = "float32" if resolve_dtype(opts.dtype, problem.dtype) == torch.float32 else "float64"
    want_ref = opts.record_error or opts.target_error is not None
    if store is not None:
        # the driver never reads A or B: scales from the manifest, shards read by the workers
        C_raw = store.load_C()
        s_a, s_b = pow2_of(np.array([store.max_abs_A])), pow2_of(np.array([store.max_abs_B]))
        s_c = pow2_of(C_raw)
    else:
        C_raw = problem.C
        s_a, s_b, s_c = pow2_of(problem.A), pow2_of(problem.B), pow2_of(problem.C)
    if custom and getattr(kernel, "scale_invariant", True) is False:
        s_a = s_b = s_c = 1.0              # a trained model sees the data as it is
    unscale = s_b * s_c / s_a
    cfg = RoundConfig(workers=workers, normalization=normalization, accelerate=accelerate,
                      opts=opts, fault=fault, mode=mode, verify=bool(verify), unscale=unscale,
                      method="cg" if method == "cg" else "eagle")
    C = C_raw.astype(np.float64) / s_c
    if store is not None:
        ref, den = store_reference(store) if want_ref else (None, None)
        ref = None if ref is None else ref / unscale
        den = None if den is None else den / unscale
        contiguous = isinstance(shards, str) and shards == "contiguous"
        parts = [ShardRef(str(store.path), (int(s[0]), int(s[-1]) + 1) if contiguous else s,
                          scale_A=s_a, scale_B=s_b) for s in shard_idx]
        return [dict(A=ref_, B=None, C=C, reference=ref, denominator=den, kernel=kernel, cfg=cfg,
                     dtype=dtype, device=opts.device or "auto", timeout=timeout)
                for ref_ in parts]
    A = problem.A.astype(np.float64) / s_a
    B = problem.B.astype(np.float64) / s_b
    ref = problem.reference / unscale if want_ref else None
    den = problem.error_denominator / unscale if want_ref else None
    return [dict(A=np.ascontiguousarray(A[:, s]), B=np.ascontiguousarray(B[:, s]), C=C,
                 reference=ref, denominator=den, kernel=kernel, cfg=cfg, dtype=dtype,
                 device=opts.device or "auto", timeout=timeout)
            for s in shard_idx]


def store_reference(store) -> "tuple[np.ndarray, float]":
    """``(reference, denominator)`` of a column store without reading A: its ``D_true`` (the
    known answer it was written with). A store without one has no reference at this scale; ask
    for it explicitly (``store.to_problem().reference`` loads the whole of A on this machine)."""
    D = store.load_D_true()
    if D is None:
        raise ValueError(f"record_error / target_error need a reference, and store {store.path} "
                         "has no D_true (the driver never reads A to compute B A⁺ C). Solve with "
                         "record_error=False (CLI: --no-reference) and rely on the residual "
                         "certificate, or write the store with a known answer")
    from ..result import safe_norm
    den = safe_norm(D)
    if not den > 0:                     # D̂ = 0: measure against the data scale ‖B‖‖C‖/‖A‖_F
        den = store.fro_B * safe_norm(store.load_C()) / max(store.fro_A, 1e-300)
    return D, float(den)


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
                best_iteration=out.get("best_iteration", 0), device=out.get("device", ""),
                rendezvous=out.get("store", "inprocess"))
    if cfg.method == "cg":
        info["check_rule"] = "min(S1, S2) of LSQR on B - W A"
    elif isinstance(kernel, EagleKernel):
        info.update(eta=kernel.eta, gamma=kernel.gamma)
    else:
        info["kernel"] = type(kernel).__name__
    if cfg.accelerate:
        frozen = [f for o in outs for f in o["frozen_at"]]
        info["ab_frozen_at_min"], info["ab_frozen_at_max"] = int(min(frozen)), int(max(frozen))
    has_ref = outs[0]["reference"] is not None
    info.update(worker_peak_rss_bytes=max(int(o.get("peak_rss_bytes", 0)) for o in outs),
                shard_bytes_max=max(int(o.get("shard_bytes", 0)) for o in outs),
                driver_peak_rss_bytes=peak_rss_bytes(),
                loaded_by_worker=bool(out.get("loaded_by_worker", False)))
    if has_ref:
        from ..data.store import ColumnStore
        if isinstance(problem, ColumnStore):
            from ..result import relative_error
            ref, den = store_reference(problem)
            error = relative_error(D, ref, den)
        else:
            error = problem.error(D)
    else:
        error = float("nan")
    return SolveResult(
        D=D, status=status, iterations=out["rounds"], time_s=wall, history=hist,
        method=method, regime="distributed", backend=backend, workers=cfg.workers,
        bytes_per_worker_per_round=out["bytes_per_round"],
        bytes_total=cfg.workers * (out.get("bytes_sent", 0) + out["setup_bytes"]),
        error=error, info=info)


def solve_distributed(problem, opts: SolverOptions, *, method: str = "eagle", workers: int = 2,
                      backend: str = "inprocess", shards="contiguous", eta: Optional[float] = None,
                      gamma: Optional[float] = None, normalization: str = "local",
                      accelerate: bool = False, timeout: float = 60.0,
                      address: Optional[str] = None, kernel=None,
                      fault: Optional[FaultInjection] = None, mode: str = "auto",
                      verify: bool = True, rcond: Optional[float] = None,
                      startup_timeout: float = STARTUP_TIMEOUT_S) -> SolveResult:
    """Distributed EAGLE (``method="eagle"``), distributed GD (``"gd"``, η = 0) or distributed
    CG on the normal equations (``"cg"``: all-reduce ``P·A Aᵀ`` each round; see
    :mod:`eagle_dist.distributed.worker`).

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
        _check_timeouts(timeout, startup_timeout)
        outs = _run_torch(payload, workers, timeout, startup_timeout) if backend == "torch" else \
            _run_ray(payload, workers, timeout, address, startup_timeout)
        name = f"{backend}/{outs[0]['backend']}"
    else:
        raise ValueError(f"backend={backend!r}; use 'inprocess', 'torch' or 'ray'")
    for o, p in zip(outs, payload):
        o.update(cfg=p["cfg"], kernel=p["kernel"], dtype=p["dtype"], reference=p["reference"])
    return assemble(problem, outs, method=method, backend=name, wall=time.perf_counter() - t0,
                    shards=shards)

