"""Data-distribution ablation (paper Fig. 19): ``eagle-dist bench distributions``.

For every kind of :data:`eagle_dist.data.DISTRIBUTIONS` (SVD construction with log-uniform σ in
[1e-2, 1], Student-t ν = 4, Gaussian, correlated rows (Toeplitz ρ = 0.8), sparse Rademacher
p = 0.1, clustered k = 5), with the paper's definitions (``distribution(…, definition="paper")``;
``--definitions paper,code`` adds this package's original variants), n = d = 240, n' = d' = 2,
rank 240 (the paper's clustered kind is block-constant of rank 5 whatever the rank; see
:data:`eagle_dist.data.generators.DEFINITIONS`): iterations and wall time until the relative error
``‖D_ℓ − D‖_F / ‖D‖_F ≤ target`` for EAGLE, CG-NE, GD, LSMR and ``lstsq``.

Scored against the generated hidden block ``D`` (noiseless and consistent, so ``D = B A⁺ C``
exactly), not against ``numpy.linalg.pinv``: numpy's default cut-off (1e-15·σ_max) keeps
rounding-level singular values of the block-constant clustered A and its ``B pinv(A) C`` is then
3 % off ``D`` (:class:`eagle_dist.bench.paper_common.TruthProblem`).

Example:
    >>> from eagle_dist.bench.distributions import distribution_sweep
    >>> res = distribution_sweep(out="/tmp/dist_smoke", smoke=True, progress=False)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import DISTRIBUTIONS, distribution
from ..data.generators import DEFINITIONS
from . import report
from .common import RESULTS_ROOT, SweepResult, add_centralized_args, aggregate, check_positive_int
from .common import curve_rows, mean_pm, print_headline, progress as _progress, reach_fmt
from .common import resolve, strs, threads as _threads, warm_up
from .paper_common import (against_truth, check_methods, compare_methods, error_panels,
                           reach_iterations_cell)

log = logging.getLogger(__name__)

METHODS = ("eagle", "cg", "gd", "lsmr", "lstsq")
# GD: O(κ² log 1/ε) iterations at κ(A) ≈ 1e3-1e6 here, hopeless at any affordable cap; 2,000
# shows where it stands
DIST_FULL = dict(kinds=DISTRIBUTIONS, definitions=("paper",), n=240, d=240, nq=2, dq=2, runs=3,
                 max_iter=20000, gd_max_iter=2000, eagle_max_iter=500, methods=METHODS)
DIST_SMOKE = dict(kinds=("svd", "clustered"), definitions=("paper",), n=24, d=24, nq=2, dq=2,
                  runs=1, max_iter=300, gd_max_iter=100, eagle_max_iter=100,
                  methods=("eagle", "cg", "lstsq"))


def distribution_sweep(out: Optional[str] = None, *, kinds: Optional[Sequence[str]] = None,
                       definitions: Optional[Sequence[str]] = None, runs: Optional[int] = None,
                       n: Optional[int] = None, d: Optional[int] = None,
                       nq: Optional[int] = None, dq: Optional[int] = None,
                       rank: Optional[int] = None, methods: Optional[Sequence[str]] = None,
                       target: float = 1e-10, max_iter: Optional[int] = None,
                       gd_max_iter: Optional[int] = None,
                       eagle_max_iter: Optional[int] = None, krylov_tol: float = 1e-14,
                       dtype: str = "float64", device: str = "cpu", seed: int = 0,
                       threads: Optional[int] = None, smoke: bool = False,
                       progress: bool = True) -> SweepResult:
    """Iterations and wall time to relative error ``target`` per data distribution (module
    docstring). ``rank=None``: ``min(n, d)``. ``smoke=True``: n = d = 24, two kinds, one run."""
    if smoke and threads is None:
        threads = 1
    cfg = resolve(smoke, DIST_FULL, DIST_SMOKE, dict(
        kinds=kinds, definitions=definitions, n=n, d=d, nq=nq, dq=dq, runs=runs,
        max_iter=max_iter, gd_max_iter=gd_max_iter, eagle_max_iter=eagle_max_iter,
        methods=methods))
    for k in ("n", "d", "nq", "dq", "runs", "max_iter", "gd_max_iter", "eagle_max_iter"):
        check_positive_int(k, cfg[k])
    kinds = list(cfg["kinds"])
    bad = [k for k in kinds if k not in DISTRIBUTIONS]
    if bad or not kinds:
        raise ValueError(f"kinds={kinds!r}: choose one or more of {DISTRIBUTIONS}")
    defs = list(cfg["definitions"])
    if not defs or any(x not in DEFINITIONS for x in defs):
        raise ValueError(f"definitions={defs!r}: choose one or more of {DEFINITIONS}")
    if rank is not None:
        check_positive_int("rank", rank)
    if not (target > 0):
        raise ValueError(f"target={target!r} must be a positive relative error, e.g. 1e-10")
    methods = check_methods(cfg["methods"])
    caps = dict(eagle=cfg["eagle_max_iter"], cg=cfg["max_iter"], gd=cfg["gd_max_iter"],
                krylov=cfg["max_iter"])
    out = out or os.path.join(RESULTS_ROOT, "distributions")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench distributions", dict(
        out=out, kinds=kinds, definitions=defs, runs=cfg["runs"], n=cfg["n"], d=cfg["d"],
        nq=cfg["nq"], dq=cfg["dq"], rank=rank, methods=methods, target=target,
        max_iter=cfg["max_iter"], gd_max_iter=cfg["gd_max_iter"],
        eagle_max_iter=cfg["eagle_max_iter"], krylov_tol=krylov_tol,
        dtype=dtype, device=device, seed=seed, threads=threads), ["smoke"] if smoke else [])

    rows: List[Dict[str, Any]] = []
    problems: List[Dict[str, Any]] = []
    curves: Dict[Tuple[str, str], Tuple] = {}
    cases = [(k, df) for df in defs for k in kinds]
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("distributions: %s", command)
        warm_up([(m, {}) for m in methods], dtype, device)
        bar = _progress(len(cases) * cfg["runs"], "distributions", progress)
        for kind, df in cases:
            case = f"{kind}({df})"
            for run in range(cfg["runs"]):
                raw = distribution(kind, cfg["n"], cfg["d"], cfg["nq"], cfg["dq"], rank=rank,
                                   seed=seed + run, definition=df)
                prob = against_truth(raw, raw.D_true)
                pinv_err = raw.error(raw.D_true)           # how far numpy's pinv is from D
                problems.append(dict(case=case, kind=kind, definition=df, run=run,
                                     seed=seed + run, rank_x=raw.meta["rank"],
                                     kappa_nonzero=raw.condition_number,
                                     numerical_rank_a=int(np.sum(
                                         raw.singular_values > raw.singular_values[0]
                                         * max(raw.A.shape) * np.finfo(np.float64).eps)),
                                     pinv_reference_error=pinv_err))
                rs, cv = compare_methods(prob, methods, target=target, caps=caps,
                                         krylov_tol=krylov_tol, dtype=dtype, device=device,
                                         seed=seed + run, curves=run == 0)
                for r in rs:
                    r.update(case=case, kind=kind, definition=df, run=run, seed=seed + run)
                    log.info("%-28s run %d %-6s %-14s %6d iterations, error %.2e, %.3f s", case,
                             run, r["method"], r["status"], r["iterations"], r["final_error"],
                             r["time_s"])
                rows += rs
                curves.update({(case, m): c for m, c in cv.items()})
                bar.update(1)
        bar.close()
        load_end = report.load_average()

    summary = aggregate(rows, ("case", "method"))
    by = {(s["case"], s["method"]): s for s in summary}
    case_names = [f"{k}({df})" for k, df in cases]
    per_case = []
    for c in case_names:
        ps = [p for p in problems if p["case"] == c]
        kap = report.stats(p["kappa_nonzero"] for p in ps)
        per_case.append(dict(case=c, rank_x=ps[0]["rank_x"],
                             numerical_rank_a=report.stats(p["numerical_rank_a"] for p in ps)["median"],
                             kappa_median=kap["median"], kappa_max=kap["max"],
                             pinv_reference_error_max=max(p["pinv_reference_error"] for p in ps)))
    headline: Dict[str, Any] = {"target": target}
    for c in case_names:
        e = by.get((c, "eagle"))
        if e:
            headline[f"eagle_iterations_{c}"] = e["iterations_mean"]
            headline[f"eagle_reached_{c}"] = reach_fmt(e)
    files = [report.write_csv(rows, os.path.join(out, "distributions.csv")),
             report.write_csv(summary, os.path.join(out, "distributions_summary.csv")),
             report.write_csv(problems, os.path.join(out, "distributions_problems.csv")),
             report.write_csv(curve_rows(curves, ("case", "method")),
                              os.path.join(out, "distributions_curves.csv"))]
    for xkey in ("iteration", "time"):
        panels = error_panels(curves, case_names, methods, lambda c: c, target, xkey)
        files.append(report.plot_panels(
            os.path.join(out, f"distributions_error_vs_{xkey}.png"), panels, ncols=3,
            title=f"n = d = {cfg['n']}, n' = d' = {cfg['nq']}: relative error vs {xkey} "
                  "(run 0; LSMR: one solve; lstsq: one point)"))

    head = report.markdown_table(per_case, {
        "distribution (definition)": "case", "rank X": "rank_x",
        "κ(A) median (max)": lambda r: f"{report.fmt(r['kappa_median'])} "
                                        f"({report.fmt(r['kappa_max'])})",
        **{f"{m} iterations": (lambda m: lambda r: reach_iterations_cell(by.get((r["case"], m))))(m)
           for m in methods if m in ("eagle", "cg", "gd", "lsmr")},
        "EAGLE / lstsq time": lambda r: _time_ratio(by, r["case"], "eagle", "lstsq"),
        "pinv(A) reference off D by": lambda r: report.fmt(r["pinv_reference_error_max"])})
    table = report.markdown_table(summary, {
        "distribution": "case", "method": "method", "reached": reach_fmt,
        "iterations": mean_pm("iterations_mean", "iterations_std"),
        "time [s]": mean_pm("time_s_mean", "time_s_std"),
        "final rel. error (median / worst)":
            lambda s: f"{report.fmt(s['final_error_median'])} / {report.fmt(s['final_error_max'])}",
        "status": "status"})
    notes = [
        f"{cfg['runs']} run(s) per distribution (seeds {seed}..{seed + cfg['runs'] - 1}); mean ± "
        f"standard deviation; `reached` counts runs with relative error ≤ {target:g} against the "
        "generated D (= B A⁺ C: noiseless, rank X = rank A).",
        f"n = {cfg['n']}, d = {cfg['d']}, n' = {cfg['nq']}, d' = {cfg['dq']}, rank "
        f"{rank if rank is not None else min(cfg['n'], cfg['d'])}; "
        "definitions: `eagle_dist.data.generators.DEFINITIONS` (paper: the SVD construction "
        "divided by √s, Student-t scaled to unit variance, correlated rows, sparse Rademacher "
        "scaled by 1/√p, clustered = one-hot membership of 5 centres, rank 5).",
        "κ(A) is over A's numerically nonzero singular values (pinv's cut-off). A is the "
        "upper-left 240 x 240 block of the rank-240 X, so it is far worse conditioned than X "
        "(the SVD construction's X has κ ≤ 100, its A block does not). EAGLE treats singular "
        "values below sqrt(eps)·σ_max (κ > 6.7e7) as zero; the direct solvers' floor is about "
        "κ·eps, so at κ ≳ 1e6 no method may reach 1e-10.",
        f"Caps: EAGLE {cfg['eagle_max_iter']}, CG/LSMR {cfg['max_iter']}, GD "
        f"{cfg['gd_max_iter']} iterations; a capped "
        "run's iterations/time are a lower bound. LSMR: SciPy's rule atol = btol = "
        f"{krylov_tol:g}.",
        "Time: unmonitored re-run of exactly the monitored iterations, CPU, loaded machine: "
        "iteration counts are load-free, seconds are not.",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "Data-distribution ablation (paper Fig. 19): iterations and time "
                               f"to relative error {target:g}", command, table, notes,
                               machine=machine, sections={"Headline": head},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    return SweepResult("distributions", out, rows, summary, headline, files, command)


def _time_ratio(by, case, a, b) -> str:
    x, y = by.get((case, a)), by.get((case, b))
    if not x or not y or not y["time_s_mean"]:
        return "—"
    return f"{x['time_s_mean'] / y['time_s_mean']:.1f}×"


def _cmd(args) -> int:
    return print_headline(distribution_sweep(
        args.out, kinds=args.kinds, definitions=args.definitions, runs=args.runs, n=args.n,
        d=args.d, nq=args.nq, dq=args.dq, rank=args.rank, methods=args.methods,
        target=args.target, max_iter=args.max_iter, gd_max_iter=args.gd_max_iter,
        eagle_max_iter=args.eagle_max_iter,
        krylov_tol=args.krylov_tol, dtype=args.dtype, device=args.device, seed=args.seed,
        threads=args.threads, smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``distributions`` under ``eagle-dist bench``."""
    p = bsub.add_parser("distributions",
                        help="data-distribution ablation (paper Fig. 19): iterations/time to 1e-10",
                        description=distribution_sweep.__doc__.split("\n")[0])
    add_centralized_args(p, "distributions")
    p.add_argument("--kinds", type=strs, default=None, help="default " + ",".join(DISTRIBUTIONS))
    p.add_argument("--definitions", type=strs, default=None,
                   help="paper (default) and/or code (this package's original variants)")
    for k, h in (("n", 240), ("d", 240), ("nq", 2), ("dq", 2)):
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {h}")
    p.add_argument("--rank", type=int, default=None, help="rank of X (default min(n, d))")
    p.add_argument("--methods", type=strs, default=None, help="default " + ",".join(METHODS))
    p.add_argument("--target", type=float, default=1e-10, help="relative error to reach")
    p.add_argument("--max-iter", type=int, default=None, help="cap for CG, LSMR (default 20000)")
    p.add_argument("--gd-max-iter", type=int, default=None, help="cap for GD (default 2000)")
    p.add_argument("--eagle-max-iter", type=int, default=None, help="cap for EAGLE (default 500)")
    p.add_argument("--krylov-tol", type=float, default=1e-14, help="LSMR atol = btol")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.set_defaults(fn=_cmd)
