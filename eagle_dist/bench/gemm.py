"""GEMM efficiency (``eagle-dist bench gemm``): :func:`gemm_sweep`.

EAGLE time per iteration divided by the floor ``3·n·d²`` flops at the GEMM rate measured in the
same run (``n = d ∈ {500, 2000}``, float64 and float32). Target ≤ 1.2.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import kernels
from ..api import solve
from ..problem import Problem
from . import report
from .common import NO_TOL as _NO_TOL, RESULTS_ROOT, SweepResult
from .common import add_centralized_args, check_positive_int as _check_positive_int
from .common import ints as _ints, print_headline as _print_headline, progress as _progress
from .common import resolve as _resolve, strs as _strs, threads as _threads

log = logging.getLogger(__name__)


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

    samples, cells, machine, load = _measure_gemm(cfg, sizes, dtypes, dev, seed=seed,
                                                  threads=threads, progress=progress,
                                                  command=command)
    summary, headline = _summarise_gemm(cells, cfg)
    files = _write_gemm(out, samples, summary, headline, cfg, dev, command=command,
                        machine=machine, load=load)
    return SweepResult("gemm", out, samples, summary, headline, files, command)


def _measure_gemm(cfg: Dict[str, Any], sizes: List[int], dtypes: List[str], dev: torch.device,
                  *, seed: int, threads: Optional[int], progress: bool, command: str
                  ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], str, Tuple[float, float]]:
    """Time every (size, dtype) cell: the raw samples (one row per timed repetition of each op),
    one record per cell (its set-up and the seconds of every op, by op name), the machine
    description and the load average before and after. Writes no files."""
    samples: List[Dict[str, Any]] = []
    cells: List[Dict[str, Any]] = []
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
                sym = kernels.symmetric_blas(A)
                if sym is not None:
                    ops["syrk"] = lambda: sym.gram(A)
                timed = _time_interleaved(ops, cfg["warmup"], cfg["runs"], dev)
                # the full solve loop: one warm-up solve, then per-iteration times from the history
                solve(prob, "eagle", record_error=False, tol=_NO_TOL, max_iter=2, dtype=dt_name,
                      device=str(dev))
                res = solve(prob, "eagle", record_error=False, tol=_NO_TOL,
                            max_iter=cfg["solve_iters"], dtype=dt_name, device=str(dev))
                t_solve = list(np.diff(np.concatenate([[0.0], res.history.time])))
                seconds = {"gemm": timed["gemm"], "gram_AtA": timed["gram"],
                           "syrk": timed.get("syrk", []), "kernel": timed["kernel"],
                           "kernel_gemm_only": timed["kernel_gemm"], "solve_iteration": t_solve}
                for op, ts in seconds.items():
                    for i, t in enumerate(ts):
                        samples.append(dict(dtype=dt_name, n=n, d=d, op=op, rep=i, seconds=t))
                cell = dict(dtype=dt_name, n=n, d=d, device=str(dev),
                            threads=torch.get_num_threads(), symmetric_blas=sym is not None,
                            seconds=seconds)
                cells.append(cell)
                row = _gemm_row(cell, cfg)
                log.info("n=d=%d %s: GEMM %.1f GF/s, kernel %.2f ms = %.3f x floor, solve "
                         "iteration %.2f ms = %.3f x floor (best of N)", n, dt_name,
                         row["gemm_gflops"],
                         row["kernel_ms"], row["kernel_ratio"], row["solve_iter_ms"],
                         row["solve_ratio"])
                bar.update(1)
        bar.close()
        load_end = report.load_average()
    return samples, cells, machine, (load_start, load_end)


def _gemm_row(cell: Dict[str, Any], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Pure: one summary row (best of N, medians, spreads and ratios to the floor) from a cell
    record of :func:`_measure_gemm`."""
    n, d, t = cell["n"], cell["d"], cell["seconds"]
    g, k, s, gr, kg = (report.stats(t[op]) for op in ("gemm", "kernel", "solve_iteration",
                                                      "gram_AtA", "kernel_gemm_only"))
    sy = report.stats(t["syrk"]) if t["syrk"] else None
    flops = n * d * d
    # best-of-N (the least disturbed repetition: the estimator of choice on a shared
    # machine) is the headline; medians are reported next to it
    floor_best, floor_med = 1.5 * g["min"], 1.5 * g["median"]
    return dict(
        dtype=cell["dtype"], n=n, d=d, device=cell["device"], threads=cell["threads"],
        gemm_ms=1e3 * g["min"], gemm_ms_median=1e3 * g["median"],
        gemm_ms_std=1e3 * g["std"], gemm_gflops=2.0 * flops / g["min"] / 1e9,
        floor_ms=1e3 * floor_best,
        gram_ms=1e3 * gr["min"], gram_over_gemm=gr["min"] / g["min"],
        symmetric_blas=cell["symmetric_blas"],
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


def _summarise_gemm(cells: List[Dict[str, Any]], cfg: Dict[str, Any]
                    ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Pure: the summary row of every cell and the headline dict (ratios to the floor)."""
    summary = [_gemm_row(c, cfg) for c in cells]
    headline = {f"kernel_ratio_{r['dtype']}_n{r['n']}": r["kernel_ratio"] for r in summary}
    headline.update({f"solve_ratio_{r['dtype']}_n{r['n']}": r["solve_ratio"] for r in summary})
    headline["target_1.2_met_all"] = all(r["target_met"] for r in summary)
    return summary, headline


def _write_gemm(out: str, samples: List[Dict[str, Any]], summary: List[Dict[str, Any]],
                headline: Dict[str, Any], cfg: Dict[str, Any], dev: torch.device, *,
                command: str, machine: str, load: Tuple[float, float]) -> List[str]:
    """Write the CSVs, the plot and summary.md into ``out``; return the files written."""
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
        "Each of GEMM, AᵀA (GEMM and SYRK), the kernel and the GEMM-only kernel is timed "
        f"{cfg['runs']} times, interleaved (one of each "
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
    notes += report.load_notes(*load)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "GEMM efficiency: EAGLE time per iteration / (3·n·d² flops at the "
                               "measured GEMM rate)", command, table, notes, machine=machine,
                               sections={"Headline": "\n".join(lines)},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    log.info("GEMM sweep written to %s", out)
    return files


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


def _cmd_gemm(args) -> int:
    return _print_headline(gemm_sweep(
        args.out, runs=args.runs, warmup=args.warmup, sizes=args.sizes, dtypes=args.dtypes,
        solve_iters=args.solve_iters, device=args.device, seed=args.seed, threads=args.threads,
        smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``gemm`` under ``eagle-dist bench``."""
    p = bsub.add_parser("gemm", help="GEMM efficiency: EAGLE time per iteration / 3nd² floor",
                        description=gemm_sweep.__doc__.split("\n")[0])
    add_centralized_args(p, "gemm")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2)")
    p.add_argument("--sizes", type=_ints, default=None, help="n = d values (default 500,2000)")
    p.add_argument("--dtypes", type=_strs, default=None, help="default float64,float32")
    p.add_argument("--solve-iters", type=int, default=None,
                   help="iterations of the timed solve loop (default 6)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(fn=_cmd_gemm)
