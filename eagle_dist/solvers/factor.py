"""EAGLE's lift as a reusable factorization — the linear-system fast path (issue 16).

For a linear system ``W A = B`` (``C = I``: least squares, ``solve_least_squares``,
``target_residual``) nothing needs EAGLE's C/D blocks: the A-update alone,

    A ← A P_k   (tall/square, d ≤ n)      or      A ← P_k A   (wide, n < d),
    P_k = a_k I + b_k G + c_k G²,   G = AᵀA  (or AAᵀ)  — the small side, m = min(n, d),

lifts every singular value ``σ ≥ ℓ`` of the normalised A into ``[1 − δ, 1 + δ]``
(:mod:`eagle_dist.polynomials`: greedy minimax odd quintics from a certified ``ℓ``; EAGLE's own
stable step is the cubic ``a, b, c = 3/2, −1/2, 0``, see :func:`eagle_dist.kernels.lift_step`).
The product ``F = Π P_k`` (m x m) is kept: ``A_L = A F`` (or ``F A``) is then well conditioned and

    A⁺ = F (A_LᵀA_L)⁻¹ A_Lᵀ       (tall/square)            A⁺ = A_Lᵀ (A_L A_Lᵀ)⁻¹ F     (wide)

exactly (F invertible; in exact arithmetic ``A_LᵀA_L ≈ I``). ``(A_LᵀA_L)⁻¹`` comes from one
Cholesky factorisation of the well-conditioned m x m Gram of ``A_L`` (recomputed in float64 from
A and F, so the formula is exact whatever precision lifted F). Each right-hand side then costs
thin products only — :func:`factorize` returns the object for reuse.

``solve(B)``: ``W = B A⁺`` by that formula, then iterative refinement on the TRUE residual
``R = B − W A`` in float64 (``W ← W + R A⁺``; the corrected semi-normal equations of Björck,
forward stable for κ up to about 1/√eps), and the certificate is LSQR's tests on that residual
(:func:`eagle_dist.solvers.baselines.lsq_check`) — the same independent check as CG's — or the
relative residual ``‖W A − B‖ ≤ target_residual ‖B‖``. A solve that is not certified says so
(``inexact``); :func:`eagle_fast` then falls back to the EAGLE C/D iteration.

Mixed precision (``precision="float32"``, or ``"auto"`` for min(n, d) ≥ 512): the lift runs in
float32 (TF32 on a GPU), F is cast to float64 and the finish and refinement run in float64 — the
answer is float64-accurate because the finish is exact for ANY invertible F; a poorer F only
costs refinement steps. If the refinement stalls, the lift is redone in float64.

Rank deficiency: directions below ``rcond·σ_max`` are not lifted; the Gram of ``A_L`` then has
tiny eigenvalues and its inverse is taken by an eigendecomposition with those directions dropped
(pinv's truncation).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .. import polynomials as poly
from ..control import SolveOptions, norm64, resolve_device
from ..kernels import default_rcond, lift_step, spectral_norm_sq, symmetric_blas
from ..result import History, SolveResult, Status, pow2_exponent
from .baselines import lsq_check

#: half-width of the interval the lift brings the lifted singular values into (then Cholesky):
#: 0.85 leaves the lifted Gram's condition number ≤ ~150 — nothing for a float64 Cholesky and
#: the refinement — and saves one quintic step against 0.5 for most κ (measured: schedules)
LIFT_DELTA = 0.85
#: mixed precision by default from this small dimension on (below, float32 does not pay)
MIXED_MIN_DIM = 512
#: refinement steps before a solve is declared not certifiable by this path
MAX_REFINE = 6
#: up to this small dimension ‖A‖₂ comes from an eigenvalue solve of the Gram (exact and cheaper
#: than a power iteration there)
SMALL_EXACT_NORM = 256


@dataclass
class FactorInfo:
    """What the factorization did (reported in ``SolveResult.info``)."""

    side: str                      # "right" (A_L = A F, d ≤ n) or "left" (A_L = F A, n < d)
    lift_dtype: str
    ell: float                     # certified lower bound on σ_min/σ_max (or rcond)
    certified_tests: int
    lift_steps: int
    amplification: float           # Π a_k: growth of directions outside A's row space
    gemm_equivalents: float        # products of the lift and finish, in n x d x m units
    truncated: int = 0             # directions dropped as numerically null (rank deficiency)
    fallback: Optional[str] = None  # why the lift was redone in float64, if it was
    seconds: Dict[str, float] = field(default_factory=dict)


class EagleFactorization:
    """``A`` prepared once; :meth:`solve` gives ``W = B A⁺`` (certified) for any ``B`` (n' x d)
    with thin products, :meth:`complete` gives ``D = B A⁺ C``. Build it with :func:`factorize`."""

    def __init__(self, A1: torch.Tensor, F: torch.Tensor, A_L: torch.Tensor, inv, info: FactorInfo,
                 exponent: int, norm_scale: float):
        self._A1, self._F, self._A_L, self._inv = A1, F, A_L, inv
        self.info = info
        self._exp, self._c = exponent, norm_scale       # A = 2^exp · A1 / c

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self._A1.shape)

    # -- A⁺ on the unit-scale A1 ----------------------------------------------------------------
    def _gram_inv(self, Y: torch.Tensor) -> torch.Tensor:
        """``Y (A_Lᵀ A_L)⁻¹`` (or with ``A_L A_Lᵀ``), rows of Y independent."""
        kind, fac = self._inv
        if kind == "cholesky":
            return torch.cholesky_solve(Y.T, fac).T
        V, inv_lam = fac
        return ((Y @ V) * inv_lam) @ V.T

    def _pinv_apply(self, X: torch.Tensor) -> torch.Tensor:
        """``X A1⁺`` for X (k', d): one application of the exact formula."""
        if self.info.side == "right":
            return self._gram_inv(X @ self._F) @ self._A_L.T
        return self._gram_inv(X @ self._A_L.T) @ self._F

    # -- public --------------------------------------------------------------------------------
    def solve(self, B, *, tol: float = 1e-12, target_residual: Optional[float] = None,
              max_refine: int = MAX_REFINE, on_step=None) -> Tuple[np.ndarray, Dict[str, Any]]:
        """``(W, info)`` with ``W = B A⁺`` (n' x n) for ``B`` (n' x d). ``info["status"]`` is
        ``converged`` when LSQR's tests on the true residual ``R = B − W A`` pass at ``tol``
        (``min(‖R‖/(‖B‖ + ‖A‖‖W‖), ‖RAᵀ‖/(‖A‖‖R‖)) ≤ tol``, Frobenius norms) or, with
        ``target_residual``, ``‖R‖ ≤ target_residual·‖B‖``; otherwise ``inexact`` (the best W
        seen is returned). ``on_step(k, W1, check)`` is called after every refinement step."""
        B_t, eb = self._unit(B, "B")
        W1, steps, check, best = self._refine(B_t, tol, target_residual, max_refine, on_step)
        W = self._unscale(W1, eb)
        status = "converged" if best else "inexact"
        return W.cpu().numpy(), dict(status=status, refinements=steps, check=check)

    def complete(self, B, C) -> np.ndarray:
        """``D = B A⁺ C`` (uncertified convenience; use :meth:`solve` for the status)."""
        W, _ = self.solve(B)
        return W @ np.asarray(C, dtype=np.float64)

    def _unscale(self, W1: torch.Tensor, eb: int) -> torch.Tensor:
        """W for the caller's B = 2^eb · B1 and A = 2^exp · A1 / c, from W1 = B1 A1⁺."""
        return torch.ldexp(W1, torch.tensor(eb - self._exp, device=W1.device)) * self._c

    def _unit(self, B, name: str):
        B = np.asarray(B.detach().cpu().numpy() if hasattr(B, "detach") else B, dtype=np.float64)
        if B.ndim == 1:
            B = B[None, :]
        if B.ndim != 2 or B.shape[1] != self.shape[1]:
            raise ValueError(f"{name} has shape {B.shape}; expected (n', d) with d = "
                             f"{self.shape[1]}")
        if not np.isfinite(B).all():
            raise ValueError(f"{name} contains NaN/Inf entries")
        eb = pow2_exponent(B)
        return torch.tensor(np.ldexp(B, -eb), dtype=torch.float64, device=self._A1.device), eb

    def _refine(self, B1, tol, target_residual, max_refine, on_step):
        A1 = self._A1
        W = self._pinv_apply(B1)
        best_W, best_val, passed = W, math.inf, False
        a_norm, b_norm = norm64(A1), norm64(B1)
        steps, prev = 0, math.inf
        for steps in range(max_refine + 1):
            R = B1 - W @ A1
            if target_residual is not None:
                val = norm64(R) / b_norm if b_norm > 0 else norm64(R)
                ok = val <= target_residual
            else:
                val, _ = lsq_check(A1, B1, W, tol, a_norm)
                ok = val <= tol
            if on_step is not None:
                on_step(steps, W, val)
            if val < best_val:
                best_W, best_val = W, val
            if ok:
                passed = True
                best_W = W
                break
            if steps == max_refine or (steps >= 2 and val > 0.5 * prev):   # stalled
                break
            prev = val
            W = W + self._pinv_apply(R)
        return best_W, steps, best_val, passed


def certify_lower_bound(G: torch.Tensor, *, hi: float, floor: float) -> Tuple[float, int]:
    """``(ℓ, tests)``: the largest ``ℓ = hi·2^(−j/2) ≥ floor`` with ``σ_min ≥ ℓ`` proven by a
    Cholesky factorisation of ``G − (ℓ² + e) I`` (the rounding bound ``e`` of
    :func:`eagle_dist.polynomials.cholesky_error_bound`; Higham 2002, Thm 10.3) — the test of
    :func:`eagle_dist.polynomials.certified_lower_bound` on a half-octave grid (within √2 of
    σ_min: at most a fraction of one lift step lost), binary search, ≤ 6 factorisations.
    ``floor`` when nothing larger is proven (rank deficiency, or σ_min below the test's
    resolution, ~3e-6·hi at m = 300 in float64)."""
    k = G.shape[0]
    err = poly.cholesky_error_bound(k, G.dtype, hi) ** 2
    cands = [floor]
    j = 1
    while True:
        ell = hi * 2.0 ** (-j / 2.0)
        if ell <= max(floor, math.sqrt(err)):
            break
        cands.append(ell)
        j += 1
    cands = [cands[0]] + sorted(cands[1:])                 # increasing after the floor
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    lo_i, hi_i, tests, best = 1, len(cands) - 1, 0, 0
    while lo_i <= hi_i:
        mid = (lo_i + hi_i) // 2
        tests += 1
        _, info = torch.linalg.cholesky_ex(G - (cands[mid] ** 2 + err) * eye)
        if int(info) == 0:
            best, lo_i = mid, mid + 1
        else:
            hi_i = mid - 1
    return cands[best], tests


def _on_grid(ell: float, hi: float, floor: float) -> float:
    """The largest ``hi·2^(−j/2) ≤ ell`` (the grid of :func:`certify_lower_bound`), ≥ floor."""
    if ell <= floor:
        return floor
    j = math.ceil(-2.0 * math.log2(ell / hi))
    return max(floor, hi * 2.0 ** (-j / 2.0)) if j > 0 else hi * 2.0 ** -0.5


@functools.lru_cache(maxsize=512)
def _schedule(ell: float, hi: float, delta: float):
    """The greedy quintic schedule (Remez exchanges: milliseconds); ``ℓ`` comes from the
    half-octave grid of :func:`certify_lower_bound`, so few distinct schedules are ever built."""
    return list(poly.lift_schedule(ell, hi, delta=delta))


def _gram(X: torch.Tensor, side: str) -> torch.Tensor:
    """``XᵀX`` (right) or ``XXᵀ`` (left); by SYRK (half the flops) where the one-time timing of
    :func:`eagle_dist.kernels.symmetric_blas` found it faster than torch's GEMM, then mirrored."""
    sym = symmetric_blas(X)
    if sym is None:
        return X.T @ X if side == "right" else X @ X.T
    # BLAS sets the column-major upper triangle: the row-major LOWER one of this tensor
    G = sym.gram(X) if side == "right" else sym.outer_gram(X)
    return G.tril() + G.tril(-1).T


def factorize(A, *, precision: str = "auto", rcond: Optional[float] = None,
              device: Optional[str] = None, delta: float = LIFT_DELTA) -> EagleFactorization:
    """Lift ``A`` (n x d, any float array, NumPy or torch) once; see the module docstring.

    ``precision``: ``"float64"``, ``"float32"`` (lift in float32 — TF32 on a GPU — finish in
    float64) or ``"auto"`` (float32 when min(n, d) ≥ 512). ``rcond``: singular values below
    ``rcond·σ_max`` are treated as zero (default sqrt(eps) of float64). ``delta``: the lift stops
    once the certified interval is inside ``[1 − δ, 1 + δ]``.

    Example:
        >>> import numpy as np
        >>> from eagle_dist import factorize
        >>> A = np.random.default_rng(0).standard_normal((40, 60)); W = np.ones((1, 40))
        >>> f = factorize(A)
        >>> W_hat, info = f.solve(W @ A)
        >>> info["status"], bool(np.allclose(W_hat, W))
        ('converged', True)
    """
    from ..problem import as_float_array
    if precision not in ("auto", "float64", "float32"):
        raise ValueError(f"precision={precision!r}; use 'auto', 'float64' or 'float32'")
    if not (0 < delta < 0.9):
        raise ValueError(f"delta={delta!r} must lie in (0, 0.9)")
    dev = resolve_device(device)
    A_np = as_float_array(A, "A").astype(np.float64, copy=False)
    if not np.any(A_np):
        raise ValueError("A is all zeros: there is nothing to factorize")
    n, d = A_np.shape
    m = min(n, d)
    side = "right" if d <= n else "left"
    rcond = default_rcond(torch.float64) if rcond is None else float(rcond)
    if not (0 < rcond < 1):
        raise ValueError(f"rcond={rcond!r} must lie in (0, 1)")
    lift_dtype = torch.float32 if precision == "float32" or (
        precision == "auto" and m >= MIXED_MIN_DIM) else torch.float64
    t0 = time.perf_counter()
    ea = pow2_exponent(A_np)
    A1 = torch.tensor(np.ldexp(A_np, -ea), dtype=torch.float64, device=dev)
    G0 = _gram(A1, side)                                           # (m, m), float64
    ev = None
    if m <= SMALL_EXACT_NORM:
        ev = torch.linalg.eigvalsh(G0)                             # cheaper than the iterations
        lam = float(ev[-1])
    else:
        lam, _ = spectral_norm_sq(G0, iters=60, rtol=1e-10)        # ≈ λ_max(G0)^2
        lam = math.sqrt(lam)
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError("A looks numerically zero after power-of-two scaling")
    c = 1.0 / math.sqrt(lam * 1.005)                               # ‖c A1‖₂ ≈ 0.9975, ≤ 1.01
    A1 = A1 * c
    G0 = G0 * (c * c)
    if ev is not None:
        # small m: the eigenvalues are at hand; eigvalsh is backward stable (each computed λ
        # within ~m·eps·‖G‖ of an exact one), so that margin makes the bound rigorous
        lam_min = float(ev[0]) * (c * c) - 10.0 * m * torch.finfo(torch.float64).eps
        ell, tests = _on_grid(math.sqrt(lam_min) if lam_min > 0 else 0.0, 1.0, rcond), 0
    else:
        ell, tests = certify_lower_bound(G0, hi=1.0, floor=rcond)
    steps = _schedule(ell, 1.0, delta)
    t1 = time.perf_counter()
    fallback = None
    while True:
        F, steps, more = _lift(A1, G0, steps, side, lift_dtype, ell <= rcond, delta)
        F = F.to(torch.float64)
        tests += more
        A_L = A1 @ F if side == "right" else F @ A1                # exact for this F
        Gh = _gram(A_L, side)
        # the small exact path planned the lift from G0's exact eigenvalues: when they certify
        # full rank (ℓ above rcond), the lifted Gram's λ_min ≥ lo² holds up to rounding and a
        # successful Cholesky is all the check there is left to make
        inv, truncated = _inverse(Gh, steps, allow_truncation=lift_dtype == torch.float64,
                                  planned_exactly=ev is not None and ell > rcond
                                  and lift_dtype == torch.float64)
        if inv is not None:
            break
        # a float32 lift could not resolve the small singular values (κ beyond float32's
        # reach): the factor is not good enough for the exact finish — lift again in float64
        fallback = "float32 lift left A ill conditioned; lifted again in float64"
        lift_dtype = torch.float64
    t2 = time.perf_counter()
    k = max(n, d)
    # n x d x m products: Gram ½ (SYRK-able), the small products (m³) count m/k each
    small = m / k
    gemm = 0.5 + (len(steps) - 1) * 0.5 + len(steps) * (small + small) \
        + (len(steps) - 1) * 1.0 + 1.0 + 0.5 + tests * small / 6 + small / 6
    amp = float(np.prod([s.amplification for s in steps])) if steps else 1.0
    info = FactorInfo(side=side, lift_dtype=str(lift_dtype).replace("torch.", ""), ell=ell,
                      certified_tests=tests, lift_steps=len(steps), amplification=amp,
                      gemm_equivalents=gemm, truncated=truncated, fallback=fallback,
                      seconds=dict(prepare=t1 - t0, lift_and_finish=t2 - t1))
    return EagleFactorization(A1, F, A_L, inv, info, ea, c)


def _lift(A1: torch.Tensor, G0: torch.Tensor, steps, side: str, dtype: torch.dtype,
          recertify: bool, delta: float):
    """``(F, steps, tests)``: F = Π P_k by :func:`eagle_dist.kernels.lift_step` (A updated along,
    except after the last step, where only F is needed). When ``ℓ`` could not be certified on
    the first Gram (σ_min below the Cholesky test's resolution, ~3e-6 at m = 300), it is
    certified once more as soon as the schedule's own lower end is resolvable (helper study,
    benchmarks/results/polynomials), and the rest of the schedule is re-planned from there."""
    m = G0.shape[0]
    X = A1.to(dtype)
    F = torch.eye(m, dtype=dtype, device=A1.device)
    G = G0.to(dtype)
    bound = 2.0 * poly.cholesky_error_bound(m, torch.float64)
    tests = 0
    tf32 = A1.device.type == "cuda" and dtype == torch.float32
    old = torch.backends.cuda.matmul.allow_tf32 if tf32 else None
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        i = 0
        while i < len(steps):
            st = steps[i]
            if i > 0:
                G = _gram(X, side)
                if recertify and st.lo >= bound * st.hi:
                    recertify = False
                    G64 = G.double() if dtype == torch.float64 else _gram(X.double(), side)
                    ell, t = certify_lower_bound(G64, hi=st.hi * (1 + st.margin), floor=st.lo)
                    tests += t
                    if ell > st.lo:
                        steps = steps[:i] + _schedule(ell, st.hi * (1 + st.margin), delta)
                        st = steps[i]
            X, F = lift_step(X, F, G, st.poly.coefficients, side=side,
                             update_x=i < len(steps) - 1)
            i += 1
    finally:
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = old
    return F, steps, tests


def _inverse(Gh: torch.Tensor, steps, allow_truncation: bool = True,
             planned_exactly: bool = False):
    """Cholesky of the lifted Gram when it is as well conditioned as the lift promised; else an
    eigendecomposition with the numerically null directions (not lifted: below rcond) dropped.
    ``planned_exactly``: the lift's interval came from exact eigenvalues of a full-rank A in
    float64, so the promise needs no second check (the answer's certificate comes after)."""
    lo = steps[-1].lo_next if steps else 1.0
    fac, info = torch.linalg.cholesky_ex(Gh)
    if int(info) == 0 and planned_exactly:
        return ("cholesky", fac), 0
    if int(info) == 0 and Gh.shape[0] <= SMALL_EXACT_NORM:
        lam = torch.linalg.eigvalsh(Gh)
        need = 0.25 * lo * lo if allow_truncation else 1e-6 * float(lam[-1])
        if float(lam[0]) >= need:
            return ("cholesky", fac), 0
    elif int(info) == 0:
        # λ_min by inverse iteration (cheap m² steps with the factor): the lift promised ≥ lo²;
        # a float32 lift may fall short and is still usable for the exact float64 finish while
        # the Gram stays well inside float64's reach (refinement converges at ~eps·cond)
        x = torch.ones(Gh.shape[0], 1, dtype=Gh.dtype, device=Gh.device)
        for _ in range(8):
            x = torch.cholesky_solve(x, fac)
            x = x / torch.linalg.vector_norm(x)
        lam_min = float((x.T @ Gh @ x).squeeze())
        need = 0.25 * lo * lo if allow_truncation else 1e-6 * float(Gh.diagonal().max())
        if lam_min >= need:
            return ("cholesky", fac), 0
    if not allow_truncation:
        return None, 0
    lam, V = torch.linalg.eigh(Gh)
    keep = lam > 0.25 * lo * lo * float(lam.max())
    inv_lam = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)),
                          torch.zeros_like(lam))
    return ("eigh", (V, inv_lam)), int((~keep).sum())


# ------------------------------------------------------------------------------------------------
# solve(problem, "eagle") on a linear system
# ------------------------------------------------------------------------------------------------
def fast_path_applies(problem, opts: SolveOptions, *, sketch_size, eta, gamma, norm, accelerate,
                      method_name: str) -> bool:
    """EAGLE on ``W A = B`` (C = I) with nothing that needs the iteration itself: no sketch,
    default step sizes and normalisation, no per-iteration control (a callback, an iteration cap
    below :data:`FAST_PATH_MIN_ITER`). A ``time_budget`` is checked after the factorization and
    the refinement (the lift itself, ~15 products, is not interrupted)."""
    from ..control import identity_c
    return (opts.fast_path and method_name == "eagle" and sketch_size is None and eta is None
            and gamma == 1.0 and norm == "auto" and not accelerate and opts.callback is None
            and opts.max_iter >= FAST_PATH_MIN_ITER and identity_c(problem))


#: the fast path takes at most ~15 lift steps and MAX_REFINE refinements; a smaller max_iter is a
#: request for the step-by-step iteration (which honours the cap exactly)
FAST_PATH_MIN_ITER = 32


def eagle_fast(problem, opts: SolveOptions, *, rcond: Optional[float]) -> SolveResult:
    """The linear-system fast path of ``solve(problem, "eagle")`` (C = I, so D = W): factorize,
    solve, certify (see the module docstring). Status ``converged`` only when the check on the
    true residual passed; ``inexact`` otherwise (the caller falls back to the C/D iteration)."""
    t0 = time.perf_counter()
    dev = resolve_device(opts.device)
    f = factorize(problem.A, precision=opts.precision, rcond=rcond, device=str(dev))
    want_ref = opts.record_error or opts.target_error is not None
    ref = problem.reference if want_ref else None
    hist = History()
    for _ in range(f.info.lift_steps):           # the lift: no iterate of D yet
        hist.append(float("nan"), float("nan"), time.perf_counter() - t0)
    state = {"prev": None}
    B_t, eb = f._unit(problem.B, "B")

    def on_step(k, W1, check):
        W = f._unscale(W1, eb).cpu().numpy()
        step = float("nan") if state["prev"] is None else \
            float(np.linalg.norm(W - state["prev"]) / max(np.linalg.norm(W), 1e-300))
        state["prev"] = W
        err = problem.error(W) if ref is not None else float("nan")
        hist.append(step, err, time.perf_counter() - t0,
                    residual=check if opts.target_residual is not None else float("nan"))

    W1, refinements, check, passed = f._refine(B_t, opts.tol, opts.target_residual, MAX_REFINE,
                                               on_step)
    W = f._unscale(W1, eb).cpu().numpy().astype(problem.dtype, copy=False)
    error = problem.error(W) if ref is not None else float("nan")
    if opts.target_error is not None:
        passed = error <= opts.target_error      # on the answer returned, not on any step's
    dtype_note = {}
    if problem.dtype == np.float32:
        dtype_note["note"] = "float32 problem: lifted and refined in float64, returned as float32"
    status = Status.CONVERGED if passed else Status.INEXACT
    if not passed and opts.time_budget is not None \
            and time.perf_counter() - t0 >= opts.time_budget:
        status = Status.TIME_BUDGET               # no time left for the C/D iteration either
    info = {"fast_path": True, "side": f.info.side, "lift_dtype": f.info.lift_dtype,
            "lift_steps": f.info.lift_steps, "refinements": refinements, "ell": f.info.ell,
            "certified_tests": f.info.certified_tests, "truncated": f.info.truncated,
            "amplification": f.info.amplification,
            "gemm_equivalents": f.info.gemm_equivalents, "check": check,
            "check_rule": ("relative residual ‖W A − B‖/‖B‖" if opts.target_residual is not None
                           else "target_error on the float64 reference" if opts.target_error
                           is not None else "min(S1, S2) of LSQR on B − W A"),
            "device": str(dev), "rcond": rcond if rcond is not None else default_rcond(torch.float64),
            **({"lift_fallback": f.info.fallback} if f.info.fallback else {}), **dtype_note}
    if opts.target_residual is not None:
        info["rel_residual"] = check
    return SolveResult(D=W, status=status, iterations=len(hist), time_s=time.perf_counter() - t0,
                       history=hist, method="eagle", regime="centralized",
                       error=error, info=info)
