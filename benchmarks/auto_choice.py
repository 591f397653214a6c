"""method="auto" against every candidate it chooses among: does it pick the fastest method that
certifies the request, and what does its race cost when it does not?

For each problem and stopping rule: the wall time (around the whole ``solve`` call, median of
``--repeats`` after one warm-up) and the status of ``lstsq`` (LAPACK SVD driver),
``lstsq-gelsy`` (LAPACK QR driver), ``eagle`` and ``lsmr`` alone, and of ``auto``; then auto's time over the fastest *certified* candidate.
Problems: the shipped SuiteSparse matrices as linear systems (``c_block="identity"``) and dense
Gaussian systems with controlled κ. Rules: the paper's real-data rule (relative residual 1e-3^0.5)
and a tight one (relative residual 1e-10).

    python benchmarks/auto_choice.py > benchmarks/results/auto/README.md

The cost model is calibrated on first use and cached (``$EAGLE_DIST_CACHE``); this script
recalibrates it first so that the table describes a fresh calibration on this machine.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from eagle_dist import Problem, solve
from eagle_dist.data import load_suitesparse
from eagle_dist.solvers import auto as auto_mod

CANDS = ("lstsq", "lstsq-gelsy", "eagle", "lsmr")


def dense(n, d, kappa, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((d, n)))
    A = (U * np.geomspace(1.0, 1.0 / kappa, n)) @ V.T
    B = rng.standard_normal((2, n)) @ A
    return Problem.from_arrays(A, B, np.eye(n), name=f"dense {n}x{d} κ={kappa:.0e}")


def timed(p, method, kw, repeats):
    solve(p, method, **kw)                              # warm-up (and calibration for auto)
    ts, res = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        res = solve(p, method, **kw)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matrices", default="HB/dwt_1007,NYPA/Maragal_4,HB/illc1850,HB/well1850,"
                    "HB/ash958,HB/abb313")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t_cal = time.perf_counter()
    model = auto_mod.cost_model(torch.device("cpu"), torch.float64, 1, recalibrate=True)
    t_cal = time.perf_counter() - t_cal
    problems = [(m, load_suitesparse(m, c_block="identity")) for m in args.matrices.split(",")]
    problems += [(p.name, p) for p in (dense(300, 400, 1e2), dense(300, 400, 1e6),
                                        dense(1000, 1200, 1e3))]
    rules = [("paper τ (res ≤ 0.0316)", dict(target_residual=1e-3 ** 0.5)),
             ("res ≤ 1e-10", dict(target_residual=1e-10))]
    load = os.getloadavg()[0]
    print("# method=\"auto\": chosen method against every candidate\n")
    print(f"Command: `python benchmarks/auto_choice.py --repeats {args.repeats}` "
          f"(one torch thread; load average {load:.1f} at the start, on this 2-core machine).")
    print(f"Calibration: {t_cal:.2f} s, model {model.to_json()}\n")
    print("Times are medians of the wall time around `solve` (s); `*` marks a candidate that did "
          "not certify the request (its status follows). 'auto / best' is auto's time over the "
          "fastest certified candidate.\n")
    print("| problem | rule | lstsq (SVD) | lstsq-gelsy (QR) | eagle | lsmr | auto ran | auto | "
          "auto / best |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for name, p in problems:
        for rname, kw in rules:
            cells, best = [], None
            for m in CANDS:
                t, r = timed(p, m, kw, args.repeats)
                ok = r.converged
                cells.append(f"{t:.3f}" + ("" if ok else f" *{r.status.value}"))
                if ok and (best is None or t < best):
                    best = t
            t, r = timed(p, "auto", kw, args.repeats)
            ran = " → ".join(f"{x['method']} ({x['iterations']} it, {x['status']})"
                             for x in r.info["auto"]["ran"])
            ratio = t / best if best else float("nan")
            ratios.append(ratio)
            flag = "" if r.converged else f" *{r.status.value}"
            print(f"| {name} ({p.n}x{p.d}) | {rname} | {' | '.join(cells)} | {ran} | "
                  f"{t:.3f}{flag} | {ratio:.2f} |")
    finite = [x for x in ratios if x == x]
    print(f"\nauto / best certified candidate: median {statistics.median(finite):.2f}, "
          f"max {max(finite):.2f}, over {len(finite)} problem-rule pairs; auto within 1.1x of "
          f"the best in {sum(x <= 1.1 for x in finite)} of them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
