"""The one supervision loop of every multi-process run, behind a small launcher interface (the
shape of Ray Train's backend executor): a :class:`Launcher` only starts ranks, reports what each
is doing, and stops them; the deadlines, the failure rules, the report and the clean-up on
SIGTERM live here, once.

Three clocks, in plain words:

* ``startup_timeout`` (default 300 s) — how long the ranks may take to get going: processes or
  actors started, Python and torch imported, every rank present and the group formed. At the
  deadline the ranks that never started are named, and those that did are listed as waiting.
* ``timeout`` (default 60 s) — the collective timeout, applied inside the ranks: once the group
  is formed an all-reduce waits at most this long for a silent peer.
* the driver's liveness deadline, ``timeout`` + :data:`LIVENESS_GRACE_S` — every rank reports
  each round; one that reports nothing for that long fails the run even where no collective
  would notice (``workers=1``, every rank stopped, a rank hung after its peers finished).

A failure waits 2 s more for the other ranks' reports, so that the rank that failed first-hand is
the one named, then raises :class:`WorkerFailure`; every rank is stopped either way. SIGTERM of
the driver only sets a flag (raising from a signal handler inside Ray's ``wait`` ended in
``SystemError``); the loop sees it within one poll, cleans up, and hands the signal to the
previous handler (by default the driver then dies of it).
"""
from __future__ import annotations

import math
import numbers
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .rank import STARTUP_TIMEOUT_S

#: seconds a rank may stay silent beyond ``timeout`` before the driver declares it lost
LIVENESS_GRACE_S = 5.0
#: seconds to wait for the other ranks' reports once one rank has failed
REPORT_GRACE_S = 2.0


class WorkerFailure(RuntimeError):
    """A distributed worker died, hung past the timeout, never started, or raised."""


@dataclass
class RankState:
    """What a launcher knows of one rank: ``launching`` (its process / actor is not running our
    code yet), ``waiting`` (started, waiting for its peers or the group), ``running`` (``value`` =
    last round reported, ``silent_s`` = seconds since the last sign of life, ``why`` = what a long
    silence means), ``done`` (``value`` = its result) or ``failed`` (``value`` = the reason)."""

    kind: str
    value: Any = None
    silent_s: float = 0.0
    why: str = "hung outside a collective"


class Launcher(ABC):
    """Starts ranks one way (local processes, Ray actors) for :func:`supervise`."""

    name = "?"

    @abstractmethod
    def start(self, payloads: List[Any], timeout: float, startup_timeout: float) -> None:
        """Start one rank per payload; return at once (a refusal raises :class:`WorkerFailure`)."""

    @abstractmethod
    def poll(self) -> Dict[int, RankState]:
        """The state of every rank (cheap, non-blocking)."""

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds`` for news (a launcher may return as soon as a rank reports)."""
        time.sleep(seconds)

    def late(self, rank: int, startup_timeout: float) -> str:
        """Why a rank still ``launching`` at the start-up deadline failed."""
        return f"did not start within startup_timeout = {startup_timeout:g} s"

    @abstractmethod
    def stop(self, clean: bool) -> None:
        """Stop every rank and remove what the run left (``clean``: the run succeeded, so a
        launcher may keep healthy workers for the next run)."""


def check_timeouts(timeout, startup_timeout) -> None:
    for name, v in (("timeout", timeout), ("startup_timeout", startup_timeout)):
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                and v > 0):
            raise ValueError(f"{name}={v!r} must be a positive, finite number of seconds")


def supervise(launcher: Launcher, payloads: List[Any], timeout: float,
              startup_timeout: float = STARTUP_TIMEOUT_S, poll_s: float = 0.05) -> List[Any]:
    """Run one rank per payload on ``launcher`` under the deadlines of the module docstring;
    return the ranks' results in rank order or raise :class:`WorkerFailure` naming the rank."""
    check_timeouts(timeout, startup_timeout)
    world = len(payloads)
    term: Optional[_SigtermFlag] = None
    clean = False
    try:
        launcher.start(payloads, timeout, startup_timeout)
        # after the start: ray.init installs Ray's own SIGTERM handlers, which must not replace
        # ours (theirs become the "previous handler" that gets the signal after the clean-up)
        term = _SigtermFlag()
        t_start = time.monotonic()
        results: Dict[int, Any] = {}
        failures: Dict[int, str] = {}
        notes: Dict[int, str] = {}
        limit = timeout + LIVENESS_GRACE_S
        judged, deadline = False, None
        while len(results) + len(failures) < world:
            launcher.wait(poll_s)
            term.check()
            starting: Dict[int, str] = {}
            for r, st in launcher.poll().items():
                if r in results or r in failures:
                    continue
                if st.kind == "done":
                    results[r] = st.value
                elif st.kind == "failed":
                    failures[r] = st.value
                elif st.kind in ("launching", "waiting"):
                    starting[r] = st.kind
                elif st.silent_s > limit:
                    failures[r] = (f"no progress for {st.silent_s:.0f} s, more than timeout + "
                                   f"{LIVENESS_GRACE_S:g} s = {limit:g} s ({st.why}; last report "
                                   f"at round {st.value})")
            if starting and time.monotonic() - t_start > startup_timeout and not judged:
                judged = True                             # one verdict on the whole start-up
                late = [r for r, k in starting.items() if k == "launching"]
                for r, k in starting.items():
                    if not late:
                        failures[r] = (f"did not form the process group within startup_timeout"
                                       f" = {startup_timeout:g} s")
                    elif k == "launching":
                        failures[r] = launcher.late(r, startup_timeout)
                    else:
                        notes[r] = f"started, waiting for rank(s) {late} to start"
            if failures:
                deadline = deadline or time.monotonic() + REPORT_GRACE_S
                if time.monotonic() > deadline:
                    break
        if failures:
            raise failure(launcher.name, failures,
                          [r for r in range(world) if r not in results and r not in failures],
                          notes)
        clean = True
        return [results[r] for r in range(world)]
    finally:
        if term is not None:
            term.restore()
        launcher.stop(clean)
        if term is not None:
            term.die_if_caught(launcher.name)


_PEER_ERRORS = ("gloo", "nccl", "Connection closed", "Read error", "Timed out", "timed out",
                "Connection reset")
#: errors that mean the rank's own process or node is gone (Ray's names for a dead actor)
_OWN_DEATH = ("ActorUnavailableError", "ActorDiedError", "RayActorError", "NodeDiedError")


def failure(backend: str, failures: Dict[int, str], silent: List[int],
            notes: Optional[Dict[int, str]] = None) -> WorkerFailure:
    """One error naming the rank that failed first-hand; ranks that only lost a peer (their
    all-reduce errored or timed out) are listed after it, and ranks that never answered (hung)
    are named as the suspects when every reported error is only a lost peer. ``notes`` says
    what a silent rank was doing where that is known (e.g. waiting for its peers to start)."""
    def secondary(msg: str) -> bool:
        # an actor that died or became unreachable failed first-hand, whatever its transport
        # said ("Connection reset by peer" inside Ray's ActorUnavailableError is its own death)
        if any(k in msg for k in _OWN_DEATH):
            return False
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


def last_error_line(stderr: str) -> str:
    """A process's own error from its stderr: the last line that is not part of a warning (a
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


class _SigtermFlag:
    """SIGTERM while the driver supervises: the handler only records it (main thread only, and
    only where SIGTERM is handled in Python and not ignored); :meth:`check` turns it into an
    unwinding exception at a point of our choosing; after the clean-up :meth:`die_if_caught`
    re-delivers it as the previous handler would have had it."""

    class Caught(BaseException):
        pass

    def __init__(self):
        self.signum: Optional[int] = None
        self.old = None
        self._installed = False
        if threading.current_thread() is not threading.main_thread():
            return
        old = signal.getsignal(signal.SIGTERM)
        if old is None or old == signal.SIG_IGN:      # installed outside Python, or ignored
            return
        self.old = old

        def handler(signum, frame):
            self.signum = signum

        signal.signal(signal.SIGTERM, handler)
        self._installed = True

    def check(self) -> None:
        if self.signum is not None:
            raise self.Caught()

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self.old)
            self._installed = False

    def die_if_caught(self, backend: str) -> None:
        if self.signum is None:
            return
        if callable(self.old):
            self.old(self.signum, None)              # e.g. Ray's driver handler: sys.exit(15)
        else:                                        # SIG_DFL: terminate as if never caught
            os.kill(os.getpid(), self.signum)
            time.sleep(1.0)
        raise WorkerFailure(f"{backend} backend: interrupted by signal {self.signum}; the run was "
                            "aborted and all workers stopped")


__all__ = ["WorkerFailure", "Launcher", "RankState", "supervise", "failure", "check_timeouts",
           "last_error_line", "LIVENESS_GRACE_S", "STARTUP_TIMEOUT_S"]
