"""Noisy data in the centralized and sketched regimes (paper Fig. 21): ``eagle-dist bench noisy``.

Problems: ``controlled(n, d, n', d', kappa=κ, noise=σ, seed)`` with σ = 0.01 (a standard deviation,
added to every block), and the same seed without noise, whose hidden block is the **noiseless
truth** ``D⋆ = B₀ A₀⁺ C₀`` (the generator draws the noise last from the same stream, so the two
share A₀, B₀, C₀). Every method runs a fixed number of iterations (no stopping rule) and is
scored twice per iteration, against ``D⋆`` and against the noisy problem's own Nyström estimate
``D̂ = B A⁺ C`` (the same iterates: deterministic seeds):

* centralized: EAGLE (η = 1/3, γ = 1) and GD (η = 0);
* sketched: EAGLE and SGD with a fresh sampling sketch of r = d/4 columns per iteration.

Reported: the error against ``D⋆`` after the last iteration, the best one along the way (oracle
early stopping) and where it occurs, the error against ``D̂``, the error of ``D̂`` itself against
``D⋆`` (``lstsq``), and κ(A) with and without noise — the paper's remarks that EAGLE with early
stopping behaves like GD and that noise improves the conditioning. The distributed regime's noisy
runs are in ``benchmarks/results/backends`` (``eagle-dist bench backends``, noisy-gap table).

Example:
    >>> from eagle_dist.bench.noisy import noisy_sweep
    >>> res = noisy_sweep(out="/tmp/noisy_smoke", smoke=True)     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..api import solve
from ..data import controlled
from . import report
from .common import ERR_FLOOR, NO_TOL, RESULTS_ROOT, SweepResult, check_positive_int
from .common import print_headline, resolve, threads as _threads
from .paper_common import against_truth

log = logging.getLogger(__name__)

NOISY_FULL = dict(n=240, d=240, nq=2, dq=2, kappa=1e2, runs=3, sketch_size=60,
                  eagle_iters=100, gd_iters=5000, sketched_eagle_iters=2000, sgd_iters=5000)
NOISY_SMOKE = dict(n=24, d=24, nq=2, dq=2, kappa=1e2, runs=1, sketch_size=6,
                   eagle_iters=30, gd_iters=200, sketched_eagle_iters=100, sgd_iters=200)


def _configs(cfg) -> List[Tuple[str, str, str, Dict[str, Any], int]]:
    """(regime, label, method, solve keywords, iterations)."""
    sk = dict(sketch_size=cfg["sketch_size"], sketch_kind="sample")
    return [("centralized", "eagle", "eagle", {}, cfg["eagle_iters"]),
            ("centralized", "gd", "gd", {}, cfg["gd_iters"]),
            ("sketched", f"eagle r={cfg['sketch_size']}", "eagle", sk, cfg["sketched_eagle_iters"]),
            ("sketched", f"sgd r={cfg['sketch_size']}", "sgd", sk, cfg["sgd_iters"])]


def noisy_sweep(out: Optional[str] = None, *, noise: float = 0.01, runs: Optional[int] = None,
                n: Optional[int] = None, d: Optional[int] = None, nq: Optional[int] = None,
                dq: Optional[int] = None, kappa: Optional[float] = None,
                sketch_size: Optional[int] = None, eagle_iters: Optional[int] = None,
                gd_iters: Optional[int] = None, sketched_eagle_iters: Optional[int] = None,
                sgd_iters: Optional[int] = None, seed: int = 0, threads: Optional[int] = None,
                smoke: bool = False) -> SweepResult:
    """Error against the noiseless truth and against B A⁺ C per iteration (module docstring)."""
    cfg = resolve(smoke, NOISY_FULL, NOISY_SMOKE, dict(
        n=n, d=d, nq=nq, dq=dq, kappa=kappa, runs=runs, sketch_size=sketch_size,
        eagle_iters=eagle_iters, gd_iters=gd_iters, sketched_eagle_iters=sketched_eagle_iters,
        sgd_iters=sgd_iters))
    for k in ("n", "d", "nq", "dq", "runs", "sketch_size", "eagle_iters", "gd_iters",
              "sketched_eagle_iters", "sgd_iters"):
        check_positive_int(k, cfg[k])
    if not (noise > 0):
        raise ValueError(f"noise={noise!r} must be a positive standard deviation (paper: 0.01)")
    if not (1 <= cfg["sketch_size"] < cfg["d"]):
        raise ValueError(f"sketch_size={cfg['sketch_size']!r} must be in 1..d-1 = 1..{cfg['d'] - 1}")
    out = out or os.path.join(RESULTS_ROOT, "noisy")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench noisy", dict(
        out=out, noise=noise, runs=cfg["runs"], n=cfg["n"], d=cfg["d"], nq=cfg["nq"],
        dq=cfg["dq"], kappa=float(cfg["kappa"]), sketch_size=cfg["sketch_size"],
        eagle_iters=cfg["eagle_iters"], gd_iters=cfg["gd_iters"],
        sketched_eagle_iters=cfg["sketched_eagle_iters"], sgd_iters=cfg["sgd_iters"], seed=seed,
        threads=threads), ["smoke"] if smoke else [])
    rows: List[Dict[str, Any]] = []
    problems: List[Dict[str, Any]] = []
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    with _threads(1 if threads is None else threads):
        machine = report.machine_description()
        load_start = report.load_average()
        for run in range(cfg["runs"]):
            s = seed + run
            clean = controlled(cfg["n"], cfg["d"], cfg["nq"], cfg["dq"], kappa=float(cfg["kappa"]),
                               seed=s)
            noisy = controlled(cfg["n"], cfg["d"], cfg["nq"], cfg["dq"], kappa=float(cfg["kappa"]),
                               noise=noise, seed=s)
            truth = clean.D_true
            scored = against_truth(noisy, truth)
            dhat_err = float(np.linalg.norm(noisy.reference - truth) / np.linalg.norm(truth))
            problems.append(dict(run=run, seed=s, kappa_clean=clean.condition_number,
                                 kappa_noisy=noisy.condition_number,
                                 nystrom_error_vs_truth=dhat_err))
            for regime, label, method, kw, iters in _configs(cfg):
                common = dict(max_iter=iters, tol=NO_TOL, seed=s, dtype="float64",
                              record_error=True, **kw)
                r_true = solve(scored, method, **common)
                r_hat = solve(noisy, method, **common)
                e_true = np.asarray(r_true.history.error, float)
                e_hat = np.asarray(r_hat.history.error, float)
                k = int(np.nanargmin(e_true))
                rows.append(dict(regime=regime, method=label, run=run, seed=s,
                                 iterations=r_true.iterations, status=r_true.status.value,
                                 final_error_vs_truth=float(e_true[-1]),
                                 best_error_vs_truth=float(e_true[k]), best_iteration=k + 1,
                                 final_error_vs_nystrom=float(e_hat[-1]),
                                 nystrom_error_vs_truth=dhat_err))
                if run == 0:
                    curves[label] = (e_true, e_hat)
                log.info("noisy run %d %-14s best %.3e at %d, final %.3e (vs D̂ %.2e)", run,
                         label, e_true[k], k + 1, e_true[-1], e_hat[-1])
        load_end = report.load_average()

    summary = []
    for regime, label, _, _, iters in _configs(cfg):
        rs = [r for r in rows if r["method"] == label]
        med = {k: report.stats(r[k] for r in rs)["median"] for k in (
            "final_error_vs_truth", "best_error_vs_truth", "best_iteration",
            "final_error_vs_nystrom")}
        summary.append(dict(regime=regime, method=label, budget=iters,
                            iterations=report.stats(r["iterations"] for r in rs)["median"],
                            runs=len(rs),
                            statuses=",".join(sorted({r["status"] for r in rs})), **med))
    prob_med = {k: report.stats(p[k] for p in problems)["median"]
                for k in ("kappa_clean", "kappa_noisy", "nystrom_error_vs_truth")}
    headline = dict(nystrom_error_vs_truth=prob_med["nystrom_error_vs_truth"],
                    kappa_clean=prob_med["kappa_clean"], kappa_noisy=prob_med["kappa_noisy"])
    for s_ in summary:
        headline[f"{s_['method']}_best_vs_truth"] = s_["best_error_vs_truth"]
    files = [report.write_csv(rows, os.path.join(out, "noisy.csv")),
             report.write_csv(summary, os.path.join(out, "noisy_summary.csv")),
             report.write_csv(problems, os.path.join(out, "noisy_problems.csv")),
             report.write_csv([dict(method=m, iteration=i + 1, error_vs_truth=a, error_vs_nystrom=b)
                               for m, (ea, eb) in curves.items() for i, (a, b) in
                               enumerate(zip(ea, eb))], os.path.join(out, "noisy_curves.csv"))]
    panels = []
    for regime in ("centralized", "sketched"):
        series = []
        for _, label, _, _, _ in [c for c in _configs(cfg) if c[0] == regime]:
            ea, eb = curves[label]
            it = np.arange(1, len(ea) + 1)
            series.append(dict(x=it, y=np.maximum(ea, ERR_FLOOR), label=f"{label} vs noiseless D⋆"))
            series.append(dict(x=it, y=np.maximum(eb, ERR_FLOOR), label=f"{label} vs noisy B A⁺ C",
                               linestyle="--", color=report.color_for(label)))
        panels.append(dict(title=f"{regime}, σ = {noise:g} (run 0)", xlabel="iteration",
                           ylabel="relative error", logx=True, logy=True, series=series,
                           hlines=[(problems[0]["nystrom_error_vs_truth"],
                                    "B A⁺ C of the noisy data vs D⋆")]))
    files.append(report.plot_panels(os.path.join(out, "noisy_error_vs_iteration.png"), panels,
                                    ncols=2, panel_size=(5.6, 4.2),
                                    title="Noisy data (paper Fig. 21): error against the "
                                          "noiseless truth (solid) and against B A⁺ C (dashed)"))
    head = "\n".join([
        f"- κ(A) median over runs: noiseless {report.fmt(prob_med['kappa_clean'])}, noisy "
        f"{report.fmt(prob_med['kappa_noisy'])}.",
        f"- B A⁺ C of the noisy data against the noiseless truth D⋆: "
        f"{report.fmt(prob_med['nystrom_error_vs_truth'])} (median relative error) — what every "
        "method converges to."])
    table = report.markdown_table(summary, {
        "regime": "regime", "method": "method", "budget": "budget",
        "iterations run (median; fewer once D stops changing)": "iterations",
        "best error vs D⋆ (median)": lambda r: report.fmt(r["best_error_vs_truth"]),
        "at iteration (median)": lambda r: report.fmt(r["best_iteration"]),
        "final error vs D⋆": lambda r: report.fmt(r["final_error_vs_truth"]),
        "final error vs B A⁺ C": lambda r: report.fmt(r["final_error_vs_nystrom"]),
        "status": "statuses"})
    notes = [
        f"{cfg['runs']} runs (seeds {seed}..{seed + cfg['runs'] - 1}); medians over runs. "
        f"controlled(n = {cfg['n']}, d = {cfg['d']}, n' = {cfg['nq']}, d' = {cfg['dq']}, "
        f"κ = {float(cfg['kappa']):g}) with i.i.d. N(0, {noise:g}²) added to A, B, C and D.",
        "Every method runs its full iteration budget (tol = 1e-300); 'best' is the oracle early "
        "stop against the noiseless truth, which a user cannot compute — it shows how much "
        "early stopping could gain.",
        f"Sketched: a fresh sampling sketch of r = {cfg['sketch_size']} columns per iteration, "
        "EAGLE with the default sketched η = min(1/3, 0.8 r/d); SGD is GD on the same sketch.",
        "EAGLE freezes A and B after `kernels.lift_cap` updates (51 unsketched in float64) and "
        "uses the filtered C/D step; both leave the limit B A⁺ C unchanged.",
        "Distributed regime under noise: `benchmarks/results/backends/summary.md` (noisy gap).",
        "Errors are load-free (no timing in this sweep).",
    ]
    notes += report.load_notes(load_start, load_end)
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               f"Noisy data, σ = {noise:g} (paper Fig. 21): centralized and "
                               "sketched", command, table, notes, machine=machine,
                               sections={"Headline": head},
                               files=[os.path.basename(f) for f in files])
    files.append(md)
    return SweepResult("noisy", out, rows, summary, headline, files, command)


def _cmd(args) -> int:
    return print_headline(noisy_sweep(
        args.out, noise=args.noise, runs=args.runs, n=args.n, d=args.d, nq=args.nq, dq=args.dq,
        kappa=args.kappa, sketch_size=args.sketch_size, eagle_iters=args.eagle_iters,
        gd_iters=args.gd_iters, sketched_eagle_iters=args.sketched_eagle_iters,
        sgd_iters=args.sgd_iters, seed=args.seed, threads=args.threads, smoke=args.smoke))


def add_parser(bsub) -> None:
    """Register ``noisy`` under ``eagle-dist bench``."""
    p = bsub.add_parser("noisy", help="noisy data, centralized and sketched (paper Fig. 21)",
                        description=noisy_sweep.__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, "noisy"))
    p.add_argument("--noise", type=float, default=0.01, help="noise standard deviation")
    p.add_argument("--runs", type=int, default=None, help="default 3")
    for k in ("n", "d", "nq", "dq", "sketch_size", "eagle_iters", "gd_iters",
              "sketched_eagle_iters", "sgd_iters"):
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                       help=f"default {NOISY_FULL[k]}")
    p.add_argument("--kappa", type=float, default=None, help="default 1e2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a seconds-long check")
    p.set_defaults(fn=_cmd)
