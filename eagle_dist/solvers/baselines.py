"""Baselines on the same problem, signature and error metric as EAGLE.

* ``lstsq``: ``W = B A⁺`` from LAPACK least squares (``driver="gelsd"``: SVD, or ``"gelsy"``: QR
  with column pivoting) via ``torch.linalg.lstsq``; on CUDA torch offers only QR-based ``gels``
  (full rank), so the SVD driver falls back to ``torch.linalg.pinv`` there.
* ``pinv``: ``torch.linalg.pinv(A)`` (SVD) with the default cut-off ``max(n, d)·eps·σ_max``.
* ``cg``: conjugate gradients on the normal equations ``W (A Aᵀ) = B Aᵀ`` (one CG per row of W,
  run together); ``A Aᵀ`` is applied as ``A (Aᵀ x)``, never formed. Stops on the D-step rule
  ``‖W_k C − W_{k−1} C‖_F ≤ tol ‖W_k C‖_F``.
* ``lsmr`` / ``lsqr``: SciPy's (CuPy's ``cupyx.scipy.sparse.linalg`` on a GPU when CuPy is
  installed), one call per row ``b`` of B on ``min ‖Aᵀ wᵀ − bᵀ‖`` with ``atol = btol = tol``.
* ``gd`` / ``sgd`` live in :mod:`.eagle` (the EAGLE loop with ``η = 0``).
"""
from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import torch

from ..result import History, SolveResult, Status, pow2_of, unscale_completion
from ..result import safe_norm
from ..control import (LinearSystem, Monitor, ResidualRule, SolverOptions, cg_check_due, lsq_ratio,
                       norm64, normal_cg_step, reference_tensor, relative_residual, resolve_device,
                       resolve_dtype, scaled_tensors, to_tensors)

LSTSQ_DRIVERS = ("gelsd", "gelsy")


def _direct_result(problem, opts: SolverOptions, D, t0, method, info,
                   sv: Optional[torch.Tensor] = None) -> SolveResult:
    """The result of a direct solve. ``converged`` means LAPACK returned finite numbers AND, when
    the singular values ``sv`` are known (SVD drivers; the QR driver in float32), the first-order
    forward-error bound ``κ(A)·u`` (κ over the singular values the solver kept, u the unit
    roundoff) is at most ``√u`` — the range EAGLE resolves too (κ ≤ 6.7e7 in float64, 4.1e3 in
    float32). Beyond it the answer is backward stable but may be wrong in every digit: the status
    is ``inexact`` with the bound in ``info["forward_error_bound"]``."""
    elapsed = time.perf_counter() - t0
    D_np = D.cpu().numpy()
    finite = bool(np.isfinite(D_np).all())
    status = Status.CONVERGED if finite else Status.NON_FINITE
    if finite and sv is not None and sv.numel():
        u = torch.finfo(D.dtype).eps / 2
        s = sv.double().abs()
        smax = float(s.max())
        kept = s[s > smax * torch.finfo(D.dtype).eps * max(problem.n, problem.d)]
        kappa = smax / float(kept.min()) if kept.numel() else math.inf
        bound = kappa * u
        info = dict(info, kappa=kappa, forward_error_bound=bound)
        if not bound <= math.sqrt(u):
            status = Status.INEXACT
            info["check"] = bound
            info["check_rule"] = (f"forward-error bound κ·u = {bound:.2g} > √u = {math.sqrt(u):.2g}"
                                  f" ({str(D.dtype).replace('torch.', '')}); solve in float64"
                                  if D.dtype == torch.float32 else
                                  f"forward-error bound κ·u = {bound:.2g} > √u: A is too ill "
                                  "conditioned for a trustworthy answer in float64")
    want = opts.record_error or opts.target_error is not None
    err = problem.error(D_np) if want else float("nan")
    hist = History()
    hist.append(0.0, err, elapsed)
    return SolveResult(D=D_np, status=status, iterations=1, time_s=elapsed, history=hist,
                       method=method, error=err, info=info)


def lstsq(problem, opts: SolverOptions, *, driver: str = "gelsd") -> SolveResult:
    """Direct least squares: ``W = argmin ‖W A − B‖_F`` (min-norm), ``D = W C``."""
    if driver not in LSTSQ_DRIVERS:
        raise ValueError(f"driver={driver!r}; use one of {LSTSQ_DRIVERS} (SVD or QR)")
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    A, B, C = to_tensors(problem, device, dtype)
    t0 = time.perf_counter()
    used, sv = driver, None
    if device.type == "cuda":
        # torch's CUDA lstsq has only 'gels' (QR, full rank); the SVD route is pinv
        if driver == "gelsd":
            (W, sv), used = _svd_solve(A, B), "svd-pinv"
        else:
            W, used = torch.linalg.lstsq(A.T, B.T, driver="gels").solution.T, "gels"
    else:
        sol = torch.linalg.lstsq(A.T, B.T, driver=driver)
        W = sol.solution.T                                               # (n', n)
        if driver == "gelsd":
            sv = sol.singular_values
    D = W @ C
    if device.type == "cuda":
        torch.cuda.synchronize()
    if sv is None and dtype == torch.float32:
        # the QR drivers give no singular values; in float32 the bound matters (κ ≥ 4e3 can
        # lose every digit), so they are computed, outside the timed region
        t_sv = time.perf_counter()
        sv = torch.linalg.svdvals(A)
        t0 += time.perf_counter() - t_sv
    return _direct_result(problem, opts, D, t0, f"lstsq-{driver}",
                          {"driver": driver, "driver_used": used, "device": str(device)}, sv)


def _svd_solve(A: torch.Tensor, B: torch.Tensor):
    """``(B A⁺, singular values of A)`` from one SVD (pinv's own cut-off)."""
    U, s, Vh = torch.linalg.svd(A, full_matrices=False)
    cut = float(s.max()) * torch.finfo(A.dtype).eps * max(A.shape) if s.numel() else 0.0
    inv = torch.where(s > cut, 1.0 / torch.where(s > cut, s, torch.ones_like(s)),
                      torch.zeros_like(s))
    return ((B @ Vh.T) * inv) @ U.T, s


def pinv(problem, opts: SolverOptions) -> SolveResult:
    """Direct ``D = B pinv(A) C`` from one SVD of A (pinv's cut-off ``eps·max(n, d)·σ_max``)."""
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    A, B, C = to_tensors(problem, device, dtype)
    t0 = time.perf_counter()
    W, sv = _svd_solve(A, B)
    D = W @ C
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _direct_result(problem, opts, D, t0, "pinv", {"device": str(device)}, sv)


def lsq_check(A, B, W, tol: float, a_norm: Optional[float] = None):
    """LSQR's two stopping tests on the TRUE residual ``R = B − W A`` (any array module):

    * S1, consistent systems: ``‖R‖ ≤ tol (‖B‖ + ‖A‖ ‖W‖)``
    * S2, least squares: ``‖R Aᵀ‖ ≤ tol ‖A‖ ‖R‖`` (the normal equations hold to tol)

    with Frobenius norms throughout (``‖A‖ = ‖A‖_F``, as LSQR and LSMR define their tests).
    Returns ``(value, a_norm)``: ``value = min(S1 ratio, S2 ratio)`` — ``≤ tol`` means passed —
    scaled by the data, so it means the same for data at any scale.
    """
    xp_norm = (lambda x: norm64(x)) if isinstance(A, torch.Tensor) else (lambda x: safe_norm(x))
    if a_norm is None:
        a_norm = xp_norm(A)
    R = B - W @ A
    r = xp_norm(R)
    val = lsq_ratio(r, xp_norm(R @ A.T) if r > 0 else 0.0, xp_norm(B), a_norm, xp_norm(W))
    return val, a_norm


def cg(problem, opts: SolverOptions) -> SolveResult:
    """Conjugate gradients on the normal equations ``W (A Aᵀ) = B Aᵀ`` from ``W₀ = 0``.

    Stops on the residual, never on the step: ``CONVERGED`` when LSQR's tests (:func:`lsq_check`)
    pass on the true residual ``B − W A``, computed whenever the recurrence residual says it may
    (on singular normal equations the iterates wander in the null space of ``A Aᵀ`` once the
    recurrence has converged: steps of any size, residual unchanged, answer wrong by 1e3 — the
    D-step rule stopped there). If the tolerance is out of reach the iterate with the smallest
    residual is returned.
    """
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    # CG squares the data scale (A Aᵀ, ‖R‖²): every block is divided by a power of two first
    # (exact), so data far from unit scale neither overflows (NaN) nor underflows (a false
    # "converged" with D = 0); D = 2^(b+c−a) D' is undone at the end (result.BlockScale)
    A, B, C, bscale = scaled_tensors(problem, device, dtype)
    want_ref = opts.record_error or opts.target_error is not None
    ref = reference_tensor(problem, device, want_ref)
    if ref is not None:
        ref = bscale.to_unit(ref)
    a_norm = norm64(A)                              # Frobenius, as in LSQR's tests
    b_norm = norm64(B)
    W = torch.zeros(problem.n_query, problem.n, dtype=dtype, device=device)   # rows are independent
    R = B @ A.T                                     # residual of the normal equations at W = 0
    P = R.clone()
    rr = (R * R).sum(dim=1)                          # (n',) one CG per row
    D = torch.zeros(problem.n_query, problem.d_query, dtype=dtype, device=device)
    st = {"W": W, "R": R, "best": (math.inf, W, 0), "checked": -10}
    system = None
    if opts.target_residual is not None:
        # target_residual: the residual B − W A of the system itself, by recurrence
        # (r ← r − α P A, the product P A is formed anyway); the monitor computes the true one
        # whenever the recurrence passes and resynchronises it when it drifted
        st["r"] = B.clone()

        def estimate() -> float:
            return norm64(st["r"]) / b_norm if b_norm > 0 else norm64(st["r"])

        def resync(_true: float) -> None:
            st["r"] = B - st["W"] @ A

        system = LinearSystem(A, B, lambda _D: st["W"], estimate=estimate, resync=resync)

    def residual() -> float:
        rec = norm64(st["R"])                       # recurrence ‖(B − WA)Aᵀ‖ (cheap)
        if rec < st["best"][0]:
            st["best"] = (rec, st["W"], mon.iteration)
        # the true residual costs one more product: compute it only when the recurrence says
        # the S2 test may pass (‖B − WA‖ ≤ ‖B‖ for every CG iterate), or every 10 iterations
        if not cg_check_due(rec, opts.tol, a_norm, b_norm, mon.iteration, st["checked"]):
            return math.inf
        st["checked"] = mon.iteration
        val, _ = lsq_check(A, B, st["W"], opts.tol, a_norm)
        return val

    rule = ResidualRule(residual)                  # CG: the residual check alone decides
    mon = Monitor(opts, ref, desc="cg", rule=rule,
                  denominator=bscale.to_unit(problem.error_denominator) if want_ref else None,
                  system=system)
    status = None
    while status is None:
        PA = P @ A
        Q = PA @ A.T                                 # P (A Aᵀ), (n', n)
        W, R, P, rr, alpha, broke = normal_cg_step(W, R, P, rr, Q)
        if system is not None:
            st["r"] = st["r"] - alpha[:, None] * PA
        st["W"], st["R"] = W, R
        D_old, D = D, W @ C
        status = mon.record(D, D_old)
        if status is None and broke:
            # breakdown: no search direction left; the residual check decides
            if system is not None:
                val = relative_residual(A, B, W)
                system.last_true = val
                status = Status.CONVERGED if val <= opts.target_residual else Status.INEXACT
            else:
                val, _ = lsq_check(A, B, W, opts.tol, a_norm)
                rule.last_residual = val
                status = Status.CONVERGED if val <= opts.tol else Status.INEXACT
            mon.close()
    if status is Status.NON_FINITE and not bool(torch.isfinite(D).all()):
        # the status promises the last finite iterate, never NaNs
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    returned = mon.iteration
    if status is Status.NON_FINITE:
        returned = -1
    elif status is not Status.CONVERGED and system is None and st["best"][1] is not W:
        # the iterate with the smallest normal-equations residual guards against wandering in
        # the null space of A Aᵀ (same LS residual, growing W); but that residual is not
        # monotone, and on an ill-conditioned run cut by max_iter it can be W₀ = 0 — keep the
        # last iterate when its TRUE least-squares residual is clearly smaller (CG on the
        # normal equations decreases it monotonically in exact arithmetic)
        r_best = norm64(B - st["best"][1] @ A)
        r_last = norm64(B - W @ A)
        if not r_last < 0.999 * r_best:
            D = st["best"][1] @ C                    # never worse than the best residual seen
            returned = st["best"][2]
    D_np, range_note = unscale_completion(D.to(torch.float64).cpu().numpy(), bscale,
                                          np.float32 if dtype == torch.float32 else np.float64)
    if range_note:
        status = Status.NON_FINITE
    return SolveResult(D=D_np, status=status, iterations=mon.iteration, time_s=mon.elapsed(),
                       history=mon.history, method="cg",
                       error=problem.error(D_np) if ref is not None else float("nan"),
                       info={"device": str(device), "check": mon.last_residual,
                             **({"range": range_note} if range_note else {}),
                             "check_rule": "min(S1, S2) of LSQR on B - W A",
                             "best_iteration": st["best"][2], "returned_iteration": returned,
                             **({"rel_residual": mon.last_system_residual} if system else {})})


#: LSMR / LSQR run on a SciPy CSR copy of A when at most this fraction of its entries is nonzero
#: (SuiteSparse blocks: 0.1-3 %), so each product costs O(nnz) instead of O(n·d)
SPARSE_DENSITY = 0.1


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
    # the float64 reference (an SVD of A: 40x SciPy's own time on dwt_1007) only when asked for;
    # otherwise result.error is computed on first access, outside the solve (api.solve)
    want_ref = opts.record_error or opts.target_error is not None
    # exact power-of-two rescaling, undone below (same reason as in cg)
    s_a, s_b = pow2_of(problem.A), pow2_of(problem.B)
    At = xp.asarray(problem.A.T.astype(dt) / dt(s_a))     # (d, n): solve Aᵀ wᵀ = bᵀ
    fmt = "dense"
    if not use_cupy and At.size and np.count_nonzero(At) <= SPARSE_DENSITY * At.size:
        import scipy.sparse as sp
        At, fmt = sp.csr_matrix(At), "csr"               # sparse data: O(nnz) products
    Bq = xp.asarray(problem.B.astype(dt) / dt(s_b))
    t0 = time.perf_counter()
    solver = spla.lsmr if which == "lsmr" else spla.lsqr
    rows, iters, istops = [], [], []
    target = opts.target_residual
    for i in range(problem.n_query):
        # target_residual: SciPy's first test with atol = 0 is ‖b − Aᵀwᵀ‖ ≤ btol ‖b‖ row by row
        # (so ‖W A − B‖_F ≤ btol ‖B‖_F), on its recurrence residual; conlim = 0 switches the
        # condition-number stop off; the true residual is checked below
        kw = dict(atol=opts.tol, btol=opts.tol) if target is None else \
            dict(atol=0.0, btol=target, conlim=0.0)
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
    err = problem.error(D_np) if want_ref else float("nan")
    hist = History()
    hist.append(float("nan"), err, elapsed)
    # istop (lsmr/lsqr): 0 x = 0 is exact, 1/4 consistent, 2/5 least squares, 3/6 condition
    # limit hit (NOT a solution), 7 iteration limit. SciPy's tests are backward errors, so the
    # answer is checked again on the true residual with the same tests (lsq_check) before
    # "converged" is said.
    W_np = np.asarray(W.get() if use_cupy else W, dtype=np.float64)
    check, _ = lsq_check(problem.A.astype(np.float64) / s_a, problem.B.astype(np.float64) / s_b,
                         W_np * (s_a / s_b), opts.tol)
    info = {"format": fmt}
    if target is not None:
        rel = relative_residual(torch.from_numpy(problem.A.astype(np.float64) / s_a),
                                torch.from_numpy(problem.B.astype(np.float64) / s_b),
                                torch.from_numpy(W_np * (s_a / s_b)))
        info["rel_residual"] = rel
    if any(s == 7 for s in istops):
        status = Status.MAX_ITERATIONS
    elif target is not None:
        status = Status.CONVERGED if rel <= target else Status.INEXACT
    elif any(s in (3, 6) for s in istops) or check > max(10 * opts.tol, 100 * np.finfo(dt).eps):
        # (slack 10x: SciPy tests its recurrence residual, which drifts from the true one by
        # rounding; the check is there to catch answers that are not solutions at all)
        status = Status.INEXACT
    else:
        status = Status.CONVERGED
    if not np.isfinite(D_np).all():
        status = Status.NON_FINITE
    return SolveResult(D=D_np, status=status, iterations=max(iters), time_s=elapsed, history=hist,
                       method=which, error=err,
                       info={"istop": ",".join(map(str, istops)), "check": check,
                             "check_rule": "min(S1, S2) of LSQR on B - W A",
                             "krylov_backend": "cupy" if use_cupy else "scipy", **info})


def lsmr(problem, opts: SolverOptions) -> SolveResult:
    return _krylov(problem, opts, "lsmr")


def lsqr(problem, opts: SolverOptions) -> SolveResult:
    return _krylov(problem, opts, "lsqr")
