"""The EAGLE update — the one place the iteration lives (SPEC §2, the paper's Algorithm 1).

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

import math
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
) -> Blocks:
    """One EAGLE UPDATE; returns new ``(A, B, C, D)`` and never modifies its inputs.

    Args:
        A, B, C, D: blocks of shapes ``(n, d)``, ``(n', d)``, ``(n, d')``, ``(n', d')``.
        eta, gamma: step sizes of the (A, B) and (C, D) updates.
        rho: ``1 / ‖A S‖₂²`` (or 1 in the normalised, rescaled form).
        sketch: ``None`` (S = I), a 1-D integer tensor of sampled column indices (S = columns of
            the identity), or a ``(d, r)`` floating tensor with orthonormal columns.
        scale: factor ``s`` applied to the new A and B (see module docstring).
        update_ab: ``False`` skips the A/B update (the accelerated variant, SPEC §2b, once A is
            well conditioned; also used by gradient descent where ``eta = 0``).
    """
    if sketch is None:
        At, Bt = A, B                                           # (n, d), (n', d)
    elif sketch.dtype in (torch.int64, torch.int32):
        At, Bt = A.index_select(1, sketch), B.index_select(1, sketch)   # (n, r), (n', r)
    else:
        At, Bt = A @ sketch, B @ sketch                         # (n, r), (n', r)

    T = At.T @ C                                                # (r, d') — uses the OLD C
    C_new = torch.addmm(C, At, T, alpha=-gamma * rho)           # C − γρ Ã ÃᵀC
    D_new = torch.addmm(D, Bt, T, alpha=gamma * rho)            # D + γρ B̃ ÃᵀC

    if not update_ab or eta == 0.0:
        if scale != 1.0:
            return A * scale, B * scale, C_new, D_new
        return A, B, C_new, D_new

    c = -eta * rho
    if sketch is None:
        n, d = A.shape
        if d <= n:
            G = A.T @ A                                          # (d, d) Gram
            A_new = torch.addmm(A, A, G, alpha=c)                # A (I − ηρ AᵀA)
            B_new = torch.addmm(B, B, G, alpha=c)
        else:
            K = A @ A.T                                          # (n, n): cheaper when d > n
            A_new = torch.addmm(A, K, A, alpha=c)                # (I − ηρ AAᵀ) A = A (I − ηρ AᵀA)
            B_new = torch.addmm(B, B @ A.T, A, alpha=c)          # B AᵀA = (B Aᵀ) A
    else:
        Gt = At.T @ At                                           # (r, r)
        dA = At @ Gt                                             # (n, r)
        dB = Bt @ Gt                                             # (n', r)
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


def spectral_norm_sq(
    M: Tensor, *, iters: int = 30, v0: Optional[Tensor] = None, rtol: float = 1e-6
) -> Tuple[float, Tensor]:
    """Estimate ``‖M‖₂²`` by power iteration on ``MᵀM`` (two mat-vecs per step, no Gram formed).

    Returns ``(estimate, v)`` where ``v`` is the last right singular vector estimate, to warm-start
    the next call. Stops when the estimate changes by less than ``rtol`` (relative) or after
    ``iters`` steps. The estimate is a lower bound that converges from below.
    """
    d = M.shape[1]
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


def orthonormal_sketch(d: int, r: int, *, generator: torch.Generator, dtype, device) -> Tensor:
    """A ``(d, r)`` matrix with orthonormal columns, Haar-distributed (QR of a Gaussian)."""
    G = torch.randn(d, r, generator=generator, dtype=dtype, device="cpu")
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)           # sign fix makes Q Haar
    return Q.to(device)


def sampling_sketch(d: int, r: int, *, generator: torch.Generator, device) -> Tensor:
    """``r`` distinct column indices out of ``d``, uniformly at random (S = those identity columns)."""
    return torch.randperm(d, generator=generator)[:r].sort().values.to(device)


def lift_cap(dtype: torch.dtype, eta: float = 1.0 / 3.0, sketch_fraction: float = 1.0) -> int:
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
    eps = torch.finfo(dtype).eps
    steps = math.log(1.0 / math.sqrt(eps)) / math.log(1.0 / (1.0 - eta))
    return int(math.ceil((steps + 6) / max(sketch_fraction, 1e-12)))
