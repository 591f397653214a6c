"""The ``torch`` launcher: one fresh Python process per rank on this machine, each given torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, …) and started as ``python -m
eagle_dist.distributed.torchrun --rank-payload FILE`` — a fresh interpreter like torchrun's, so
the caller's ``__main__`` is never re-imported.

The group meets through a ``FileStore`` in a private (0700) temp folder, so no port is opened at
all, and gloo stays on the loopback interface. Payloads are pickled into 0600 files that the rank
deletes as soon as it has read them. A rank writes its phase and last round to a heartbeat file
(``-1`` while it starts and waits for its peers, ``r ≥ 0`` once grouped; liveness from the
mtime) and its result or error to ``FILE.out``; its stderr goes to a file (never a pipe that could
fill), whose last meaningful line names the error of a rank that dies. Ranks die with the driver
even on SIGKILL (Linux parent-death signal, elsewhere a watchdog thread); a rank that finds its
driver already gone removes the run folder.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from .supervise import Launcher, RankState, last_error_line

#: the command-line flag that marks a rank process of this launcher
RANK_FLAG = "--rank-payload"


def torch_env(rank: int, world: int, addr: str, port: int, local_rank: Optional[int] = None,
              local_world: Optional[int] = None, node_rank: int = 0) -> Dict[str, str]:
    """torchrun's variables for one rank (single node unless told otherwise)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank if local_rank is None else local_rank),
            "LOCAL_WORLD_SIZE": str(world if local_world is None else local_world),
            "GROUP_RANK": str(node_rank), "NODE_RANK": str(node_rank),
            "MASTER_ADDR": addr, "MASTER_PORT": str(port)}


def loopback_env() -> Dict[str, str]:
    """Keep gloo's connections on the loopback interface (gloo otherwise binds the address the
    host name resolves to, which may face the network)."""
    try:
        names = [n for _, n in socket.if_nameindex() if n.startswith("lo")]
    except (OSError, AttributeError):
        names = []
    return {"GLOO_SOCKET_IFNAME": names[0]} if names else {}


class TorchLauncher(Launcher):
    name = "torch"

    def __init__(self):
        self.tmp: Optional[str] = None
        self.procs: List[subprocess.Popen] = []
        self.paths: List[str] = []

    def start(self, payloads: List[Any], timeout: float, startup_timeout: float) -> None:
        self.tmp = tempfile.mkdtemp(prefix="eagle_dist_")          # 0700: private to this user
        world = len(payloads)
        store = os.path.join(self.tmp, "store")
        for r, payload in enumerate(payloads):
            path = os.path.join(self.tmp, f"rank{r}.pkl")
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                pickle.dump(payload, f)
            env = dict(os.environ, **torch_env(r, world, "127.0.0.1", 0), **loopback_env(),
                       EAGLE_DIST_STORE_FILE=store, EAGLE_DIST_PARENT_PID=str(os.getpid()),
                       EAGLE_DIST_STARTUP_TIMEOUT=repr(float(startup_timeout)))
            env.pop("EAGLE_DIST_TCP_STORE", None)
            with open(path + ".err", "wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "eagle_dist.distributed.torchrun", RANK_FLAG, path],
                    env=env, stdout=subprocess.DEVNULL, stderr=err))
            self.paths.append(path)

    def poll(self) -> Dict[int, RankState]:
        out: Dict[int, RankState] = {}
        for r, (p, path) in enumerate(zip(self.procs, self.paths)):
            code = p.poll()
            if os.path.exists(path + ".out"):
                with open(path + ".out", "rb") as f:
                    kind, value = pickle.load(f)
                out[r] = RankState("failed" if kind == "error" else "done", value)
            elif code is not None:
                out[r] = RankState("failed", _death(code, path + ".err"))
            elif _process_state(p.pid) == "T":
                out[r] = RankState("failed", "stopped (SIGSTOP / job control): it cannot make "
                                             "progress")
            else:
                phase = _read_phase(path + ".hb")
                if phase is None:
                    out[r] = RankState("launching")
                elif phase < 0:
                    out[r] = RankState("waiting")
                else:
                    try:
                        silent = time.time() - os.path.getmtime(path + ".hb")
                    except OSError:
                        silent = 0.0
                    out[r] = RankState("running", phase, silent)
        return out

    def late(self, rank: int, startup_timeout: float) -> str:
        return (f"did not start within startup_timeout = {startup_timeout:g} s (interpreter / "
                "imports not done)")

    def stop(self, clean: bool) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)          # a stopped rank cannot act on SIGTERM
                except OSError:
                    pass
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The rank's side (run in the spawned process by eagle_dist.distributed.torchrun)
# ------------------------------------------------------------------------------------------------
class Heartbeat:
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


def run_spawned_rank(path: str) -> None:
    """A rank process of this launcher: read then delete the payload, beat ``PAYLOAD.hb`` every
    round, and write ``PAYLOAD.out`` (result or error) for the driver."""
    import traceback

    from .rank import call_entry
    with open(path, "rb") as f:
        payload = pickle.load(f)
    os.remove(path)                                   # nothing pickled lingers after start-up
    beat = Heartbeat(path + ".hb")
    try:
        result = ("ok", call_entry(payload, on_round=beat))
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, then re-raised
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
        _write_result(path, ("error", f"{type(exc).__name__}: {exc}{where}"))
        raise
    _write_result(path, result)


def _write_result(path: str, result) -> None:
    with open(path + ".out.tmp", "wb") as f:
        pickle.dump(result, f)
    os.replace(path + ".out.tmp", path + ".out")


def die_with_parent() -> None:
    """Arrange for this rank to die with its driver: Linux's parent-death signal, and a watchdog
    thread that notices the parent has gone (it removes the run's private folder, payloads not yet
    read included, since the driver cannot)."""
    import threading
    parent = int(os.environ.get("EAGLE_DIST_PARENT_PID", "0") or 0)

    def orphaned() -> None:
        run_dir = os.path.dirname(os.path.abspath(sys.argv[-1])) if len(sys.argv) > 1 else ""
        if os.path.basename(run_dir).startswith("eagle_dist_"):
            shutil.rmtree(run_dir, ignore_errors=True)
        os._exit(1)

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != parent:        # the driver died before prctl took effect
        orphaned()

    def watch():
        while True:
            time.sleep(1.0)
            if parent and os.getppid() != parent:
                orphaned()

    threading.Thread(target=watch, name="eagle-dist-parent-watch", daemon=True).start()


def _read_phase(hb: str) -> Optional[int]:
    """A rank's heartbeat: ``None`` (no file yet: still starting the interpreter), ``-1`` (started,
    waiting for its peers) or the last round (the group is formed)."""
    try:
        with open(hb) as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return None


def _process_state(pid: int) -> str:
    """Linux process state letter ('T' stopped, 'Z' zombie, …) or '' when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _death(code: int, err_path: str) -> str:
    """What a rank that exited without a result died of: its signal or exit code, and the last
    meaningful line of its stderr (the exception, not a warning)."""
    try:
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - 65536))
            err = last_error_line(f.read().decode(errors="replace"))
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
