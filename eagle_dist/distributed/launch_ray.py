"""The ``ray`` launcher: one actor per rank (``num_gpus=1`` each when the cluster has a GPU for
every rank); the actors learn their layout (node, local rank), set torchrun's variables and call
the same rank code (the pattern of Ray Train's torch backend).

Where Ray runs (the way Ray's own libraries decide): ``address=None`` joins the cluster named by
``RAY_ADDRESS`` when it is set (as inside ``ray job submit``, or after ``ray start --head; export
RAY_ADDRESS=…``), and otherwise starts a private local instance; ``address="auto"`` joins the
cluster ``RAY_ADDRESS`` or the latest ``ray start`` names (an error when there is none);
``"host:port"`` / ``"ray://host:port"`` join that cluster. ``num_cpus`` is passed only when Ray is
started here. A cluster address that refuses TCP within 5 s is refused at once, and the first
connection is tried in a throw-away process killed after ``startup_timeout`` (``ray.init``
itself retries for minutes against a port that is open but is not a Ray head).

The group meets through a ``TCPStore`` that rank 0 serves on a socket its actor bound to one
address: loopback when every rank is on one host (a local cluster), else rank 0's node address —
never every interface; gloo stays on loopback on one host. The group is destroyed at the end of
every run, so a pooled actor holds no open rendezvous between runs.

Actors of a run that ended cleanly are kept for the next run of the same shape (:data:`RAY_REUSE_
ACTORS`): an actor's start-up (a Python process importing torch) costs seconds to tens of seconds
on a busy machine. One shape is pooled at a time, since pooled actors hold their CPU/GPU
reservations. When the CPUs the new actors need are held (a second concurrent solve, a stopped
pooled actor, another job), a Ray instance started here fails at once with the numbers and the
holders; on a cluster the same numbers are logged at once (an autoscaler may add nodes) and
reported again at the start-up deadline.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from .launch_torch import loopback_env, torch_env
from .rank import call_entry
from .supervise import Launcher, RankState, WorkerFailure, last_error_line

log = logging.getLogger(__name__)

#: Reuse the actors of a run that ended cleanly for the next run with the same number of ranks and
#: resources. Actors of a run that failed, hung or was interrupted are always killed. False: fresh
#: actors every run.
RAY_REUSE_ACTORS = True
_RAY_POOL: Dict[tuple, list] = {}
_RAY_STARTED_HERE = False
#: seconds to wait for the CPUs of just-killed actors to come back before judging the cluster full
RELEASE_WAIT_S = 5.0


def _actor_class():
    import ray

    @ray.remote(max_concurrency=2)          # a second thread answers progress() during run()
    class ShardActor:
        """One rank: reports where it runs, binds rank 0's rendezvous socket, runs the rank."""

        def __init__(self):
            self._round, self._beat, self._sock = -1, time.monotonic(), None

        def pid(self) -> int:
            return os.getpid()

        def hello(self):
            """``(pid, node id, node address)``: the start-up ping and the layout."""
            import ray as _ray
            return (os.getpid(), _ray.get_runtime_context().get_node_id(),
                    _ray.util.get_node_ip_address())

        def listen(self, host: str) -> int:
            """Bind rank 0's rendezvous socket to ``host`` only (never every interface)."""
            if self._sock is not None:
                self._sock.close()
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind((host, 0))
            self._sock.listen(128)
            return self._sock.getsockname()[1]

        def progress(self):
            """``(last round, seconds since it)``: the driver's liveness probe."""
            return self._round, time.monotonic() - self._beat

        def _on_round(self, rnd: int) -> None:
            self._round, self._beat = rnd, time.monotonic()

        def run(self, env: Dict[str, str], payload):
            os.environ.update(env)
            if self._sock is not None:          # rank 0: the TCPStore takes over the socket
                os.environ["EAGLE_DIST_MASTER_FD"] = str(self._sock.detach())
                self._sock = None
            self._on_round(-1)                  # start-up; the rank reports 0 once grouped
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():   # left by a crashed entry
                dist.destroy_process_group()
            return call_entry(payload, on_round=self._on_round)

    return ShardActor


def resolve_address(address: Optional[str]) -> Optional[str]:
    """The cluster to join (``None``: start a private local instance), as described above."""
    if address is None:
        return os.environ.get("RAY_ADDRESS") or None
    if address == "local":
        return None
    return address


def connect(address: Optional[str], world: int, startup_timeout: float) -> None:
    """Initialise Ray in this process (once) per :func:`resolve_address`. An explicit cluster
    address is checked for reachability even when Ray is already up here."""
    import ray
    global _RAY_STARTED_HERE
    if address not in (None, "auto", "local"):
        _check_address(address)
    if ray.is_initialized():
        return
    _RAY_POOL.clear()                       # handles from an earlier Ray session are stale
    target = resolve_address(address)
    if target is None:
        ray.init(address="local", num_cpus=max(2, min(os.cpu_count() or 2, world)),
                 include_dashboard=False, log_to_driver=False)
        _RAY_STARTED_HERE = True
        return
    if target != "auto" and address is None:
        _check_address(target)              # from RAY_ADDRESS (an explicit one is checked above)
    _connect_in_subprocess(target, startup_timeout)
    ray.init(address=target, log_to_driver=False)      # never num_cpus: the cluster has its own


def _check_address(address: str, wait_s: float = 5.0) -> None:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address={address!r}: expected 'host:port', 'ray://host:port' or 'auto' "
                         "(or None: RAY_ADDRESS if set, else a local Ray)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=wait_s):
            pass
    except OSError as exc:
        raise WorkerFailure(f"ray backend: the cluster address {address!r} did not accept a "
                            f"connection within {wait_s:g} s ({exc}); check that the Ray head is "
                            "running and reachable, or pass address=None (and unset RAY_ADDRESS) "
                            "to start Ray locally") from None


def _connect_in_subprocess(address: str, wait_s: float) -> None:
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
        why = last_error_line(r.stderr.decode(errors="replace"))
        raise WorkerFailure(f"ray backend: could not connect to the Ray cluster at address="
                            f"{address!r}: {why}")


def cpus_per_actor(world: int) -> float:
    """CPUs to reserve per actor: 1, or the largest ``1/k`` for which the cluster's nodes (each
    packed separately: an actor cannot span nodes) hold ``world`` actors; 1/world at least."""
    import ray
    per_node = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    for k in range(1, world + 1):
        if sum(int(c * k + 1e-9) for c in per_node) >= world:
            return 1.0 / k
    return 1.0 / world


def _resources(wait_s: float, need: float) -> "tuple[float, float]":
    """``(free CPUs, total CPUs)``, waiting up to ``wait_s`` while the free count is below
    ``need`` (the CPUs of just-killed actors come back asynchronously)."""
    import ray
    t_end = time.monotonic() + wait_s
    while True:
        free = float(ray.available_resources().get("CPU", 0.0))
        if free >= need - 1e-9 or time.monotonic() >= t_end:
            return free, float(ray.cluster_resources().get("CPU", 0.0))
        time.sleep(0.2)


def _holders() -> str:
    """Who holds the cluster's CPUs, as far as the GCS actor table says."""
    import ray
    try:
        from ray._private.state import state
        me = ray.get_runtime_context().get_job_id()
        alive: Dict[str, List[str]] = {}
        for a in state.actor_table(None).values():
            if a.get("State") != "ALIVE":
                continue
            cls = str(a.get("ActorClassName", "?")).rsplit(".", 1)[-1]
            who = "this driver" if a.get("JobID") == me else f"job {a.get('JobID')}"
            alive.setdefault(f"{cls} actors of {who}", []).append(str(a.get("Pid", "?")))
    except Exception:  # noqa: BLE001 - a private API: say what we can
        return "other actors or tasks of this cluster"
    if not alive:
        return "tasks (no live actors) of this cluster"
    return "; ".join(f"{len(p)} {k} (pids {', '.join(p)})" for k, p in alive.items())


class RayLauncher(Launcher):
    name = "ray"

    def __init__(self, address: Optional[str] = None):
        self.address = address
        self.actors: list = []
        self.key: tuple = ()
        self.opts: Dict[str, float] = {}
        self.phase = "launching"
        self.hello: list = []
        self.where: Dict[int, tuple] = {}
        self.listen_ref = None
        self.runs: list = []
        self.probes: Dict[int, tuple] = {}
        self.last: Dict[int, RankState] = {}
        self.failed: Dict[int, str] = {}
        self.shortage = ""

    # -- start-up ---------------------------------------------------------------------------
    def start(self, payloads: List[Any], timeout: float, startup_timeout: float) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("backend='ray' needs Ray: pip install 'eagle-dist[ray]'") from exc
        self.payloads, self.world, self.startup_timeout = payloads, len(payloads), startup_timeout
        connect(self.address, self.world, startup_timeout)
        res = ray.cluster_resources()
        self.opts = {"num_cpus": cpus_per_actor(self.world)}
        if res.get("GPU", 0) >= self.world:
            self.opts["num_gpus"] = 1
        self.key = (self.world, tuple(sorted(self.opts.items())))
        pooled = _RAY_POOL.pop(self.key, None)
        if pooled is not None:             # reused actors must still answer, or start afresh
            try:
                ray.get([a.pid.remote() for a in pooled], timeout=min(10.0, startup_timeout))
                self.actors = pooled
            except Exception:  # noqa: BLE001 - dead / stale handles: replace them all
                _kill(pooled)
        if not self.actors:
            release_ray_actors()           # another shape's pooled actors hold their CPUs/GPUs
            self._check_cpus()
            Actor = _actor_class()
            self.actors = [Actor.options(**self.opts).remote() for _ in range(self.world)]
        self.hello = [a.hello.remote() for a in self.actors]

    def _check_cpus(self) -> None:
        need = self.opts["num_cpus"] * self.world
        free, total = _resources(RELEASE_WAIT_S, need)
        if free >= need - 1e-9:
            return
        self.shortage = (f"{self.world} actors need {need:g} CPU ({self.opts['num_cpus']:g} each) "
                         f"but only {free:g} of the cluster's {total:g} CPUs are free; they are "
                         f"held by {_holders()}")
        if _RAY_STARTED_HERE:
            raise WorkerFailure(
                f"ray backend: {self.shortage}. Nothing can start until they are released: wait "
                "for that work to finish or stop it (shutdown_ray() releases this process's "
                "pooled actors), or use fewer workers")
        log.warning("ray backend: %s; waiting up to startup_timeout = %g s for them (or for an "
                    "autoscaler to add nodes)", self.shortage, self.startup_timeout)

    def late(self, rank: int, startup_timeout: float) -> str:
        import ray
        now = (f"free CPUs now {ray.available_resources().get('CPU', 0.0):g} of "
               f"{ray.cluster_resources().get('CPU', 0.0):g}, which counts this run's own "
               "actors still starting: on a busy machine raise startup_timeout")
        return (f"actor did not start within startup_timeout = {startup_timeout:g} s (it needs "
                f"{self.opts}; {self.shortage or now})")

    def _layout(self) -> "tuple[str, List[Dict[str, str]]]":
        """The rendezvous host and torchrun's variables for every rank, from the nodes the actors
        landed on (``LOCAL_RANK`` counts ranks on the same node, ``NODE_RANK`` the nodes in the
        order of their first rank)."""
        nodes: List[str] = []
        for r in range(self.world):
            if self.where[r][1] not in nodes:
                nodes.append(self.where[r][1])
        one_host = len({w[2] for w in self.where.values()}) == 1
        host = "127.0.0.1" if one_host else self.where[0][2]
        return host, [dict(torch_env(r, self.world, host, 0,
                                     local_rank=sum(self.where[q][1] == self.where[r][1]
                                                    for q in range(r)),
                                     local_world=sum(w[1] == self.where[r][1]
                                                     for w in self.where.values()),
                                     node_rank=nodes.index(self.where[r][1])),
                           EAGLE_DIST_TCP_STORE="1",
                           EAGLE_DIST_STARTUP_TIMEOUT=repr(float(self.startup_timeout)),
                           **(loopback_env() if one_host else {}))
                      for r in range(self.world)]

    # -- observation ------------------------------------------------------------------------
    def _pending(self) -> list:
        if self.phase == "launching":
            return [h for r, h in enumerate(self.hello) if r not in self.where
                    and r not in self.failed]
        if self.phase == "address":
            return [self.listen_ref]
        return [ref for r, ref in enumerate(self.runs) if self.last.get(r, RankState("x")).kind
                not in ("done", "failed")]

    def wait(self, seconds: float) -> None:
        import ray
        pending = self._pending()
        if pending:
            ray.wait(pending, num_returns=1, timeout=max(seconds, 0.5))
        else:
            time.sleep(seconds)

    def poll(self) -> Dict[int, RankState]:
        import ray
        if self.phase == "launching":
            pending = self._pending()
            ready = ray.wait(pending, num_returns=len(pending), timeout=0)[0] if pending else []
            for r, ref in enumerate(self.hello):
                if ref in ready and r not in self.where and r not in self.failed:
                    try:
                        self.where[r] = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the actor died while starting
                        self.failed[r] = "actor failed to start: " + _last_line(exc)
            if len(self.where) == self.world:
                self.host, self.envs = self._layout()
                self.listen_ref = self.actors[0].listen.remote(self.host)
                self.phase = "address"
            return {r: RankState("failed", self.failed[r]) if r in self.failed else
                    RankState("waiting" if r in self.where else "launching")
                    for r in range(self.world)}
        if self.phase == "address":
            ready, _ = ray.wait([self.listen_ref], timeout=0)
            if not ready:
                return {r: RankState("waiting") for r in range(self.world)}
            try:
                port = ray.get(self.listen_ref)
            except Exception as exc:  # noqa: BLE001
                return {r: RankState("failed", "could not bind the rendezvous socket: "
                                     + _last_line(exc)) if r == 0 else RankState("waiting")
                        for r in range(self.world)}
            for env in self.envs:
                env["MASTER_PORT"] = str(port)
            self.runs = [a.run.remote(self.envs[r], self.payloads[r])
                         for r, a in enumerate(self.actors)]
            self.phase = "running"
            return {r: RankState("waiting") for r in range(self.world)}
        return self._poll_running(ray)

    def _poll_running(self, ray) -> Dict[int, RankState]:
        now = time.monotonic()
        pending = self._pending()
        done = ray.wait(pending, num_returns=len(pending), timeout=0)[0] if pending else []
        for r, ref in enumerate(self.runs):
            if self.last.get(r, RankState("x")).kind in ("done", "failed"):
                continue
            if ref in done:
                try:
                    self.last[r] = RankState("done", ray.get(ref))
                except Exception as exc:  # RayActorError (death) or RayTaskError (raised)
                    pid, node, ip = self.where[r]
                    self.last[r] = RankState("failed", f"{type(exc).__name__}: {_last_line(exc)} "
                                                       f"(actor pid {pid} on node {ip} {node[:12]})")
                continue
            st = self.last.get(r, RankState("waiting"))
            if r in self.probes:
                probe, sent = self.probes[r]
                if ray.wait([probe], timeout=0)[0]:
                    del self.probes[r]
                    try:
                        rnd, silent = ray.get(probe)
                        st = RankState("waiting") if rnd < 0 else RankState("running", rnd, silent)
                    except Exception:  # noqa: BLE001 - its run() reports the death
                        pass
                elif now - sent > 1.0:
                    st = RankState("running", st.value if st.kind == "running" else -1,
                                   max(st.silent_s, now - sent),
                                   "the process is stopped or wedged: it did not answer a "
                                   "liveness probe")
            else:
                self.probes[r] = (self.actors[r].progress.remote(), now)
            self.last[r] = st
        return dict(self.last)

    def stop(self, clean: bool) -> None:
        if not self.actors:
            return
        if clean and RAY_REUSE_ACTORS and self.key not in _RAY_POOL:
            _RAY_POOL[self.key] = self.actors    # healthy: the next run of this shape reuses them
        else:
            _kill(self.actors)


def _last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _kill(actors) -> None:
    import ray
    for a in actors:
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001 - already dead, or Ray gone
            pass


def release_ray_actors() -> None:
    """Kill the pooled actors kept for reuse (Ray itself stays up)."""
    while _RAY_POOL:
        _kill(_RAY_POOL.popitem()[1])


def shutdown_ray() -> None:
    """Stop the local Ray instance this module started (no-op when connected to a cluster);
    pooled actors are released either way."""
    global _RAY_STARTED_HERE
    release_ray_actors()
    if _RAY_STARTED_HERE:
        import ray
        ray.shutdown()
        _RAY_STARTED_HERE = False


__all__ = ["RayLauncher", "RAY_REUSE_ACTORS", "release_ray_actors", "shutdown_ray", "connect",
           "resolve_address"]
