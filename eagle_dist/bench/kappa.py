"""κ-sweep (``eagle-dist bench kappa``): :func:`kappa_sweep`.

κ(A) ∈ {1e2 … 1e6}, ``n = d = 240``, ``n' = d' = 2`` (:func:`eagle_dist.data.controlled`).
Iterations and wall time until the relative error ``‖D_ℓ − D̂‖_F / ‖D̂‖_F ≤ 1e-10`` for EAGLE, CG
on the normal equations, GD, LSMR and ``lstsq``; error-vs-iteration and error-vs-time plots.
Headline: CG / EAGLE iterations at κ = 1e4 (target ≥ 300×; the paper claims ~100×).

Time is measured as :func:`eagle_dist.bench.common.run_to_target` describes: the iteration count
``k`` and the curves come from a monitored solve that stops at the target, the reported time from
an unmonitored re-run of exactly ``k`` iterations (its wall-clock around the whole ``solve`` call).

Example:
    >>> from eagle_dist.bench.kappa import kappa_sweep
    >>> out = kappa_sweep(out="/tmp/kappa_smoke", smoke=True, progress=False)   # doctest: +SKIP
    >>> out.headline["cg_over_eagle_iterations"]                                 # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import controlled
from . import report
from .common import ERR_FLOOR as _ERR_FLOOR, RESULTS_ROOT, SweepResult
from .common import add_centralized_args, aggregate as _aggregate
from .common import all_reached as _all_reached, check_positive_int as _check_positive_int
from .common import curve_from_history as _curve_from_history, curve_rows as _curve_rows
from .common import floats as _floats, mean_pm as _mean_pm, print_headline as _print_headline
from .common import progress as _progress, reach_fmt as _reach_fmt, resolve as _resolve
from .common import run_to_target as _run_to_target, strs as _strs, threads as _threads
from .common import walltime_solve as _walltime_solve, warm_up as _warm_up

log = logging.getLogger(__name__)

TARGETED = ("eagle", "cg", "gd")                  # stop on the true error: iterations to target
KRYLOV = ("lsmr", "lsqr")                          # SciPy: own stopping rule, no per-iteration hook
DIRECT = ("lstsq", "lstsq-gelsd", "lstsq-gelsy", "pinv")
# run 0's curve per (κ, method): (iterations, relative error, seconds)
_Curves = Dict[Tuple[float, str], Tuple[np.ndarray, np.ndarray, np.ndarray]]


def _fmt_kappa(k: float) -> str:
    e = math.log10(k)
    return f"1e{int(round(e))}" if abs(e - round(e)) < 1e-9 else f"{k:g}"


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

    rows, curves, machine, load = _measure_kappa(
        cfg, kappas, methods, target=target, krylov_tol=krylov_tol, dtype=dtype, device=device,
        seed=seed, threads=threads, progress=progress, command=command)
    summary, ratios, headline = _summarise_kappa(rows, kappas, target)
    files = _write_kappa(out, rows, summary, ratios, curves, headline, cfg, kappas, methods,
                         target=target, krylov_tol=krylov_tol, dtype=dtype, device=device,
                         seed=seed, command=command, machine=machine, load=load)
    return SweepResult("kappa", out, rows, summary, headline, files, command)


def _measure_kappa(cfg: Dict[str, Any], kappas: List[float], methods: List[str], *,
                   target: float, krylov_tol: float, dtype: str, device: str, seed: int,
                   threads: Optional[int], progress: bool, command: str
                   ) -> Tuple[List[Dict[str, Any]], _Curves, str, Tuple[float, float]]:
    """Run every (κ, run, method) problem: the raw rows, run 0's curves per ``(κ, method)``, the
    machine description and the load average before and after. Writes no files."""
    rows: List[Dict[str, Any]] = []
    curves: _Curves = {}
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
    return rows, curves, machine, (load_start, load_end)


def _summarise_kappa(rows: List[Dict[str, Any]], kappas: List[float], target: float
                     ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Dict[str, Any]]:
    """Pure: the per-(κ, method) summary, the CG / EAGLE ratios per κ and the headline dict."""
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
    return summary, ratios, headline


def _write_kappa(out: str, rows: List[Dict[str, Any]], summary: List[Dict[str, Any]],
                 ratios: List[Dict[str, Any]], curves: _Curves, headline: Dict[str, Any],
                 cfg: Dict[str, Any], kappas: List[float], methods: List[str], *,
                 target: float, krylov_tol: float, dtype: str, device: str, seed: int,
                 command: str, machine: str, load: Tuple[float, float]) -> List[str]:
    """Write the CSVs, the plots and summary.md into ``out``; return the files written."""
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
    notes += report.load_notes(*load)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "κ-sweep: iterations and time to relative error "
                               f"{target:g}", command, table, notes, machine=machine,
                               sections=sections, files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("κ-sweep written to %s", out)
    return files


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


def _cmd_kappa(args) -> int:
    return _print_headline(kappa_sweep(
        args.out, runs=args.runs, kappas=args.kappas, n=args.n, d=args.d, nq=args.nq,
        dq=args.dq, methods=args.methods, target=args.target, max_iter=args.max_iter,
        eagle_max_iter=args.eagle_max_iter, krylov_tol=args.krylov_tol, dtype=args.dtype,
        device=args.device, seed=args.seed, threads=args.threads, smoke=args.smoke,
        progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``kappa`` under ``eagle-dist bench``."""
    p = bsub.add_parser("kappa", help="κ-sweep: iterations/time to 1e-10 for EAGLE and baselines",
                        description=kappa_sweep.__doc__.split("\n")[0])
    add_centralized_args(p, "kappa")
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
