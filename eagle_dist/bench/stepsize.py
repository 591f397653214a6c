"""Step-size sensitivity (paper Fig. 22): ``eagle-dist bench stepsize``.

Problems: the paper's SVD construction (``distribution("svd", 15, 15, 2, 2, rank=15,
definition="paper")``: n = d = 15, n' = d' = 2, rank 15, σ log-uniform in [1e-2, 1]), one per run.
For each step-size pair (η, γ), Alg. 1 runs for ``iterations`` (200) steps and the **best**
relative error ``min_ℓ ‖D_ℓ − D̂‖_F / ‖D̂‖_F`` within them is recorded (the paper's measure).

* left panel, joint scaling: ``(η, γ) = f · (η₀, γ₀)`` for f in [0.2, 2];
* right panel, ratio: ``(η, γ) = (η₀/√q, γ₀·√q)`` for q in [0.2, 2] (γ/η = q·γ₀/η₀, ηγ fixed);

with the theory constants (η₀, γ₀) = (1/3, 1). The upper end needs γ = 2 (and η up to 0.75),
which ``solve``'s validators reject (γ ∈ (0, 2), η ∈ [0, 1); the validators protect users, so they
stay). The grid therefore calls the one update, :func:`eagle_dist.kernels.eagle_update`,
directly: the paper's literal Alg. 1 with the per-iteration ``ρ_ℓ = 1/‖A_ℓ‖₂²`` (exact spectral
norm by SVD at this size), the paper's C/D step (``filter_order=0``), no A/B freeze, float64.
Before every step A and B are divided by ``‖A_ℓ‖₂`` (then ``ρ = 1``): A and B scaled together
leave every C and D iterate unchanged (``ρ`` absorbs the scale), and this keeps A from
underflowing after hundreds of steps of ``‖A‖ ← (1 − η)‖A‖``.

Example:
    >>> from eagle_dist.bench.stepsize import stepsize_sweep
    >>> res = stepsize_sweep(out="/tmp/stepsize_smoke", smoke=True)     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import distribution
from ..kernels import eagle_update
from . import report
from .common import (RESULTS_ROOT, SweepResult, add_figure_args, check_positive_int, floats,
                     print_headline, resolve)
from .common import threads as _threads

log = logging.getLogger(__name__)

ETA0, GAMMA0 = 1.0 / 3.0, 1.0
STEP_FULL = dict(n=15, d=15, nq=2, dq=2, runs=50, iterations=200,
                 factors=tuple(np.round(np.linspace(0.2, 2.0, 19), 3)),
                 ratios=tuple(np.round(np.linspace(0.2, 2.0, 19), 3)))
STEP_SMOKE = dict(n=8, d=8, nq=2, dq=2, runs=2, iterations=60, factors=(0.2, 1.0, 2.0),
                  ratios=(0.2, 1.0, 2.0))


def alg1_errors(A: np.ndarray, B: np.ndarray, C: np.ndarray, ref: np.ndarray, *, eta: float,
                gamma: float, iterations: int, rho: float = 1.0) -> List[float]:
    """The literal Alg. 1 from ``D₀ = 0``: before each step A and B are divided by ``‖A_ℓ‖₂``
    (exact, by SVD), so ``rho`` multiplies ``1/‖A_ℓ‖₂²``; the paper's C/D step, no A/B freeze,
    float64. The relative error ``‖D_ℓ − ref‖_F/‖ref‖_F`` after each step (``inf`` once
    non-finite, and the loop stops)."""
    At, Bt, Ct = (torch.tensor(x, dtype=torch.float64) for x in (A, B, C))
    Dt = torch.zeros(B.shape[0], C.shape[1], dtype=torch.float64)
    ref_t = torch.tensor(ref, dtype=torch.float64)
    den = max(float(torch.linalg.norm(ref_t)), 1e-300)
    errs: List[float] = []
    for _ in range(iterations):
        s = float(torch.linalg.matrix_norm(At, ord=2))
        if not (s > 0.0 and math.isfinite(s)):
            errs.append(math.inf)
            break
        At, Bt = At / s, Bt / s                          # ρ_ℓ = rho/‖A_ℓ‖₂² = rho after scaling
        At, Bt, Ct, Dt = eagle_update(At, Bt, Ct, Dt, eta=eta, gamma=gamma, rho=rho,
                                      filter_order=0)
        e = float(torch.linalg.norm(Dt - ref_t)) / den
        errs.append(e if math.isfinite(e) else math.inf)
        if not math.isfinite(e):
            break
    return errs


def best_error(A: np.ndarray, B: np.ndarray, C: np.ndarray, ref: np.ndarray, *, eta: float,
               gamma: float, iterations: int) -> Tuple[float, int, List[float]]:
    """Run the literal Alg. 1 (per-iteration ``ρ = 1/‖A_ℓ‖₂²``, the paper's C/D step) for
    ``iterations`` steps from ``D₀ = 0``; return the best relative error, the iteration where it
    was first attained and the error after every step (``inf`` once non-finite)."""
    errs = alg1_errors(A, B, C, ref, eta=eta, gamma=gamma, iterations=iterations)
    arr = np.asarray(errs)
    k = int(np.argmin(arr))
    return float(arr[k]), k + 1, errs


def stepsize_sweep(out: Optional[str] = None, *, runs: Optional[int] = None,
                   iterations: Optional[int] = None, factors: Optional[Sequence[float]] = None,
                   ratios: Optional[Sequence[float]] = None, n: Optional[int] = None,
                   d: Optional[int] = None, nq: Optional[int] = None, dq: Optional[int] = None,
                   eta0: float = ETA0, gamma0: float = GAMMA0, seed: int = 0,
                   threads: Optional[int] = None, smoke: bool = False) -> SweepResult:
    """Best relative error within ``iterations`` steps over the two step-size grids (module
    docstring). ``smoke=True``: n = d = 8, 2 runs, 3 grid points per panel, 60 iterations."""
    cfg = resolve(smoke, STEP_FULL, STEP_SMOKE, dict(
        runs=runs, iterations=iterations, factors=factors, ratios=ratios, n=n, d=d, nq=nq, dq=dq))
    for k in ("n", "d", "nq", "dq", "runs", "iterations"):
        check_positive_int(k, cfg[k])
    for k in ("factors", "ratios"):
        v = [float(x) for x in cfg[k]]
        if not v or any(not (x > 0 and math.isfinite(x)) for x in v):
            raise ValueError(f"{k}={cfg[k]!r} must be positive numbers, e.g. 0.2,1,2")
        cfg[k] = v
    if not (0 < eta0 < 1 and 0 < gamma0):
        raise ValueError(f"eta0={eta0!r}, gamma0={gamma0!r}: need 0 < η₀ < 1 and γ₀ > 0 "
                         "(the theory constants are 1/3 and 1)")
    grid = [("joint", f, eta0 * f, gamma0 * f) for f in cfg["factors"]]
    grid += [("ratio", q, eta0 / math.sqrt(q), gamma0 * math.sqrt(q)) for q in cfg["ratios"]]
    bad = [(p, x, e) for p, x, e, _ in grid if not (0.0 < e < 1.0)]
    if bad:
        raise ValueError(f"grid points {bad} give η outside (0, 1), where the A step stops "
                         "shrinking A's top singular value; narrow the factors/ratios")
    out = out or os.path.join(RESULTS_ROOT, "stepsize")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench stepsize", dict(
        out=out, runs=cfg["runs"], iterations=cfg["iterations"], factors=cfg["factors"],
        ratios=cfg["ratios"], n=cfg["n"], d=cfg["d"], nq=cfg["nq"], dq=cfg["dq"], eta0=eta0,
        gamma0=gamma0, seed=seed, threads=threads), ["smoke"] if smoke else [])
    rows: List[Dict[str, Any]] = []
    curves: Dict[Tuple[str, float], List[float]] = {}
    with _threads(1 if threads is None else threads):
        machine = report.machine_description()
        load_start = report.load_average()
        probs = [distribution("svd", cfg["n"], cfg["d"], cfg["nq"], cfg["dq"], rank=min(
            cfg["n"], cfg["d"]), seed=seed + i, definition="paper") for i in range(cfg["runs"])]
        for panel, x, eta, gamma in grid:
            for i, p in enumerate(probs):
                best, at, errs = best_error(p.A, p.B, p.C, p.reference, eta=eta, gamma=gamma,
                                            iterations=cfg["iterations"])
                rows.append(dict(panel=panel, x=x, eta=eta, gamma=gamma, run=i, seed=seed + i,
                                 kappa=p.condition_number, best_error=best, best_iteration=at,
                                 final_error=errs[-1],
                                 first_below_1e_10=next((k + 1 for k, e in enumerate(errs)
                                                         if e <= 1e-10), -1)))
                if i == 0:
                    curves[(panel, x)] = errs
            log.info("stepsize %s %.3g: η %.3f γ %.3f, median best error %.2e", panel, x, eta,
                     gamma, float(np.median([r["best_error"] for r in rows[-cfg["runs"]:]])))
        load_end = report.load_average()

    summary = []
    for panel, x, eta, gamma in grid:
        rs = [r for r in rows if r["panel"] == panel and r["x"] == x]
        be = np.array([r["best_error"] for r in rs])
        hit = [r["first_below_1e_10"] for r in rs if r["first_below_1e_10"] > 0]
        summary.append(dict(panel=panel, x=x, eta=eta, gamma=gamma, runs=len(rs),
                            best_error_median=float(np.median(be)),
                            best_error_mean=float(np.mean(be)),
                            best_error_max=float(np.max(be)),
                            reached_1e_10=len(hit),
                            iterations_to_1e_10_median=float(np.median(hit)) if hit else math.nan,
                            final_error_median=float(np.median([r["final_error"] for r in rs]))))
    files = [report.write_csv(rows, os.path.join(out, "stepsize.csv")),
             report.write_csv(summary, os.path.join(out, "stepsize_summary.csv")),
             report.write_csv([dict(panel=k[0], x=k[1], iteration=j + 1, error=e)
                               for k, errs in curves.items() for j, e in enumerate(errs)],
                              os.path.join(out, "stepsize_curves.csv"))]
    files.append(_plot(out, summary, cfg))
    base = {s["panel"]: s for s in summary if abs(s["x"] - 1.0) < 1e-9}
    worst = {p: max((s for s in summary if s["panel"] == p), key=lambda s: s["best_error_median"])
             for p in ("joint", "ratio")}
    headline: Dict[str, Any] = {}
    for p in ("joint", "ratio"):
        if p in base:
            headline[f"{p}_best_error_median_at_1"] = base[p]["best_error_median"]
        headline[f"{p}_worst_median"] = worst[p]["best_error_median"]
        headline[f"{p}_worst_at"] = worst[p]["x"]
    table = report.markdown_table(summary, {
        "panel": "panel", "factor f / ratio q": "x",
        "η": lambda s: f"{s['eta']:.3f}", "γ": lambda s: f"{s['gamma']:.3f}",
        "best error within budget: median / mean / worst": lambda s:
            f"{report.fmt(s['best_error_median'])} / {report.fmt(s['best_error_mean'])} / "
            f"{report.fmt(s['best_error_max'])}",
        "runs ≤ 1e-10": lambda s: f"{s['reached_1e_10']}/{s['runs']}",
        "iterations to 1e-10 (median)": lambda s: report.fmt(s["iterations_to_1e_10_median"]),
        "error after the last step (median)": lambda s: report.fmt(s["final_error_median"])})
    kap = report.stats(r["kappa"] for r in rows if r["panel"] == grid[0][0] and r["x"] == grid[0][1])
    notes = [
        f"{cfg['runs']} problems (seeds {seed}..{seed + cfg['runs'] - 1}), the same for every "
        f"grid point; distribution('svd', {cfg['n']}, {cfg['d']}, {cfg['nq']}, {cfg['dq']}, "
        f"rank={min(cfg['n'], cfg['d'])}, definition='paper'); κ(A) median {report.fmt(kap['median'])}, "
        f"range {report.fmt(kap['min'])}–{report.fmt(kap['max'])}.",
        f"Base constants (η₀, γ₀) = ({eta0:.4g}, {gamma0:g}); joint: (f·η₀, f·γ₀); ratio: "
        "(η₀/√q, γ₀·√q).",
        f"Best relative error ‖D_ℓ − D̂‖_F/‖D̂‖_F over ℓ ≤ {cfg['iterations']}, D̂ = B pinv(A) C "
        "in float64 (rounding floor ≈ 1e-15 … 1e-13 at this size).",
        "Run through `kernels.eagle_update` directly (module docstring), not `solve`: its "
        "validators reject γ ≥ 2 and η ≥ 1, and it uses the stable normalised form with the A/B "
        "freeze and the filtered C/D step; this grid is the literal Alg. 1 with the paper's "
        "per-iteration ρ = 1/‖A_ℓ‖₂² (A, B divided by ‖A_ℓ‖₂ first, which leaves C and D "
        "unchanged).",
        "Error counts are load-free (no timing in this sweep).",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "Step-size sensitivity (paper Fig. 22): best error within "
                               f"{cfg['iterations']} iterations", command, table, notes,
                               machine=machine, files=[os.path.basename(f) for f in files])
    files.append(md)
    return SweepResult("stepsize", out, rows, summary, headline, files, command)


def _plot(out, summary, cfg) -> str:
    panels = []
    for panel, xlabel, title in (
            ("joint", "factor f: (η, γ) = f·(1/3, 1)", "η, γ scaled jointly"),
            ("ratio", "ratio q: (η, γ) = (1/3/√q, √q)", "γ/η scaled by q (ηγ fixed)")):
        ss = [s for s in summary if s["panel"] == panel]
        xs = [s["x"] for s in ss]
        series = [dict(x=xs, y=[max(s[k], 1e-17) for s in ss], label=lab, marker="o",
                       color=c, linestyle=ls)
                  for k, lab, c, ls in (("best_error_median", "median over problems", "#1f77b4", "-"),
                                        ("best_error_max", "worst problem", "#d62728", "--"))]
        panels.append(dict(title=title, xlabel=xlabel, ylabel=f"best rel. error in "
                           f"{cfg['iterations']} iterations", logy=True, series=series,
                           hlines=[(1e-10, "1e-10")]))
    for panel, xlabel in (("joint", "factor f"), ("ratio", "ratio q")):
        ss = [s for s in summary if s["panel"] == panel]
        panels.append(dict(title=f"{panel}: iterations to 1e-10 (median of the runs that reach it)",
                           xlabel=xlabel, ylabel="iterations", series=[dict(
                               x=[s["x"] for s in ss],
                               y=[s["iterations_to_1e_10_median"] for s in ss],
                               label="iterations to 1e-10", marker="s", color="#2ca02c",
                               annotate=[f"{s['reached_1e_10']}/{s['runs']}"
                                         if s["reached_1e_10"] < s["runs"] else "" for s in ss])]))
    return report.plot_panels(os.path.join(out, "stepsize.png"), panels, ncols=2,
                              panel_size=(5.4, 4.0),
                              title=f"EAGLE step-size sensitivity, n = d = {cfg['n']}, "
                                    f"{cfg['runs']} problems (paper Fig. 22)")


def _cmd(args) -> int:
    return print_headline(stepsize_sweep(
        args.out, runs=args.runs, iterations=args.iterations, factors=args.factors,
        ratios=args.ratios, n=args.n, d=args.d, nq=args.nq, dq=args.dq, eta0=args.eta0,
        gamma0=args.gamma0, seed=args.seed, threads=args.threads, smoke=args.smoke))


def add_parser(bsub) -> None:
    """Register ``stepsize`` under ``eagle-dist bench``."""
    p = bsub.add_parser("stepsize", help="step-size sensitivity (paper Fig. 22)",
                        description=stepsize_sweep.__doc__.split("\n")[0])
    add_figure_args(p, "stepsize", runs=STEP_FULL["runs"], iterations=STEP_FULL["iterations"],
                    sizes=(("n", 15), ("d", 15), ("nq", 2), ("dq", 2)))
    p.add_argument("--factors", type=floats, default=None, help="default 0.2,0.3,...,2")
    p.add_argument("--ratios", type=floats, default=None, help="default 0.2,0.3,...,2")
    p.add_argument("--eta0", type=float, default=ETA0, help="base η (default 1/3)")
    p.add_argument("--gamma0", type=float, default=GAMMA0, help="base γ (default 1)")
    p.set_defaults(fn=_cmd)
