"""``method="auto"``: the fastest method that can certify the request, by measured cost.

Three candidates, each with its own certificate: ``lstsq`` (LAPACK; on a linear system ``C = I``
the QR driver certified by the request's own test on the true residual, falling back to the SVD
driver and its forward-error bound κ·u ≤ √u when that fails; otherwise the SVD driver), ``eagle`` (on a linear system the fast path, LSQR's tests on the true residual;
otherwise the C/D iteration's certified step rule) and ``lsmr`` (SciPy's, on a CSR copy of sparse
A; LSQR's tests on the true residual).

The cost model (:class:`CostModel`) is calibrated once per machine, device, dtype and thread
count — about two seconds of small solves — and kept as JSON in the cache folder
(``$EAGLE_DIST_CACHE`` or ``~/.cache/eagle_dist``), unless the machine was busy while it was
measured (then it serves the process only). ``cost_model(..., recalibrate=True)`` measures
again; deleting the file has the same effect. Its predictions:

* direct: ``t0 + c · (d·n·min(n, d) + n'·n·d)`` (one orthogonal factorisation of the d x n
  matrix ``Aᵀ`` and the right-hand sides);
* EAGLE: ``t0 + c · I · n·d·min(n, d)`` with ``I`` the iteration count of the WORST conditioning
  the method resolves (κ = 1/rcond: the fast path's quintic schedule from ``rcond`` plus two
  refinements, or the C/D iteration's lift point plus its finish) — the count grows like
  log κ, so the bound is at most ~2x the count on a well-conditioned matrix;
* LSMR: a set-up ``t0 + c · n·d`` (the CSR copy of the dense A and the final check), then
  ``n' · (a + b · (nnz + n + d))`` per iteration — but Krylov counts grow with κ and
  with the spread of the spectrum, which nothing cheap predicts (measured on the shipped
  matrices: 31 to 7,755 iterations).

So LSMR is not predicted but *raced*: it runs with an iteration cap worth half the predicted time
of the best certified alternative; if it certifies within the cap, its answer is returned,
otherwise that alternative runs. The worst case is therefore 1.5x the alternative's time (plus
the model's error), the best case Krylov's speed on easy data. ``result.info["auto"]`` records
the predictions, the cap, what ran and what each took, so a user can check the choice; the
result's ``method`` reads ``auto/<the method that answered>``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from ..control import identity_c, machine_is_busy, resolve_device, resolve_dtype
from ..options import AUTO_CANDIDATES, SolveOptions
from ..result import SolveResult, Status

log = logging.getLogger("eagle_dist")

#: what auto chooses among (the names solve() accepts)
CANDIDATES = AUTO_CANDIDATES
#: LSMR may spend this fraction of the best alternative's predicted time before giving up
RACE_FRACTION = 0.5
#: fewer iterations than this are not worth starting LSMR for (measured on the shipped matrices:
#: loose tolerances took 3-31 iterations, tight ones hundreds or more)
MIN_KRYLOV_ITERS = 10
#: bump when the calibration or the model changes: old cache files are then recalibrated
MODEL_VERSION = 3
#: the direct drivers are also timed at this size: per unit of work, LAPACK at 1000 x 1000 is
#: 1.5-2x cheaper than at 400 x 600 (blocking), and a line through the two small sizes predicted
#: the QR driver at 2x its time on dwt_1007 — which doubled the LSMR race's budget
DIRECT_LARGE = (800, 1000)


def cache_folder() -> Path:
    """``$EAGLE_DIST_CACHE`` or ``$XDG_CACHE_HOME/eagle_dist`` (``~/.cache/eagle_dist``)."""
    env = os.environ.get("EAGLE_DIST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eagle_dist"


@dataclasses.dataclass
class CostModel:
    """Seconds as ``t0 + c · work`` per method (see the module docstring for ``work``)."""

    key: Dict[str, object]
    direct: tuple          # (t0, c[, w_knee, c_large]) of LAPACK's SVD driver (gelsd):
                           # t0 + c·w up to w_knee, then slope c_large (see _piecewise)
    eagle: tuple           # (t0, c) per iteration-work
    lsmr: tuple            # (t0, c) of the set-up over n·d, then (a, b) of one iteration of
                           # one right-hand side over nnz + n + d
    calibrated_s: float = 0.0
    direct_qr: tuple = (0.0, 0.0)    # the same for LAPACK's QR driver (gelsy)
    # ---------------------------------------------------------------------------------------
    @staticmethod
    def work_direct(n: int, d: int, nq: int) -> float:
        return float(d) * n * min(n, d) + float(nq) * n * d

    @staticmethod
    def work_eagle_iteration(n: int, d: int) -> float:
        return float(n) * d * min(n, d)

    @staticmethod
    def work_lsmr_iteration(n: int, d: int, nnz: int) -> float:
        return float(nnz + n + d)

    def predict_direct(self, n, d, nq, qr: bool = False) -> float:
        return _piecewise(self.direct_qr if qr else self.direct, self.work_direct(n, d, nq))

    def predict_eagle(self, n, d, iterations) -> float:
        return self.eagle[0] + self.eagle[1] * iterations * self.work_eagle_iteration(n, d)

    def lsmr_setup_s(self, n, d) -> float:
        return self.lsmr[0] + self.lsmr[1] * float(n) * d

    def lsmr_iteration_s(self, n, d, nq, nnz) -> float:
        return nq * (self.lsmr[2] + self.lsmr[3] * self.work_lsmr_iteration(n, d, nnz))

    def to_json(self) -> dict:
        return {"version": MODEL_VERSION, "key": self.key, "direct": list(self.direct),
                "direct_qr": list(self.direct_qr), "eagle": list(self.eagle),
                "lsmr": list(self.lsmr), "calibrated_s": self.calibrated_s}


def _key(device: torch.device, dtype: torch.dtype, threads: int) -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    if device.type == "cuda":
        cpu = torch.cuda.get_device_name(device)
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "device": device.type,
            "dtype": str(dtype).replace("torch.", ""), "threads": int(threads),
            "torch": torch.__version__}


def _path(key: Dict[str, object]) -> Path:
    return _path_of(str(cache_folder()), json.dumps(key, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _path_of(folder: str, key_json: str) -> Path:
    # memoised: the hash and the Path objects were ~1 ms of every auto call
    return Path(folder) / f"cost_model-{hashlib.sha256(key_json.encode()).hexdigest()[:16]}.json"


def _piecewise(params: tuple, w: float) -> float:
    """``t0 + c·w``; with ``(t0, c, w_knee, c_large)``, slope ``c_large`` past ``w_knee``."""
    t0, c = params[0], params[1]
    if len(params) >= 4 and w > params[2]:
        return t0 + c * params[2] + params[3] * (w - params[2])
    return t0 + c * w


def _fit3(points) -> tuple:
    """:func:`_fit` through the two smaller (w, t) points, and past the middle one the slope to
    the largest (kept only when positive)."""
    pts = sorted(points)
    t0, c = _fit(pts[:2])
    (w2, _), (w3, t3) = pts[1], pts[2]
    pred2 = t0 + c * w2
    if w3 > 1.2 * w2 and t3 > pred2:
        return (t0, c, w2, (t3 - pred2) / (w3 - w2))
    return (t0, c)


def _fit(points) -> tuple:
    """``(t0, c)`` of ``t = t0 + c · w`` through two (w, t) points, with ``t0 ≥ 0`` and ``c > 0``
    (no growth between the points: a fixed cost ``max t``; a negative intercept: ``c = t/w`` of
    the larger point, all cost proportional to the work)."""
    (w1, t1), (w2, t2) = sorted(points)
    if not (w2 > 1.2 * w1 and t2 > t1):
        return (max(t1, t2, 1e-9), 0.0)              # no visible growth: a fixed cost
    c = (t2 - t1) / (w2 - w1)
    t0 = t1 - c * w1
    return (t0, c) if t0 >= 0.0 else (0.0, t2 / w2)


def calibrate(device: torch.device, dtype: torch.dtype, threads: int) -> CostModel:
    """Time each candidate on two small problems of this machine, and the direct drivers also at
    :data:`DIRECT_LARGE` (about three seconds in all on a 2-core CPU)."""
    from ..problem import Problem
    from . import METHODS
    t_start = time.perf_counter()
    rng = np.random.default_rng(12345)
    np_dt = np.float32 if dtype == torch.float32 else np.float64
    dt_name = str(dtype).replace("torch.", "")

    def timed(problem, method, repeats=3, **kw):
        opts = SolveOptions(device=str(device), dtype=dt_name, **kw).validate(method)
        best, res = math.inf, None
        for _ in range(repeats):
            t = time.perf_counter()
            res = METHODS[method](problem, opts)
            best = min(best, time.perf_counter() - t)
        return best, res

    direct, direct_qr, eagle = [], [], []
    for n, d in ((60, 90), (400, 600)):
        A = rng.standard_normal((n, d)).astype(np_dt)
        B = (rng.standard_normal((4, n)) @ A).astype(np_dt)
        p = Problem.from_arrays(A, B, np.eye(n, dtype=np_dt))
        t, _ = timed(p, "lstsq")
        direct.append((CostModel.work_direct(n, d, 4), t))
        t, _ = timed(p, "lstsq-gelsy")
        direct_qr.append((CostModel.work_direct(n, d, 4), t))
        t, r = timed(p, "eagle")
        eagle.append((r.iterations * CostModel.work_eagle_iteration(n, d), t))
    n, d = DIRECT_LARGE                     # the direct drivers only (EAGLE would cost seconds)
    A = rng.standard_normal((n, d)).astype(np_dt)
    p = Problem.from_arrays(A, (rng.standard_normal((4, n)) @ A).astype(np_dt),
                            np.eye(n, dtype=np_dt))
    for name, points in (("lstsq", direct), ("lstsq-gelsy", direct_qr)):
        t, _ = timed(p, name, repeats=2)
        points.append((CostModel.work_direct(n, d, 4), t))
    setup, per_it = [], []
    for n, d, dens in ((600, 900, 1.0), (1500, 2200, 0.004)):
        # an ill-conditioned, inconsistent system, so that LSMR runs every capped iteration
        # (a well-conditioned one meets SciPy's machine-precision tests after ~40)
        A = rng.standard_normal((n, d)) * (rng.random((n, d)) < dens) * 1e-3
        A[np.arange(n), np.arange(n)] += np.geomspace(1.0, 1e-7, n)
        A = A.astype(np_dt)
        p = Problem.from_arrays(A, rng.standard_normal((2, d)).astype(np_dt),
                                np.eye(n, dtype=np_dt))
        # the difference of two iteration caps is the iterations' cost, the rest is the call's
        # set-up (a CSR copy of the dense A, the final check)
        t_short, r_short = timed(p, "lsmr", max_iter=2, tol=1e-300)
        t_long, r_long = timed(p, "lsmr", max_iter=122, tol=1e-300)
        its = max(r_long.iterations - r_short.iterations, 1)
        it_s = max(t_long - t_short, 1e-9) / (its * 2)
        nnz = int(np.count_nonzero(A))
        per_it.append((CostModel.work_lsmr_iteration(n, d, nnz), it_s))
        setup.append((float(n) * d, max(t_short - r_short.iterations * 2 * it_s, 0.0)))
    model = CostModel(_key(device, dtype, threads), _fit3(direct), _fit(eagle),
                      _fit(setup) + _fit(per_it), calibrated_s=time.perf_counter() - t_start,
                      direct_qr=_fit3(direct_qr))
    return model


#: models already read or measured by this process (cache file path -> model)
_LOADED: Dict[str, CostModel] = {}


def cost_model(device: torch.device, dtype: torch.dtype, threads: int, *,
               recalibrate: bool = False) -> CostModel:
    """The calibrated model for this machine and setting: from the cache folder, else measured
    now and written there (an unwritable cache folder only costs a recalibration next time)."""
    key = _key(device, dtype, threads)
    path = _path(key)
    if not recalibrate and str(path) in _LOADED:
        return _LOADED[str(path)]
    if not recalibrate and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("version") == MODEL_VERSION and data.get("key") == key:
                model = CostModel(key, tuple(data["direct"]), tuple(data["eagle"]),
                                  tuple(data["lsmr"]), float(data.get("calibrated_s", 0.0)),
                                  tuple(data["direct_qr"]))
                _LOADED[str(path)] = model
                return model
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("auto: ignoring an unreadable cost model at %s (recalibrating)", path)
    log.info("auto: calibrating the cost model for %s (once; cached in %s)",
             ", ".join(f"{k}={key[k]}" for k in ("device", "dtype", "threads")), path.parent)
    model = calibrate(device, dtype, threads)
    _LOADED[str(path)] = model
    if machine_is_busy():
        # measured: a calibration beside other work (load 5 on 2 cores) put LSMR's per-iteration
        # cost 5x too high, and every later choice inherited it; such a model serves this
        # process only, and the next process on a quieter machine measures again
        log.warning("auto: the machine is busy (load average ≥ cores − 0.5); the cost model "
                    "measured now is used by this process but not cached")
        return model
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(model.to_json(), indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("auto: could not write the cost model to %s (%s); it will be measured "
                    "again next time", path, exc)
    return model


def eagle_iterations_bound(problem, opts: SolveOptions, dtype: torch.dtype) -> int:
    """EAGLE's iteration count at the worst conditioning it resolves (κ = 1/rcond)."""
    from ..kernels import default_rcond, lift_point
    from .factor import LIFT_DELTA, MAX_REFINE, _schedule, fast_path_applies
    if fast_path_applies(problem, opts, sketch_size=None, eta=None, gamma=1.0, norm="auto",
                         accelerate=False, method_name="eagle"):
        return len(_schedule(default_rcond(torch.float64), 1.0, LIFT_DELTA)) + min(2, MAX_REFINE)
    return lift_point(dtype) + 8


def predict(problem, opts: SolveOptions, model: CostModel, dtype: torch.dtype,
            linear: bool) -> Dict[str, float]:
    """Predicted seconds of the direct and EAGLE candidates, and LSMR's seconds per iteration
    (``linear``: C = I, where the direct candidate is the QR driver)."""
    n, d, nq = problem.n, problem.d, problem.n_query
    nnz = int(np.count_nonzero(problem.A))
    return {"lstsq": model.predict_direct(n, d, nq, qr=linear),
            "eagle": model.predict_eagle(n, d, eagle_iterations_bound(problem, opts, dtype)),
            "lsmr_per_iteration": model.lsmr_iteration_s(n, d, nq, nnz),
            "lsmr_setup": model.lsmr_setup_s(n, d), "density": nnz / max(problem.A.size, 1)}


def auto(problem, opts: SolveOptions) -> SolveResult:
    """Solve with the method the cost model picks (module docstring); ``info["auto"]`` says why."""
    from . import METHODS
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    model = cost_model(device, dtype, threads)
    linear = identity_c(problem)
    pred = predict(problem, opts, model, dtype, linear)
    best = min(("lstsq", "eagle"), key=lambda m: pred[m])
    budget = RACE_FRACTION * pred[best]
    cap = int((budget - pred["lsmr_setup"]) / max(pred["lsmr_per_iteration"], 1e-30))
    cap = min(cap, opts.max_iter)
    decision = {"predicted_s": {m: pred[m] for m in ("lstsq", "eagle")},
                "lsmr_predicted_s_per_iteration": pred["lsmr_per_iteration"],
                "density": pred["density"], "best_alternative": best,
                "lsmr_iteration_cap": cap, "ran": [], "cost_model": str(_path(model.key))}
    # LSMR cannot stop on target_error (SciPy's tests are residuals)
    race = cap >= MIN_KRYLOV_ITERS and opts.target_error is None
    if race:
        t = time.perf_counter()
        res = METHODS["lsmr"](problem, dataclasses.replace(opts, max_iter=cap))
        decision["ran"].append({"method": "lsmr", "status": res.status.value,
                                "iterations": res.iterations, "s": time.perf_counter() - t})
        if res.converged:
            return _finish(res, decision, t_start)
    if best == "lstsq" and linear:
        # a linear system: LAPACK's QR driver (3-4x faster than the SVD one on the shipped
        # matrices), certified here by the request's own test on the true residual; if that
        # fails (κ beyond what QR resolves to the tolerance), the SVD driver and its bound
        t = time.perf_counter()
        res = _certified_qr(problem, opts, METHODS["lstsq-gelsy"](problem, opts))
        decision["ran"].append({"method": "lstsq-gelsy", "status": res.status.value,
                                "iterations": res.iterations, "s": time.perf_counter() - t})
        if res.converged:
            return _finish(res, decision, t_start)
    t = time.perf_counter()
    res = METHODS[best](problem, opts)
    decision["ran"].append({"method": best, "status": res.status.value,
                            "iterations": res.iterations, "s": time.perf_counter() - t})
    return _finish(res, decision, t_start)


def _certified_qr(problem, opts: SolveOptions, res: SolveResult) -> SolveResult:
    """The QR driver's answer (``C = I``: ``D = W``) with the request's test on the true
    residual: ``target_residual`` (relative residual), ``target_error`` (the reference), else
    LSQR's tests at ``tol`` — ``converged`` only when it passes, ``inexact`` otherwise."""
    from ..control import relative_residual
    from .baselines import lsq_check
    if not res.converged:
        return res
    A, B = problem.A.astype(np.float64, copy=False), problem.B.astype(np.float64, copy=False)
    W = np.asarray(res.D, dtype=np.float64)
    if opts.target_residual is not None:
        check = relative_residual(torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(W))
        ok, rule = check <= opts.target_residual, "relative residual ‖W A − B‖/‖B‖"
    elif opts.target_error is not None:
        check = problem.error(W)
        ok, rule = check <= opts.target_error, "target_error on the float64 reference"
    else:
        check, _ = lsq_check(A, B, W, opts.tol)
        ok, rule = check <= opts.tol, "min(S1, S2) of LSQR on B − W A"
    info = dict(res.info, check=check, check_rule=rule)
    return dataclasses.replace(res, status=Status.CONVERGED if ok else Status.INEXACT, info=info)


def _finish(res: SolveResult, decision: dict, t_start: float) -> SolveResult:
    decision["chosen"] = res.method
    decision["total_s"] = time.perf_counter() - t_start
    info = dict(res.info)
    info["auto"] = decision
    # "auto/lsmr": what was asked and what answered (the CLI's file tags read "auto_lsmr")
    return dataclasses.replace(res, info=info, method=f"auto/{res.method}")
