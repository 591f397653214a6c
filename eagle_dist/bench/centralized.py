"""Centralized and compute-limited (sketched) benchmark sweeps.

Three sweeps, each a Python function and an ``eagle-dist bench`` sub-command:

* :func:`kappa_sweep` (``eagle-dist bench kappa``): κ(A) ∈ {1e2 … 1e6}, ``n = d = 240``,
  ``n' = d' = 2`` (:func:`eagle_dist.data.controlled`). Iterations and wall time until the relative
  error ``‖D_ℓ − D̂‖_F / ‖D̂‖_F ≤ 1e-10`` for EAGLE, CG on the normal equations, GD, LSMR and
  ``lstsq``; error-vs-iteration and error-vs-time plots. Headline: CG / EAGLE iterations at
  κ = 1e4 (target ≥ 300×; the paper claims ~100×).
* :func:`sketch_sweep` (``eagle-dist bench sketch``): sketch size ``r ∈ {d/8, d/4, d/2, d}``
  (κ = 1e2): iterations, time per iteration and time to relative error 1e-2 for sketched EAGLE and
  SGD (GD on the same ``r``-column sketch), both sketch kinds. Headline: SGD time / EAGLE time at
  ``r = d/4`` (target ≥ 5×; the paper reports ~2.5× on a GPU).
* :func:`gemm_sweep` (``eagle-dist bench gemm``): EAGLE time per iteration divided by the floor
  ``3·n·d²`` flops at the GEMM rate measured in the same run (``n = d ∈ {500, 2000}``, float64
  and float32). Target ≤ 1.2.

How time is measured (all sweeps): a first, *monitored* solve records the error after every
iteration and stops at the target (``solve(..., target_error=ε)``) — its history gives the
curves and the iteration count ``k``. A second, *unmonitored* solve of the same problem with the
same seed runs exactly ``k`` iterations with no per-iteration error evaluation
(``record_error=False, max_iter=k``); its wall-clock, measured around the whole ``solve`` call
(tensor set-up and EAGLE's one-off norm estimate included), is the reported time to target. For
methods that did not reach the target the row says so (``reached = False``) and reports the
iterations and time of the capped run. The error-vs-time curves use the monitored run's clock.

Example:
    >>> from eagle_dist.bench.centralized import kappa_sweep
    >>> out = kappa_sweep(out="/tmp/kappa_smoke", smoke=True, progress=False)   # doctest: +SKIP
    >>> out.headline["cg_over_eagle_iterations"]                                 # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import kernels
from ..api import solve
from ..data import controlled
from ..problem import Problem
from . import report
from .common import check_positive_int as _check_positive_int
from .common import floats as _floats, ints as _ints, print_headline as _print_headline
from .common import progress as _progress, resolve as _resolve, strs as _strs
from .common import threads as _threads

log = logging.getLogger(__name__)

# a bench run writes under runs/bench/ by default; the committed tables in benchmarks/results/
# are only updated on purpose, with --out benchmarks/results/<sweep>
RESULTS_ROOT = os.path.join("runs", "bench")
TARGETED = ("eagle", "cg", "gd")                  # stop on the true error: iterations to target
KRYLOV = ("lsmr", "lsqr")                          # SciPy: own stopping rule, no per-iteration hook
DIRECT = ("lstsq", "lstsq-gelsd", "lstsq-gelsy", "pinv")
_NO_TOL = 1e-300      # unmonitored re-runs stop on max_iter only (a positive tol is required)
_ERR_FLOOR = 1e-17    # errors of exactly 0 drawn here on log axes


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


# ---------------------------------------------------------------------------------------------
# shared machinery
# ---------------------------------------------------------------------------------------------


def _walltime_solve(problem: Problem, method: str, **kw):
    t0 = time.perf_counter()
    res = solve(problem, method, **kw)
    return res, time.perf_counter() - t0


def _run_to_target(problem: Problem, method: str, target: float, cap: int, **kw) -> Dict[str, Any]:
    """Monitored run to ``target`` (history, iteration count), then an unmonitored timed re-run of
    exactly that many iterations (see the module docstring)."""
    mon = solve(problem, method, target_error=target, max_iter=cap, **kw)
    timed, wall = _walltime_solve(problem, method, record_error=False, tol=_NO_TOL,
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


def _warm_up(calls: Sequence[Tuple[str, Dict[str, Any]]], dtype: str, device: str) -> None:
    """One untimed solve per method on a small problem, so first-call costs (library loading,
    LAPACK/SciPy initialisation, thread-pool start-up) do not land in the first timed run."""
    prob = controlled(32, 32, 2, 2, kappa=10.0, seed=12345)
    for method, kw in calls:
        solve(prob, method, max_iter=5, dtype=dtype, device=device, **kw)


def _curve_from_history(history, points: int = 200):
    idx = report.log_subsample(len(history), points)
    it = np.arange(1, len(history) + 1)[idx]
    err = np.asarray(history.error)[idx]
    t = np.asarray(history.time)[idx]
    return it, err, t


def _aggregate(rows: Sequence[Dict[str, Any]], keys: Sequence[str]) -> List[Dict[str, Any]]:
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


def _all_reached(s: Optional[Dict[str, Any]]) -> bool:
    return bool(s) and s["reached"] == s["runs"]


def _reach_fmt(s: Dict[str, Any]) -> str:
    return f"{s['reached']}/{s['runs']}"


def _mean_pm(mean_key: str, std_key: str, digits: int = 3):
    def f(row):
        return f"{report.fmt(row.get(mean_key), digits)} ± {report.fmt(row.get(std_key), 2)}"
    return f


def _fmt_kappa(k: float) -> str:
    e = math.log10(k)
    return f"1e{int(round(e))}" if abs(e - round(e)) < 1e-9 else f"{k:g}"


# ---------------------------------------------------------------------------------------------
# κ-sweep
# ---------------------------------------------------------------------------------------------
KAPPA_FULL = dict(kappas=(1e2, 1e3, 1e4, 1e5, 1e6), n=240, d=240, nq=2, dq=2, runs=3,
                  max_iter=20000, eagle_max_iter=500,
                  methods=("eagle", "cg", "gd", "lsmr", "lstsq"))
KAPPA_SMOKE = dict(kappas=(1e2, 1e4), n=32, d=32, nq=2, dq=2, runs=1, max_iter=400,
                   eagle_max_iter=100, methods=("eagle", "cg", "gd", "lsmr", "lstsq"))


def kappa_sweep(out: Optional[str] = None, *, runs: Optional[int] = None,
                kappas: Optional[Sequence[float]] = None, n: Optional[int] = None,
                d: Optional[int] = None, nq: Optional[int] = None, dq: Optional[int] = None,
                methods: Optional[Sequence[str]] = None, target: float = 1e-10,
                max_iter: Optional[int] = None, eagle_max_iter: Optional[int] = None,
                krylov_tol: float = 1e-14, dtype: str = "float64", device: str = "cpu",
                seed: int = 0, threads: Optional[int] = None, smoke: bool = False,
                progress: bool = True) -> SweepResult:
    """Iterations and wall time to relative error ``target`` versus κ(A).

    For every κ and run ``i`` the problem is ``controlled(n, d, nq, dq, kappa=κ, seed=seed+i)``
    (noiseless, so ``D̂ = D``). EAGLE, CG and GD stop when ``‖D_ℓ − D̂‖_F ≤ target·‖D̂‖_F`` or
    after ``max_iter`` (EAGLE: ``eagle_max_iter``) iterations; GD needs O(κ² log 1/ε) iterations
    and is expected to hit the cap. LSMR/LSQR have no per-iteration hook: they run SciPy's own
    rule ``‖r‖ ≤ krylov_tol·(‖A‖‖x‖ + ‖b‖)`` (``atol = btol = krylov_tol``), capped at
    ``max_iter``, and report their final error and iteration count (max over the ``nq`` right-hand
    sides); their curve is ``k ↦ error`` from separate solves capped at ``k`` on a log grid.
    Direct methods report one solve. ``reached`` says whether the final error is ``≤ target``.

    ``smoke=True`` shrinks every default (n = d = 40, two κ, one run) to finish in seconds;
    explicitly given arguments still win.
    """
    if smoke and threads is None:
        threads = 1     # tiny problems gain nothing from threads, and one thread is immune to
        #                 OpenMP oversubscription stalls when the machine is busy
    cfg = _resolve(smoke, KAPPA_FULL, KAPPA_SMOKE, dict(
        kappas=kappas, n=n, d=d, nq=nq, dq=dq, runs=runs, max_iter=max_iter,
        eagle_max_iter=eagle_max_iter, methods=methods))
    for k in ("n", "d", "nq", "dq", "runs", "max_iter", "eagle_max_iter"):
        _check_positive_int(k, cfg[k])
    kappas = [float(k) for k in cfg["kappas"]]
    if not kappas or any(not (k >= 1 and math.isfinite(k)) for k in kappas):
        raise ValueError(f"kappas={cfg['kappas']!r} must be finite numbers >= 1")
    methods = list(cfg["methods"])
    unknown = [m for m in methods if m not in TARGETED + KRYLOV + DIRECT]
    if unknown:
        raise ValueError(f"methods {unknown} are not part of the κ-sweep; choose from "
                         f"{TARGETED + KRYLOV + DIRECT}")
    if not (target > 0):
        raise ValueError(f"target={target!r} must be a positive relative error, e.g. 1e-10")
    out = out or os.path.join(RESULTS_ROOT, "kappa")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench kappa", dict(
        out=out, runs=cfg["runs"], kappas=kappas, n=cfg["n"], d=cfg["d"], nq=cfg["nq"],
        dq=cfg["dq"], methods=methods, target=target, max_iter=cfg["max_iter"],
        eagle_max_iter=cfg["eagle_max_iter"], krylov_tol=krylov_tol, dtype=dtype, device=device,
        seed=seed, threads=threads), ["smoke"] if smoke else [])

    rows: List[Dict[str, Any]] = []
    curves: Dict[Tuple[float, str], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("κ-sweep: %s", command)
        _warm_up([(m, {}) for m in methods], dtype, device)
        bar = _progress(len(kappas) * cfg["runs"] * len(methods), "kappa sweep", progress)
        for kappa in kappas:
            for run in range(cfg["runs"]):
                prob = controlled(cfg["n"], cfg["d"], cfg["nq"], cfg["dq"], kappa=kappa,
                                  seed=seed + run)
                _ = prob.reference, prob.error_denominator     # float64 pinv, outside every timer
                for m in methods:
                    bar.set_postfix_str(f"κ={_fmt_kappa(kappa)} run={run} {m}")
                    row = dict(kappa=kappa, method=m, run=run, seed=seed + run,
                               n=cfg["n"], d=cfg["d"], dtype=dtype)
                    common = dict(dtype=dtype, device=device, seed=seed + run)
                    if m in TARGETED:
                        cap = cfg["eagle_max_iter"] if m == "eagle" else cfg["max_iter"]
                        r = _run_to_target(prob, m, target, cap, **common)
                        hist = r.pop("_history")
                        r.pop("monitored_time_s")
                        row.update(kind="iterative", cap=cap, **r)
                        if run == 0:
                            curves[(kappa, m)] = _curve_from_history(hist)
                    elif m in KRYLOV:
                        res, wall = _walltime_solve(prob, m, tol=krylov_tol,
                                                    max_iter=cfg["max_iter"], **common)
                        row.update(kind="krylov", cap=cfg["max_iter"], status=res.status.value,
                                   reached=bool(res.error <= target), iterations=res.iterations,
                                   time_s=wall, solver_time_s=res.time_s,
                                   time_per_iter_ms=1e3 * res.time_s / max(res.iterations, 1),
                                   final_error=res.error)
                        if run == 0:
                            curves[(kappa, m)] = _krylov_curve(prob, m, krylov_tol,
                                                               res.iterations, common)
                    else:
                        res, wall = _walltime_solve(prob, m, **common)
                        row.update(kind="direct", cap=1, status=res.status.value,
                                   reached=bool(res.error <= target), iterations=res.iterations,
                                   time_s=wall, solver_time_s=res.time_s,
                                   time_per_iter_ms=float("nan"), final_error=res.error)
                        if run == 0:
                            curves[(kappa, m)] = (np.array([np.nan]), np.array([res.error]),
                                                  np.array([wall]))
                    rows.append(row)
                    log.info("κ=%s run %d %-6s %-14s %6d iterations, error %.2e, %.3f s",
                             _fmt_kappa(kappa), run, m, row["status"], row["iterations"],
                             row["final_error"], row["time_s"])
                    bar.update(1)
        bar.close()
        load_end = report.load_average()

    summary = _aggregate(rows, ("kappa", "method"))
    by = {(s["kappa"], s["method"]): s for s in summary}
    ratios = []
    for kappa in kappas:
        e, c = by.get((kappa, "eagle")), by.get((kappa, "cg"))
        if e and c:
            ratio = c["iterations_mean"] / e["iterations_mean"]
            ratios.append(dict(
                kappa=kappa, eagle_iterations=e["iterations_mean"],
                cg_iterations=c["iterations_mean"], ratio=ratio,
                lower_bound=not _all_reached(c), eagle_reached=_all_reached(e),
                time_ratio=c["time_s_mean"] / e["time_s_mean"]))
    headline: Dict[str, Any] = {"target": target}
    at = [r for r in ratios if abs(math.log10(r["kappa"]) - 4) < 1e-9]
    if at:
        r = at[0]
        headline.update(cg_over_eagle_iterations=r["ratio"],
                        cg_over_eagle_lower_bound=r["lower_bound"],
                        cg_over_eagle_time=r["time_ratio"],
                        target_300x_met=bool(r["ratio"] >= 300 and r["eagle_reached"]))

    files = [report.write_csv(rows, os.path.join(out, "kappa.csv")),
             report.write_csv(summary, os.path.join(out, "kappa_summary.csv")),
             report.write_csv(ratios, os.path.join(out, "kappa_cg_over_eagle.csv")),
             report.write_csv(_curve_rows(curves, ("kappa", "method")),
                              os.path.join(out, "kappa_curves.csv"))]
    files += _plot_kappa(out, kappas, methods, curves, summary, target)

    # ---- summary.md
    sections = {"Headline": _kappa_headline_md(headline, ratios, target, cfg)}
    table = report.markdown_table(summary, {
        "κ": lambda r: _fmt_kappa(r["kappa"]), "method": "method",
        "reached": _reach_fmt,
        "iterations": _mean_pm("iterations_mean", "iterations_std"),
        "time [s]": _mean_pm("time_s_mean", "time_s_std"),
        "final rel. error (median / worst)":
            lambda r: f"{report.fmt(r['final_error_median'])} / {report.fmt(r['final_error_max'])}",
        "status": "status"})
    notes = [
        f"{cfg['runs']} run(s) per κ (problem seeds {seed}..{seed + cfg['runs'] - 1}); "
        "mean ± standard deviation over runs.",
        f"Iterations/time are to relative error ≤ {target:g} (`solve(..., target_error=…)`); "
        "`reached` counts runs that got there. Rows with reached < runs report the capped run "
        f"(cap {cfg['max_iter']} iterations; EAGLE {cfg['eagle_max_iter']}): a lower bound, "
        "not a time to target.",
        "Every method is warmed up once (untimed, small problem) before the sweep. "
        "Time = wall-clock of an unmonitored re-run of exactly that many iterations, around the "
        "whole `solve` call (tensor set-up and EAGLE's one-off power-iteration norm estimate "
        "included); the error-vs-time plot uses the monitored run's own clock.",
        f"LSMR/LSQR: SciPy's stopping rule with atol = btol = {krylov_tol:g}; iterations are the "
        "max over the n' right-hand sides; the curve points are separate solves capped at k "
        "iterations. Direct methods (lstsq = SVD/gelsd) are one solve; their 'iterations' is 1.",
        f"dtype {dtype}, device {device}; n = {cfg['n']}, d = {cfg['d']}, n' = {cfg['nq']}, "
        f"d' = {cfg['dq']}; controlled generator (geometric spectrum from 1 to 1/κ, noiseless).",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "κ-sweep: iterations and time to relative error "
                               f"{target:g}", command, table, notes, machine=machine,
                               sections=sections, files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("κ-sweep written to %s", out)
    return SweepResult("kappa", out, rows, summary, headline, files, command)


def _krylov_curve(prob, method, tol, final_iters, common, points: int = 12):
    """Error after ``k`` iterations for ``k`` on a log grid up to ``final_iters`` (each a separate
    solve: SciPy's LSMR/LSQR expose no per-iteration callback)."""
    ks = np.unique(np.round(np.geomspace(1, max(final_iters, 1), points)).astype(int))
    it, err, tm = [], [], []
    for k in ks:
        res, wall = _walltime_solve(prob, method, tol=tol, max_iter=int(k), **common)
        it.append(res.iterations)
        err.append(res.error)
        tm.append(wall)
    return np.array(it, float), np.array(err), np.array(tm)


def _curve_rows(curves, key_names):
    rows = []
    for key, (it, err, tm) in curves.items():
        for i, e, t in zip(it, err, tm):
            row = dict(zip(key_names, key))
            row.update(iteration=i, error=e, time_s=t)
            rows.append(row)
    return rows


def _kappa_headline_md(headline, ratios, target, cfg) -> str:
    lines = []
    if "cg_over_eagle_iterations" in headline:
        r = headline["cg_over_eagle_iterations"]
        lb = "≥ " if headline["cg_over_eagle_lower_bound"] else ""
        met = "met" if headline["target_300x_met"] else "NOT met"
        lines.append(f"- CG-NE / EAGLE iterations at κ = 1e4: **{lb}{r:.0f}×** "
                     f"(target ≥ 300×: **{met}**); wall-time ratio "
                     f"{headline['cg_over_eagle_time']:.1f}×.")
    if ratios:
        lines.append("")
        lines.append(report.markdown_table(ratios, {
            "κ": lambda r: _fmt_kappa(r["kappa"]),
            "EAGLE iterations": "eagle_iterations",
            "CG iterations": lambda r: ("≥ " if r["lower_bound"] else "")
            + report.fmt(r["cg_iterations"]),
            "CG / EAGLE iterations": lambda r: ("≥ " if r["lower_bound"] else "")
            + f"{r['ratio']:.0f}×",
            "CG / EAGLE time": lambda r: ("≥ " if r["lower_bound"] else "")
            + f"{r['time_ratio']:.1f}×"}))
    return "\n".join(lines)


def _plot_kappa(out, kappas, methods, curves, summary, target) -> List[str]:
    files = []
    hl = [(target, f"target {target:g}")]
    for xkey, fname, xlabel in (("iteration", "kappa_error_vs_iteration.png", "iteration"),
                                ("time", "kappa_error_vs_time.png", "time [s] (monitored run)")):
        panels = []
        for kappa in kappas:
            series = []
            for m in methods:
                if (kappa, m) not in curves:
                    continue
                it, err, tm = curves[(kappa, m)]
                err = np.maximum(err, _ERR_FLOOR)
                if xkey == "iteration":
                    if m in DIRECT:
                        continue                       # no iterations to draw
                    series.append(dict(x=it, y=err, label=m,
                                       marker="o" if m in KRYLOV else None, markersize=3))
                else:
                    series.append(dict(x=tm, y=err, label=m,
                                       marker=("s" if m in DIRECT
                                               else "o" if m in KRYLOV else None),
                                       markersize=5 if m in DIRECT else 3,
                                       linestyle="none" if m in DIRECT else "-"))
            panels.append(dict(title=f"κ(A) = {_fmt_kappa(kappa)}", xlabel=xlabel,
                               ylabel="relative error", logx=True, logy=True, series=series,
                               hlines=hl))
        what = "iteration" if xkey == "iteration" else "wall-clock time"
        files.append(report.plot_panels(
            os.path.join(out, fname), panels,
            title=f"Relative error ‖D − D̂‖/‖D̂‖ vs {what} (run 0; LSMR: separate capped solves; "
                  "lstsq: one point)"))
    # iterations / time to target vs κ
    by = {(s["kappa"], s["method"]): s for s in summary}
    panels = []
    for key, ylabel in (("iterations_mean", "iterations to target"),
                        ("time_s_mean", "time to target [s]")):
        series = []
        for m in methods:
            if key == "iterations_mean" and m in DIRECT:
                continue
            xs = [k for k in kappas if (k, m) in by]
            ys = [by[(k, m)][key] for k in xs]
            ok = [_all_reached(by[(k, m)]) for k in xs]
            series.append(dict(x=xs, y=ys, label=m, marker="o", filled=True, linestyle="-"))
            bad = [(x, y) for x, y, o in zip(xs, ys, ok) if not o]
            if bad:
                series.append(dict(x=[b[0] for b in bad], y=[b[1] for b in bad],
                                   label=f"{m} (did not reach: capped run)", marker="o",
                                   filled=False, linestyle="none", markersize=11,
                                   color=report.color_for(m)))
        panels.append(dict(title=ylabel + f" (rel. error {target:g})", xlabel="κ(A)",
                           ylabel=ylabel, logx=True, logy=True, series=series))
    files.append(report.plot_panels(os.path.join(out, "kappa_summary.png"), panels, ncols=2,
                                    panel_size=(5.5, 4.2),
                                    title="κ-sweep: mean over runs; hollow rings = did not reach "
                                          "the target (value is the capped run)"))
    return files


# ---------------------------------------------------------------------------------------------
# sketch sweep
# ---------------------------------------------------------------------------------------------
SKETCH_FULL = dict(n=240, d=240, nq=2, dq=2, runs=3, max_iter=10000, sketch_sizes=None,
                   kinds=("sample", "orthonormal"))
SKETCH_SMOKE = dict(n=32, d=32, nq=2, dq=2, runs=1, max_iter=300, sketch_sizes=None,
                    kinds=("sample", "orthonormal"))


def sketch_sweep(out: Optional[str] = None, *, runs: Optional[int] = None,
                 n: Optional[int] = None, d: Optional[int] = None, nq: Optional[int] = None,
                 dq: Optional[int] = None, sketch_sizes: Optional[Sequence[int]] = None,
                 kinds: Optional[Sequence[str]] = None, kappa: float = 1e2, target: float = 1e-2,
                 max_iter: Optional[int] = None, dtype: str = "float64", device: str = "cpu",
                 seed: int = 0, threads: Optional[int] = None, smoke: bool = False,
                 progress: bool = True) -> SweepResult:
    """Sketched EAGLE vs SGD (GD on the same ``r``-column sketch) to relative error ``target``
   .

    Sketch sizes default to ``r ∈ {d/8, d/4, d/2, d}``; kinds ``"sample"`` (r of the d columns,
    uniformly) and ``"orthonormal"`` (Haar ``d x r``), a fresh sketch every iteration (seeded by the
    run). At ``r = d`` no sketch is drawn (both kinds are the unsketched method with a per-iteration
    power-iteration norm). For each run ``i`` the problem is ``controlled(n, d, nq, dq,
    kappa=kappa, seed=seed+i)``. Reports iterations, solver time per iteration and wall time to
    ``target`` (see the module docstring for how time is measured).
    """
    if smoke and threads is None:
        threads = 1     # tiny problems gain nothing from threads, and one thread is immune to
        #                 OpenMP oversubscription stalls when the machine is busy
    cfg = _resolve(smoke, SKETCH_FULL, SKETCH_SMOKE, dict(
        n=n, d=d, nq=nq, dq=dq, runs=runs, max_iter=max_iter, sketch_sizes=sketch_sizes,
        kinds=kinds))
    for k in ("n", "d", "nq", "dq", "runs", "max_iter"):
        _check_positive_int(k, cfg[k])
    dd = cfg["d"]
    sizes = list(cfg["sketch_sizes"] or sorted({max(1, dd // 8), max(1, dd // 4),
                                                 max(1, dd // 2), dd}))
    for r in sizes:
        if not isinstance(r, (int, np.integer)) or not (1 <= r <= dd):
            raise ValueError(f"sketch size {r!r} must be an integer in 1..d = 1..{dd}")
    kinds = list(cfg["kinds"])
    bad = [k for k in kinds if k not in ("sample", "orthonormal")]
    if bad:
        raise ValueError(f"kinds {bad}: use 'sample' and/or 'orthonormal'")
    if not (target > 0):
        raise ValueError(f"target={target!r} must be a positive relative error, e.g. 1e-2")
    methods = ("eagle", "sgd")
    out = out or os.path.join(RESULTS_ROOT, "sketch")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench sketch", dict(
        out=out, runs=cfg["runs"], n=cfg["n"], d=dd, nq=cfg["nq"], dq=cfg["dq"],
        sketch_sizes=sizes, kinds=kinds, kappa=kappa, target=target, max_iter=cfg["max_iter"],
        dtype=dtype, device=device, seed=seed, threads=threads), ["smoke"] if smoke else [])

    rows: List[Dict[str, Any]] = []
    curves: Dict[Tuple, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("sketch sweep: %s", command)
        _warm_up([(m, dict(sketch_size=8, sketch_kind=k)) for m in methods for k in kinds],
                 dtype, device)
        bar = _progress(len(sizes) * len(kinds) * len(methods) * cfg["runs"], "sketch sweep",
                        progress)
        for run in range(cfg["runs"]):
            prob = controlled(cfg["n"], dd, cfg["nq"], cfg["dq"], kappa=kappa, seed=seed + run)
            _ = prob.reference, prob.error_denominator
            for r in sizes:
                for kind in kinds:
                    for m in methods:
                        bar.set_postfix_str(f"r={r} {kind} {m} run={run}")
                        res = _run_to_target(prob, m, target, cfg["max_iter"], sketch_size=int(r),
                                             sketch_kind=kind, dtype=dtype, device=device,
                                             seed=seed + run)
                        hist = res.pop("_history")
                        res.pop("monitored_time_s")
                        rows.append(dict(r=int(r), r_over_d=r / dd, kind=kind, method=m, run=run,
                                         seed=seed + run, n=cfg["n"], d=dd, kappa=kappa,
                                         cap=cfg["max_iter"], **res))
                        if run == 0:
                            curves[(int(r), kind, m)] = _curve_from_history(hist)
                        log.info("r=%d %-11s %-5s run %d: %-14s %6d iterations, %.3f ms/it, "
                                 "%.3f s", r, kind, m, run, res["status"], res["iterations"],
                                 res["time_per_iter_ms"], res["time_s"])
                        bar.update(1)
        bar.close()
        load_end = report.load_average()

    summary = _aggregate(rows, ("r", "kind", "method"))
    by = {(s["r"], s["kind"], s["method"]): s for s in summary}
    speedups = []
    for r in sizes:
        for kind in kinds:
            e, s = by.get((r, kind, "eagle")), by.get((r, kind, "sgd"))
            if not (e and s):
                continue
            speedups.append(dict(
                r=r, kind=kind, eagle_time_s=e["time_s_mean"], sgd_time_s=s["time_s_mean"],
                speedup=s["time_s_mean"] / e["time_s_mean"],
                iteration_ratio=s["iterations_mean"] / e["iterations_mean"],
                eagle_reached=_all_reached(e), sgd_reached=_all_reached(s)))
    quarter = max(1, dd // 4)
    headline: Dict[str, Any] = {"target": target, "r_quarter": quarter}
    for sp in speedups:
        if sp["r"] == quarter:
            valid = sp["eagle_reached"] and sp["sgd_reached"]
            headline[f"speedup_{sp['kind']}"] = sp["speedup"]
            headline[f"speedup_{sp['kind']}_valid"] = valid
            headline[f"target_5x_met_{sp['kind']}"] = bool(valid and sp["speedup"] >= 5)

    files = [report.write_csv(rows, os.path.join(out, "sketch.csv")),
             report.write_csv(summary, os.path.join(out, "sketch_summary.csv")),
             report.write_csv(speedups, os.path.join(out, "sketch_speedup.csv")),
             report.write_csv(_curve_rows(curves, ("r", "kind", "method")),
                              os.path.join(out, "sketch_curves.csv"))]
    files += _plot_sketch(out, sizes, kinds, methods, curves, summary, target, dd)

    lines = []
    for kind in kinds:
        if f"speedup_{kind}" in headline:
            v = headline[f"speedup_{kind}"]
            ok = headline[f"speedup_{kind}_valid"]
            met = "met" if headline[f"target_5x_met_{kind}"] else "NOT met"
            lines.append(f"- {kind} sketch, r = d/4 = {quarter}: SGD time / EAGLE time to "
                         f"{target:g} = **{v:.1f}×**" + ("" if ok else
                                                         " (not every run reached the target)")
                         + f" — target ≥ 5×: **{met}**.")
    lines += ["", report.markdown_table(speedups, {
        "r": "r", "sketch": "kind",
        "EAGLE time [s]": "eagle_time_s", "SGD time [s]": "sgd_time_s",
        "SGD / EAGLE time": lambda x: f"{x['speedup']:.1f}×",
        "SGD / EAGLE iterations": lambda x: f"{x['iteration_ratio']:.1f}×",
        "all reached (EAGLE / SGD)": lambda x: f"{report.fmt(x['eagle_reached'])} / "
                                               f"{report.fmt(x['sgd_reached'])}"})]
    table = report.markdown_table(summary, {
        "r": "r", "sketch": "kind", "method": "method", "reached": _reach_fmt,
        "iterations": _mean_pm("iterations_mean", "iterations_std"),
        "ms / iteration": _mean_pm("time_per_iter_ms_mean", "time_per_iter_ms_std"),
        "time to target [s]": _mean_pm("time_s_mean", "time_s_std"),
        "final rel. error (median)": "final_error_median"})
    notes = [
        f"{cfg['runs']} run(s) (problem and sketch seeds {seed}..{seed + cfg['runs'] - 1}); "
        "mean ± standard deviation over runs.",
        f"Target: relative error ≤ {target:g}; cap {cfg['max_iter']} iterations. Rows with "
        "reached < runs report the capped run (a lower bound).",
        "ms / iteration = the solver's own loop time / iterations (unmonitored re-run): sketch "
        "draw (QR of a d x r Gaussian for 'orthonormal'), the per-iteration power-iteration "
        "estimate of ‖A S‖₂ and the update. Time to target = wall-clock of the whole `solve` call.",
        f"At r = d = {dd} no sketch is drawn, so both kinds are the same computation "
        "(unsketched EAGLE / GD with a per-iteration norm estimate).",
        f"κ(A) = {kappa:g}, n = {cfg['n']}, d = {dd}, n' = {cfg['nq']}, d' = {cfg['dq']}, "
        f"dtype {dtype}, device {device}; SGD = GD on the same r-column sketch (η = 0, γ = 1, "
        "ρ = 1/‖A S‖₂²).",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               f"Sketch sweep: sketched EAGLE vs SGD to relative error {target:g}",
                               command, table, notes, machine=machine,
                               sections={"Headline": "\n".join(lines)},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("sketch sweep written to %s", out)
    return SweepResult("sketch", out, rows, summary, headline, files, command)


def _plot_sketch(out, sizes, kinds, methods, curves, summary, target, d) -> List[str]:
    files = []
    style = {"sample": ("-", "o"), "orthonormal": ("--", "s")}
    hl = [(target, f"target {target:g}")]
    for xkey, fname, xlabel in (("iteration", "sketch_error_vs_iteration.png", "iteration"),
                                ("time", "sketch_error_vs_time.png", "time [s] (monitored run)")):
        panels = []
        for r in sizes:
            series = []
            for kind in kinds:
                for m in methods:
                    if (r, kind, m) not in curves:
                        continue
                    it, err, tm = curves[(r, kind, m)]
                    series.append(dict(x=it if xkey == "iteration" else tm,
                                       y=np.maximum(err, _ERR_FLOOR), label=f"{m} {kind}",
                                       linestyle=style[kind][0]))
            panels.append(dict(title=f"r = {r} (d/{d / r:g})" if r != d else f"r = d = {d}",
                               xlabel=xlabel, ylabel="relative error", logx=True, logy=True,
                               series=series, hlines=hl))
        files.append(report.plot_panels(os.path.join(out, fname), panels, ncols=min(2, len(panels)),
                                        title=f"Sketched EAGLE vs SGD: error vs {xkey} (run 0)"))
    by = {(s["r"], s["kind"], s["method"]): s for s in summary}
    panels = []
    for key, ylabel in (("iterations_mean", "iterations to target"),
                        ("time_per_iter_ms_mean", "ms per iteration"),
                        ("time_s_mean", "time to target [s]")):
        series = []
        for kind in kinds:
            for m in methods:
                xs = [r for r in sizes if (r, kind, m) in by]
                ys = [by[(r, kind, m)][key] for r in xs]
                series.append(dict(x=xs, y=ys, label=f"{m} {kind}", linestyle=style[kind][0],
                                   marker=style[kind][1]))
                bad = [(x, y) for x, y in zip(xs, ys) if not _all_reached(by[(x, kind, m)])]
                if bad and key != "time_per_iter_ms_mean":
                    series.append(dict(x=[b[0] for b in bad], y=[b[1] for b in bad],
                                       label=f"{m} (did not reach: capped run)", marker="o",
                                       filled=False, linestyle="none", markersize=12,
                                       color=report.color_for(m)))
        panels.append(dict(title=ylabel, xlabel="sketch size r", ylabel=ylabel, logx=True,
                           logy=key != "time_per_iter_ms_mean", series=series, xticks=sizes))
    files.append(report.plot_panels(os.path.join(out, "sketch_summary.png"), panels, ncols=3,
                                    title=f"Sketch sweep (mean over runs, target {target:g}); "
                                          "hollow rings = did not reach"))
    return files


# ---------------------------------------------------------------------------------------------
# GEMM efficiency
# ---------------------------------------------------------------------------------------------
GEMM_FULL = dict(sizes=(500, 2000), dtypes=("float64", "float32"), runs=5, warmup=2,
                 solve_iters=6)
GEMM_SMOKE = dict(sizes=(48, 96), dtypes=("float64", "float32"), runs=2, warmup=1,
                  solve_iters=3)
_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(fns: Dict[str, Any], warmup: int, runs: int,
                      device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call of each function: ``warmup`` untimed rounds, then ``runs`` rounds that
    call every function once in turn, so a load spike on a shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    out: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out[k].append(time.perf_counter() - t0)
    return out


def gemm_sweep(out: Optional[str] = None, *, runs: Optional[int] = None,
               warmup: Optional[int] = None, sizes: Optional[Sequence[int]] = None,
               dtypes: Optional[Sequence[str]] = None, solve_iters: Optional[int] = None,
               device: str = "auto", seed: int = 0, threads: Optional[int] = None,
               smoke: bool = False, progress: bool = True) -> SweepResult:
    """EAGLE's time per iteration over the GEMM floor, for ``n = d`` in ``sizes``.

    For each dtype and size (``n = d``, ``n' = d' = 2``):

    * ``t_gemm``: a ``(n, d) @ (d, d)`` ``torch.matmul``; rate ``R = 2·n·d² / t_gemm``.
    * floor ``= 3·n·d² / R`` = ``1.5·t_gemm``: a symmetric rank-k product for ``AᵀA``
      (``n·d²`` flops) plus one GEMM ``A·G`` (``2·n·d²``) per iteration .
    * ``t_kernel``: :func:`eagle_dist.kernels.eagle_update` called directly in the stable form
      (``ρ = 1``, ``scale = 1.5``, ``η = 1/3``, ``γ = 1``, ``‖A‖₂ = 1``), iterates fed back.
    * ``t_gram``: ``A.T @ A`` alone, as torch computes it (to show where the time goes).
    * ``t_solve``: per-iteration time of the full ``solve(..., "eagle")`` loop (monitor and stop
      checks included; error recording off), median over ``solve_iters`` iterations.

    ``runs`` timed repetitions after ``warmup`` untimed ones; medians are reported, with the
    standard deviation as the spread. The ratio ``t / floor`` is the headline (target ≤ 1.2).
    """
    if smoke and threads is None:
        threads = 1     # tiny problems gain nothing from threads, and one thread is immune to
        #                 OpenMP oversubscription stalls when the machine is busy
    cfg = _resolve(smoke, GEMM_FULL, GEMM_SMOKE, dict(
        sizes=sizes, dtypes=dtypes, runs=runs, warmup=warmup, solve_iters=solve_iters))
    for k in ("runs", "solve_iters"):
        _check_positive_int(k, cfg[k])
    if not isinstance(cfg["warmup"], (int, np.integer)) or cfg["warmup"] < 0:
        raise ValueError(f"warmup={cfg['warmup']!r} must be a non-negative integer")
    sizes = [int(s) for s in cfg["sizes"]]
    for s in sizes:
        _check_positive_int("size", s)
    dtypes = list(cfg["dtypes"])
    bad = [t for t in dtypes if t not in _TORCH_DTYPES]
    if bad:
        raise ValueError(f"dtypes {bad}: use 'float64' and/or 'float32'")
    from ..control import resolve_device
    dev = resolve_device(device)
    out = out or os.path.join(RESULTS_ROOT, "gemm")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench gemm", dict(
        out=out, runs=cfg["runs"], warmup=cfg["warmup"], sizes=sizes, dtypes=dtypes,
        solve_iters=cfg["solve_iters"], device=device, seed=seed, threads=threads),
        ["smoke"] if smoke else [])

    samples: List[Dict[str, Any]] = []
    summary: List[Dict[str, Any]] = []
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("GEMM sweep: %s", command)
        bar = _progress(len(sizes) * len(dtypes), "gemm sweep", progress)
        for n in sizes:
            d = n
            rng = np.random.default_rng(seed)
            A0 = rng.standard_normal((n, d))
            A0 /= np.linalg.norm(A0, 2) if n <= 600 else _norm2_torch(A0)
            B0, C0 = rng.standard_normal((2, d)), rng.standard_normal((n, 2))
            prob = Problem.from_arrays(A0, B0, C0, name=f"gemm n=d={n}")
            # the EAGLE solver evaluates problem.error_denominator (a float64 pinv of A) even with
            # record_error=False; do it here, outside every timer, and say how long it took
            t0 = time.perf_counter()
            _ = prob.error_denominator
            log.info("n=%d: float64 reference (pinv) took %.1f s (not part of any timing)", n,
                     time.perf_counter() - t0)
            for dt_name in dtypes:
                bar.set_postfix_str(f"n=d={n} {dt_name}")
                dt = _TORCH_DTYPES[dt_name]
                gen = torch.Generator(device="cpu").manual_seed(seed)
                X = torch.randn(n, d, generator=gen, dtype=dt).to(dev)
                Y = torch.randn(d, d, generator=gen, dtype=dt).to(dev)
                A = torch.tensor(A0, dtype=dt, device=dev)
                B = torch.tensor(B0, dtype=dt, device=dev)
                C = torch.tensor(C0, dtype=dt, device=dev)
                D = torch.zeros(2, 2, dtype=dt, device=dev)
                state = [A, B, C, D]

                def kernel_step():
                    state[:] = kernels.eagle_update(*state, eta=1.0 / 3.0, gamma=1.0, rho=1.0,
                                                    scale=1.5)

                state_g = [A, B, C, D]

                def kernel_gemm_step():
                    # the same update with the SYRK/SYMM path off: torch GEMMs only
                    old = kernels.use_symmetric_blas(False)
                    try:
                        state_g[:] = kernels.eagle_update(*state_g, eta=1.0 / 3.0, gamma=1.0,
                                                          rho=1.0, scale=1.5)
                    finally:
                        kernels.use_symmetric_blas(old)

                ops = {"gemm": lambda: torch.matmul(X, Y), "gram": lambda: A.T @ A,
                       "kernel": kernel_step, "kernel_gemm": kernel_gemm_step}
                sym = kernels._symmetric_blas(A)
                if sym is not None:
                    ops["syrk"] = lambda: sym.gram(A)
                timed = _time_interleaved(ops, cfg["warmup"], cfg["runs"], dev)
                t_gemm, t_gram, t_kernel = timed["gemm"], timed["gram"], timed["kernel"]
                t_kernel_gemm, t_syrk = timed["kernel_gemm"], timed.get("syrk", [])
                # the full solve loop: one warm-up solve, then per-iteration times from the history
                solve(prob, "eagle", record_error=False, tol=_NO_TOL, max_iter=2, dtype=dt_name,
                      device=str(dev))
                res = solve(prob, "eagle", record_error=False, tol=_NO_TOL,
                            max_iter=cfg["solve_iters"], dtype=dt_name, device=str(dev))
                t_solve = list(np.diff(np.concatenate([[0.0], res.history.time])))
                for op, ts in (("gemm", t_gemm), ("gram_AtA", t_gram), ("syrk", t_syrk),
                               ("kernel", t_kernel), ("kernel_gemm_only", t_kernel_gemm),
                               ("solve_iteration", t_solve)):
                    for i, t in enumerate(ts):
                        samples.append(dict(dtype=dt_name, n=n, d=d, op=op, rep=i, seconds=t))
                g, k, s, gr, kg = (report.stats(t) for t in (t_gemm, t_kernel, t_solve, t_gram,
                                                              t_kernel_gemm))
                sy = report.stats(t_syrk) if t_syrk else None
                flops = n * d * d
                # best-of-N (the least disturbed repetition: the estimator of choice on a shared
                # machine) is the headline; medians are reported next to it
                floor_best, floor_med = 1.5 * g["min"], 1.5 * g["median"]
                row = dict(
                    dtype=dt_name, n=n, d=d, device=str(dev), threads=torch.get_num_threads(),
                    gemm_ms=1e3 * g["min"], gemm_ms_median=1e3 * g["median"],
                    gemm_ms_std=1e3 * g["std"], gemm_gflops=2.0 * flops / g["min"] / 1e9,
                    floor_ms=1e3 * floor_best,
                    gram_ms=1e3 * gr["min"], gram_over_gemm=gr["min"] / g["min"],
                    symmetric_blas=sym is not None,
                    syrk_ms=1e3 * sy["min"] if sy else float("nan"),
                    syrk_over_gemm=sy["min"] / g["min"] if sy else float("nan"),
                    kernel_gemm_only_ms=1e3 * kg["min"],
                    kernel_gemm_only_ratio=kg["min"] / floor_best,
                    kernel_ms=1e3 * k["min"], kernel_ms_median=1e3 * k["median"],
                    kernel_ms_std=1e3 * k["std"],
                    kernel_ratio=k["min"] / floor_best, kernel_ratio_median=k["median"] / floor_med,
                    solve_iter_ms=1e3 * s["min"], solve_iter_ms_median=1e3 * s["median"],
                    solve_iter_ms_std=1e3 * s["std"],
                    solve_ratio=s["min"] / floor_best, solve_ratio_median=s["median"] / floor_med,
                    runs=cfg["runs"], solve_iters=cfg["solve_iters"],
                    target_met=bool(k["min"] / floor_best <= 1.2),
                )
                summary.append(row)
                log.info("n=d=%d %s: GEMM %.1f GF/s, kernel %.2f ms = %.3f x floor, solve "
                         "iteration %.2f ms = %.3f x floor (best of N)", n, dt_name,
                         row["gemm_gflops"],
                         row["kernel_ms"], row["kernel_ratio"], row["solve_iter_ms"],
                         row["solve_ratio"])
                bar.update(1)
        bar.close()
        load_end = report.load_average()

    headline = {f"kernel_ratio_{r['dtype']}_n{r['n']}": r["kernel_ratio"] for r in summary}
    headline.update({f"solve_ratio_{r['dtype']}_n{r['n']}": r["solve_ratio"] for r in summary})
    headline["target_1.2_met_all"] = all(r["target_met"] for r in summary)
    files = [report.write_csv(samples, os.path.join(out, "gemm.csv")),
             report.write_csv(summary, os.path.join(out, "gemm_summary.csv"))]
    files += _plot_gemm(out, summary)
    met = [f"{r['dtype']} n={r['n']}" for r in summary if r["target_met"]]
    lines = ["- `eagle_update` kernel time / floor (best of N; median in brackets): " + ", ".join(
        f"{r['dtype']} n = d = {r['n']}: **{r['kernel_ratio']:.2f}** "
        f"({r['kernel_ratio_median']:.2f})" for r in summary) + ".",
        "- full `solve` loop, time per iteration / floor: " + ", ".join(
            f"{r['dtype']} n = d = {r['n']}: {r['solve_ratio']:.2f} ({r['solve_ratio_median']:.2f})"
            for r in summary) + ".",
        f"- Issue target ≤ 1.2: **{'met' if headline['target_1.2_met_all'] else 'NOT met'}**"
        + (f" (met for {', '.join(met)})" if met and not headline["target_1.2_met_all"] else "")
        + ".",
        "- The same kernel with torch GEMMs only (`kernels.use_symmetric_blas(False)`): "
        + ", ".join(f"{r['kernel_gemm_only_ratio']:.2f}" for r in summary) + " (same order). "
        "A plain `A.T @ A` takes " + ", ".join(f"{r['gram_over_gemm']:.2f}" for r in summary)
        + " GEMM-times: torch computes it as a general GEMM (2·n·d² flops) rather than a "
          "symmetric rank-k product (n·d²), so that path does ≈ 4·n·d² flops per iteration and "
          "cannot go below 4/3 ≈ 1.33.",
        "- The SYRK that replaces it (MKL through `kernels._SymmetricBlas`) takes "
        + ", ".join(report.fmt(r["syrk_over_gemm"]) for r in summary)
        + " GEMM-times where the floor assumes 0.5: a symmetric product does half the flops but "
          "runs at a lower rate, which is what keeps the kernel above the floor."]

    def best_med(key):
        return lambda r: f"{report.fmt(r[key])} ({report.fmt(r[key + '_median'])})"
    table = report.markdown_table(summary, {
        "dtype": "dtype", "n = d": "n", "threads": "threads",
        "GEMM [ms]": best_med("gemm_ms"), "GEMM GF/s": "gemm_gflops",
        "floor [ms]": "floor_ms", "AᵀA GEMM [ms]": "gram_ms", "AᵀA SYRK [ms]": "syrk_ms",
        "kernel [ms]": best_med("kernel_ms"),
        "GEMM-only kernel / floor": lambda r: f"{r['kernel_gemm_only_ratio']:.3f}",
        "kernel / floor":
            lambda r: f"**{r['kernel_ratio']:.3f}** ({r['kernel_ratio_median']:.3f})",
        "solve iteration [ms]": best_med("solve_iter_ms"),
        "solve / floor": lambda r: f"{r['solve_ratio']:.3f} ({r['solve_ratio_median']:.3f})",
        "≤ 1.2": lambda r: report.fmt(r["target_met"])})
    notes = [
        "floor = 3·n·d² flops at the GEMM rate measured in the same run (a (n, d) @ (d, d) "
        "torch.matmul) = 1.5 × the GEMM time.",
        f"Each of GEMM, AᵀA (GEMM and SYRK), the kernel and the GEMM-only kernel is timed {cfg['runs']} times, interleaved (one of each "
        f"per round) after {cfg['warmup']} warm-up rounds; the table shows the best (fastest) "
        "repetition and, in brackets, the median. The floor and the headline ratio use the best "
        "repetitions: on a shared machine the fastest repetition is the least disturbed one. "
        f"The solve loop: per-iteration times of one `solve(problem, 'eagle', "
        f"record_error=False, max_iter={cfg['solve_iters']})` after a warm-up solve.",
        "kernel = `eagle_update(A, B, C, D, eta=1/3, gamma=1, rho=1, scale=1.5)` with ‖A‖₂ = 1 "
        "(the solver's stable form), outputs fed back as inputs; on CPU it forms AᵀA by SYRK and "
        "multiplies by SYMM (scale folded in) when MKL's routines are reachable "
        "(`kernels.symmetric_blas_available()`), else by torch GEMMs. 'GEMM-only kernel' is the "
        "same call with that path switched off, timed in the same interleaved rounds.",
        f"device {dev}; gemm.csv holds every timed sample.",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "GEMM efficiency: EAGLE time per iteration / (3·n·d² flops at the "
                               "measured GEMM rate)", command, table, notes, machine=machine,
                               sections={"Headline": "\n".join(lines)},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("GEMM sweep written to %s", out)
    return SweepResult("gemm", out, samples, summary, headline, files, command)


def _norm2_torch(A: np.ndarray) -> float:
    s2, _ = kernels.spectral_norm_sq(torch.from_numpy(A), iters=500, rtol=1e-12)
    return math.sqrt(s2)


def _plot_gemm(out, summary) -> List[str]:
    labels = [f"{r['dtype']}\nn=d={r['n']}" for r in summary]
    x = np.arange(len(summary), dtype=float)
    panels = [
        dict(title="time per iteration / floor (3·n·d² flops at GEMM rate)", xlabel="",
             ylabel="ratio", xticks=list(x), xticklabels=labels,
             series=[dict(x=x - 0.27, y=[r["kernel_ratio"] for r in summary], kind="bar",
                          width=0.27, label="eagle_update kernel", color="#d62728",
                          annotate=[f"{r['kernel_ratio']:.2f}" for r in summary]),
                     dict(x=x, y=[r["solve_ratio"] for r in summary], kind="bar",
                          width=0.27, label="full solve loop", color="#ff9896",
                          annotate=[f"{r['solve_ratio']:.2f}" for r in summary]),
                     dict(x=x + 0.27, y=[r["kernel_gemm_only_ratio"] for r in summary],
                          kind="bar", width=0.27, label="kernel, torch GEMMs only",
                          color="#7f7f7f",
                          annotate=[f"{r['kernel_gemm_only_ratio']:.2f}" for r in summary])],
             hlines=[(1.2, "target 1.2"), (4.0 / 3.0, "4/3: general-GEMM Gram bound")]),
        dict(title="measured GEMM rate", xlabel="", ylabel="GFLOP/s", xticks=list(x),
             xticklabels=labels,
             series=[dict(x=x, y=[r["gemm_gflops"] for r in summary], kind="bar", width=0.5,
                          label="torch.matmul (n,d)@(d,d)", color="#1f77b4",
                          annotate=[report.fmt(r["gemm_gflops"]) for r in summary])]),
    ]
    return [report.plot_panels(os.path.join(out, "gemm_ratio.png"), panels, ncols=2,
                               panel_size=(5.6, 4.2),
                               title="GEMM efficiency of EAGLE (dotted lines: 1.2 target, "
                                     "4/3 = general-GEMM Gram bound)")]


# ---------------------------------------------------------------------------------------------
# command line: eagle-dist bench kappa | sketch | gemm
# ---------------------------------------------------------------------------------------------


def _common_args(p, sweep: str) -> None:
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, sweep),
                   help=f"output directory (default {os.path.join(RESULTS_ROOT, sweep)})")
    p.add_argument("--runs", type=int, default=None,
                   help="repetitions averaged (default: 3; gemm: 5 timed repetitions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and one torch thread (unless --threads): a seconds-long check")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_kappa(args) -> int:
    return _print_headline(kappa_sweep(
        args.out, runs=args.runs, kappas=args.kappas, n=args.n, d=args.d, nq=args.nq,
        dq=args.dq, methods=args.methods, target=args.target, max_iter=args.max_iter,
        eagle_max_iter=args.eagle_max_iter, krylov_tol=args.krylov_tol, dtype=args.dtype,
        device=args.device, seed=args.seed, threads=args.threads, smoke=args.smoke,
        progress=not args.no_progress))


def _cmd_sketch(args) -> int:
    return _print_headline(sketch_sweep(
        args.out, runs=args.runs, n=args.n, d=args.d, nq=args.nq, dq=args.dq,
        sketch_sizes=args.sketch_sizes, kinds=args.kinds, kappa=args.kappa, target=args.target,
        max_iter=args.max_iter, dtype=args.dtype, device=args.device, seed=args.seed,
        threads=args.threads, smoke=args.smoke, progress=not args.no_progress))


def _cmd_gemm(args) -> int:
    return _print_headline(gemm_sweep(
        args.out, runs=args.runs, warmup=args.warmup, sizes=args.sizes, dtypes=args.dtypes,
        solve_iters=args.solve_iters, device=args.device, seed=args.seed, threads=args.threads,
        smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``kappa``, ``sketch`` and ``gemm`` under ``eagle-dist bench``."""
    p = bsub.add_parser("kappa", help="κ-sweep: iterations/time to 1e-10 for EAGLE and baselines",
                        description=kappa_sweep.__doc__.split("\n")[0])
    _common_args(p, "kappa")
    p.add_argument("--kappas", type=_floats, default=None, help="default 1e2,1e3,1e4,1e5,1e6")
    for k, h in (("n", 240), ("d", 240), ("nq", 2), ("dq", 2)):
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {h}")
    p.add_argument("--methods", type=_strs, default=None, help="default eagle,cg,gd,lsmr,lstsq")
    p.add_argument("--target", type=float, default=1e-10, help="relative error to reach")
    p.add_argument("--max-iter", type=int, default=None,
                   help="cap for CG, GD, LSMR (default 20000)")
    p.add_argument("--eagle-max-iter", type=int, default=None, help="cap for EAGLE (default 500)")
    p.add_argument("--krylov-tol", type=float, default=1e-14, help="LSMR/LSQR atol = btol")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(fn=_cmd_kappa)

    p = bsub.add_parser("sketch", help="sketch sweep: sketched EAGLE vs SGD to 1e-2",
                        description=sketch_sweep.__doc__.split("\n")[0])
    _common_args(p, "sketch")
    for k, h in (("n", 240), ("d", 240), ("nq", 2), ("dq", 2)):
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {h}")
    p.add_argument("--sketch-sizes", type=_ints, default=None, help="default d/8,d/4,d/2,d")
    p.add_argument("--kinds", type=_strs, default=None, help="default sample,orthonormal")
    p.add_argument("--kappa", type=float, default=1e2)
    p.add_argument("--target", type=float, default=1e-2)
    p.add_argument("--max-iter", type=int, default=None, help="cap (default 10000)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(fn=_cmd_sketch)

    p = bsub.add_parser("gemm", help="GEMM efficiency: EAGLE time per iteration / 3nd² floor",
                        description=gemm_sweep.__doc__.split("\n")[0])
    _common_args(p, "gemm")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2)")
    p.add_argument("--sizes", type=_ints, default=None, help="n = d values (default 500,2000)")
    p.add_argument("--dtypes", type=_strs, default=None, help="default float64,float32")
    p.add_argument("--solve-iters", type=int, default=None,
                   help="iterations of the timed solve loop (default 6)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(fn=_cmd_gemm)
