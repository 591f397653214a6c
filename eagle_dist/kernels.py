"""The EAGLE update — the one place the iteration lives.

Every regime (centralized, sketched, distributed) and every backend (in-process, torch.distributed,
Ray) calls :func:`eagle_update`. Gradient descent and SGD are the same update with ``eta = 0``.
This module imports nothing from the rest of the package.

One iteration, with ``S`` a ``d x r`` sketch (identity when unsketched)::

    Ã = A S,   B̃ = B S
    A ← s · (A − η ρ Ã ÃᵀÃ Sᵀ)
    B ← s · (B − η ρ B̃ ÃᵀÃ Sᵀ)
    C ← C − γ ρ Ã Ãᵀ C
    D ← D + γ ρ B̃ Ãᵀ C                  # every right-hand side uses the OLD A, B, C

``s`` is an optional rescale (the numerically stable form: with ``‖A‖₂ = 1``, ``ρ = 1`` and
``η ≤ 1/3`` the factor ``s = 1/(1 − η)`` keeps ``‖A‖₂ = 1`` exactly; for ``η = 1/3`` this is the
Newton–Schulz polar iteration ``A ← A (3/2 I − 1/2 AᵀA)``). Scaling A and B jointly leaves
``B A⁺`` unchanged, so ``D + B A⁺ C`` is invariant along the iteration.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
from typing import Optional, Tuple

import torch

Tensor = torch.Tensor
Blocks = Tuple[Tensor, Tensor, Tensor, Tensor]


def eagle_update(
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    *,
    eta: float,
    gamma: float,
    rho: float,
    sketch: Optional[Tensor] = None,
    scale: float = 1.0,
    update_ab: bool = True,
    filter_order: int = 0,
    gram: Optional[Tensor] = None,
    cross: Optional[Tensor] = None,
) -> Blocks:
    """One EAGLE UPDATE; returns new ``(A, B, C, D)`` and never modifies its inputs.

    Args:
        A, B, C, D: blocks of shapes ``(n, d)``, ``(n', d)``, ``(n, d')``, ``(n', d')``.
        eta, gamma: step sizes of the (A, B) and (C, D) updates.
        rho: ``1 / ‖A S‖₂²`` (or 1 in the normalised, rescaled form).
        sketch: ``None`` (S = I), a 1-D integer tensor of sampled column indices (S = columns of
            the identity), or a ``(d, r)`` floating tensor with orthonormal columns.
        scale: factor ``s`` applied to the new A and B (see module docstring).
        update_ab: ``False`` skips the A/B update (the accelerated variant, once A is well
            conditioned; also used by gradient descent where ``eta = 0``).
        gram, cross: the *Gram mode* of distributed EAGLE: ``A`` and ``B`` are one worker's column
            shard, and ``gram = A Aᵀ`` (n x n) and ``cross = B Aᵀ`` (n' x n) of the WHOLE matrix
            are given (all-reduced sums of the shards' products). The update is then exactly the
            centralized one restricted to the shard's columns (``A AᵀA`` restricted to them is
            ``(A Aᵀ) A^μ``), with the replicated C and D updated identically on every worker.
        filter_order: ``m = 0`` is the paper's C/D step (``ρ ÃÃᵀ C``); ``m ≥ 1`` the *filtered*
            step ``C ← C − γρ^{m+1} (ÃÃᵀ)^{m+1} C``, ``D ← D + γρ^{m+1} B̃ (ÃᵀÃ)^m Ãᵀ C``.

    Why the filter (``filter_order=1``, what the solvers use): the invariant ``D + B A⁺ C`` holds
    for any step of the form ``C ← C − A M``, ``D ← D + B A⁺ A M``, so both steps reach the same
    ``D̂``; on directions the iteration has already lifted (σ ≈ 1) they are identical. They differ
    on numerically-null directions. Rounding leaves singular values ``σ₀ ≈ eps·‖A‖`` where A is
    rank-deficient, the rescaled update multiplies them by ``s = 1/(1 − η)`` per step, and a
    right-hand side B with a component ``b`` outside A's row space (noisy least squares with
    collinear features) is multiplied by the same ``s``. The paper's D-step then adds
    ``b·σ₀·s^{2ℓ}`` per step — O(1) by the time the numerical-rank guard freezes A at
    ``σ ≈ sqrt(eps)`` (seen: error 4e-13 at iteration 16, 487 at 1,000). The filtered step adds
    ``b·σ₀³·s^{4ℓ}``, which stays at ``b·eps`` (same example: 2e-12 after 1,000 iterations),
    while iteration counts on well-posed problems are unchanged (κ = 1e2 / 1e4 / 1e6, n = 240:
    16 / 28 / 39 against 16 / 27 / 39 to 1e-10). Cost: one extra ``d x d x d'`` (or ``n x n x
    d'``) product with the Gram matrix the A-update forms anyway; two extra thin products when
    A and B are frozen.
    """
    if filter_order not in (0, 1, 2, 3):
        raise ValueError(f"filter_order={filter_order!r}; use 0 (the paper's step) or 1-3 (filtered)")
    if sketch is None:
        At, Bt = A, B                                           # (n, d), (n', d)
    elif sketch.dtype in (torch.int64, torch.int32):
        At, Bt = A.index_select(1, sketch), B.index_select(1, sketch)   # (n, r), (n', r)
    else:
        At, Bt = A @ sketch, B @ sketch                         # (n, r), (n', r)
    do_ab = update_ab and eta != 0.0
    c = -eta * rho

    if gram is not None:
        if sketch is not None or cross is None:
            raise ValueError("gram= needs cross= (B Aᵀ) and no sketch")
        return _outer_update(A, B, C, D, gram, cross, None, eta=eta, gamma=gamma, rho=rho,
                             scale=scale, do_ab=do_ab, m=filter_order)
    if do_ab and sketch is None and A.shape[1] > A.shape[0]:
        # d > n: work with the (n, n) outer Gram K = A Aᵀ, cheaper than the (d, d) one
        sym = symmetric_blas(A) if B.is_contiguous() else None   # CPU SYRK/SYMM, see below
        K = sym.outer_gram(A) if sym is not None else A @ A.T        # SYRK: one triangle
        return _outer_update(A, B, C, D, K, B @ A.T, sym, eta=eta, gamma=gamma, rho=rho,
                             scale=scale, do_ab=do_ab, m=filter_order)
    T = At.T @ C                                                # (r, d') — uses the OLD C
    G = sym = None
    if do_ab:
        if sketch is None:
            sym = symmetric_blas(A) if B.is_contiguous() else None
            G = sym.gram(A) if sym is not None else A.T @ A     # (d, d); SYRK: one triangle
        else:
            G = At.T @ At                                        # (r, r)

    m = filter_order
    if m == 0:
        C_new = torch.addmm(C, At, T, alpha=-gamma * rho)       # C − γρ Ã ÃᵀC
        D_new = torch.addmm(D, Bt, T, alpha=gamma * rho)        # D + γρ B̃ ÃᵀC
    else:
        U = T
        for _ in range(m):
            if G is not None:                                    # (ÃᵀÃ) U
                U = (sym.right_multiply(U.T.contiguous(), G, alpha=1.0, beta=0.0).T
                     if sym is not None else G @ U)              # (r, d')
            else:                                                # frozen: two thin products
                U = At.T @ (At @ U)
        r2 = gamma * rho ** (m + 1)
        C_new = torch.addmm(C, At, U, alpha=-r2)
        D_new = torch.addmm(D, Bt, U, alpha=r2)

    if not do_ab:
        if scale != 1.0:
            return A * scale, B * scale, C_new, D_new
        return A, B, C_new, D_new

    c = -eta * rho
    if sketch is None:
        if sym is not None:
            # SYRK + SYMM: the Gram's n·d² flops are counted once (a GEMM would form both
            # triangles, 2·n·d²), and SYMM folds the rescale ``s`` in: 3·n·d² flops in all
            return (sym.right_multiply(A, G, alpha=scale * c, beta=scale),
                    sym.right_multiply(B, G, alpha=scale * c, beta=scale), C_new, D_new)
        A_new = torch.addmm(A, A, G, alpha=c)                    # A (I − ηρ AᵀA)
        B_new = torch.addmm(B, B, G, alpha=c)
    else:
        dA = At @ G                                              # (n, r)
        dB = Bt @ G                                              # (n', r)
        if sketch.dtype in (torch.int64, torch.int32):
            A_new = A.index_add(1, sketch, dA, alpha=c)          # only the sampled columns move
            B_new = B.index_add(1, sketch, dB, alpha=c)
        else:
            A_new = torch.addmm(A, dA, sketch.T, alpha=c)
            B_new = torch.addmm(B, dB, sketch.T, alpha=c)
    if scale != 1.0:
        A_new.mul_(scale)                                        # fresh tensors: safe in place
        B_new.mul_(scale)
    return A_new, B_new, C_new, D_new


def lift_step(X: Tensor, F: Tensor, G: Tensor, coeffs, *, side: str = "right",
              update_x: bool = True) -> Tuple[Tensor, Tensor]:
    """The A-update of EAGLE as an odd polynomial in Gram form, with its accumulated factor.

    ``P = a I + b G + c G²`` with ``G = XᵀX`` (``side="right"``: ``X ← X P``, ``F ← F P``) or
    ``G = X Xᵀ`` (``"left"``: ``X ← P X``, ``F ← P F``), so ``X = X₀ F`` (or ``F X₀``) and the
    singular values of X are mapped by ``σ → aσ + bσ³ + cσ⁵``. EAGLE's stable update
    (:func:`eagle_update` with ``η = 1/3``, ``ρ = 1``, rescale ``3/2``) is ``(a, b, c) =
    (3/2, −1/2, 0)``; the linear-system fast path (:mod:`eagle_dist.solvers.factor`) uses greedy
    minimax quintics (:mod:`eagle_dist.polynomials`) and keeps F instead of B. ``update_x=False``
    updates F only (the last step, whose X is not needed). Never modifies its inputs."""
    a, b, c = (float(v) for v in coeffs)
    P = G * b
    if c != 0.0:
        P = torch.addmm(P, G, G, alpha=c)                        # b G + c G²      (m, m)
    P.diagonal().add_(a)                                         # + a I
    if side == "right":
        return (X @ P if update_x else X), F @ P
    if side != "left":
        raise ValueError(f"side={side!r}; use 'right' (X P) or 'left' (P X)")
    return (P @ X if update_x else X), P @ F


def _outer_update(A, B, C, D, K, BAt, sym, *, eta, gamma, rho, scale, do_ab, m) -> Blocks:
    """:func:`eagle_update` from the outer Gram ``K = A Aᵀ`` and ``BAt = B Aᵀ``: the d > n form,
    and the Gram mode of distributed EAGLE (K, BAt all-reduced over shards; then it never needs
    the other shards' columns, since ``A AᵀA`` restricted to a shard is ``(A Aᵀ) A^μ``).
    ``sym``: SYRK/SYMM routines when K holds one triangle only."""
    def kmul(X):
        return sym.left_multiply(K, X.contiguous(), alpha=1.0, beta=0.0) if sym is not None else K @ X

    KC = C
    for _ in range(m):
        KC = kmul(KC)                                            # K^m C
    r = gamma * rho ** (m + 1)
    C_new = torch.sub(C, kmul(KC), alpha=r)                      # C − γρ^{m+1} (AAᵀ)^{m+1} C
    D_new = torch.addmm(D, BAt, KC, alpha=r)                     # D + γρ^{m+1} B Aᵀ (AAᵀ)^m C
    if not do_ab:
        if scale != 1.0:
            return A * scale, B * scale, C_new, D_new
        return A, B, C_new, D_new
    c = -eta * rho
    if sym is not None:
        A_new = sym.left_multiply(K, A, alpha=scale * c, beta=scale)
    else:
        A_new = torch.addmm(A, K, A, alpha=c).mul_(scale)        # (I − ηρ AAᵀ) A = A (I − ηρ AᵀA)
    B_new = torch.addmm(B, BAt, A, alpha=c).mul_(scale)          # B AᵀA = (B Aᵀ) A
    return A_new, B_new, C_new, D_new


# ------------------------------------------------------------------------------------------------
# Symmetric products (CPU): the Gram matrix by SYRK and its product by SYMM.
#
# torch forms ``A.T @ A`` with a general GEMM (2·n·d² flops) although only one triangle is needed
# (n·d², SYRK); torch exposes neither SYRK nor SYMM, but CPU builds of torch on x86-64 carry MKL,
# whose Fortran-interface routines are reachable through ctypes. Measured here (2-core EPYC, MKL,
# n = d ∈ {500, 2000}, float32/64): SYRK 0.62-0.80 GEMM-times, the whole update 1.15-1.41 x the
# 3·n·d² floor against 1.38-1.52 with GEMMs (benchmarks/results/gemm). Used only where it works: a
# numerical self-test runs once per dtype, anything unexpected (another BLAS, big-endian, autograd,
# GPU, non-contiguous or small blocks) takes the plain torch path. ``EAGLE_DIST_SYMMETRIC_BLAS=0``
# or :func:`use_symmetric_blas` switches it off. On GPUs torch's cuBLAS GEMMs are used as they are.
# ------------------------------------------------------------------------------------------------
SYMMETRIC_MIN_DIM = 400         # measured crossover: below ~400 the ctypes path was no faster


class _SymmetricBlas:
    """``?syrk`` / ``?symm`` of one precision, called on row-major torch tensors.

    A C-contiguous ``(m, k)`` tensor is, to column-major BLAS, its transpose ``(k, m)`` with leading
    dimension ``k``; every routine below is written in that view. Integers are passed as 64-bit:
    on a little-endian machine an LP64 BLAS reads the low 32 bits of the same value.
    """

    def __init__(self, syrk, symm, ctype, dtype):
        self._syrk, self._symm, self._ct, self.dtype = syrk, symm, ctype, dtype

    @staticmethod
    def _i(v: int):
        return ctypes.byref(ctypes.c_int64(v))

    def _call_syrk(self, trans: bytes, N: int, K: int, X: Tensor, lda: int) -> Tensor:
        G = torch.empty(N, N, dtype=X.dtype)                     # beta = 0: never read
        self._syrk(ctypes.c_char_p(b"U"), ctypes.c_char_p(trans), self._i(N), self._i(K),
                   ctypes.byref(self._ct(1.0)), ctypes.c_void_p(X.data_ptr()), self._i(lda),
                   ctypes.byref(self._ct(0.0)), ctypes.c_void_p(G.data_ptr()), self._i(N))
        return G

    def gram(self, A: Tensor) -> Tensor:
        """``AᵀA`` (d, d) for A (n, d); only one triangle is set — pass it to the multiplies below."""
        n, d = A.shape
        return self._call_syrk(b"N", d, n, A, d)                 # Aᵀ (d x n col-major) · A

    def outer_gram(self, A: Tensor) -> Tensor:
        """``AAᵀ`` (n, n) for A (n, d); only one triangle is set."""
        n, d = A.shape
        return self._call_syrk(b"T", n, d, A, d)

    def _call_symm(self, side: bytes, M: int, N: int, S: Tensor, lds: int, X: Tensor,
                   alpha: float, beta: float) -> Tensor:
        Y = X.clone()                                            # C = X, scaled by beta in place
        self._symm(ctypes.c_char_p(side), ctypes.c_char_p(b"U"), self._i(M), self._i(N),
                   ctypes.byref(self._ct(alpha)), ctypes.c_void_p(S.data_ptr()), self._i(lds),
                   ctypes.c_void_p(X.data_ptr()), self._i(M), ctypes.byref(self._ct(beta)),
                   ctypes.c_void_p(Y.data_ptr()), self._i(M))
        return Y

    def right_multiply(self, X: Tensor, G: Tensor, *, alpha: float, beta: float) -> Tensor:
        """``β X + α X G`` for X (m, d), G (d, d) from :meth:`gram`."""
        m, d = X.shape
        return self._call_symm(b"L", d, m, G, d, X, alpha, beta)  # Yᵀ = β Xᵀ + α G Xᵀ

    def left_multiply(self, K: Tensor, X: Tensor, *, alpha: float, beta: float) -> Tensor:
        """``β X + α K X`` for X (n, d), K (n, n) from :meth:`outer_gram`."""
        n, d = X.shape
        return self._call_symm(b"R", d, n, K, n, X, alpha, beta)  # Yᵀ = β Xᵀ + α Xᵀ K

    def works(self) -> bool:
        """Compare every routine with torch on small random blocks (tall and wide)."""
        g = torch.Generator().manual_seed(0)
        tol = 1e3 * torch.finfo(self.dtype).eps
        for n, d in ((7, 5), (5, 7)):
            A = torch.randn(n, d, generator=g, dtype=self.dtype)
            G, K = A.T @ A, A @ A.T
            checks = ((self.right_multiply(A, self.gram(A), alpha=-0.3, beta=1.5), 1.5 * A - 0.3 * A @ G),
                      (self.left_multiply(self.outer_gram(A), A, alpha=-0.3, beta=1.5),
                       1.5 * A - 0.3 * K @ A))
            for got, want in checks:
                if not bool(torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max()))):
                    return False
        return True


_SYMMETRIC: dict = {}
_SYMMETRIC_ENABLED = os.environ.get("EAGLE_DIST_SYMMETRIC_BLAS", "1") != "0"


def use_symmetric_blas(enabled: bool) -> bool:
    """Switch the SYRK/SYMM path on or off (benchmarks compare both); returns the old setting."""
    global _SYMMETRIC_ENABLED
    old, _SYMMETRIC_ENABLED = _SYMMETRIC_ENABLED, bool(enabled)
    return old


def symmetric_blas_found(dtype: torch.dtype = torch.float64) -> bool:
    """Whether torch's BLAS exports SYRK/SYMM for ``dtype`` and they pass their self-test."""
    if dtype not in _SYMMETRIC:
        _SYMMETRIC[dtype] = _load_symmetric(dtype)
    return _SYMMETRIC[dtype] is not None


def symmetric_blas_available(dtype: torch.dtype = torch.float64) -> bool:
    """Whether the SYRK/SYMM path is used for ``dtype`` on CPU: found, self-tested, and faster than
    torch's GEMM in the one-time timing (:data:`SYRK_TIMING`)."""
    if not symmetric_blas_found(dtype):
        return False
    if dtype not in _SYRK_PAYS:
        try:
            _SYRK_PAYS[dtype] = _syrk_pays(_SYMMETRIC[dtype], dtype)
        except Exception:  # noqa: BLE001 - any surprise means: use the torch path
            _SYRK_PAYS[dtype] = False
    return _SYRK_PAYS[dtype]


def _load_symmetric(dtype: torch.dtype) -> Optional[_SymmetricBlas]:
    if sys.byteorder != "little":
        return None
    p = "d" if dtype == torch.float64 else "s"
    ct = ctypes.c_double if dtype == torch.float64 else ctypes.c_float
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return None

    def find(name):
        for sym in (f"{p}{name}_", f"{p}{name}", f"mkl_blas_{p}{name}"):
            f = getattr(lib, sym, None)
            if f is not None:
                f.restype = None
                return f
        return None

    syrk, symm = find("syrk"), find("symm")
    if syrk is None or symm is None:
        return None
    blas = _SymmetricBlas(syrk, symm, ct, dtype)
    try:
        return blas if blas.works() else None
    except Exception:  # noqa: BLE001 - any surprise means: use the torch path
        return None


#: size of the one-time timing that decides whether SYRK beats torch's GEMM for a Gram matrix
SYRK_PROBE_DIM = 512
#: the measured outcome per dtype: (syrk seconds, gemm seconds), for reports
SYRK_TIMING: dict = {}
_SYRK_PAYS: dict = {}


def _syrk_pays(blas: "_SymmetricBlas", dtype: torch.dtype) -> bool:
    """Chosen by measurement, not by availability: the Gram of a 512 x 512 block by SYRK and by
    torch's GEMM, best of 3 interleaved repeats, once per process and dtype. SYRK does half the
    flops but may run slower (a GEMM kernel better tuned for this CPU: the whole SYRK/SYMM update
    was 7 % slower than plain GEMMs at n = 2000 on an AMD Zen 3 core); it is used only if it wins."""
    import time
    g = torch.Generator().manual_seed(1)
    X = torch.randn(SYRK_PROBE_DIM, SYRK_PROBE_DIM, generator=g, dtype=dtype)
    best_s = best_g = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        blas.gram(X)
        t1 = time.perf_counter()
        X.T @ X
        t2 = time.perf_counter()
        best_s, best_g = min(best_s, t1 - t0), min(best_g, t2 - t1)
    SYRK_TIMING[dtype] = (best_s, best_g)
    return best_s < best_g


def symmetric_blas(A: Tensor) -> Optional[_SymmetricBlas]:
    """The SYRK/SYMM routines for ``A`` when they apply, else ``None`` (use torch's GEMMs)."""
    if (not _SYMMETRIC_ENABLED or A.device.type != "cpu"
            or A.dtype not in (torch.float32, torch.float64)
            or min(A.shape) < SYMMETRIC_MIN_DIM or not A.is_contiguous()
            or (A.requires_grad and torch.is_grad_enabled())):
        return None
    return _SYMMETRIC[A.dtype] if symmetric_blas_available(A.dtype) else None


def spectral_norm_sq(
    M: Tensor, *, iters: int = 30, v0: Optional[Tensor] = None, rtol: float = 1e-6
) -> Tuple[float, Tensor]:
    """Estimate ``‖M‖₂²`` by power iteration on ``MᵀM`` (two mat-vecs per step, no Gram formed).

    Returns ``(estimate, v)`` where ``v`` is the last right singular vector estimate, to warm-start
    the next call. Stops when the estimate changes by less than ``rtol`` (relative) or after
    ``iters`` steps. The estimate is a lower bound that converges from below. On the CPU with
    ``min(M.shape) ≤`` :data:`EXACT_NORM_MAX_DIM` the value is exact instead (an ``eigh`` of the
    smaller Gram; ``iters``, ``v0`` and ``rtol`` are then not used) and ``v`` is a top right
    singular vector.
    """
    d = M.shape[1]
    if min(M.shape) <= EXACT_NORM_MAX_DIM and M.device.type == "cpu" and M.numel() > 0:
        return _spectral_norm_sq_exact(M)
    if v0 is None or v0.shape[0] != d:
        gen = torch.Generator(device="cpu").manual_seed(d)
        v = torch.randn(d, generator=gen, dtype=M.dtype).to(M.device)
    else:
        v = v0
    v = v / torch.linalg.vector_norm(v)
    est = 0.0
    for _ in range(iters):
        # ‖MᵀM v‖ = ‖M v‖ · ‖Mᵀ u‖ with u = M v / ‖M v‖: normalising in between keeps every
        # tensor at the scale of ‖M‖, not ‖M‖², and the vector norms are summed in float64, so
        # float32 data with ‖M‖ beyond ~1e19 (or below ~1e-19) neither overflows to inf nor
        # underflows to 0 (which made EAGLE zero A and B and report "converged" with D = 0).
        u = M @ v
        nu = float(torch.linalg.vector_norm(u, dtype=torch.float64))
        if nu == 0.0:
            return 0.0, v
        w = M.T @ (u / nu)
        nw = float(torch.linalg.vector_norm(w, dtype=torch.float64))
        if nw == 0.0:
            return 0.0, v
        nrm = nu * nw
        v = w / nw
        if abs(nrm - est) <= rtol * nrm:
            est = nrm
            break
        est = nrm
    return est, v


#: up to this smaller dimension ‖M‖₂² is computed exactly, from the eigen-decomposition of the
#: smaller Gram (float64, power-of-two scaled): on this CPU it costs 0.16 ms at 50 x 50 and
#: 0.6 ms at 100 x 100, where 200 power steps (two mat-vecs and two host syncs each) cost 5-8 ms
#: on a Gaussian matrix; past ~128 the power iteration's few steps on a gapped spectrum win
EXACT_NORM_MAX_DIM = 128


def _spectral_norm_sq_exact(M: Tensor) -> Tuple[float, Tensor]:
    """``(‖M‖₂², v)`` exactly (to rounding), for small ``min(M.shape)``: scaled by the power of two
    nearest ``max|M|`` so that neither the Gram nor its entries overflow or underflow."""
    X = M.detach().to(torch.float64)
    m = float(X.abs().max())
    d = M.shape[1]
    if m == 0.0 or not math.isfinite(m):
        v = torch.zeros(d, dtype=M.dtype, device=M.device)
        v[0] = 1.0
        return (0.0 if m == 0.0 else m), v
    s = 2.0 ** math.floor(math.log2(m))
    X = X / s
    n = X.shape[0]
    if d <= n:
        w, V = torch.linalg.eigh(X.T @ X)
        lam, v = float(w[-1]), V[:, -1]
    else:
        w, U = torch.linalg.eigh(X @ X.T)
        lam, v = float(w[-1]), X.T @ U[:, -1]
        nv = float(torch.linalg.vector_norm(v))
        v = v / nv if nv > 0.0 else v
    return max(lam, 0.0) * s * s, v.to(M.dtype)


def orthonormal_sketch(d: int, r: int, *, generator: torch.Generator, dtype, device) -> Tensor:
    """A ``(d, r)`` matrix with orthonormal columns, Haar-distributed (QR of a Gaussian)."""
    G = torch.randn(d, r, generator=generator, dtype=dtype, device="cpu")
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)           # sign fix makes Q Haar
    return Q.to(device)


def sampling_sketch(d: int, r: int, *, generator: torch.Generator, device) -> Tensor:
    """``r`` distinct column indices out of ``d``, uniformly at random (S = those identity columns)."""
    return torch.randperm(d, generator=generator)[:r].sort().values.to(device)


def default_rcond(dtype: torch.dtype) -> float:
    """The numerical-rank cut-off: ``sqrt(eps)`` (1.5e-8 in float64, κ up to 6.7e7 resolved;
    3.5e-4 in float32)."""
    return math.sqrt(torch.finfo(dtype).eps)


def lift_point(dtype: torch.dtype, eta: float = 1.0 / 3.0, sketch_fraction: float = 1.0,
               rcond: Optional[float] = None) -> int:
    """A/B updates after which every singular value ``σ ≥ rcond·σ_max`` of the start has been
    lifted to at least 1/2 (the update multiplies small ones by ``1/(1 − η)`` per step): from
    here on the D-step bounds the remaining error, so a tol-based stop can be certified.
    44 in float64 for η = 1/3. Scales by ``d/r`` with a sketch."""
    if eta <= 0.0:
        return 0
    rcond = default_rcond(dtype) if rcond is None else rcond
    steps = math.log(0.5 / rcond) / math.log(1.0 / (1.0 - eta))
    return int(math.ceil(max(steps, 0.0) / max(sketch_fraction, 1e-12)))


def well_conditioned(A: Tensor, lam_max: float = 1.0, margin: float = 0.25) -> bool:
    """True when A has full rank ``min(n, d)`` and every singular value satisfies
    ``σ² ≥ (1 − sqrt(margin))·lam_max``, checked as ``‖I − G/lam_max‖_F² ≤ margin`` on the smaller
    Gram ``G`` (one Gram product: the cost of one iteration). With ``lam_max = ‖A‖₂²`` and the
    default margin this certifies ``σ²_min ≥ σ²_max / 2``. Rank-deficient or ill-conditioned A
    gives False (a null or tiny direction alone contributes ≈ 1)."""
    n, d = A.shape
    G = A.T @ A if d <= n else A @ A.T
    if lam_max <= 0.0 or not math.isfinite(lam_max):
        return False
    G = G / lam_max
    G.diagonal().sub_(1.0)
    return float(torch.linalg.vector_norm(G, dtype=torch.float64)) ** 2 <= margin


def lift_cap(dtype: torch.dtype, eta: float = 1.0 / 3.0, sketch_fraction: float = 1.0,
             rcond: Optional[float] = None) -> int:
    """How many A/B updates to run before freezing A and B (the numerical-rank guard).

    The normalised update multiplies a small singular value by ``1/(1 − η)`` per step (1.5 for
    η = 1/3), so it also lifts *rounding noise*: a numerically-zero direction at ``eps·‖A‖`` reaches
    O(1) after ``log(1/eps)/log(1.5) ≈ 90`` float64 steps, and B's equally noisy component there
    turns ``B A⁺`` into garbage (seen on a rank-deficient shard of HB/well1850: error 0.017 at
    step 70, 15.6 at step 110). We lift down to ``sqrt(eps)`` — like pinv's cut-off, it treats
    singular values below ``sqrt(eps)·σ_max`` (κ > 6.7e7 in float64, 2.9e3 in float32) as zero —
    plus 6 steps for the quadratic phase, then stop updating A and B; the C/D updates go on.
    With a sketch only a fraction ``r/d`` of the columns moves per step, so the cap scales by
    ``d/r``.
    """
    if eta <= 0.0:
        return 0
    rcond = default_rcond(dtype) if rcond is None else rcond
    steps = math.log(1.0 / rcond) / math.log(1.0 / (1.0 - eta))
    return int(math.ceil((max(steps, 0.0) + 6) / max(sketch_fraction, 1e-12)))
