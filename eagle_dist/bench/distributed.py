"""Distributed benchmark sweeps.

Two sweeps, each a Python function and an ``eagle-dist bench`` sub-command:

* :func:`rounds_sweep` (``eagle-dist bench rounds``): communication rounds until the relative
  error ``‖D_ℓ − D̂‖_F ≤ target·‖D̂‖_F`` (default ``target = 1e-8``) for distributed EAGLE and
  distributed gradient descent (the same round loop with ``η = 0``), in-process backend.

  - *M-sweep*: ``M ∈ {1, 3, 5, 8}`` workers, α = 1, κ_max = 1e3, ``n = d_μ = 1000``
    (:func:`eagle_dist.distributed.shards.alpha_problem`). Issue targets: EAGLE ≤ 35 rounds, flat in
    M (max/min ≤ 1.2), GD / EAGLE ≥ 300×.
  - *α-sweep*: ``M = 3``, α ∈ {1, 0.6, 0.35, 0.01}. The paper's α = 0.83 does not exist at M = 3:
    a shard whose range misses any direction caps α at ``(M − 1)/M = 2/3``
    (:func:`eagle_dist.distributed.shards.max_alpha_below_one`), so 0.6 stands in for it. Methods:
    plain EAGLE, the accelerated variant (A^μ, B^μ frozen once locally conditioned) and GD.

  GD needs ~κ(Ē₀)·log(1/ε) ≈ 10⁷ rounds here, far beyond any cap we can run, so three numbers are
  reported for it, each labelled: ``rounds`` (measured; the run stops at ``gd_cap`` and the row
  says ``reached = False``), ``rounds_predicted`` (the exact linear recurrence of distributed GD on
  consistent data, ``D_ℓ − D̂ = −W (I − γĒ)^ℓ C₀`` with ``Ē = (1/M) Σ_μ A^μA^μᵀ/‖A^μ‖²`` and
  ``W = B A⁺``, evaluated through the eigendecomposition of Ē — checked against the measured error
  curve, ``prediction_max_rel_dev``) and ``rounds_tail_rate`` (the last quarter of the measured
  curve's linear rate continued to the target; GD's rate keeps slowing, so this underestimates).

* :func:`backends_sweep` (``eagle-dist bench backends``):

  - *per-round wall-clock* of the in-process, torch (gloo, M processes) and Ray (M actors)
    backends at ``n = d_μ = 2000, n' = d' = 1, M = 4`` (compute-bound) and ``n = d_μ = 100``
    (latency-bound), for EAGLE and GD. Per-round time = ``info["rounds_time_s"] / rounds`` (the
    round loop only); start-up (``time_s − rounds_time_s``: processes / actors, process group,
    data transfer, normalisation) is reported separately. Issue target: ≤ 1.5× in-process at
    n = 2000. The in-process backend is timed with one and with the default number of torch threads
    and the faster is the baseline.
  - *accelerated variant*: rounds and wall-clock, ``accelerate=True`` vs ``False``.
  - *local vs global normalisation* on shards of unequal norm (‖A^μ‖ from 1 down to 0.1), on
    consistent and on noisy data.
  - *noisy-data gap*: one noisy problem (σ = 0.01 on every block) split into M ∈ {1, 2, 4, 8}
    shards; distributed EAGLE's final error against the Nyström estimate ``B A⁺ C`` (the gap,
    the paper's caveat) and against the noiseless truth, next to centralized EAGLE.

Every sweep writes CSV, PNG plots and ``summary.md`` (command, machine, load) via
:mod:`eagle_dist.bench.report`.

Example:
    >>> from eagle_dist.bench.distributed import rounds_sweep
    >>> res = rounds_sweep("/tmp/rounds_smoke", smoke=True, progress=False)   # doctest: +SKIP
    >>> res.headline["eagle_rounds_max"]                                      # doctest: +SKIP
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

from ..api import solve
from ..data import controlled, distribution
from ..distributed.shards import alpha_problem, diversity_index, make_shards, max_alpha_below_one
from ..distributed.worker import EagleKernel
from ..kernels import lift_cap, spectral_norm_sq
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
_NO_TOL = 1e-300          # fixed-round timing runs stop on max_iter (a positive tol is required)
_ERR_FLOOR = 1e-17        # errors of exactly 0 drawn here on log axes


@dataclass
class SweepResult:
    """Raw rows per table, the headline numbers (targets and whether they were met) and the files
    written."""

    name: str
    out: str
    tables: Dict[str, List[Dict[str, Any]]]
    headline: Dict[str, Any]
    files: List[str] = field(default_factory=list)
    command: str = ""


# ---------------------------------------------------------------------------------------------
# shared machinery
# ---------------------------------------------------------------------------------------------


_LABEL = {"eagle": "EAGLE", "cg": "CG", "gd": "GD"}


def _kernel(method: str) -> EagleKernel:
    """The worker kernel of ``method``; passing it explicitly keeps ``M = 1`` on the distributed
    round loop (``solve`` would otherwise run the centralized solver)."""
    return EagleKernel(eta=0.0 if method == "gd" else 1.0 / 3.0, gamma=1.0)


def _distributed_solve(problem: Problem, shards, method: str, **kw):
    """Distributed EAGLE (``"eagle"``, ``"eagle-accel"``), GD (``"gd"``) or CG on the normal
    equations (``"cg"``; at M = 1 the centralized CG, the same iteration) through the public API."""
    if method == "cg":
        return solve(problem, "cg", workers=len(shards), shards=[np.asarray(s) for s in shards],
                     **kw)
    base = "gd" if method == "gd" else "eagle"
    kw.setdefault("mode", "paper")                # these sweeps study the paper's algorithm
    return solve(problem, base, workers=len(shards), shards=[np.asarray(s) for s in shards],
                 kernel=_kernel(base), accelerate=(method == "eagle-accel"), **kw)


def _curve(errors: Sequence[float], points: int = 200) -> Tuple[np.ndarray, np.ndarray]:
    idx = report.log_subsample(len(errors), points)
    return np.arange(1, len(errors) + 1)[idx], np.maximum(np.asarray(errors)[idx], _ERR_FLOOR)


# ---------------------------------------------------------------------------------------------
# distributed GD on consistent data: its exact error curve (to go beyond the measured cap)
# ---------------------------------------------------------------------------------------------
@dataclass
class GDPrediction:
    """The error of distributed GD after ``ℓ`` rounds on *consistent* data (``B = W A``).

    With shards normalised as the worker does (``A^μ, B^μ ← A^μ, B^μ / s_μ``; ``s_μ² = ‖A^μ‖₂²``
    locally, or the largest one globally) a GD round is ``C ← (I − γĒ) C``,
    ``D ← D + W γĒ C`` with ``Ē = (1/M) Σ_μ A^μA^μᵀ``, hence ``D_ℓ − D̂ = −W (I − γĒ)^ℓ C₀`` and

        error(ℓ) = ‖ W U diag((1 − γλ)^ℓ) Uᵀ C₀ ‖_F / den,      Ē = U diag(λ) Uᵀ

    (``den`` = :attr:`Problem.error_denominator`, the metric the solver reports).
    """

    lam: np.ndarray          # (k,) eigenvalues of Ē above the numerical floor
    G: np.ndarray            # (n', k) W U
    c: np.ndarray            # (k, d') Uᵀ C₀
    den: float
    gamma: float = 1.0

    @property
    def lambda_min(self) -> float:
        return float(self.lam.min())

    @property
    def condition(self) -> float:
        """κ(Ē₀) over its positive eigenvalues ≥ 1/α``)."""
        return float(self.lam.max() / self.lam.min())

    def error(self, rounds: int) -> float:
        # no clipping: the worker's power-iteration norm can sit slightly below ‖A^μ‖₂, so the
        # top λ may exceed 1 by ~1e-3 and that component flips sign each round (integer power)
        q = (1.0 - self.gamma * self.lam) ** int(rounds)                           # (k,)
        return float(np.linalg.norm(self.G @ (q[:, None] * self.c)) / self.den)

    def rounds_to(self, target: float, limit: float = 1e13) -> float:
        """The first ``ℓ`` with ``error(ℓ) ≤ target`` (doubling, then bisection; ∞ past ``limit``)."""
        if self.error(0) <= target:
            return 0.0
        hi = 1
        while self.error(hi) > target:
            hi *= 2
            if hi > limit:
                return math.inf
        lo = hi // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.error(mid) <= target:
                hi = mid
            else:
                lo = mid
        return float(hi)

    def max_rel_dev(self, measured: Sequence[float], points: int = 400) -> float:
        """Largest ``|predicted − measured| / measured`` over (log-spaced) measured rounds."""
        idx = report.log_subsample(len(measured), points)
        dev = [abs(self.error(i + 1) - measured[i]) / max(measured[i], 1e-300) for i in idx]
        return float(max(dev)) if dev else float("nan")


def gd_prediction(problem: Problem, shards: Sequence[np.ndarray], *, normalization: str = "local",
                  gamma: float = 1.0) -> GDPrediction:
    """:class:`GDPrediction` for ``problem`` split into ``shards`` (consistent data only)."""
    A = np.asarray(problem.A, dtype=np.float64)
    norms = [spectral_norm_sq(torch.tensor(A[:, s]), iters=200, rtol=1e-8)[0] for s in shards]
    if normalization == "global":
        norms = [max(norms)] * len(norms)
    E = np.zeros((problem.n, problem.n))
    for s, s2 in zip(shards, norms):
        As = A[:, s]
        E += As @ As.T / s2
    E /= len(shards)
    lam, U = np.linalg.eigh(E)
    keep = lam > 1e-13 * lam.max()
    lam, U = lam[keep], U[:, keep]
    # W = B A⁺ through the eigendecomposition of A Aᵀ (cheaper than pinv of the n x d matrix; only
    # a few correct digits are needed to predict round counts)
    sig2, V = np.linalg.eigh(A @ A.T)
    ok = sig2 > sig2.max() * 1e-24
    W = ((np.asarray(problem.B, np.float64) @ A.T) @ V[:, ok]) / sig2[ok] @ V[:, ok].T    # (n', n)
    return GDPrediction(lam=lam, G=W @ U, c=U.T @ np.asarray(problem.C, np.float64),
                        den=problem.error_denominator, gamma=gamma)


def tail_rate_rounds(errors: Sequence[float], target: float, frac: float = 0.25) -> float:
    """Rounds to ``target`` if the linear rate of the last ``frac`` of ``errors`` persisted
    (least-squares slope of ``log error`` vs round); ∞ when the tail does not decrease."""
    e = np.asarray(errors, dtype=np.float64)
    if e.size and e[-1] <= target:
        return float(np.argmax(e <= target) + 1)
    k = max(10, int(frac * e.size))
    if e.size < 10:
        return math.nan
    x = np.arange(e.size - k + 1, e.size + 1, dtype=np.float64)
    y = np.log(np.maximum(e[-k:], 1e-300))
    slope = np.polyfit(x, y, 1)[0]
    if not slope < 0:
        return math.inf
    return float(e.size + (math.log(target) - y[-1]) / slope)


# ---------------------------------------------------------------------------------------------
# rounds sweep (M-sweep and α-sweep)
# ---------------------------------------------------------------------------------------------
ROUNDS_FULL = dict(workers=(1, 3, 5, 8), n=1000, alphas=(1.0, 0.6, 0.35, 0.01), alpha_workers=3,
                   alpha_n=1000, eagle_cap=2000, accel_cap=2000, gd_cap=10000, cg_cap=10000)
ROUNDS_SMOKE = dict(workers=(1, 3), n=24, alphas=(1.0, 0.35), alpha_workers=3, alpha_n=20,
                    eagle_cap=300, accel_cap=600, gd_cap=300, cg_cap=300)


def _rounds_row(sweep: str, problem: Problem, shards, method: str, res, *, n: int, target: float,
                cap: int, alpha_target: float) -> Dict[str, Any]:
    reached = bool(res.status.ok and res.error <= target)
    rt = float(res.info.get("rounds_time_s", res.time_s))
    return {
        "sweep": sweep, "workers": len(shards), "alpha_target": alpha_target,
        "alpha": problem.meta.get("alpha", float("nan")),
        "kappa_max": problem.meta.get("kappa_max", float("nan")), "n": n,
        "d_per_worker": len(shards[0]), "method": method, "status": res.status.value,
        "reached": reached, "rounds": res.iterations, "cap": cap, "final_error": res.error,
        "rounds_time_s": rt, "time_per_round_ms": 1e3 * rt / max(res.iterations, 1),
        "bytes_per_worker_per_round": res.bytes_per_worker_per_round,
        "message_elements": res.info.get("message_elements", ""),
        # -1: accelerate=True but the target was reached before the freeze criterion held
        "ab_frozen_at": res.info.get("ab_frozen_at_max", ""),
    }


def _run_point(sweep: str, problem: Problem, shards, methods: Sequence[str], *, n: int,
               target: float, caps: Dict[str, int], alpha_target: float, progress: bool,
               rows: List[Dict[str, Any]], curves: Dict[Tuple, Dict[str, Any]], bar) -> None:
    key_base = (sweep, len(shards), alpha_target)
    for m in methods:
        t0 = time.perf_counter()
        # no per-round bar: its refresh would be inside the timed round loop
        res = _distributed_solve(problem, shards, m, target_error=target, max_iter=caps[m])
        row = _rounds_row(sweep, problem, shards, m, res, n=n, target=target, cap=caps[m],
                          alpha_target=alpha_target)
        errs = list(res.history.error)
        curve: Dict[str, Any] = {"measured": _curve(errs)}
        if m == "gd":
            pred = gd_prediction(problem, shards)
            row["rounds_predicted"] = pred.rounds_to(target)
            row["prediction_max_rel_dev"] = pred.max_rel_dev(errs)
            row["rounds_tail_rate"] = tail_rate_rounds(errs, target)
            row["lambda_min_Ebar"] = pred.lambda_min
            row["kappa_Ebar"] = pred.condition
            stop = row["rounds_predicted"] if math.isfinite(row["rounds_predicted"]) else 1e12
            if stop > len(errs):
                xs = np.unique(np.round(np.geomspace(max(len(errs), 1), stop, 60)).astype(np.int64))
                curve["predicted"] = (xs, np.maximum([pred.error(int(x)) for x in xs], _ERR_FLOOR))
        else:
            row["rounds_predicted"] = float(res.iterations) if row["reached"] else math.nan
        rows.append(row)
        curves[key_base + (m,)] = curve
        log.info("%s M=%d α=%.3g %s: %s after %d rounds, error %.2e (%.1f s)%s", sweep,
                 len(shards), row["alpha"], m, res.status.value, res.iterations, res.error,
                 time.perf_counter() - t0,
                 f"; predicted {row['rounds_predicted']:.4g} rounds" if m == "gd" else "")
        bar.update(1)


def rounds_sweep(out: Optional[str] = None, *, workers: Optional[Sequence[int]] = None,
                 n: Optional[int] = None, alphas: Optional[Sequence[float]] = None,
                 alpha_workers: Optional[int] = None, alpha_n: Optional[int] = None,
                 kappa_max: float = 1e3, target: float = 1e-8, eagle_cap: Optional[int] = None,
                 accel_cap: Optional[int] = None, gd_cap: Optional[int] = None,
                 cg_cap: Optional[int] = None, seed: int = 0,
                 threads: Optional[int] = None, smoke: bool = False,
                 progress: bool = True) -> SweepResult:
    """M-sweep and α-sweep of communication rounds to ``target`` (module docstring).

    M-sweep: ``alpha_problem(n, n, M, alpha=1, kappa_max)`` for each ``M`` in ``workers``
    (shard μ is ``n x n``); EAGLE, distributed CG (normal equations) and GD. α-sweep:
    ``alpha_problem(alpha_n, alpha_n, alpha_workers, alpha=α, kappa_max)``; EAGLE, accelerated
    EAGLE, CG and GD. Every run stops when ``‖D_ℓ − D̂‖_F ≤ target·‖D̂‖_F`` or at its cap
    (``eagle_cap``, ``accel_cap``, ``gd_cap``, ``cg_cap``).
    ``smoke=True`` shrinks every default to finish in seconds; explicit arguments still win.
    """
    if smoke and threads is None:
        threads = 1     # tiny problems gain nothing from threads; one thread is immune to OpenMP
        #                 oversubscription stalls (seconds per tiny GEMM) on a busy machine
    cfg = _resolve(smoke, ROUNDS_FULL, ROUNDS_SMOKE, dict(
        workers=workers, n=n, alphas=alphas, alpha_workers=alpha_workers, alpha_n=alpha_n,
        eagle_cap=eagle_cap, accel_cap=accel_cap, gd_cap=gd_cap, cg_cap=cg_cap))
    for k in ("n", "alpha_workers", "alpha_n", "eagle_cap", "accel_cap", "gd_cap", "cg_cap"):
        _check_positive_int(k, cfg[k])
    Ms = [int(m) for m in cfg["workers"]]
    if not Ms or any(m < 1 for m in Ms):
        raise ValueError(f"workers={cfg['workers']!r} must be positive integers, e.g. 1,3,5,8")
    amax = max_alpha_below_one(cfg["alpha_workers"])
    alist = [float(a) for a in cfg["alphas"]]
    bad = [a for a in alist if not (a == 1.0 or 0.0 < a <= amax + 1e-12)]
    if bad:
        raise ValueError(f"alphas {bad} cannot be produced with {cfg['alpha_workers']} workers: use 1 "
                         f"or values in (0, {amax:.3g}] (a shard missing a direction caps α at "
                         "(M-1)/M)")
    if not (target > 0) or not (kappa_max >= 1):
        raise ValueError(f"target={target!r} must be > 0 and kappa_max={kappa_max!r} >= 1")
    out = out or os.path.join(RESULTS_ROOT, "rounds")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench rounds", dict(
        out=out, workers=Ms, n=cfg["n"], alphas=alist, alpha_workers=cfg["alpha_workers"],
        alpha_n=cfg["alpha_n"], kappa_max=kappa_max, target=target, eagle_cap=cfg["eagle_cap"],
        accel_cap=cfg["accel_cap"], gd_cap=cfg["gd_cap"], cg_cap=cfg["cg_cap"], seed=seed,
        threads=threads),
        ["smoke"] if smoke else [])
    caps = {"eagle": cfg["eagle_cap"], "eagle-accel": cfg["accel_cap"], "gd": cfg["gd_cap"],
            "cg": cfg["cg_cap"]}
    rows: List[Dict[str, Any]] = []
    curves: Dict[Tuple, Dict[str, Any]] = {}
    t_start = time.perf_counter()
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("rounds sweep: %s", command)
        bar = _progress(3 * len(Ms) + 4 * len(alist), "rounds sweep", progress)
        build_s: Dict[str, float] = {}
        for M in Ms:
            t0 = time.perf_counter()
            prob, shards = alpha_problem(cfg["n"], cfg["n"], M, alpha=1.0, kappa_max=kappa_max,
                                         n_query=2, d_query=1, seed=seed)
            _ = prob.reference, prob.error_denominator      # not part of any timing
            build_s[f"M={M}"] = time.perf_counter() - t0
            _run_point("M", prob, shards, ("eagle", "cg", "gd"), n=cfg["n"], target=target, caps=caps,
                       alpha_target=1.0, progress=progress, rows=rows, curves=curves, bar=bar)
        for a in alist:
            t0 = time.perf_counter()
            prob, shards = alpha_problem(cfg["alpha_n"], cfg["alpha_n"], cfg["alpha_workers"],
                                         alpha=a, kappa_max=kappa_max, n_query=2, d_query=1,
                                         seed=seed)
            _ = prob.reference, prob.error_denominator
            build_s[f"alpha={a:g}"] = time.perf_counter() - t0
            _run_point("alpha", prob, shards, ("eagle", "eagle-accel", "cg", "gd"),
                       n=cfg["alpha_n"],
                       target=target, caps=caps, alpha_target=a, progress=progress, rows=rows,
                       curves=curves, bar=bar)
        bar.close()
        load_end = report.load_average()
    elapsed = time.perf_counter() - t_start

    headline = _rounds_headline(rows, target)
    files = [report.write_csv(rows, os.path.join(out, "rounds.csv"))]
    files.append(report.write_csv(_curve_rows(curves), os.path.join(out, "history.csv")))
    files += _rounds_plots(out, rows, curves, target, cfg, kappa_max)
    files.append(_rounds_markdown(out, command, machine, rows, headline, cfg, kappa_max, target,
                                  caps, build_s, elapsed, load_start, load_end, threads, smoke,
                                  files))
    log.info("rounds sweep written to %s (%.0f s)", out, elapsed)
    return SweepResult("rounds", out, {"rounds": rows}, headline, files, command)


def _curve_rows(curves: Dict[Tuple, Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for (sweep, M, a, m), c in curves.items():
        for source, (x, y) in c.items():
            out += [{"sweep": sweep, "workers": M, "alpha_target": a, "method": m,
                     "source": source, "round": int(xi), "error": float(yi)} for xi, yi in zip(x, y)]
    return out


def _find(rows, **kw) -> Optional[Dict[str, Any]]:
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _rounds_headline(rows: List[Dict[str, Any]], target: float) -> Dict[str, Any]:
    h: Dict[str, Any] = {}
    msweep = [r for r in rows if r["sweep"] == "M"]
    eagle = [r for r in msweep if r["method"] == "eagle"]
    gd = [r for r in msweep if r["method"] == "gd"]
    if eagle:
        er = [r["rounds"] for r in eagle]
        h["eagle_all_reached"] = all(r["reached"] for r in eagle)
        h["eagle_rounds_min"], h["eagle_rounds_max"] = min(er), max(er)
        h["eagle_flatness_max_over_min"] = max(er) / min(er)
        h["target_eagle_le_35_met"] = bool(h["eagle_all_reached"] and max(er) <= 35)
        h["target_flat_le_1.2_met"] = bool(h["eagle_flatness_max_over_min"] <= 1.2)
    if eagle and gd:
        ratios_pred, ratios_lb = [], []
        for g in gd:
            e = _find(eagle, workers=g["workers"])
            if e and e["reached"]:
                ratios_pred.append(g["rounds_predicted"] / e["rounds"])
                ratios_lb.append((g["rounds"] if g["reached"] else g["cap"]) / e["rounds"])
        if ratios_pred:
            h["gd_over_eagle_predicted_min"] = min(ratios_pred)
            h["gd_over_eagle_measured_lower_bound_min"] = min(ratios_lb)
            h["gd_reached_within_cap"] = any(g["reached"] for g in gd)
            h["target_gd_over_eagle_ge_300_met_predicted"] = bool(min(ratios_pred) >= 300)
            h["target_gd_over_eagle_ge_300_met_measured"] = bool(min(ratios_lb) >= 300)
    cg = [r for r in msweep if r["method"] == "cg"]
    if eagle and cg:
        ratios = [(c["rounds"] if c["reached"] else c["cap"]) / e["rounds"]
                  for c in cg for e in [_find(eagle, workers=c["workers"])] if e and e["reached"]]
        if ratios:
            h["cg_over_eagle_rounds_min"] = min(ratios)
            h["cg_reached_all"] = all(c["reached"] for c in cg)
    asweep = [r for r in rows if r["sweep"] == "alpha"]
    for m in ("eagle", "eagle-accel", "cg", "gd"):
        pts = [(r["alpha"], r["rounds_predicted"] if m == "gd" else
                (r["rounds"] if r["reached"] else math.nan)) for r in asweep if r["method"] == m]
        pts = [(a, k) for a, k in pts if math.isfinite(k) and k > 0 and a > 0]
        if len(pts) >= 2:
            x = np.log([1.0 / a for a, _ in pts])
            y = np.log([k for _, k in pts])
            h[f"alpha_slope_{m}"] = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else math.nan
            (a1, k1), (a2, k2) = sorted(pts)[:2]          # the two smallest α
            if a1 < a2:
                h[f"alpha_slope_small_{m}"] = float(math.log(k1 / k2) / math.log(a2 / a1))
    plain = [r for r in asweep if r["method"] == "eagle"]
    if plain:
        h["alpha_plain_eagle_failures"] = ",".join(f"{r['alpha_target']:g}" for r in plain
                                                   if not r["reached"]) or "none"
    return h


def _rounds_plots(out, rows, curves, target, cfg, kappa_max) -> List[str]:
    import matplotlib
    cmap = matplotlib.colormaps["viridis"]
    files = []
    # error vs round ---------------------------------------------------------------------------
    Ms = sorted({r["workers"] for r in rows if r["sweep"] == "M"})
    alphas = sorted({r["alpha_target"] for r in rows if r["sweep"] == "alpha"}, reverse=True)
    p1: List[Dict[str, Any]] = []
    for i, M in enumerate(Ms):
        col = cmap(i / max(len(Ms) - 1, 1) * 0.85)
        for m, ls in (("eagle", "-"), ("cg", "-."), ("gd", "--")):
            c = curves.get(("M", M, 1.0, m))
            if not c:
                continue
            x, y = c["measured"]
            p1.append(dict(x=x, y=y, label=f"{_LABEL[m]} M={M}",
                           color=col, linestyle=ls, linewidth=1.6 if m == "eagle" else 1.0))
            if "predicted" in c:
                x, y = c["predicted"]
                p1.append(dict(x=x, y=y, label=f"GD M={M} (predicted)" if i == 0 else
                               f"GD M={M} pred.", color=col, linestyle=":", linewidth=1.0))
    p2, p3 = [], []
    for i, a in enumerate(alphas):
        col = cmap(i / max(len(alphas) - 1, 1) * 0.85)
        for m, ls, tgt in (("eagle", "-", p2), ("eagle-accel", "--", p2), ("gd", "-", p3),
                           ("cg", "-.", p3)):
            c = curves.get(("alpha", cfg["alpha_workers"], a, m))
            if not c:
                continue
            x, y = c["measured"]
            tgt.append(dict(x=x, y=y, label=f"{m} α={a:g}", color=col, linestyle=ls))
            if "predicted" in c:
                x, y = c["predicted"]
                p3.append(dict(x=x, y=y, label=f"gd α={a:g} (predicted)", color=col,
                               linestyle=":"))
    hl = [(target, f"target {target:g}")]
    panels = [
        dict(title=f"M-sweep (α = 1, n = {cfg['n']}): EAGLE solid, CG dash-dot,\nGD dashed "
                   "(measured), dotted (predicted)",
             xlabel="round", ylabel="relative error", logx=True, logy=True, series=p1, hlines=hl),
        dict(title=f"α-sweep (M = {cfg['alpha_workers']}, n = {cfg['alpha_n']}): EAGLE solid,\n"
                   "accelerated EAGLE dashed", xlabel="round", ylabel="relative error", logx=True,
             logy=True, series=p2, hlines=hl),
        dict(title="α-sweep: distributed GD (solid; dotted: predicted\nbeyond the cap) and CG "
                   "(dash-dot)", xlabel="round",
             ylabel="relative error", logx=True, logy=True, series=p3, hlines=hl),
    ]
    files.append(report.plot_panels(os.path.join(out, "error_vs_round.png"), panels, ncols=3,
                                    panel_size=(6.0, 4.6), legend="axes"))
    # rounds vs M -------------------------------------------------------------------------------
    ms = [r for r in rows if r["sweep"] == "M"]
    if ms:
        e = [r for r in ms if r["method"] == "eagle"]
        g = [r for r in ms if r["method"] == "gd"]
        cgr = [r for r in ms if r["method"] == "cg"]
        series = [
            dict(x=[r["workers"] for r in e], y=[r["rounds"] for r in e], label="EAGLE (measured)",
                 marker="o", filled=all(r["reached"] for r in e),
                 annotate=[str(r["rounds"]) for r in e]),
            dict(x=[r["workers"] for r in g], y=[r["rounds_predicted"] for r in g],
                 label="GD (predicted, exact recurrence)", marker="s", linestyle="--",
                 annotate=[f"{r['rounds_predicted']:.2g}" for r in g]),
            dict(x=[r["workers"] for r in g], y=[r["rounds"] for r in g],
                 label="GD (measured; hollow = stopped at cap, not reached)", marker="v",
                 linestyle=":", filled=all(r["reached"] for r in g), color="#98df8a"),
            dict(x=[r["workers"] for r in cgr], y=[r["rounds"] for r in cgr],
                 label="CG, normal equations (measured; hollow = cap)", marker="^",
                 linestyle="-.", filled=all(r["reached"] for r in cgr), color="#1f77b4",
                 annotate=[str(r["rounds"]) for r in cgr]),
        ]
        panel = dict(title=f"rounds to {target:g} vs M (α = 1, κ_max = {kappa_max:g}, "
                           f"n = d_μ = {cfg['n']})", xlabel="workers M", ylabel="rounds",
                     logy=True, series=series, hlines=[(35, "target: EAGLE ≤ 35")],
                     xticks=sorted({r["workers"] for r in ms}))
        files.append(report.plot_panels(os.path.join(out, "rounds_vs_M.png"), [panel],
                                        panel_size=(7.0, 5.0), legend="axes"))
    # rounds vs 1/α -------------------------------------------------------------------------------
    al = [r for r in rows if r["sweep"] == "alpha"]
    if al:
        series = []
        for m, label, marker in (("eagle", "EAGLE", "o"), ("eagle-accel", "EAGLE accelerated", "D")):
            rs = [r for r in al if r["method"] == m]
            reached = [r for r in rs if r["reached"]]
            failed = [r for r in rs if not r["reached"]]
            if reached:
                series.append(dict(x=[1 / r["alpha"] for r in reached], y=[r["rounds"] for r in reached],
                                   label=label, marker=marker,
                                   color="#d62728" if m == "eagle" else "#ff7f0e",
                                   annotate=[str(r["rounds"]) for r in reached]))
            if failed:
                series.append(dict(x=[1 / r["alpha"] for r in failed], y=[r["rounds"] for r in failed],
                                   label=f"{label}: stopped at cap without reaching target",
                                   marker=marker, linestyle="none", filled=False,
                                   color="#d62728" if m == "eagle" else "#ff7f0e"))
        cgr = [r for r in al if r["method"] == "cg"]
        if cgr:
            series.append(dict(x=[1 / r["alpha"] for r in cgr], y=[r["rounds"] for r in cgr],
                               label="CG, normal equations (hollow = stopped at cap)", marker="^",
                               linestyle="-.", filled=all(r["reached"] for r in cgr),
                               color="#1f77b4", annotate=[str(r["rounds"]) for r in cgr]))
        g = [r for r in al if r["method"] == "gd"]
        if g:
            series.append(dict(x=[1 / r["alpha"] for r in g], y=[r["rounds_predicted"] for r in g],
                               label="GD (predicted, exact recurrence)", marker="s", linestyle="--",
                               color="#2ca02c"))
            series.append(dict(x=[1 / r["alpha"] for r in g], y=[r["rounds"] for r in g],
                               label="GD measured (hollow = stopped at cap)", marker="v",
                               linestyle=":", filled=all(r["reached"] for r in g),
                               color="#98df8a"))
        acc = sorted([r for r in al if r["method"] == "eagle-accel" and r["reached"]],
                     key=lambda r: r["alpha"])
        if acc:
            a0, k0 = acc[0]["alpha"], acc[0]["rounds"]
            xs = np.geomspace(1.0, 1.0 / min(r["alpha"] for r in al), 20)
            series.append(dict(x=xs, y=k0 * xs * a0, label="∝ 1/α (through the smallest α)",
                               color="black", linestyle=":", linewidth=1.0))
        panel = dict(title=f"rounds to {target:g} vs 1/α (M = {cfg['alpha_workers']}, "
                           f"κ_max = {kappa_max:g}, n = d_μ = {cfg['alpha_n']})",
                     xlabel="1/α", ylabel="rounds", logx=True, logy=True, series=series)
        files.append(report.plot_panels(os.path.join(out, "rounds_vs_inv_alpha.png"), [panel],
                                        panel_size=(7.0, 5.2), legend="axes"))
    return files


def _yes(b: Any) -> str:
    return "**met**" if b else "**not met**"


def _rounds_markdown(out, command, machine, rows, h, cfg, kappa_max, target, caps, build_s,
                     elapsed, load_start, load_end, threads, smoke, files) -> str:
    def gd_pred(r):
        return report.fmt(r.get("rounds_predicted")) if r["method"] == "gd" else ""

    def rounds_cell(r):
        return f"{r['rounds']}" if r["reached"] else f"> {r['rounds']} (cap; error {r['final_error']:.2e})"

    table = report.markdown_table(rows, {
        "sweep": "sweep", "M": "workers", "α": "alpha", "method": "method",
        "rounds to target (measured)": rounds_cell, "GD rounds predicted": gd_pred,
        "GD tail-rate extrapolation": lambda r: report.fmt(r.get("rounds_tail_rate"))
        if r["method"] == "gd" else "",
        "prediction vs measured (max rel. dev.)":
            lambda r: report.fmt(r.get("prediction_max_rel_dev")) if r["method"] == "gd" else "",
        "κ(Ē₀)": lambda r: report.fmt(r.get("kappa_Ebar")) if r["method"] == "gd" else "",
        "ms / round": "time_per_round_ms", "floats sent / worker / round": "message_elements",
        "A,B frozen at": "ab_frozen_at"})
    head = []
    if "eagle_rounds_max" in h:
        head += [
            "| target | measured | verdict |", "|---|---|---|",
            f"| EAGLE ≤ 35 rounds to {target:g} (M-sweep) | {h['eagle_rounds_min']}–"
            f"{h['eagle_rounds_max']} rounds | {_yes(h['target_eagle_le_35_met'])} |",
            f"| EAGLE flat in M: max/min ≤ 1.2 | {h['eagle_flatness_max_over_min']:.3g} | "
            f"{_yes(h['target_flat_le_1.2_met'])} |",
        ]
    if "gd_over_eagle_predicted_min" in h:
        head += [
            f"| GD / EAGLE ≥ 300× (predicted GD rounds, exact recurrence) | "
            f"{report.fmt(h['gd_over_eagle_predicted_min'])}× (smallest over M) | "
            f"{_yes(h['target_gd_over_eagle_ge_300_met_predicted'])} |",
            f"| GD / EAGLE ≥ 300× (measured lower bound: GD's cap / EAGLE) | > "
            f"{report.fmt(h['gd_over_eagle_measured_lower_bound_min'])}× | "
            f"{_yes(h['target_gd_over_eagle_ge_300_met_measured'])} |",
        ]
    if "cg_over_eagle_rounds_min" in h:
        head.append(f"| distributed CG-NE / EAGLE rounds (M-sweep; a CG run at its cap counts its "
                    f"cap) | {report.fmt(h['cg_over_eagle_rounds_min'])}× (smallest over M) | — |")
    for m in ("eagle", "eagle-accel", "cg", "gd"):
        if f"alpha_slope_{m}" in h:
            what = "predicted rounds" if m == "gd" else "rounds"
            small = h.get(f"alpha_slope_small_{m}")
            head.append(f"| α-sweep, {m}: {what} ∝ α^-s (log-log fit over all α; between the two "
                        f"smallest α) | s = {h[f'alpha_slope_{m}']:.2f}; "
                        f"{'—' if small is None else f'{small:.2f}'} | — |")
    sizes = (f"M-sweep: n = d_μ = {cfg['n']} (A is n x {cfg['n']}·M), n' = 2, d' = 1, "
             f"κ(A^μ) = κ_max = {kappa_max:g}, α = 1, M ∈ {list(cfg['workers'])}. α-sweep: M = "
             f"{cfg['alpha_workers']}, n = d_μ = {cfg['alpha_n']}, α ∈ {list(cfg['alphas'])}. "
             f"Target relative error {target:g}. Caps: EAGLE {caps['eagle']}, accelerated "
             f"{caps['eagle-accel']}, GD {caps['gd']}, CG {caps['cg']} rounds. In-process backend, "
             "float64, "
             f"problem seed fixed; every round count is deterministic.")
    notes = [
        f"Sizes: {sizes}",
        "Why no α = 0.8: with M workers no sharding has α in ((M−1)/M, 1) — if some shard's range "
        "misses a direction v of the joint range, vᵀP̄v ≤ (M−1)/M (proof in "
        "`shards.max_alpha_below_one`). At M = 3 the cap is 2/3, so α = 0.6 replaces the paper's "
        "0.8 (the paper's 0.83).",
        "GD round counts: `rounds` is measured and stops at the cap; `GD rounds predicted` "
        "evaluates distributed GD's exact error recurrence error(ℓ) = ‖W(I − Ē)^ℓ C₀‖/‖D̂‖ "
        "(eigendecomposition of Ē = (1/M)Σ A^μA^μᵀ/‖A^μ‖², consistent data) — the column "
        "'prediction vs measured' is its largest relative deviation from the measured error over "
        "every measured round; `tail-rate extrapolation` continues the last quarter's linear rate "
        "(an underestimate: GD's rate keeps slowing as the slow directions dominate).",
        "M = 1 runs through the same distributed round loop (the kernel is passed explicitly), so "
        "all M share one code path (CG at M = 1 is the centralized CG, the same iteration).",
        "CG is CG on the normal equations W·A Aᵀ = B Aᵀ: each round one all-reduce of P·A Aᵀ "
        "(n'·n numbers; `floats sent` counts it), converged only after LSQR's tests pass on the "
        "true residual; here it stops on the relative error target like the others.",
        f"Problem construction (SVDs for α and κ, the pinv reference) is excluded from every "
        f"timing; it took {', '.join(f'{k}: {v:.0f} s' for k, v in build_s.items())}.",
        f"Wall time of the whole sweep: {elapsed:.0f} s; torch threads: "
        f"{threads if threads is not None else torch.get_num_threads()}.",
    ]
    cap = lift_cap(torch.float64)
    notes.append(
        f"'eagle' is distributed EAGLE as shipped: each worker stops updating A^μ, B^μ after "
        f"{cap} rounds (the numerical-rank guard `kernels.lift_cap`: every shard of an α < 1 "
        "sharding is rank-deficient, and the normalised update lifts its rounding-level singular "
        "values by 1.5x per round, which without the guard stalls runs longer than ~90 rounds at "
        "a wrong fixed point). 'eagle-accel' (accelerate=True) freezes as soon as "
        "‖A_new − A‖²/‖A‖² < 1e-10 on that worker (column 'A,B frozen at').")
    plain = [r for r in rows if r["sweep"] == "alpha" and r["method"] == "eagle"]
    if any(not r["reached"] for r in plain):
        notes.append(f"Plain EAGLE did not reach the target at α = "
                     f"{h.get('alpha_plain_eagle_failures')} within {caps['eagle']} rounds.")
    notes += report.load_notes(load_start, load_end)
    if smoke:
        notes.insert(0, "SMOKE RUN: tiny sizes, numbers are not meaningful.")
    sections = {"Headline (targets)": "\n".join(head) or "—"}
    return report.write_markdown(os.path.join(out, "summary.md"),
                                 "Distributed rounds: EAGLE vs distributed GD and CG (M-sweep, "
                                 "α-sweep)",
                                 command, table, notes, machine=machine,
                                 sections=sections, files=files)


# ---------------------------------------------------------------------------------------------
# backends sweep
# ---------------------------------------------------------------------------------------------
BACKENDS_FULL = dict(n_large=2000, n_small=100, workers=4, backends=("inprocess", "torch", "ray"),
                     methods=("eagle", "gd"), rounds_large=5, rounds_small=200, gd_rounds_large=100,
                     repeats=2, repeats_small=3, accel_n=800, accel_workers=4,
                     accel_alphas=(1.0, 0.35),
                     accel_cap=2000, norm_n=300, norm_workers=4, noise_n=200, noise_d=1600,
                     noise_workers=(1, 2, 4, 8), noise_cap=3000)
BACKENDS_SMOKE = dict(n_large=24, n_small=8, workers=2, backends=("inprocess", "torch"),
                      methods=("eagle",), rounds_large=3, rounds_small=10, gd_rounds_large=10,
                      repeats=1, repeats_small=1, accel_n=16, accel_workers=2,
                      accel_alphas=(1.0, 0.35),
                      accel_cap=400, norm_n=16, norm_workers=2, noise_n=12, noise_d=48,
                      noise_workers=(1, 2, 4), noise_cap=400)


def _timing_problem(n: int, workers: int, seed: int):
    """``n x (M·n)`` with κ = 1e3, ``n' = d' = 1``; shard μ is the contiguous ``n x n`` block."""
    prob = controlled(n, workers * n, 1, 1, kappa=1e3, seed=seed)
    return prob, make_shards(prob.d, workers, "contiguous")


def _timing_configs(cfg) -> List[Tuple[int, str, int, int, int]]:
    """``(n, method, rounds, workers, repeats)`` of every timing configuration. When M exceeds the
    cores, a latency check at ``n_small`` with M = cores separates gloo's own latency from the
    cost of oversubscribing the cores."""
    M, out = cfg["workers"], []
    for n in (cfg["n_large"], cfg["n_small"]):
        for m in cfg["methods"]:
            if n == cfg["n_large"]:
                R = cfg["rounds_large"] if m == "eagle" else cfg["gd_rounds_large"]
                out.append((n, m, R, M, cfg["repeats"]))
            else:
                out.append((n, m, cfg["rounds_small"], M, cfg["repeats_small"]))
    cores = os.cpu_count() or 1
    if M > cores >= 2 and "gd" in cfg["methods"]:
        out.append((cfg["n_small"], "gd", cfg["rounds_small"], cores, cfg["repeats_small"]))
    return out


def _per_round_rows(cfg, seed, threads, progress) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    from ..distributed.runtime import shutdown_ray
    rows: List[Dict[str, Any]] = []
    cold: Dict[str, float] = {}
    backends = list(cfg["backends"])
    configs = _timing_configs(cfg)
    variants = []
    for b in backends:
        if b == "inprocess":
            default_threads = threads if threads is not None else torch.get_num_threads()
            variants += [("inprocess", 1)] + ([("inprocess", default_threads)]
                                              if default_threads != 1 else [])
        else:
            variants.append((b, None))
    total = sum(c[4] for c in configs) * len(variants) + ("ray" in backends)
    bar = _progress(total, "backends", progress)
    try:
        if "ray" in backends:
            # Ray's own start (ray.init) is a one-off per driver: measure it apart, on a tiny solve
            p, sh = _timing_problem(8, cfg["workers"], seed)
            t0 = time.perf_counter()
            _distributed_solve(p, sh, "eagle", max_iter=2, tol=_NO_TOL, record_error=False,
                               backend="ray")
            cold["ray_first_solve_s (ray.init + actors)"] = time.perf_counter() - t0
            bar.update(1)
        for n, m, R, M, repeats in configs:
            prob, shards = _timing_problem(n, M, seed)
            ref_D = None
            for rep in range(repeats):
                for b, th in variants:
                    with _threads(th):
                        t0 = time.perf_counter()
                        # verify=False: time the paper's bare (n + n')·d' message
                        res = _distributed_solve(prob, shards, m, max_iter=R, tol=_NO_TOL,
                                                 record_error=False, backend=b, verify=False)
                        wall = time.perf_counter() - t0
                    rt = float(res.info["rounds_time_s"])
                    if b == "inprocess" and ref_D is None:
                        ref_D = res.D
                    dev = float(np.linalg.norm(res.D - ref_D) / max(np.linalg.norm(ref_D), 1e-300))
                    name = b if b != "inprocess" else f"inprocess ({th} thread{'s' if th > 1 else ''})"
                    rows.append({
                        "n": n, "d_per_worker": n, "workers": M, "method": m, "backend": name,
                        "backend_resolved": res.backend, "repeat": rep, "rounds": res.iterations,
                        "rounds_time_s": rt, "per_round_ms": 1e3 * rt / max(res.iterations, 1),
                        "startup_s": res.time_s - rt, "wall_s": wall,
                        "bytes_per_worker_per_round": res.bytes_per_worker_per_round,
                        "D_rel_diff_vs_inprocess": dev,
                    })
                    log.info("n=%d M=%d %s %s: %d rounds, %.3f ms/round, start-up %.2f s", n, M, m,
                             name, res.iterations, rows[-1]["per_round_ms"], rows[-1]["startup_s"])
                    bar.update(1)
    finally:
        bar.close()
        if "ray" in backends:
            shutdown_ray()
    return rows, cold


def _per_round_summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["n"], r["workers"], r["method"], r["backend"]), []).append(r)
    out = []
    for (n, M, m, b), rs in groups.items():
        pr = report.stats(r["per_round_ms"] for r in rs)
        su = report.stats(r["startup_s"] for r in rs)
        out.append({"n": n, "workers": M, "method": m, "backend": b, "runs": len(rs),
                    "rounds": rs[0]["rounds"], "per_round_ms": pr["median"],
                    "per_round_ms_min": pr["min"], "per_round_ms_max": pr["max"],
                    "startup_s": su["median"],
                    "bytes_per_worker_per_round": rs[0]["bytes_per_worker_per_round"],
                    "D_rel_diff_vs_inprocess": max(r["D_rel_diff_vs_inprocess"] for r in rs)})
    for s in out:
        base = [t["per_round_ms"] for t in out if (t["n"], t["workers"], t["method"]) ==
                (s["n"], s["workers"], s["method"]) and t["backend"].startswith("inprocess")]
        s["inprocess_best_ms"] = min(base) if base else math.nan
        s["ratio_vs_inprocess_best"] = s["per_round_ms"] / s["inprocess_best_ms"] if base else math.nan
    return out


def _accel_rows(cfg, seed, progress) -> List[Dict[str, Any]]:
    rows = []
    bar = _progress(2 * len(cfg["accel_alphas"]), "accelerated", progress)
    for a in cfg["accel_alphas"]:
        prob, shards = alpha_problem(cfg["accel_n"], cfg["accel_n"], cfg["accel_workers"], alpha=a,
                                     kappa_max=1e3, n_query=2, d_query=1, seed=seed)
        _ = prob.reference, prob.error_denominator
        pair = {}
        for m in ("eagle", "eagle-accel"):
            t0 = time.perf_counter()
            res = _distributed_solve(prob, shards, m, target_error=1e-8, max_iter=cfg["accel_cap"])
            wall = time.perf_counter() - t0
            pair[m] = res
            rows.append({"alpha_target": a, "alpha": prob.meta["alpha"], "n": cfg["accel_n"],
                         "workers": len(shards), "variant": "accelerated" if m == "eagle-accel"
                         else "plain", "status": res.status.value,
                         "reached": bool(res.status.ok and res.error <= 1e-8),
                         "rounds": res.iterations, "final_error": res.error,
                         "rounds_time_s": res.info["rounds_time_s"], "wall_s": wall,
                         "ab_frozen_at": res.info.get("ab_frozen_at_max", "")})
            bar.update(1)
        p, q = pair["eagle"], pair["eagle-accel"]
        for r in rows[-2:]:
            r["speedup_plain_over_accel"] = p.info["rounds_time_s"] / q.info["rounds_time_s"]
            r["rounds_equal"] = p.iterations == q.iterations
        log.info("accelerated α=%g: rounds %d vs %d, time %.2f s vs %.2f s", a, p.iterations,
                 q.iterations, p.info["rounds_time_s"], q.info["rounds_time_s"])
    bar.close()
    return rows


def _scaled_shards_problem(n: int, workers: int, noise: float, seed: int):
    """``alpha_problem(n, n, M, α = 1)`` with shard μ's columns of A and B scaled by
    ``s_μ = 10^(−μ/(M−1))`` (‖A^μ‖ from 1 to 0.1), then i.i.d. ``N(0, noise²)`` on every block.
    Scaling A^μ and B^μ together keeps consistent data consistent (``B = W A``)."""
    clean, shards = alpha_problem(n, n, workers, alpha=1.0, kappa_max=1e3, n_query=2, d_query=1,
                                  seed=seed)
    A, B = clean.A.copy(), clean.B.copy()
    scales = np.logspace(0.0, -1.0, workers) if workers > 1 else np.ones(1)
    for s, f in zip(shards, scales):
        A[:, s] *= f
        B[:, s] *= f
    C, D = clean.C.copy(), clean.D_true.copy() if clean.D_true is not None else None
    if noise > 0:
        rng = np.random.default_rng(seed + 1)
        A, B, C = (x + noise * rng.standard_normal(x.shape) for x in (A, B, C))
    prob = Problem.from_arrays(A, B, C, D, name=f"scaled-shards(M={workers},noise={noise:g})",
                               meta=dict(shard_scales=scales.tolist(), noise=noise))
    return prob, shards


def _norm_rows(cfg, seed, progress) -> List[Dict[str, Any]]:
    rows = []
    bar = _progress(4, "normalisation", progress)
    for noise in (0.0, 0.01):
        prob, shards = _scaled_shards_problem(cfg["norm_n"], cfg["norm_workers"], noise, seed)
        for norm in ("local", "global"):
            kw = dict(target_error=1e-8) if noise == 0 else dict(tol=1e-10)
            res = _distributed_solve(prob, shards, "eagle", normalization=norm,
                                     max_iter=cfg["accel_cap"], **kw)
            truth = prob.D_true                     # noiseless W A Z (D gets no noise)
            rows.append({"data": "consistent" if noise == 0 else f"noisy σ={noise:g}",
                         "normalization": norm, "n": cfg["norm_n"], "workers": len(shards),
                         "shard_norms": "1 … 0.1 (log-spaced)", "status": res.status.value,
                         "rounds": res.iterations, "error_vs_nystrom": res.error,
                         "nystrom_error_vs_clean_truth":
                             float(np.linalg.norm(prob.reference - truth) / np.linalg.norm(truth)),
                         "error_vs_clean_truth":
                             float(np.linalg.norm(res.D - truth) / np.linalg.norm(truth)),
                         "rounds_time_s": res.info["rounds_time_s"]})
            bar.update(1)
    bar.close()
    return rows


NOISY_DATA = {
    # name -> generator(n, d, noise, seed); the same seed with noise = 0 is the noiseless twin
    "controlled κ=1e3": lambda n, d, noise, seed: controlled(n, d, 2, 1, kappa=1e3, noise=noise,
                                                            seed=seed),
    "gaussian": lambda n, d, noise, seed: distribution("gaussian", n, d, 2, 1, noise=noise,
                                                       seed=seed),
}


def _noise_rows(cfg, seed, noise, progress) -> List[Dict[str, Any]]:
    """One noisy problem per data set split into M shards; distributed vs centralized EAGLE vs
    the Nyström estimate, each also against the noiseless truth."""
    n, d = cfg["noise_n"], cfg["noise_d"]
    Ms = [m for m in cfg["noise_workers"] if 1 <= m <= d]
    rows: List[Dict[str, Any]] = []
    bar = _progress(len(NOISY_DATA) * (2 * len(Ms) + 1), "noisy gap", progress)
    for data, make in NOISY_DATA.items():
        noisy = make(n, d, noise, seed)
        truth = make(n, d, 0.0, seed).reference          # same draws, no noise: consistent, = D
        den_t = float(np.linalg.norm(truth))
        signal = float(np.sqrt(np.mean(make(n, d, 0.0, seed).A ** 2)))

        def row(M, alpha, method, norm, res=None, D=None):
            D = res.D if res is not None else D
            return {"data": data, "n": n, "d": d, "noise": noise, "rms_entry_of_A": signal,
                    "workers": M, "alpha": alpha, "method": method, "normalization": norm,
                    "status": res.status.value if res is not None else "",
                    "rounds": res.iterations if res is not None else "",
                    "gap_to_nystrom": noisy.error(D),
                    "error_vs_clean_truth": float(np.linalg.norm(D - truth) / den_t)}

        central = solve(noisy, "eagle", tol=1e-10, max_iter=cfg["noise_cap"])
        rows.append(row(1, math.nan, "centralized EAGLE", "—", central))
        rows.append(row(1, math.nan, "Nyström B A⁺ C (pinv)", "—", D=noisy.reference))
        bar.update(1)
        for M in Ms:
            shards = make_shards(d, M, "contiguous")
            alpha = diversity_index(noisy.A, shards)
            for norm in ("local", "global"):
                res = _distributed_solve(noisy, shards, "eagle", normalization=norm, tol=1e-10,
                                         max_iter=cfg["noise_cap"])
                rows.append(row(M, alpha, "distributed EAGLE", norm, res))
                bar.update(1)
            log.info("noisy gap (%s) M=%d: %.3g (local), %.3g (global)", data, M,
                     rows[-2]["gap_to_nystrom"], rows[-1]["gap_to_nystrom"])
    bar.close()
    return rows


def backends_sweep(out: Optional[str] = None, *, n_large: Optional[int] = None,
                   n_small: Optional[int] = None, workers: Optional[int] = None,
                   backends: Optional[Sequence[str]] = None, methods: Optional[Sequence[str]] = None,
                   rounds_large: Optional[int] = None, rounds_small: Optional[int] = None,
                   gd_rounds_large: Optional[int] = None, repeats: Optional[int] = None,
                   repeats_small: Optional[int] = None,
                   accel_n: Optional[int] = None, norm_n: Optional[int] = None,
                   noise_n: Optional[int] = None, noise_d: Optional[int] = None,
                   noise_workers: Optional[Sequence[int]] = None, noise: float = 0.01,
                   seed: int = 0, threads: Optional[int] = None, smoke: bool = False,
                   progress: bool = True) -> SweepResult:
    """Per-round wall-clock by backend, the accelerated variant, local vs global normalisation
    and the noisy-data gap (module docstring).

    Timing runs use ``controlled(n, M·n, 1, 1, κ = 1e3)`` split into ``n x n`` shards and run a
    fixed number of rounds (``rounds_large`` EAGLE / ``gd_rounds_large`` GD rounds at
    ``n_large``, ``rounds_small`` at ``n_small``; EAGLE stops earlier once D stops changing
    exactly, identically on every backend). ``smoke=True`` shrinks everything and uses only the
    in-process and torch backends.
    """
    if smoke and threads is None:
        threads = 1     # see rounds_sweep
    cfg = _resolve(smoke, BACKENDS_FULL, BACKENDS_SMOKE, dict(
        n_large=n_large, n_small=n_small, workers=workers, backends=backends, methods=methods,
        rounds_large=rounds_large, rounds_small=rounds_small, gd_rounds_large=gd_rounds_large,
        repeats=repeats, repeats_small=repeats_small, accel_n=accel_n, norm_n=norm_n,
        noise_n=noise_n, noise_d=noise_d,
        noise_workers=noise_workers))
    for k in ("n_large", "n_small", "workers", "rounds_large", "rounds_small", "gd_rounds_large",
              "repeats", "repeats_small", "accel_n", "norm_n", "noise_n", "noise_d"):
        _check_positive_int(k, cfg[k])
    unknown = [b for b in cfg["backends"] if b not in ("inprocess", "torch", "ray")]
    if unknown:
        raise ValueError(f"backends {unknown} are unknown; use inprocess, torch, ray")
    if "inprocess" not in cfg["backends"]:
        raise ValueError("backends must include 'inprocess' (it is the baseline of every ratio)")
    bad_m = [m for m in cfg["methods"] if m not in ("eagle", "gd")]
    if bad_m:
        raise ValueError(f"methods {bad_m}: use eagle, gd")
    if not (noise > 0):
        raise ValueError(f"noise={noise!r} must be > 0 (the noisy-gap experiment needs noise)")
    out = out or os.path.join(RESULTS_ROOT, "backends")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench backends", dict(
        out=out, n_large=cfg["n_large"], n_small=cfg["n_small"], workers=cfg["workers"],
        backends=list(cfg["backends"]), methods=list(cfg["methods"]),
        rounds_large=cfg["rounds_large"], rounds_small=cfg["rounds_small"],
        gd_rounds_large=cfg["gd_rounds_large"], repeats=cfg["repeats"],
        repeats_small=cfg["repeats_small"], accel_n=cfg["accel_n"],
        norm_n=cfg["norm_n"], noise_n=cfg["noise_n"], noise_d=cfg["noise_d"],
        noise_workers=list(cfg["noise_workers"]), noise=noise, seed=seed, threads=threads),
        ["smoke"] if smoke else [])
    t_start = time.perf_counter()
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("backends sweep: %s", command)
        timing, cold = _per_round_rows(cfg, seed, threads, progress)
        timing_summary = _per_round_summary(timing)
        accel = _accel_rows(cfg, seed, progress)
        norm = _norm_rows(cfg, seed, progress)
        gap = _noise_rows(cfg, seed, noise, progress)
        load_end = report.load_average()
    elapsed = time.perf_counter() - t_start
    headline = _backends_headline(timing_summary, accel, norm, gap, cfg)
    files = [report.write_csv(timing, os.path.join(out, "per_round.csv")),
             report.write_csv(timing_summary, os.path.join(out, "per_round_summary.csv")),
             report.write_csv(accel, os.path.join(out, "accelerate.csv")),
             report.write_csv(norm, os.path.join(out, "normalization.csv")),
             report.write_csv(gap, os.path.join(out, "noisy_gap.csv"))]
    files += _backends_plots(out, timing_summary, gap, cfg)
    files.append(_backends_markdown(out, command, machine, timing_summary, accel, norm, gap,
                                    headline, cold, cfg, noise, elapsed, load_start, load_end,
                                    threads, smoke, files))
    log.info("backends sweep written to %s (%.0f s)", out, elapsed)
    return SweepResult("backends", out, {"per_round": timing, "per_round_summary": timing_summary,
                                         "accelerate": accel, "normalization": norm,
                                         "noisy_gap": gap}, headline, files, command)


def _backends_headline(summary, accel, norm, gap, cfg) -> Dict[str, Any]:
    h: Dict[str, Any] = {}
    for s in summary:
        if not s["backend"].startswith("inprocess"):
            h[f"ratio_{s['backend']}_n{s['n']}_M{s['workers']}_{s['method']}"] = \
                s["ratio_vs_inprocess_best"]
    for m in cfg["methods"]:
        big = [s for s in summary if s["n"] == cfg["n_large"] and s["method"] == m
               and not s["backend"].startswith("inprocess")]
        if big:
            h[f"worst_ratio_at_n_large_{m}"] = max(s["ratio_vs_inprocess_best"] for s in big)
            h[f"target_le_1.5x_at_n_large_met_{m}"] = bool(h[f"worst_ratio_at_n_large_{m}"] <= 1.5)
    h["max_D_rel_diff_between_backends"] = max((s["D_rel_diff_vs_inprocess"] for s in summary),
                                               default=math.nan)
    for r in accel:
        if r["variant"] == "accelerated":
            h[f"accel_speedup_alpha{r['alpha_target']:g}"] = r["speedup_plain_over_accel"]
            h[f"accel_rounds_equal_alpha{r['alpha_target']:g}"] = r["rounds_equal"]
    for data in NOISY_DATA:
        dist = [r for r in gap if r["data"] == data and r["method"] == "distributed EAGLE"
                and r["normalization"] == "local"]
        if dist:
            h[f"noisy_gap_by_M_local ({data})"] = ", ".join(
                f"M={r['workers']}: {r['gap_to_nystrom']:.2e}" for r in dist)
    return h


def _backends_plots(out, summary, gap, cfg) -> List[str]:
    files = []
    panels = []
    configs = []
    for s in summary:
        if (s["n"], s["workers"], s["method"]) not in configs:
            configs.append((s["n"], s["workers"], s["method"]))
    palette = ["#7f7f7f", "#bcbd22", "#1f77b4", "#ff7f0e", "#9467bd"]
    backend_names = []
    for s in summary:
        if s["backend"] not in backend_names:
            backend_names.append(s["backend"])
    for n, M, m in configs:
        ss = [s for s in summary if (s["n"], s["workers"], s["method"]) == (n, M, m)]
        series = []
        labels = [b.replace(" (", "\n(") for b in backend_names]
        for i, b in enumerate(backend_names):
            s = next((t for t in ss if t["backend"] == b), None)
            if s is None:
                continue
            series.append(dict(x=[i], y=[s["per_round_ms"]], label=b, kind="bar", width=0.7,
                               color=palette[i % len(palette)]))
            labels[i] = (f"{b.replace(' (', chr(10) + '(')}\n{s['per_round_ms']:.3g} ms\n"
                         f"×{s['ratio_vs_inprocess_best']:.2f}")
        panels.append(dict(title=f"{m.upper()}, n = d_μ = {n}, M = {M} ({ss[0]['rounds']} rounds)",
                           xlabel="", ylabel="ms per round (round loop only)", series=series,
                           xticks=list(range(len(backend_names))),
                           xticklabels=labels))
    files.append(report.plot_panels(os.path.join(out, "per_round_time.png"), panels,
                                    ncols=min(3, len(panels)), panel_size=(4.6, 4.6),
                                    title="per-round wall-clock by backend (×: ratio to the faster "
                                          "in-process run); start-up excluded", legend="none"))
    panels = []
    for data in NOISY_DATA:
        g = [r for r in gap if r["data"] == data]
        dist = sorted({r["workers"] for r in g if r["method"] == "distributed EAGLE"})
        if not dist:
            continue
        series_gap, series_err = [], []
        for norm, col, mk in (("local", "#d62728", "o"), ("global", "#1f77b4", "s")):
            rs = [r for r in g if r["method"] == "distributed EAGLE" and r["normalization"] == norm]
            series_gap.append(dict(x=[r["workers"] for r in rs],
                                   y=[max(r["gap_to_nystrom"], _ERR_FLOOR) for r in rs],
                                   label=f"distributed EAGLE ({norm})", color=col, marker=mk))
            series_err.append(dict(x=[r["workers"] for r in rs],
                                   y=[r["error_vs_clean_truth"] for r in rs],
                                   label=f"distributed EAGLE ({norm})", color=col, marker=mk))
        c = next(r for r in g if r["method"] == "centralized EAGLE")
        ny = next(r for r in g if r["method"].startswith("Nyström"))
        series_gap.append(dict(x=dist, y=[max(c["gap_to_nystrom"], _ERR_FLOOR)] * len(dist),
                               label=f"centralized EAGLE ({c['gap_to_nystrom']:.1e})",
                               color="black", linestyle="--"))
        series_err.append(dict(x=dist, y=[c["error_vs_clean_truth"]] * len(dist),
                               label="centralized EAGLE", color="black", linestyle="--"))
        series_err.append(dict(x=dist, y=[ny["error_vs_clean_truth"]] * len(dist),
                               label="Nyström B A⁺ C (pinv) = centralized EAGLE",
                               color="#7f7f7f", linestyle=":", linewidth=3.0))
        n, d = g[0]["n"], g[0]["d"]
        panels += [dict(title=f"{data}, σ = {g[0]['noise']:g}: gap to Nyström (n = {n}, d = {d})",
                        xlabel="workers M (d/M columns each)", ylabel="‖D − B A⁺ C‖ / ‖B A⁺ C‖",
                        logy=True, series=series_gap, xticks=dist),
                   dict(title=f"{data}: error against the noiseless truth", xlabel="workers M",
                        ylabel="‖D − D_clean‖ / ‖D_clean‖", series=series_err, xticks=dist)]
    if panels:
        files.append(report.plot_panels(os.path.join(out, "noisy_gap.png"), panels, ncols=2,
                                        panel_size=(5.8, 4.2), legend="axes"))
    return files


def _backends_markdown(out, command, machine, summary, accel, norm, gap, h, cold, cfg, noise,
                       elapsed, load_start, load_end, threads, smoke, files) -> str:
    head = ["| target / question | measured | verdict |", "|---|---|---|"]
    for m in cfg["methods"]:
        if f"worst_ratio_at_n_large_{m}" not in h:
            continue
        big = [s for s in summary if s["n"] == cfg["n_large"] and s["method"] == m
               and not s["backend"].startswith("inprocess")]
        detail = ", ".join(f"{s['backend']} ×{s['ratio_vs_inprocess_best']:.2f} "
                           f"({s['per_round_ms']:.3g} vs {s['inprocess_best_ms']:.3g} ms)"
                           for s in big)
        head.append(f"| {m.upper()}: per-round time ≤ 1.5× in-process at n = {cfg['n_large']}, "
                    f"M = {cfg['workers']} | {detail} | "
                    f"{_yes(h[f'target_le_1.5x_at_n_large_met_{m}'])} |")
    small = [s for s in summary if s["n"] == cfg["n_small"] and not s["backend"].startswith("inprocess")]
    if small:
        head.append(f"| latency-bound n = {cfg['n_small']} (no target) | " + ", ".join(
            f"{s['backend']} {s['method']} M={s['workers']}: {s['per_round_ms']:.3g} ms "
            f"(×{s['ratio_vs_inprocess_best']:.3g})" for s in small) + " | — |")
    head.append(f"| same iterates on every backend | max ‖D − D_inprocess‖/‖D‖ = "
                f"{report.fmt(h['max_D_rel_diff_between_backends'])} | — |")
    for r in accel:
        if r["variant"] == "accelerated":
            head.append(f"| accelerated variant, α = {r['alpha_target']:g}: wall-clock gain, rounds "
                        f"equal? | ×{r['speedup_plain_over_accel']:.2f}; rounds equal: "
                        f"{'yes' if r['rounds_equal'] else 'no'} | — |")
    t_cols = ["n", "workers", "method", "backend", "runs", "rounds", "per_round_ms", "per_round_ms_min",
              "per_round_ms_max", "ratio_vs_inprocess_best", "startup_s",
              "bytes_per_worker_per_round", "D_rel_diff_vs_inprocess"]
    sections = {
        "Headline": "\n".join(head),
        "Accelerated variant (in-process)": report.markdown_table(accel, [
            "alpha", "n", "workers", "variant", "status", "rounds", "final_error", "rounds_time_s",
            "ab_frozen_at", "speedup_plain_over_accel", "rounds_equal"]),
        "Local vs global normalisation (shard norms 1 … 0.1)": report.markdown_table(norm, [
            "data", "normalization", "n", "workers", "status", "rounds", "error_vs_nystrom",
            "error_vs_clean_truth", "nystrom_error_vs_clean_truth"]),
        f"Noisy data (σ = {noise:g}): gap to the Nyström estimate": report.markdown_table(gap, [
            "data", "rms_entry_of_A", "workers", "alpha", "method", "normalization", "status",
            "rounds", "gap_to_nystrom", "error_vs_clean_truth"]),
    }
    notes = [
        f"Timing problems: `controlled(n, M·n, n'=1, d'=1, κ=1e3)` split into M = {cfg['workers']} "
        f"contiguous n x n shards; a fixed number of rounds (EAGLE {cfg['rounds_large']}, GD "
        f"{cfg['gd_rounds_large']} at n = {cfg['n_large']}; {cfg['rounds_small']} at n = "
        f"{cfg['n_small']}; EAGLE at small n stops earlier, identically on every backend, once D "
        f"stops changing). Repeats: {cfg['repeats']} at n = {cfg['n_large']}, "
        f"{cfg['repeats_small']} at n = {cfg['n_small']}; the table shows the median (min, max "
        "beside it).",
        "Per-round time = `info['rounds_time_s'] / rounds` (the round loop on rank 0: local "
        "update + all-reduce + stopping checks). Start-up = `time_s − rounds_time_s`: spawning "
        "processes / creating actors, shipping the shards, forming the gloo process group and the "
        "one-off normalisation.",
        "The in-process backend runs the M workers one after another in one process; torch and "
        f"Ray run M processes with 1 torch thread each on {os.cpu_count()} cores, so at large n "
        "they overlap compute across cores, and at small n they pay gloo's TCP round-trip. The "
        "in-process baseline is the faster of its 1-thread and default-thread runs.",
        "Accelerated variant: A^μ, B^μ are frozen (no more GEMMs) once ‖A_new − A‖²/‖A‖² < 1e-10 "
        "on that worker; rounds then cost two mat-vecs. 'plain' is EAGLE as shipped, which also "
        f"freezes A^μ, B^μ, but only after {lift_cap(torch.float64)} "
        "rounds (the numerical-rank guard `kernels.lift_cap`), so the gain is bounded for long "
        "runs. Problems: alpha_problem(n, n, M, α, κ_max = 1e3), target 1e-8.",
        "Normalisation: 'local' scales each shard to ‖A^μ‖₂ = 1 (the paper's ρ_μ); 'global' "
        "divides every shard by the largest ‖A^μ‖₂ (one scalar all-reduce at start-up). On "
        "consistent data both converge to D̂ exactly; on noisy data neither is exact (see the "
        "gap table).",
        f"Noisy gap: two data sets, each with its noiseless twin (same seed): "
        f"`controlled(n, d, n'=2, d'=1, κ=1e3, noise={noise:g})` (entries of A ~0.007 rms, so the "
        "noise swamps A's small singular directions) and `distribution('gaussian', n, d, 2, 1, "
        f"noise={noise:g})` (entries ~1 rms: signal-to-noise ~100). Each matrix is split into M "
        "contiguous shards of d/M columns. "
        "Distributed and centralized EAGLE stop on the relative D-step 1e-10. `gap_to_nystrom` "
        "is the solver's error metric against B A⁺ C of the noisy data; `error_vs_clean_truth` "
        "compares with the noiseless W A Z.",
    ]
    if cold:
        notes.append("Cold start, not in any per-round number: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in cold.items()))
    notes.append(f"Wall time of the whole sweep: {elapsed:.0f} s.")
    notes += report.load_notes(load_start, load_end)
    if smoke:
        notes.insert(0, "SMOKE RUN: tiny sizes, numbers are not meaningful.")
    return report.write_markdown(os.path.join(out, "summary.md"),
                                 "Distributed backends: per-round time, accelerated variant, "
                                 "normalisation, noisy gap", command,
                                 report.markdown_table(summary, t_cols), notes, machine=machine,
                                 sections=sections, files=files)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _common_args(p, sweep: str) -> None:
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, sweep),
                   help=f"output directory (default {os.path.join(RESULTS_ROOT, sweep)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the driver (default: torch's; 1 is faster on a busy "
                        "machine)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a seconds-long check")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_rounds(args) -> int:
    return _print_headline(rounds_sweep(
        args.out, workers=args.workers, n=args.n, alphas=args.alphas,
        alpha_workers=args.alpha_workers, alpha_n=args.alpha_n, kappa_max=args.kappa_max,
        target=args.target, eagle_cap=args.eagle_cap, accel_cap=args.accel_cap,
        gd_cap=args.gd_cap, cg_cap=args.cg_cap, seed=args.seed, threads=args.threads,
        smoke=args.smoke,
        progress=not args.no_progress))


def _cmd_backends(args) -> int:
    return _print_headline(backends_sweep(
        args.out, n_large=args.n_large, n_small=args.n_small, workers=args.workers,
        backends=args.backends, methods=args.methods, rounds_large=args.rounds_large,
        rounds_small=args.rounds_small, gd_rounds_large=args.gd_rounds_large,
        repeats=args.repeats, repeats_small=args.repeats_small, accel_n=args.accel_n,
        norm_n=args.norm_n, noise_n=args.noise_n,
        noise_d=args.noise_d, noise_workers=args.noise_workers, noise=args.noise,
        seed=args.seed, threads=args.threads, smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``rounds`` and ``backends`` under ``eagle-dist bench``."""
    f = ROUNDS_FULL
    p = bsub.add_parser("rounds", help="M-sweep and α-sweep: rounds to 1e-8, EAGLE vs distributed GD",
                        description=rounds_sweep.__doc__.split("\n")[0])
    _common_args(p, "rounds")
    p.add_argument("--workers", type=_ints, default=None, help="M-sweep worker counts (default 1,3,5,8)")
    p.add_argument("--n", type=int, default=None, help=f"M-sweep n = d_μ (default {f['n']})")
    p.add_argument("--alphas", type=_floats, default=None, help="α-sweep (default 1,0.6,0.35,0.01)")
    p.add_argument("--alpha-workers", type=int, default=None, help="α-sweep M (default 3)")
    p.add_argument("--alpha-n", type=int, default=None, help=f"α-sweep n = d_μ (default {f['alpha_n']})")
    p.add_argument("--kappa-max", type=float, default=1e3, help="κ(A^μ) (default 1e3)")
    p.add_argument("--target", type=float, default=1e-8, help="relative error to reach")
    p.add_argument("--eagle-cap", type=int, default=None, help=f"EAGLE rounds cap (default {f['eagle_cap']})")
    p.add_argument("--accel-cap", type=int, default=None,
                   help=f"accelerated EAGLE cap (default {f['accel_cap']})")
    p.add_argument("--gd-cap", type=int, default=None, help=f"GD rounds cap (default {f['gd_cap']}; "
                   "beyond it GD's rounds are predicted, labelled)")
    p.add_argument("--cg-cap", type=int, default=None,
                   help=f"distributed CG rounds cap (default {f['cg_cap']})")
    p.set_defaults(fn=_cmd_rounds)

    f = BACKENDS_FULL
    p = bsub.add_parser("backends", help="per-round time by backend, accelerated variant, "
                                         "normalisation, noisy gap",
                        description=backends_sweep.__doc__.split("\n")[0])
    _common_args(p, "backends")
    p.add_argument("--n-large", type=int, default=None, help=f"compute-bound n = d_μ (default {f['n_large']})")
    p.add_argument("--n-small", type=int, default=None, help=f"latency-bound n = d_μ (default {f['n_small']})")
    p.add_argument("--workers", type=int, default=None, help=f"M for the timing runs (default {f['workers']})")
    p.add_argument("--backends", type=_strs, default=None,
                   help="subset of inprocess,torch,ray (default all; smoke: inprocess,torch)")
    p.add_argument("--methods", type=_strs, default=None, help="eagle,gd (default both)")
    p.add_argument("--rounds-large", type=int, default=None,
                   help=f"EAGLE rounds at n-large (default {f['rounds_large']})")
    p.add_argument("--gd-rounds-large", type=int, default=None,
                   help=f"GD rounds at n-large (default {f['gd_rounds_large']})")
    p.add_argument("--rounds-small", type=int, default=None,
                   help=f"rounds at n-small (default {f['rounds_small']})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timing repetitions at n-large (default {f['repeats']})")
    p.add_argument("--repeats-small", type=int, default=None,
                   help=f"timing repetitions at n-small (default {f['repeats_small']})")
    p.add_argument("--accel-n", type=int, default=None,
                   help=f"n of the accelerated-variant problems (default {f['accel_n']})")
    p.add_argument("--norm-n", type=int, default=None,
                   help=f"n of the normalisation problems (default {f['norm_n']})")
    p.add_argument("--noise-n", type=int, default=None, help=f"noisy-gap n (default {f['noise_n']})")
    p.add_argument("--noise-d", type=int, default=None, help=f"noisy-gap d (default {f['noise_d']})")
    p.add_argument("--noise-workers", type=_ints, default=None, help="noisy-gap M values (default 1,2,4,8)")
    p.add_argument("--noise", type=float, default=0.01, help="noise σ on every block (default 0.01)")
    p.set_defaults(fn=_cmd_backends)
