"""The Gram mode on a linear system (``C = I``): the answer from one all-reduce, refined on the
true residual — the distributed form of the centralized fast path (:mod:`eagle_dist.solvers.factor`).

The Gram mode's EAGLE iteration moves A and B through ``K = A Aᵀ = Σ_μ A^μA^μᵀ`` and
``X = B Aᵀ`` and needs ~20–40 rounds of ``n(n+1)/2 + n′n`` numbers. For ``W A = B`` nothing needs
those rounds: every rank holds K and X after the first all-reduce and reads

    W₀ = X K⁺                      (K⁺ by a symmetric eigendecomposition, eigenvalues below
                                    (rcond·σ_max)² dropped: pinv's truncation of A)

then refines on the TRUE residual, one all-reduce of ``n′n + 1`` numbers per step,

    R^μ = B^μ − W A^μ  (each rank, its own columns),   W ← W + (Σ_μ R^μA^μᵀ) K⁺

— the corrected semi-normal equations (Björck), which converge while ``κ(A)² u < 1`` (κ up to
~1e7 in float64). The same message carries ``Σ ‖R^μ‖²``, so every step ends with LSQR's tests on
the true residual (:func:`eagle_dist.control.lsq_ratio`), accepted after at least one refinement
and only when the correction the next step would make, ``‖(R Aᵀ) K⁺‖ ≈ ‖W* − W‖``, is below
``max(tol, 10 κ u) ‖W‖`` (LSQR's tests bound the backward error, and the normal equations'
error hides where A Aᵀ is small; 10 κ u is what a backward-stable solver can promise) — or, with
``target_error``, the error against the reference. That is the only way to ``converged``.
When the refinement stalls or runs out (:data:`MAX_REFINE`), the run is NOT certified and the
caller runs the Gram-mode EAGLE iteration instead (``info["fast_path"]`` says so).

Rounds: one for (K, X), then one per check (measured: 3–4 rounds in all up to κ = 1e7, against
the iteration's 19–47, and 15–35x fewer bytes); float64 only (a float32 shard would square its
rounding into K).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch

from ..control import lsq_ratio, norm64
from ..result import Status

#: refinement steps before the path gives up (the iteration then runs)
MAX_REFINE = 8


def gram_fast_rounds(local, nq: int, n: int, comm, cfg, reference: Optional[torch.Tensor],
                     denominator: Optional[float], rcond: float,
                     on_round: Optional[Callable[[int], None]] = None):
    """Run the path on the workers this process holds; ``(output fields, W)`` when certified,
    ``None`` when not (see the module docstring). ``output fields`` feed ``RoundsOutput``."""
    opts = cfg.opts
    dev = local[0].A.device
    f64 = torch.float64
    t0 = time.perf_counter()
    iu = torch.triu_indices(n, n, device=dev)
    n_k, n_x = iu.shape[1], nq * n
    hist = dict(step=[], error=[], time=[])
    rnd, bytes_sent, bytes_per_round = 0, 0, 0

    def reduce(buf):
        nonlocal rnd, bytes_sent, bytes_per_round
        rnd += 1
        if cfg.fault is not None:
            cfg.fault.maybe_fire(local[0].rank, rnd)
        nbytes = buf.numel() * buf.element_size()
        bytes_sent += nbytes
        bytes_per_round = max(bytes_per_round, nbytes)
        out = comm(buf, "sum")
        if on_round is not None:
            on_round(rnd)
        return out

    if on_round is not None:
        on_round(0)
    buf = torch.zeros(n_k + n_x + 2, dtype=f64, device=dev)
    for w in local:
        buf[:n_k] += (w.A @ w.A.T)[iu[0], iu[1]]
        buf[n_k:n_k + n_x] += (w.B @ w.A.T).reshape(-1)
        buf[-2] += norm64(w.A) ** 2
        buf[-1] += norm64(w.B) ** 2
    buf = reduce(buf)
    K = torch.zeros(n, n, dtype=f64, device=dev)
    K[iu[0], iu[1]] = buf[:n_k]
    K = K + K.triu(1).T
    X = buf[n_k:n_k + n_x].reshape(nq, n)
    a_norm, b_norm = math.sqrt(max(float(buf[-2]), 0.0)), math.sqrt(max(float(buf[-1]), 0.0))
    lam, V = torch.linalg.eigh(K)
    lam_max = float(lam[-1])
    if not (lam_max > 0 and math.isfinite(lam_max)):
        return None                                    # the iteration names the problem
    keep = lam > (rcond ** 2) * lam_max
    Vk, inv = V[:, keep], 1.0 / lam[keep]

    def kpinv(Y: torch.Tensor) -> torch.Tensor:
        return ((Y @ Vk) * inv) @ Vk.T

    W = kpinv(X)
    # what a backward-stable solve can promise on its forward error: κ(A)·u (κ over the kept
    # directions); the correction must fall below tol or 10 κ u, whichever is larger
    kappa = math.sqrt(lam_max / float(lam[keep].min()))
    floor = max(opts.tol, 10.0 * kappa * torch.finfo(f64).eps)
    W_prev = None
    prev_dw = math.inf
    for k in range(MAX_REFINE + 1):
        buf = torch.zeros(n_x + 1, dtype=f64, device=dev)
        for w in local:
            R = w.B - W @ w.A
            buf[:n_x] += (R @ w.A.T).reshape(-1)
            buf[-1] += norm64(R) ** 2
        buf = reduce(buf)
        RA = buf[:n_x].reshape(nq, n)
        r_norm, ra = math.sqrt(max(float(buf[-1]), 0.0)), norm64(RA)
        err = float("nan")
        if reference is not None:
            diff = norm64(W - reference)
            err = diff / denominator if denominator else diff
        step = float("nan") if W_prev is None else norm64(W - W_prev) / max(norm64(W), 1e-300)
        hist["step"].append(step)
        hist["error"].append(err)
        hist["time"].append(time.perf_counter() - t0)
        dW = kpinv(RA)                                  # the CSNE correction: ≈ W* − W
        if opts.target_error is not None and reference is not None:
            passed, check = err <= opts.target_error, err
        else:
            # LSQR's tests bound the backward error; on the normal equations the forward error
            # of W₀ can still be κ² u (its error sits where A Aᵀ is small, so R Aᵀ hides it):
            # the correction it would receive, ≈ W* − W, must be below tol as well
            check = lsq_ratio(r_norm, ra, b_norm, a_norm, norm64(W))
            passed = k >= 1 and check <= opts.tol and norm64(dW) <= floor * norm64(W)
        if passed:
            fields = dict(status=Status.CONVERGED.value, rounds=rnd, history=hist,
                          bytes_per_round=bytes_per_round, setup_bytes=0,
                          time_s=time.perf_counter() - t0,
                          frozen_at=[-1] * len(local), bytes_sent=bytes_sent, mode="gram",
                          fast_path=f"gram: {k} refinement(s), {int((~keep).sum())} "
                                    "direction(s) truncated", check=check)
            return fields, W
        dw = norm64(dW)
        if not (math.isfinite(ra) and math.isfinite(dw)) or dw > 0.5 * prev_dw:
            break                                      # the correction stalled: κ² u too large
        prev_dw = dw
        W_prev, W = W, W + dW
    return None
