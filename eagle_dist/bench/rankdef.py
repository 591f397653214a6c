"""Rank-deficient and large centralized problems (paper Fig. 6, third panel, and Fig. 20):
``eagle-dist bench rankdef`` and ``eagle-dist bench large``, both :func:`rank_sweep`.

For every rank r and run ``i`` the problem is ``controlled(n, d, n', d', kappa=κ, rank=r,
seed=seed+i)``: ``A = U diag(σ) Vᵀ`` with r nonzero singular values from 1 to 1/κ, consistent
data (``D = B A⁺ C``). EAGLE, CG on the normal equations and GD stop when
``‖D_ℓ − D̂‖_F ≤ target·‖D̂‖_F`` (the paper's "time to ε = 1e-20" is this with the squared
error: 1e-10 relative Frobenius error squared); LSMR runs SciPy's own rule; ``lstsq`` is one SVD
solve.

The paper's GD adds a ridge λ = 1e-3 when A is rank-deficient (``G ← G + λW``). This package's
GD has **no ridge**: on consistent data GD from ``W₀ = 0`` stays in A's row space and converges to
the minimum-norm ``B A⁺`` without one, while a ridge changes the limit to
``B Aᵀ(A Aᵀ + λI)⁻¹`` (A scaled to ``‖A‖₂ = 1`` as GD's step ``1/σ_max²`` does). The sweep reports
the relative error of that ridge limit against ``D̂`` for every problem
(``ridge_limit_error``): the floor the paper's ridge GD cannot go below.

Example:
    >>> from eagle_dist.bench.rankdef import rank_sweep
    >>> res = rank_sweep(out="/tmp/rankdef_smoke", smoke=True, progress=False)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import controlled
from . import report
from .common import RESULTS_ROOT, SweepResult, add_centralized_args, aggregate, all_reached
from .common import check_positive_int, curve_rows, ints, mean_pm, print_headline
from .common import progress as _progress, reach_fmt, resolve, strs, threads as _threads, warm_up
from .paper_common import (DIRECT, check_methods, compare_methods, error_panels,
                           reach_iterations_cell)

log = logging.getLogger(__name__)

METHODS = ("eagle", "cg", "gd", "lsmr", "lstsq")
# GD needs O(κ² log 1/ε) ≈ 2e5 iterations at κ = 1e2: capped at 5,000 (a lower bound; the
# kappa sweep shows it misses 1e-10 even at 20,000), which keeps the sweep to minutes
RANKDEF_FULL = dict(n=240, d=240, nq=2, dq=2, kappa=1e2, ranks=(240, 180, 120, 60), runs=3,
                    max_iter=20000, gd_max_iter=5000, eagle_max_iter=500, methods=METHODS)
RANKDEF_SMOKE = dict(n=32, d=32, nq=2, dq=2, kappa=1e2, ranks=(32, 12), runs=1, max_iter=400,
                     gd_max_iter=200, eagle_max_iter=100, methods=METHODS)
# Fig. 20: n = d = 1920. One EAGLE iteration is ~4 s on one loaded core here, GD needs
# O(κ² log 1/ε) ≈ 2e5 iterations at κ = 1e2, so GD is capped at 200 (a lower bound)
LARGE_FULL = dict(n=1920, d=1920, nq=2, dq=2, kappa=1e2, ranks=(1920, 960), runs=1,
                  max_iter=5000, gd_max_iter=200, eagle_max_iter=200, methods=METHODS)
LARGE_SMOKE = dict(n=48, d=48, nq=2, dq=2, kappa=1e2, ranks=(48, 24), runs=1, max_iter=400,
                   gd_max_iter=50, eagle_max_iter=100, methods=METHODS)


def ridge_limit_error(prob, lam: float) -> float:
    """Relative error against ``D̂ = B A⁺ C`` of the ridge-GD limit ``B Aᵀ(A Aᵀ + λI)⁻¹ C``,
    A and B scaled together so that ``‖A‖₂ = 1`` (GD's step is ``1/‖A‖₂²``; the paper's ridge
    λ = 1e-3 acts at that scale). Computed in A's SVD basis: ``σ/(σ² + λ)`` replaces ``1/σ``."""
    A = prob.A.astype(np.float64)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    smax = s[0]
    keep = s > smax * max(A.shape) * np.finfo(np.float64).eps
    U, s, Vt = U[:, keep], s[keep] / smax, Vt[keep]
    B = prob.B.astype(np.float64) / smax
    BV = B @ Vt.T                                             # (n', r)
    UC = U.T @ prob.C.astype(np.float64)                     # (r, d')
    ridge = (BV * (s / (s * s + lam))) @ UC
    ref = prob.reference
    return float(np.linalg.norm(ridge - ref) / max(np.linalg.norm(ref), 1e-300))


def rank_sweep(out: Optional[str] = None, *, name: str = "rankdef", runs: Optional[int] = None,
               ranks: Optional[Sequence[int]] = None, n: Optional[int] = None,
               d: Optional[int] = None, nq: Optional[int] = None, dq: Optional[int] = None,
               kappa: Optional[float] = None, methods: Optional[Sequence[str]] = None,
               target: float = 1e-10, max_iter: Optional[int] = None,
               gd_max_iter: Optional[int] = None, eagle_max_iter: Optional[int] = None,
               krylov_tol: float = 1e-14, ridge: float = 1e-3, dtype: str = "float64",
               device: str = "cpu", seed: int = 0, threads: Optional[int] = None,
               smoke: bool = False, progress: bool = True) -> SweepResult:
    """Iterations and wall time to relative error ``target`` versus rank(A) (module docstring).

    ``name="rankdef"`` (Fig. 6(3): n = d = 240, ranks 240/180/120/60, 3 runs) or ``"large"``
    (Fig. 20: n = d = 1920, ranks 1920/960, 1 run, GD capped at 200 iterations); ``smoke=True``
    shrinks every default to seconds; explicitly given arguments win.
    """
    if name not in ("rankdef", "large"):
        raise ValueError(f"name={name!r}; use 'rankdef' (Fig. 6(3)) or 'large' (Fig. 20)")
    if smoke and threads is None:
        threads = 1
    full, small = (RANKDEF_FULL, RANKDEF_SMOKE) if name == "rankdef" else (LARGE_FULL, LARGE_SMOKE)
    cfg = resolve(smoke, full, small, dict(
        ranks=ranks, n=n, d=d, nq=nq, dq=dq, kappa=kappa, runs=runs, max_iter=max_iter,
        gd_max_iter=gd_max_iter, eagle_max_iter=eagle_max_iter, methods=methods))
    for k in ("n", "d", "nq", "dq", "runs", "max_iter", "gd_max_iter", "eagle_max_iter"):
        check_positive_int(k, cfg[k])
    ranks = [int(r) for r in cfg["ranks"]]
    if not ranks or any(not (1 <= r <= min(cfg["n"], cfg["d"])) for r in ranks):
        raise ValueError(f"ranks={cfg['ranks']!r} must be integers in 1..min(n, d) = "
                         f"1..{min(cfg['n'], cfg['d'])}")
    if not (float(cfg["kappa"]) >= 1.0):
        raise ValueError(f"kappa={cfg['kappa']!r} must be a number >= 1")
    if not (target > 0):
        raise ValueError(f"target={target!r} must be a positive relative error, e.g. 1e-10")
    if not (ridge > 0):
        raise ValueError(f"ridge={ridge!r} must be positive (the paper's GD uses 1e-3)")
    methods = check_methods(cfg["methods"])
    caps = dict(eagle=cfg["eagle_max_iter"], cg=cfg["max_iter"], gd=cfg["gd_max_iter"],
                krylov=cfg["max_iter"])
    out = out or os.path.join(RESULTS_ROOT, name)
    report.ensure_dir(out)
    command = report.command_line(f"eagle-dist bench {name}", dict(
        out=out, runs=cfg["runs"], ranks=ranks, n=cfg["n"], d=cfg["d"], nq=cfg["nq"],
        dq=cfg["dq"], kappa=float(cfg["kappa"]), methods=methods, target=target,
        max_iter=cfg["max_iter"], gd_max_iter=cfg["gd_max_iter"],
        eagle_max_iter=cfg["eagle_max_iter"], krylov_tol=krylov_tol, ridge=ridge, dtype=dtype,
        device=device, seed=seed, threads=threads), ["smoke"] if smoke else [])

    rows: List[Dict[str, Any]] = []
    problems: List[Dict[str, Any]] = []
    curves: Dict[Tuple[int, str], Tuple] = {}
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("%s: %s", name, command)
        warm_up([(m, {}) for m in methods], dtype, device)
        bar = _progress(len(ranks) * cfg["runs"], name, progress)
        for rank in ranks:
            for run in range(cfg["runs"]):
                prob = controlled(cfg["n"], cfg["d"], cfg["nq"], cfg["dq"],
                                  kappa=float(cfg["kappa"]), rank=rank, seed=seed + run)
                _ = prob.reference, prob.error_denominator     # float64 pinv, outside every timer
                problems.append(dict(rank=rank, run=run, seed=seed + run,
                                     kappa_nonzero=prob.condition_number,
                                     ridge=ridge, ridge_limit_error=ridge_limit_error(prob, ridge)))
                rs, cv = compare_methods(prob, methods, target=target, caps=caps,
                                         krylov_tol=krylov_tol, dtype=dtype, device=device,
                                         seed=seed + run, curves=run == 0)
                for r in rs:
                    r.update(rank=rank, run=run, seed=seed + run, n=cfg["n"], d=cfg["d"])
                    log.info("%s rank %d run %d %-6s %-14s %6d iterations, error %.2e, %.3f s",
                             name, rank, run, r["method"], r["status"], r["iterations"],
                             r["final_error"], r["time_s"])
                rows += rs
                curves.update({(rank, m): c for m, c in cv.items()})
                bar.update(1)
        bar.close()
        load_end = report.load_average()

    summary = aggregate(rows, ("rank", "method"))
    by = {(s["rank"], s["method"]): s for s in summary}
    ridge_by = {r: report.stats(p["ridge_limit_error"] for p in problems if p["rank"] == r)
                for r in ranks}
    headline: Dict[str, Any] = {"target": target}
    per_rank = []
    for r in ranks:
        e, c, g = by.get((r, "eagle")), by.get((r, "cg")), by.get((r, "gd"))
        row = dict(rank=r, ridge_limit_error_median=ridge_by[r]["median"])
        if e:
            row.update(eagle_iterations=e["iterations_mean"], eagle_reached=reach_fmt(e),
                       eagle_time_s=e["time_s_mean"])
            headline[f"eagle_iterations_rank{r}"] = e["iterations_mean"]
        if e and c:
            row["cg_over_eagle"] = c["iterations_mean"] / e["iterations_mean"]
            row["cg_lower_bound"] = not all_reached(c)
        if g:
            row["gd_reached"] = reach_fmt(g)
        per_rank.append(row)
    files = [report.write_csv(rows, os.path.join(out, f"{name}.csv")),
             report.write_csv(summary, os.path.join(out, f"{name}_summary.csv")),
             report.write_csv(problems, os.path.join(out, f"{name}_problems.csv")),
             report.write_csv(curve_rows(curves, ("rank", "method")),
                              os.path.join(out, f"{name}_curves.csv"))]
    files += _plots(out, name, ranks, methods, curves, summary, target, cfg)

    table = report.markdown_table(summary, {
        "rank(A)": "rank", "method": "method", "reached": reach_fmt,
        "iterations": mean_pm("iterations_mean", "iterations_std"),
        "time [s]": mean_pm("time_s_mean", "time_s_std"),
        "final rel. error (median / worst)":
            lambda s: f"{report.fmt(s['final_error_median'])} / {report.fmt(s['final_error_max'])}",
        "status": "status"})
    head = report.markdown_table(per_rank, {
        "rank(A)": "rank",
        "EAGLE iterations": lambda r: reach_iterations_cell(by.get((r["rank"], "eagle"))),
        "CG-NE iterations": lambda r: reach_iterations_cell(by.get((r["rank"], "cg"))),
        "CG / EAGLE": lambda r: (("≥ " if r.get("cg_lower_bound") else "")
                                 + f"{r['cg_over_eagle']:.0f}×") if "cg_over_eagle" in r else "—",
        "GD reached": lambda r: r.get("gd_reached", "—"),
        f"ridge-GD limit error (λ = {ridge:g}), median": lambda r:
            report.fmt(r["ridge_limit_error_median"])})
    fig = "Fig. 6 (third panel)" if name == "rankdef" else "Fig. 20"
    notes = [
        f"{cfg['runs']} run(s) per rank (problem seeds {seed}..{seed + cfg['runs'] - 1}); "
        "mean ± standard deviation over runs; `reached` counts runs at relative error "
        f"≤ {target:g} (the squared error ≤ {target * target:g}, the paper's ε).",
        f"controlled(n = {cfg['n']}, d = {cfg['d']}, n' = {cfg['nq']}, d' = {cfg['dq']}, "
        f"κ = {float(cfg['kappa']):g}, rank = r): r nonzero singular values, geometric from 1 to "
        "1/κ, noiseless (D = B A⁺ C). Caps: EAGLE "
        f"{cfg['eagle_max_iter']}, CG/LSMR {cfg['max_iter']}, GD {cfg['gd_max_iter']} iterations; "
        "a capped run's iterations/time are a lower bound, not a time to target.",
        "GD here has no ridge (module docstring): on consistent data it converges to the "
        "minimum-norm solution from W₀ = 0. The paper's ridge GD (λ = 1e-3 at ‖A‖₂ = 1) would "
        "converge to B Aᵀ(AAᵀ + λI)⁻¹ C instead; its relative error against D̂ is the last "
        "column of the headline table — it cannot reach the target.",
        "EAGLE treats singular values below sqrt(eps)·σ_max as zero and freezes A, B after "
        "`kernels.lift_cap` updates (51 in float64); the C/D step is the filtered one "
        "(`filter_order=1`), the same D̂ as the paper's step.",
        "Time: wall-clock of an unmonitored re-run of exactly the monitored run's iterations "
        "(`bench.common.run_to_target`), CPU, loaded machine (see load below): ratios of "
        "iterations are load-free, seconds are not.",
        f"dtype {dtype}, device {device}; {fig} of the paper.",
    ]
    notes += report.load_notes(load_start, load_end)
    title = ("Rank-deficient A (paper Fig. 6, third panel)" if name == "rankdef"
             else f"Large systems n = d = {cfg['n']} (paper Fig. 20)")
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               f"{title}: iterations and time to relative error {target:g}",
                               command, table, notes, machine=machine,
                               sections={"Headline": head},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("%s written to %s", name, out)
    return SweepResult(name, out, rows, summary, headline, files, command)


def _plots(out, name, ranks, methods, curves, summary, target, cfg) -> List[str]:
    files = []
    for xkey, fname in (("iteration", f"{name}_error_vs_iteration.png"),
                        ("time", f"{name}_error_vs_time.png")):
        panels = error_panels(curves, ranks, methods,
                              lambda r: f"rank(A) = {r} of {min(cfg['n'], cfg['d'])}", target, xkey)
        files.append(report.plot_panels(
            os.path.join(out, fname), panels, ncols=min(4, len(panels)),
            title=f"n = d = {cfg['n']}, κ = {float(cfg['kappa']):g}: relative error vs {xkey} "
                  "(run 0; LSMR: one solve; lstsq: one point)"))
    by = {(s["rank"], s["method"]): s for s in summary}
    series = []
    for m in methods:
        if m in DIRECT:
            continue
        xs = [r for r in ranks if (r, m) in by]
        ys = [by[(r, m)]["iterations_mean"] for r in xs]
        series.append(dict(x=xs, y=ys, label=m, marker="o", filled=True))
        bad = [(x, y) for x, y in zip(xs, ys) if not all_reached(by[(x, m)])]
        if bad:
            series.append(dict(x=[b[0] for b in bad], y=[b[1] for b in bad],
                               label=f"{m} (did not reach: capped)", marker="o", filled=False,
                               linestyle="none", markersize=11, color=report.color_for(m)))
    files.append(report.plot_panels(
        os.path.join(out, f"{name}_iterations_vs_rank.png"),
        [dict(title=f"iterations to relative error {target:g}", xlabel="rank(A)",
              ylabel="iterations (mean over runs)", logy=True, series=series)],
        ncols=1, panel_size=(6.0, 4.4)))
    return files


def _cmd(args) -> int:
    return print_headline(rank_sweep(
        args.out, name=args.sweep, runs=args.runs, ranks=args.ranks, n=args.n, d=args.d,
        nq=args.nq, dq=args.dq, kappa=args.kappa, methods=args.methods, target=args.target,
        max_iter=args.max_iter, gd_max_iter=args.gd_max_iter,
        eagle_max_iter=args.eagle_max_iter, krylov_tol=args.krylov_tol, ridge=args.ridge,
        dtype=args.dtype, device=args.device, seed=args.seed, threads=args.threads,
        smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``rankdef`` (Fig. 6(3)) and ``large`` (Fig. 20) under ``eagle-dist bench``."""
    for sweep, full, helptext in (
            ("rankdef", RANKDEF_FULL, "rank-deficient A (paper Fig. 6(3)): iterations/time to 1e-10"),
            ("large", LARGE_FULL, "n = d = 1920 (paper Fig. 20): iterations/time to 1e-10")):
        p = bsub.add_parser(sweep, help=helptext, description=rank_sweep.__doc__.split("\n")[0])
        add_centralized_args(p, sweep)
        p.add_argument("--ranks", type=ints, default=None,
                       help=f"default {','.join(str(r) for r in full['ranks'])}")
        for k in ("n", "d", "nq", "dq"):
            p.add_argument(f"--{k}", type=int, default=None, help=f"default {full[k]}")
        p.add_argument("--kappa", type=float, default=None, help=f"default {full['kappa']:g}")
        p.add_argument("--methods", type=strs, default=None, help="default " + ",".join(METHODS))
        p.add_argument("--target", type=float, default=1e-10, help="relative error to reach")
        p.add_argument("--max-iter", type=int, default=None,
                       help=f"cap for CG and LSMR (default {full['max_iter']})")
        p.add_argument("--gd-max-iter", type=int, default=None,
                       help=f"cap for GD (default {full['gd_max_iter']})")
        p.add_argument("--eagle-max-iter", type=int, default=None,
                       help=f"cap for EAGLE (default {full['eagle_max_iter']})")
        p.add_argument("--krylov-tol", type=float, default=1e-14, help="LSMR atol = btol")
        p.add_argument("--ridge", type=float, default=1e-3,
                       help="λ of the paper's ridge GD, for the ridge-limit column (default 1e-3)")
        p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
        p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
        p.set_defaults(fn=_cmd)

