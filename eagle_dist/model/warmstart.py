"""The learned distributed kernel as a warm start for certified distributed EAGLE.

Run the L learned rounds (:func:`eagle_dist.model.kernel.kernel_rounds`, safeguarded), then hand
the state to distributed EAGLE as a new completion problem and add the two answers:

    D = D_L + completion(A_L, B_L, C_L)                        (D_L in EAGLE's sign)

**When is that exact?** EAGLE's own steps keep ``D_ℓ + B_ℓ A_ℓ⁺ C_ℓ = D̂`` (EAGLE's invariant): the A/B step
right-multiplies A and B by the same matrix, and the D step is ``B A⁺`` times the C step. The sum
above equals D̂ exactly when the learned rounds keep that invariant too. A learned layer adds
``[A^μ, C] R`` to the complete tokens and ``[B^μ, D_TF] R`` to the query tokens (R: the head's
``W_QK (Z_cᵀZ_c) W_VP``, restricted to the columns written). If W_Q reads no C/D feature (EAGLE's
pattern, ``W_QK = diag(α₁ I, 0)``) both rows see only ``A^μ R`` and ``B^μ R``: on consistent data
(B^μ = W* A^μ for every shard, W* = B A⁺) ``ΔB^μ = W* ΔA^μ`` and ``ΔD = W* ΔC`` (sign aside), so
``D_ℓ + W* C_ℓ`` is invariant and ``B_L = W* A_L``. The trained models put 0.5-15 % of W_QK's
energy off that pattern; the C/D part of W_Q makes the query rows read ``D_TF ≠ W* C`` and the
sum drifts (measured: 0.2-3 % of ‖D̂‖, far above 1e-8). :func:`project_queries` zeroes W_Q's
C/D rows — the mask the paper describes in words ("the incomplete columns are masked"), which the
model's key mask does not enforce — and the drift falls to rounding (1e-15) at no cost in the
learned rounds' accuracy.

Then, per mode of the EAGLE rounds (``eagle_dist.solve(..., workers=M, mode=...)``):

* ``paper``: the sub-problem is consistent (``B_L = W* A_L``), so the paper's mode converges to
  ``W* C_L = D̂ − D_L``; its probe certificate applies as to any consistent problem. On noisy
  (inconsistent) data neither the warm start nor EAGLE alone is exact in this mode.
* ``gram``: converges to ``B_L A_L⁺ C_L`` on any data; that is ``D̂ − D_L`` only if the invariant
  held (projected kernel, consistent data) — otherwise the certificate certifies the sub-problem,
  not D̂.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import numpy as np
import torch

from .kernel import kernel_rounds
from .safeguard import Safeguard
from .transformer import LinearTransformer, block_width


def project_queries(model: LinearTransformer) -> LinearTransformer:
    """A copy of a distributed model whose W_Q reads no C/D feature (each head's, or the shared,
    W_Q rows of the query columns set to 0): the learned rounds then keep ``D + B A⁺ C`` on
    consistent data (module docstring)."""
    c = model.cfg
    if c.regime != "distributed":
        raise ValueError("project_queries is for model.regime=distributed models")
    m = copy.deepcopy(model)
    dl = c.d // c.machines
    with torch.no_grad():
        for layer in m.layers:
            shared = getattr(layer, "shared", None)
            owners = [shared] if shared is not None else list(layer.heads)
            for h in owners:
                h.wq[dl:block_width(c)] = 0
    return m


def invariant_drift(X: torch.Tensor, A_L, B_L, C_L, D_L, n: int, d: int) -> torch.Tensor:
    """``‖D_L + B_L A_L⁺ C_L − D̂‖_F / ‖D̂‖_F`` per prompt (float64 pinv): how far the learned
    rounds moved the EAGLE invariant."""
    from .data import nystrom
    Dhat = nystrom(X, n, d)
    sub = B_L.double() @ torch.linalg.pinv(A_L.double()) @ C_L.double()
    return torch.linalg.vector_norm(D_L.double() + sub - Dhat, dim=(1, 2)) / \
        torch.linalg.vector_norm(Dhat, dim=(1, 2))


def warm_start(model: LinearTransformer, X: torch.Tensor, *, mode: str = "paper",
               target_error: Optional[float] = None, safeguard: Optional[Safeguard] = None,
               max_iter: int = 20_000, **solve_options) -> Dict[str, Any]:
    """Learned rounds, then distributed EAGLE (``eagle_dist.solve``, the model's M contiguous
    shards, ``mode``) on ``(A_L, B_L, C_L)`` for ONE prompt X (n+n', d+d'). ``target_error``:
    stop the EAGLE rounds when ``‖D_L + D_sub − D̂‖_F ≤ target_error·‖D̂‖_F`` (the sub-problem's
    reference is ``B_L A_L⁺ C_L``; the relative target is rescaled accordingly, exact when the
    invariant holds — the returned ``error`` is always recomputed against D̂); otherwise run until
    EAGLE's own stopping rule / certificate. Returns rounds (learned, EAGLE, total), status, the
    final relative error against D̂ and the invariant drift."""
    from ..api import solve
    from ..problem import Problem
    from .data import nystrom
    c = model.cfg
    if X.dim() != 2:
        raise ValueError(f"X must be one prompt (n+n', d+d'); got shape {tuple(X.shape)}")
    Xb = X.unsqueeze(0).double()
    m = copy.deepcopy(model).double()
    A_L, B_L, C_L, D_L, fb = kernel_rounds(m, Xb, safeguard)
    n, d, M = c.n, c.d, c.machines
    dl = d // M
    Dhat = nystrom(Xb, n, d)[0].numpy()
    den = float(np.linalg.norm(Dhat))
    DL = D_L[0].numpy()
    drift = float(invariant_drift(Xb, A_L, B_L, C_L, D_L, n, d)[0])
    sub = Problem.from_arrays(A_L[0].numpy(), B_L[0].numpy(), C_L[0].numpy(), name="warm start")
    shards = [list(range(mu * dl, (mu + 1) * dl)) for mu in range(M)]
    kw = dict(solve_options)
    if target_error is not None:
        resid = float(np.linalg.norm(Dhat - DL))
        kw["target_error"] = target_error * den / max(resid, 1e-300)
    res = solve(sub, "eagle", workers=M, shards=shards, mode=mode, max_iter=max_iter, **kw)
    D = DL + res.D
    L = len(model.layers)
    return dict(rounds_learned=L, rounds_eagle=int(res.iterations),
                rounds=L + int(res.iterations), status=res.status.value,
                error=float(np.linalg.norm(D - Dhat)) / den, drift=drift,
                learned_error=float(np.linalg.norm(DL - Dhat)) / den,
                fallbacks=int(fb.sum()), D=D)


def eagle_alone(X: torch.Tensor, machines: int, n: int, d: int, *, mode: str = "paper",
                target_error: Optional[float] = None, max_iter: int = 20_000,
                **solve_options) -> Dict[str, Any]:
    """Distributed EAGLE on prompt X from the start (same shards), for comparison."""
    from ..api import solve
    from ..problem import Problem
    X = X.double()
    p = Problem.from_arrays(X[:n, :d].numpy(), X[n:, :d].numpy(), X[:n, d:].numpy())
    dl = d // machines
    kw = dict(solve_options)
    if target_error is not None:
        kw["target_error"] = target_error
    res = solve(p, "eagle", workers=machines, mode=mode, max_iter=max_iter,
                shards=[list(range(mu * dl, (mu + 1) * dl)) for mu in range(machines)], **kw)
    ref = p.reference
    return dict(rounds=int(res.iterations), status=res.status.value,
                error=float(np.linalg.norm(res.D - ref) / np.linalg.norm(ref)))


__all__ = ["warm_start", "eagle_alone", "project_queries", "invariant_drift"]
