"""Baselines on the same problem, signature and error metric as EAGLE (SPEC §4).

* ``lstsq``: ``W = B A⁺`` from LAPACK least squares (``driver="gelsd"``: SVD, or ``"gelsy"``: QR
  with column pivoting) via ``torch.linalg.lstsq``; on CUDA torch offers only QR-based ``gels``
  (full rank), so the SVD driver falls back to ``torch.linalg.pinv`` there.
* ``pinv``: ``torch.linalg.pinv(A)`` (SVD) with the default cut-off ``max(n, d)·eps·σ_max``.
* ``cg``: conjugate gradients on the normal equations ``W (A Aᵀ) = B Aᵀ`` (one CG per row of W,
  run together); ``A Aᵀ`` is applied as ``A (Aᵀ x)``, never formed. Stops on the D-step rule
  ``‖W_k C − W_{k−1} C‖_F ≤ tol ‖W_k C‖_F`` (SPEC §4).
* ``lsmr`` / ``lsqr``: SciPy's (CuPy's ``cupyx.scipy.sparse.linalg`` on a GPU when CuPy is
  installed), one call per row ``b`` of B on ``min ‖Aᵀ wᵀ − bᵀ‖`` with ``atol = btol = tol``.
* ``gd`` / ``sgd`` live in :mod:`.eagle` (the EAGLE loop with ``η = 0``).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..result import History, SolveResult, Status
from .common import (Monitor, SolverOptions, pow2_scale, reference_tensor, resolve_device, resolve_dtype,
                     to_tensors)

LSTSQ_DRIVERS = ("gelsd", "gelsy")


def _direct_result(problem, D, t0, method, info) -> SolveResult:
    D_np = D.cpu().numpy()
    finite = bool(np.isfinite(D_np).all())
    err = problem.error(D_np)
    hist = History()
    hist.append(0.0, err, time.perf_counter() - t0)
    return SolveResult(D=D_np, status=Status.CONVERGED if finite else Status.NON_FINITE,
                       iterations=1, time_s=time.perf_counter() - t0, history=hist,
                       method=method, error=err, info=info)


def lstsq(problem, opts: SolverOptions, *, driver: str = "gelsd") -> SolveResult:
    """Direct least squares: ``W = argmin ‖W A − B‖_F`` (min-norm), ``D = W C``."""
    if driver not in LSTSQ_DRIVERS:
        raise ValueError(f"driver={driver!r}; use one of {LSTSQ_DRIVERS} (SVD or QR)")
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    A, B, C = to_tensors(problem, device, dtype)
    _ = problem.reference  # computed outside the timed region
    t0 = time.perf_counter()
    used = driver
    if device.type == "cuda":
        # torch's CUDA lstsq has only 'gels' (QR, full rank); the SVD route is pinv
        if driver == "gelsd":
            W, used = B @ torch.linalg.pinv(A), "svd-pinv"
        else:
            W, used = torch.linalg.lstsq(A.T, B.T, driver="gels").solution.T, "gels"
    else:
        W = torch.linalg.lstsq(A.T, B.T, driver=driver).solution.T     # (n', n)
    D = W @ C
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _direct_result(problem, D, t0, f"lstsq-{driver}",
                          {"driver": driver, "driver_used": used, "device": str(device)})


def pinv(problem, opts: SolverOptions) -> SolveResult:
    """Direct ``D = B pinv(A) C`` with torch's SVD-based pseudo-inverse."""
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    A, B, C = to_tensors(problem, device, dtype)
    _ = problem.reference
    t0 = time.perf_counter()
    D = (B @ torch.linalg.pinv(A)) @ C
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _direct_result(problem, D, t0, "pinv", {"device": str(device)})


def cg(problem, opts: SolverOptions) -> SolveResult:
    """Conjugate gradients on the normal equations ``W (A Aᵀ) = B Aᵀ`` from ``W₀ = 0``."""
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    A, B, C = to_tensors(problem, device, dtype)
    # CG squares the data scale (A Aᵀ, ‖R‖²): solve for W' = (B/s_B)(A/s_A)⁺ with exact
    # power-of-two factors and report D = (s_B/s_A) W' C, so float32 data far from unit scale
    # neither overflows (NaN) nor underflows (a false "converged" with D = 0)
    s_a, s_b = pow2_scale(A), pow2_scale(B)
    A, B = A / s_a, B / s_b
    unscale = s_b / s_a
    ref = reference_tensor(problem, device, opts.record_error or opts.target_error is not None)
    W = torch.zeros(problem.n_query, problem.n, dtype=dtype, device=device)   # rows are independent
    R = B @ A.T                                     # residual of the normal equations at W = 0
    P = R.clone()
    rr = (R * R).sum(dim=1)                          # (n',) one CG per row
    D = torch.zeros(problem.n_query, problem.d_query, dtype=dtype, device=device)
    mon = Monitor(opts, ref, desc="cg", denominator=problem.error_denominator)
    status = None
    while status is None:
        Q = (P @ A) @ A.T                            # P (A Aᵀ), (n', n)
        pq = (P * Q).sum(dim=1)
        alpha = torch.where(pq > 0, rr / torch.where(pq > 0, pq, torch.ones_like(pq)), torch.zeros_like(pq))
        W = W + alpha[:, None] * P
        R = R - alpha[:, None] * Q
        rr_new = (R * R).sum(dim=1)
        beta = torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        P = R + beta[:, None] * P
        rr = rr_new
        D_old, D = D, (W @ C) * unscale
        status = mon.record(D, D_old)
    if status is Status.NON_FINITE and not bool(torch.isfinite(D).all()):
        # the status promises the last finite iterate, never NaNs
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    D_np = D.cpu().numpy()
    return SolveResult(D=D_np, status=status, iterations=mon.iteration, time_s=mon.elapsed(),
                       history=mon.history, method="cg",
                       error=problem.error(D_np) if ref is not None else float("nan"),
                       info={"device": str(device)})


def _krylov(problem, opts: SolverOptions, which: str) -> SolveResult:
    """SciPy LSMR or LSQR (CuPy's LSMR on a GPU), one right-hand side (row of B) at a time."""
    device = resolve_device(opts.device)
    use_cupy = False
    # CuPy has an iterative LSMR (cupyx.scipy.sparse.linalg.lsmr, SciPy's signature) but its
    # `lsqr(A, b)` is a direct cuSOLVER QR solve of a square system with no tolerances or
    # iteration count, so LSQR stays SciPy's (on the CPU) even when a GPU is present
    if device.type == "cuda" and which == "lsmr":
        try:
            import cupy as xp
            import cupyx.scipy.sparse.linalg as spla
            use_cupy = True
        except ImportError:
            pass
    if not use_cupy:
        import scipy.sparse.linalg as spla
        xp = np
    dt = np.float32 if resolve_dtype(opts.dtype, problem.dtype) == torch.float32 else np.float64
    _ = problem.reference
    # exact power-of-two rescaling, undone below (same reason as in cg)
    s_a, s_b = pow2_scale(problem.A), pow2_scale(problem.B)
    At = xp.asarray(problem.A.T.astype(dt) / dt(s_a))     # (d, n): solve Aᵀ wᵀ = bᵀ
    Bq = xp.asarray(problem.B.astype(dt) / dt(s_b))
    t0 = time.perf_counter()
    solver = spla.lsmr if which == "lsmr" else spla.lsqr
    rows, iters, istops = [], [], []
    for i in range(problem.n_query):
        kw = dict(atol=opts.tol, btol=opts.tol)
        if which == "lsmr":
            kw["maxiter"] = opts.max_iter
        else:
            kw["iter_lim"] = opts.max_iter
        out = solver(At, Bq[i], **kw)
        rows.append(out[0])
        istops.append(int(out[1]))
        iters.append(int(out[2]))
    W = xp.stack(rows).astype(dt) * dt(s_b / s_a)     # (n', n); SciPy returns float64 for float32 input
    D = W @ xp.asarray(problem.C.astype(dt))
    D_np = D.get() if use_cupy else np.asarray(D)
    elapsed = time.perf_counter() - t0
    err = problem.error(D_np)
    hist = History()
    hist.append(float("nan"), err, elapsed)
    # istop 7 (lsmr/lsqr): iteration limit reached
    status = Status.MAX_ITERATIONS if any(s == 7 for s in istops) else Status.CONVERGED
    if not np.isfinite(D_np).all():
        status = Status.NON_FINITE
    return SolveResult(D=D_np, status=status, iterations=max(iters), time_s=elapsed, history=hist,
                       method=which, error=err,
                       info={"istop": ",".join(map(str, istops)), "krylov_backend": "cupy" if use_cupy else "scipy"})


def lsmr(problem, opts: SolverOptions) -> SolveResult:
    return _krylov(problem, opts, "lsmr")


def lsqr(problem, opts: SolverOptions) -> SolveResult:
    return _krylov(problem, opts, "lsqr")
