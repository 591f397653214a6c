"""Helpers of the paper-figure sweeps (``rankdef``, ``large``, ``distributions``, ``noisy``):
scoring against a known truth, one centralized method comparison per problem, and the plots and
tables they share. Timing follows :func:`eagle_dist.bench.common.run_to_target`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..problem import Problem
from . import report
from .common import ERR_FLOOR, curve_from_history, run_to_target, walltime_solve

TARGETED = ("eagle", "cg", "gd")        # stop on the true error: iterations to target
KRYLOV = ("lsmr", "lsqr")               # SciPy's own stopping rule, one solve
DIRECT = ("lstsq", "lstsq-gelsd", "lstsq-gelsy", "pinv")
CENTRALIZED = TARGETED + KRYLOV + DIRECT


@dataclass(frozen=True, eq=False)
class TruthProblem(Problem):
    """A :class:`~eagle_dist.problem.Problem` scored against a given ``truth`` instead of the
    float64 ``B pinv(A) C``: the noiseless hidden block of a noisy problem (Fig. 21), or the
    generated ``D`` of consistent data whose ``pinv`` reference is unreliable (numpy's default
    cut-off 1e-15·σ_max keeps rounding-level singular values of exactly rank-deficient,
    block-constant A; seen: 3 % error on the paper's ``clustered`` data). The solvers see the same
    A, B, C; only their reported errors change."""

    truth: Optional[np.ndarray] = None

    @functools.cached_property
    def reference(self) -> np.ndarray:          # noqa: D401 - overrides Problem.reference
        if self.truth is None:
            raise ValueError("TruthProblem needs truth= (the block to score against)")
        return np.asarray(self.truth, dtype=np.float64)


def against_truth(problem: Problem, truth: np.ndarray, name: Optional[str] = None) -> TruthProblem:
    """``problem`` with its errors measured against ``truth`` (shape ``(n', d')``)."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != (problem.n_query, problem.d_query):
        raise ValueError(f"truth has shape {truth.shape}; expected (n', d') = "
                         f"{(problem.n_query, problem.d_query)}")
    return TruthProblem(A=problem.A, B=problem.B, C=problem.C, D_true=problem.D_true,
                        name=name or problem.name, meta=dict(problem.meta), truth=truth)


def compare_methods(prob: Problem, methods: Sequence[str], *, target: float, caps: Dict[str, int],
                    krylov_tol: float, dtype: str, device: str, seed: int,
                    curves: bool) -> Tuple[List[Dict[str, Any]], Dict[str, Tuple]]:
    """One row per method: iterations and wall time to relative error ``target`` (``eagle``,
    ``cg``, ``gd``: monitored run, then an unmonitored timed re-run, capped at ``caps[m]``),
    SciPy's own rule for ``lsmr``/``lsqr`` (``atol = btol = krylov_tol``, capped at
    ``caps['krylov']``), one solve for the direct methods. ``reached`` says whether the final
    error is ``≤ target``. Curves ``(iterations, errors, times)`` when ``curves``."""
    rows: List[Dict[str, Any]] = []
    out_curves: Dict[str, Tuple] = {}
    common = dict(dtype=dtype, device=device, seed=seed)
    for m in methods:
        if m in TARGETED:
            r = run_to_target(prob, m, target, caps[m], **common)
            hist = r.pop("_history")
            r.pop("monitored_time_s")
            row = dict(method=m, kind="iterative", cap=caps[m], **r)
            if curves:
                out_curves[m] = curve_from_history(hist)
        elif m in KRYLOV:
            res, wall = walltime_solve(prob, m, tol=krylov_tol, max_iter=caps["krylov"],
                                       record_error=True, **common)
            row = dict(method=m, kind="krylov", cap=caps["krylov"], status=res.status.value,
                       reached=bool(res.error <= target), iterations=res.iterations, time_s=wall,
                       solver_time_s=res.time_s,
                       time_per_iter_ms=1e3 * res.time_s / max(res.iterations, 1),
                       final_error=res.error)
            if curves:
                out_curves[m] = (np.array([res.iterations], float), np.array([res.error]),
                                 np.array([wall]))
        elif m in DIRECT:
            res, wall = walltime_solve(prob, m, record_error=True, **common)
            row = dict(method=m, kind="direct", cap=1, status=res.status.value,
                       reached=bool(res.error <= target), iterations=res.iterations, time_s=wall,
                       solver_time_s=res.time_s, time_per_iter_ms=float("nan"),
                       final_error=res.error)
            if curves:
                out_curves[m] = (np.array([np.nan]), np.array([res.error]), np.array([wall]))
        else:
            raise ValueError(f"method {m!r} is not a centralized method; choose from {CENTRALIZED}")
        rows.append(row)
    return rows, out_curves


def check_methods(methods: Sequence[str]) -> List[str]:
    methods = list(methods)
    unknown = [m for m in methods if m not in CENTRALIZED]
    if unknown or not methods:
        raise ValueError(f"methods={methods!r}: choose one or more of {CENTRALIZED}")
    return methods


def error_panels(curves: Dict[Tuple, Tuple], keys: Sequence[Any], methods: Sequence[str],
                 title_of, target: float, xkey: str = "iteration") -> List[Dict[str, Any]]:
    """One panel per key: relative error vs iteration (or wall-clock) of every method's run 0."""
    panels = []
    for key in keys:
        series = []
        for m in methods:
            if (key, m) not in curves:
                continue
            it, err, tm = curves[(key, m)]
            err = np.maximum(np.asarray(err, float), ERR_FLOOR)
            if xkey == "iteration":
                if m in DIRECT:
                    continue
                series.append(dict(x=it, y=err, label=m, markersize=4,
                                   marker="o" if m in KRYLOV else None,
                                   linestyle="none" if m in KRYLOV else "-"))
            else:
                series.append(dict(x=tm, y=err, label=m, markersize=5,
                                   marker="s" if m in DIRECT else "o" if m in KRYLOV else None,
                                   linestyle="none" if m not in TARGETED else "-"))
        panels.append(dict(title=title_of(key), logx=True, logy=True, series=series,
                           xlabel="iteration" if xkey == "iteration" else "time [s]",
                           ylabel="relative error", hlines=[(target, f"target {target:g}")]))
    return panels


def ratio_cell(summary_by: Dict[Tuple, Dict[str, Any]], key: Any, num: str, den: str) -> str:
    """``num / den`` mean iterations at ``key`` as ``"≥ 123×"`` when ``num`` did not reach."""
    a, b = summary_by.get((key, num)), summary_by.get((key, den))
    if not a or not b or not b["iterations_mean"]:
        return "—"
    lb = "≥ " if a["reached"] < a["runs"] else ""
    return f"{lb}{a['iterations_mean'] / b['iterations_mean']:.0f}×"


def reach_iterations_cell(s: Optional[Dict[str, Any]]) -> str:
    """Mean iterations when every run reached the target; ``"≥ mean (k/n)"`` when only some did
    (the capped runs' counts are lower bounds, so the mean is one too); ``"> cap (0/n)"`` when
    none did."""
    if not s:
        return "—"
    if s["reached"] == 0:
        return f"> {report.fmt(s['iterations_max'])} (0/{s['runs']})"
    txt = report.fmt(s["iterations_mean"])
    return txt if s["reached"] == s["runs"] else f"≥ {txt} ({s['reached']}/{s['runs']})"


def median_of(rows: Sequence[Dict[str, Any]], key: str) -> float:
    return report.stats(r[key] for r in rows)["median"]
