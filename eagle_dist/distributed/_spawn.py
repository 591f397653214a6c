"""Entry point of a rank process of the ``torch`` backend: ``python -m
eagle_dist.distributed._spawn PAYLOAD``.

A module of its own, so that ``runtime`` is imported once (``python -m ...runtime`` imported it
twice and printed runpy's RuntimeWarning where the rank's real error belonged). Before anything
else the process arranges to die with its driver: Linux's parent-death signal, elsewhere a
watchdog thread that notices the parent has gone.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time


def _orphaned() -> None:
    """The driver is gone (and so cannot clean up): remove the run's private folder — payloads
    not yet read included — and exit."""
    run_dir = os.path.dirname(os.path.abspath(sys.argv[1])) if len(sys.argv) > 1 else ""
    if os.path.basename(run_dir).startswith("eagle_dist_"):
        import shutil
        shutil.rmtree(run_dir, ignore_errors=True)
    os._exit(1)


def _die_with_parent() -> None:
    parent = int(os.environ.get("EAGLE_DIST_PARENT_PID", "0") or 0)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != parent:        # the driver died before prctl took effect
        _orphaned()

    def watch():
        while True:
            time.sleep(1.0)
            if parent and os.getppid() != parent:
                _orphaned()

    threading.Thread(target=watch, name="eagle-dist-parent-watch", daemon=True).start()


if __name__ == "__main__":
    _die_with_parent()
    from eagle_dist.distributed.runtime import spawned_worker
    spawned_worker(sys.argv[1])
