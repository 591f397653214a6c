"""Machinery shared by more than one sweep: torch thread scoping, smoke/full defaults, argument
checks and parsers, progress bars and the headline printout; the result type, timing protocol,
aggregation and table cells of the single-machine sweeps (``kappa``, ``sketch``, ``gemm``,
``suitesparse``)."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..api import solve
from ..data import controlled
from ..problem import Problem
from . import report

log = logging.getLogger(__name__)

# a bench run writes under runs/bench/ by default; the committed tables in benchmarks/results/
# are only updated on purpose, with --out benchmarks/results/<sweep>
RESULTS_ROOT = os.path.join("runs", "bench")
NO_TOL = 1e-300       # timed runs stop on max_iter only (a positive tol is required)
ERR_FLOOR = 1e-17     # errors of exactly 0 drawn here on log axes


@contextlib.contextmanager
def threads(n: Optional[int]):
    """Temporarily set torch's intra-op threads (``None``: leave as is)."""
    if n is None:
        yield
        return
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads={n!r} must be a positive integer (or None for torch's default)")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve(smoke: bool, full: Dict[str, Any], small: Dict[str, Any], given: Dict[str, Any]):
    """Explicit arguments win; otherwise the full-size or the smoke default."""
    base = small if smoke else full
    return {k: (given[k] if given.get(k) is not None else base[k]) for k in base}


def check_positive_int(name: str, v: Any) -> None:
    if not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive integer")


def progress(total: int, desc: str, enabled: bool, unit: str = "run"):
    """A progress bar on a terminal only (redrawn at most twice a second); when stderr is a file
    or a pipe the sweeps log one line per run instead of bar redraws."""
    import sys
    from tqdm.auto import tqdm
    tty = sys.stderr is not None and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and tty), leave=False,
                mininterval=0.5)


def floats(s: str) -> List[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{s!r} is not a comma-separated list of numbers, e.g. 1e2,1e4 or "
                         "1,0.6,0.35") from None


def ints(s: str) -> List[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{s!r} is not a comma-separated list of integers, e.g. 500,2000") \
            from None


def strs(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def print_headline(res) -> int:
    """Print a sweep's files and headline numbers (``res`` has name, out, files, headline)."""
    print(f"\n{res.name}: wrote {len(res.files)} files to {res.out}")
    smoke = any(flag in (res.command or "") for flag in ("--smoke", "--quick"))
    for k, v in res.headline.items():
        if smoke and "_met" in k:
            continue                  # targets are judged at the full sizes, not on toy ones
        print(f"  {k}: {v if isinstance(v, (bool, str)) else report.fmt(v)}")
    if smoke:
        print("  (smoke settings: the targets are judged only at the full sizes)")
    return 0


# ---------------------------------------------------------------------------------------------
# single-machine sweeps (kappa, sketch, gemm, suitesparse)
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep returns: raw rows, the aggregated summary rows, the headline numbers and the
    files written (CSV, PNG, ``summary.md``)."""

    name: str
    out: str
    rows: List[Dict[str, Any]]
    summary: List[Dict[str, Any]]
    headline: Dict[str, Any]
    files: List[str] = field(default_factory=list)
    command: str = ""


def walltime_solve(problem: Problem, method: str, **kw):
    t0 = time.perf_counter()
    res = solve(problem, method, **kw)
    return res, time.perf_counter() - t0


def run_to_target(problem: Problem, method: str, target: float, cap: int, **kw) -> Dict[str, Any]:
    """Monitored run to ``target`` (history, iteration count), then an unmonitored timed re-run of
    exactly that many iterations.

    How time is measured (the ``kappa`` and ``sketch`` sweeps): a first, *monitored* solve records
    the error after every iteration and stops at the target (``solve(..., target_error=ε)``) — its
    history gives the curves and the iteration count ``k``. A second, *unmonitored* solve of the
    same problem with the same seed runs exactly ``k`` iterations with no per-iteration error
    evaluation (``record_error=False, max_iter=k``); its wall-clock, measured around the whole
    ``solve`` call (tensor set-up and EAGLE's one-off norm estimate included), is the reported time
    to target. For methods that did not reach the target the row says so (``reached = False``) and
    reports the iterations and time of the capped run. The error-vs-time curves use the monitored
    run's clock."""
    mon = solve(problem, method, target_error=target, max_iter=cap, **kw)
    timed, wall = walltime_solve(problem, method, record_error=False, tol=NO_TOL,
                                 max_iter=mon.iterations, **kw)
    if timed.iterations != mon.iterations:
        log.warning("%s: timed re-run stopped after %d iterations, monitored run after %d",
                    method, timed.iterations, mon.iterations)
    reached = bool(mon.status.ok and mon.error <= target)
    return {
        "status": mon.status.value, "reached": reached, "iterations": mon.iterations,
        "time_s": wall, "solver_time_s": timed.time_s,
        "time_per_iter_ms": 1e3 * timed.time_s / max(timed.iterations, 1),
        "final_error": mon.error, "monitored_time_s": mon.time_s, "_history": mon.history,
    }


def warm_up(calls: Sequence[Tuple[str, Dict[str, Any]]], dtype: str, device: str) -> None:
    """One untimed solve per method on a small problem, so first-call costs (library loading,
    LAPACK/SciPy initialisation, thread-pool start-up) do not land in the first timed run."""
    prob = controlled(32, 32, 2, 2, kappa=10.0, seed=12345)
    for method, kw in calls:
        solve(prob, method, max_iter=5, dtype=dtype, device=device, **kw)


def curve_from_history(history, points: int = 200):
    idx = report.log_subsample(len(history), points)
    it = np.arange(1, len(history) + 1)[idx]
    err = np.asarray(history.error)[idx]
    t = np.asarray(history.time)[idx]
    return it, err, t


def curve_rows(curves, key_names):
    rows = []
    for key, (it, err, tm) in curves.items():
        for i, e, t in zip(it, err, tm):
            row = dict(zip(key_names, key))
            row.update(iteration=i, error=e, time_s=t)
            rows.append(row)
    return rows


def aggregate(rows: Sequence[Dict[str, Any]], keys: Sequence[str]) -> List[Dict[str, Any]]:
    """One summary row per distinct ``keys``: counts, mean ± std of iterations and times,
    median / worst final error."""
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        it = report.stats(r["iterations"] for r in rs)
        tm = report.stats(r["time_s"] for r in rs)
        tpi = report.stats(r["time_per_iter_ms"] for r in rs)
        err = report.stats(r["final_error"] for r in rs)
        row = dict(zip(keys, key))
        row.update(
            runs=len(rs), reached=sum(bool(r["reached"]) for r in rs),
            iterations_mean=it["mean"], iterations_std=it["std"],
            iterations_min=it["min"], iterations_max=it["max"],
            time_s_mean=tm["mean"], time_s_std=tm["std"], time_s_median=tm["median"],
            time_per_iter_ms_mean=tpi["mean"], time_per_iter_ms_std=tpi["std"],
            final_error_median=err["median"], final_error_max=err["max"],
            status=",".join(sorted({r["status"] for r in rs})),
        )
        out.append(row)
    return out


def all_reached(s: Optional[Dict[str, Any]]) -> bool:
    return bool(s) and s["reached"] == s["runs"]


def reach_fmt(s: Dict[str, Any]) -> str:
    return f"{s['reached']}/{s['runs']}"


def mean_pm(mean_key: str, std_key: str, digits: int = 3):
    def f(row):
        return f"{report.fmt(row.get(mean_key), digits)} ± {report.fmt(row.get(std_key), 2)}"
    return f


def add_centralized_args(p, sweep: str) -> None:
    """The options every single-machine sweep (``kappa``, ``sketch``, ``gemm``) takes."""
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, sweep),
                   help=f"output directory (default {os.path.join(RESULTS_ROOT, sweep)})")
    p.add_argument("--runs", type=int, default=None,
                   help="repetitions averaged (default: 3; gemm: 5 timed repetitions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and one torch thread (unless --threads): a seconds-long check")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_figure_args(p, sweep: str, *, runs: int, iterations: int, sizes) -> None:
    """The options of the paper-figure sweeps that run a fixed number of iterations on a set of
    generated problems (``stepsize``, ``estimation``): output, problems, budget, sizes, seed,
    threads, smoke. ``sizes``: ``(name, default)`` pairs, e.g. ``(("n", 240), ("d", 240))``."""
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, sweep))
    p.add_argument("--runs", type=int, default=None, help=f"problems (default {runs})")
    p.add_argument("--iterations", type=int, default=None, help=f"budget (default {iterations})")
    for k, h in sizes:
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {h}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a seconds-long check")
