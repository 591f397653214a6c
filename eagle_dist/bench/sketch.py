"""Sketch sweep (``eagle-dist bench sketch``): :func:`sketch_sweep`.

Sketch size ``r ∈ {d/8, d/4, d/2, d}`` (κ = 1e2): iterations, time per iteration and time to
relative error 1e-2 for sketched EAGLE and SGD (GD on the same ``r``-column sketch), both sketch
kinds. Headline: SGD time / EAGLE time at ``r = d/4`` (target ≥ 5×; the paper reports ~2.5× on a
GPU).

Iterations and times to target are measured as in the κ-sweep (monitored run, then an unmonitored
timed re-run of as many iterations: :func:`eagle_dist.bench.common.run_to_target`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data import controlled
from . import report
from .common import ERR_FLOOR as _ERR_FLOOR, RESULTS_ROOT, SweepResult
from .common import add_centralized_args, aggregate as _aggregate
from .common import all_reached as _all_reached, check_positive_int as _check_positive_int
from .common import curve_from_history as _curve_from_history, curve_rows as _curve_rows
from .common import ints as _ints, mean_pm as _mean_pm, print_headline as _print_headline
from .common import progress as _progress, reach_fmt as _reach_fmt, resolve as _resolve
from .common import run_to_target as _run_to_target, strs as _strs, threads as _threads
from .common import warm_up as _warm_up

log = logging.getLogger(__name__)


SKETCH_FULL = dict(n=240, d=240, nq=2, dq=2, runs=3, max_iter=10000, sketch_sizes=None,
                   kinds=("sample", "orthonormal"))
SKETCH_SMOKE = dict(n=32, d=32, nq=2, dq=2, runs=1, max_iter=300, sketch_sizes=None,
                    kinds=("sample", "orthonormal"))
METHODS = ("eagle", "sgd")
# run 0's curve per (r, kind, method): (iterations, relative error, seconds)
_Curves = Dict[Tuple[int, str, str], Tuple[np.ndarray, np.ndarray, np.ndarray]]


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
    out = out or os.path.join(RESULTS_ROOT, "sketch")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench sketch", dict(
        out=out, runs=cfg["runs"], n=cfg["n"], d=dd, nq=cfg["nq"], dq=cfg["dq"],
        sketch_sizes=sizes, kinds=kinds, kappa=kappa, target=target, max_iter=cfg["max_iter"],
        dtype=dtype, device=device, seed=seed, threads=threads), ["smoke"] if smoke else [])

    rows, curves, machine, load = _measure_sketch(
        cfg, sizes, kinds, kappa=kappa, target=target, dtype=dtype, device=device, seed=seed,
        threads=threads, progress=progress, command=command)
    summary, speedups, headline = _summarise_sketch(rows, sizes, kinds, dd, target)
    files = _write_sketch(out, rows, summary, speedups, curves, headline, cfg, sizes, kinds,
                          kappa=kappa, target=target, dtype=dtype, device=device, seed=seed,
                          command=command, machine=machine, load=load)
    return SweepResult("sketch", out, rows, summary, headline, files, command)


def _measure_sketch(cfg: Dict[str, Any], sizes: List[int], kinds: List[str], *, kappa: float,
                    target: float, dtype: str, device: str, seed: int, threads: Optional[int],
                    progress: bool, command: str
                    ) -> Tuple[List[Dict[str, Any]], _Curves, str, Tuple[float, float]]:
    """Run every (run, r, kind, method) solve: the raw rows, run 0's curves per
    ``(r, kind, method)``, the machine description and the load average before and after.
    Writes no files."""
    dd = cfg["d"]
    rows: List[Dict[str, Any]] = []
    curves: _Curves = {}
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("sketch sweep: %s", command)
        _warm_up([(m, dict(sketch_size=8, sketch_kind=k)) for m in METHODS for k in kinds],
                 dtype, device)
        bar = _progress(len(sizes) * len(kinds) * len(METHODS) * cfg["runs"], "sketch sweep",
                        progress)
        for run in range(cfg["runs"]):
            prob = controlled(cfg["n"], dd, cfg["nq"], cfg["dq"], kappa=kappa, seed=seed + run)
            _ = prob.reference, prob.error_denominator
            for r in sizes:
                for kind in kinds:
                    for m in METHODS:
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
    return rows, curves, machine, (load_start, load_end)


def _summarise_sketch(rows: List[Dict[str, Any]], sizes: List[int], kinds: List[str], d: int,
                      target: float
                      ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Dict[str, Any]]:
    """Pure: the per-(r, kind, method) summary, the SGD / EAGLE speed-ups per (r, kind) and the
    headline dict (speed-ups at ``r = d/4``)."""
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
    quarter = max(1, d // 4)
    headline: Dict[str, Any] = {"target": target, "r_quarter": quarter}
    for sp in speedups:
        if sp["r"] == quarter:
            valid = sp["eagle_reached"] and sp["sgd_reached"]
            headline[f"speedup_{sp['kind']}"] = sp["speedup"]
            headline[f"speedup_{sp['kind']}_valid"] = valid
            headline[f"target_5x_met_{sp['kind']}"] = bool(valid and sp["speedup"] >= 5)
    return summary, speedups, headline


def _write_sketch(out: str, rows: List[Dict[str, Any]], summary: List[Dict[str, Any]],
                  speedups: List[Dict[str, Any]], curves: _Curves, headline: Dict[str, Any],
                  cfg: Dict[str, Any], sizes: List[int], kinds: List[str], *, kappa: float,
                  target: float, dtype: str, device: str, seed: int, command: str,
                  machine: str, load: Tuple[float, float]) -> List[str]:
    """Write the CSVs, the plots and summary.md into ``out``; return the files written."""
    dd, quarter = cfg["d"], headline["r_quarter"]
    files = [report.write_csv(rows, os.path.join(out, "sketch.csv")),
             report.write_csv(summary, os.path.join(out, "sketch_summary.csv")),
             report.write_csv(speedups, os.path.join(out, "sketch_speedup.csv")),
             report.write_csv(_curve_rows(curves, ("r", "kind", "method")),
                              os.path.join(out, "sketch_curves.csv"))]
    files += _plot_sketch(out, sizes, kinds, METHODS, curves, summary, target, dd)

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
    notes += report.load_notes(*load)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               f"Sketch sweep: sketched EAGLE vs SGD to relative error {target:g}",
                               command, table, notes, machine=machine,
                               sections={"Headline": "\n".join(lines)},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("sketch sweep written to %s", out)
    return files


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


def _cmd_sketch(args) -> int:
    return _print_headline(sketch_sweep(
        args.out, runs=args.runs, n=args.n, d=args.d, nq=args.nq, dq=args.dq,
        sketch_sizes=args.sketch_sizes, kinds=args.kinds, kappa=args.kappa, target=args.target,
        max_iter=args.max_iter, dtype=args.dtype, device=args.device, seed=args.seed,
        threads=args.threads, smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``sketch`` under ``eagle-dist bench``."""
    p = bsub.add_parser("sketch", help="sketch sweep: sketched EAGLE vs SGD to 1e-2",
                        description=sketch_sweep.__doc__.split("\n")[0])
    add_centralized_args(p, "sketch")
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
