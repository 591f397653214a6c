"""Safeguarded learned iterations: a trained layer's step is kept only where it contracts like an
EAGLE step; elsewhere that prompt takes the EAGLE step with the theory constants.

Why. A trained model's per-layer constants are fixed numbers tuned to the ‖A_ℓ‖ seen in training.
On a prompt where an early layer contracts A too little, a later layer's large step overshoots
(σ → σ(1 + α₁α₂σ²) with |α₁α₂|σ² > 2: the top singular value *grows*), and the next C/D step,
tuned for a small A, multiplies C (and the D update) by a large factor: the prediction blows up
(``benchmarks/results/train/evaluation.md`` traces such prompts layer by layer).

An EAGLE step cannot do that. With ρ = 1/‖A_ℓ‖₂² and ηρσ², γρσ² ∈ [0, 2] on every singular value
(the theory constants η = 1/3, γ = 1 sit well inside), ``A ← A(I − ηρAᵀA)`` maps σ ∈ [0, ‖A‖₂]
into [−‖A‖₂, ‖A‖₂] and ``C ← (I − γρAAᵀ)C`` is non-expansive, so

    ‖A_{ℓ+1}‖₂ ≤ ‖A_ℓ‖₂   and   ‖C_{ℓ+1}‖_F ≤ ‖C_ℓ‖_F.

The safeguard checks exactly these two inequalities for the learned step, per prompt and per
layer (allowing a relative slack ``growth``):

    ‖A_{ℓ+1}‖₂ ≤ (1 + growth) ‖A_ℓ‖₂      (not checked after the last layer: the readout never
                                            reads A_L)
    ‖C_{ℓ+1}‖_F ≤ (1 + growth) ‖C_ℓ‖_F

and where either fails it replaces the learned step by :func:`eagle_dist.kernels.eagle_update`
with η = 1/3, γ = 1, ρ = 1/‖A_ℓ‖₂². The C check also bounds the D step: on EAGLE's pattern the
layer's D update is ``(B A⁺)`` times its C update, and ``B A⁺`` is what the A/B steps preserve.

‖A‖₂ is computed exactly (:func:`spectral_norm`, batched LAPACK): on the trained blocks (18 x 18,
or 18 x 6 per worker) that costs less than a few batched power iterations (measured on one core:
0.07-0.1 s against 0.15 s per 4,096 prompts for 9 iterations). Power iteration warm-started
from the previous layer's top singular vector is also *wrong* here: a learned step with
ηρσ₁² ≈ 1 collapses the old top direction, the new top is another one, and the warm-started
estimate (0.44 for a true 2.19, on a planted model) turns a contracting step into "growth".

Sign convention: the transformer's D block is −(EAGLE's D) (readout ``−D_L``), so the fallback
negates D on the way into :func:`~eagle_dist.kernels.eagle_update` and back.

The distributed learned kernel applies the same two checks locally (its shard A^μ and its own
message C'_μ, see :mod:`eagle_dist.model.kernel`); if every worker's message satisfies
``‖C'_μ‖ ≤ ‖C‖`` then so does their mean, the all-reduced C.

Example::

    from eagle_dist.model.safeguard import Safeguard, safeguarded_forward
    out = safeguarded_forward(model, X, Safeguard())
    out.prediction, out.fallback.float().mean(0)     # (B, n', d') and the per-layer fallback rate
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Optional, Tuple

import torch

from ..kernels import eagle_update

#: the convergence proof's constants (the paper's Theorem 1 step, eagle_dist.control); the fallback step always uses them
THEORY_ETA = 1.0 / 3.0
THEORY_GAMMA = 1.0


@dataclass(frozen=True)
class Safeguard:
    """Parameters of the per-layer check (see the module docstring).

    ``growth``: relative growth of ‖A_ℓ‖₂ a learned step may make before it is replaced (0:
    none, EAGLE's own guarantee). ``c_growth``: the same for ‖C_ℓ‖_F (``None``: ``growth``;
    ``inf``: no C check)."""

    growth: float = 0.0
    c_growth: Optional[float] = None

    def __post_init__(self):
        if not (isinstance(self.growth, (int, float)) and math.isfinite(self.growth)
                and self.growth >= 0):
            raise ValueError(f"Safeguard(growth={self.growth!r}): pass a finite relative growth "
                             ">= 0 (0 = EAGLE's guarantee, no growth)")
        if self.c_growth is not None and not (isinstance(self.c_growth, (int, float))
                                              and self.c_growth >= 0):
            raise ValueError(f"Safeguard(c_growth={self.c_growth!r}): pass a relative growth >= 0 "
                             "(inf: no C check) or None (the same as growth)")

    @property
    def cg(self) -> float:
        return self.growth if self.c_growth is None else float(self.c_growth)


def spectral_norm(A: torch.Tensor) -> torch.Tensor:
    """‖A‖₂ of every matrix of a batch ``A`` (B, n, d), in float64: the square root of the largest
    eigenvalue of the smaller Gram matrix (LAPACK ``syevd``, batched; 25-50 % cheaper than an SVD
    on these sizes). Non-finite input gives inf."""
    A = A.double()
    ok = torch.isfinite(A).all(dim=(1, 2))
    out = torch.full((A.shape[0],), float("inf"), dtype=torch.float64)
    if bool(ok.any()):
        Ak = A if bool(ok.all()) else A[ok]
        G = Ak.transpose(1, 2) @ Ak if Ak.shape[2] <= Ak.shape[1] else Ak @ Ak.transpose(1, 2)
        lam = torch.linalg.eigvalsh(G)[:, -1].clamp_min(0.0).sqrt()
        if bool(ok.all()):
            return lam
        out[ok] = lam
    return out


def flag(sig_old: torch.Tensor, sig_new: torch.Tensor, c_old: torch.Tensor, c_new: torch.Tensor,
         sg: "Safeguard", check_a: bool = True) -> torch.Tensor:
    """The prompts (B,) whose learned step breaks ``‖A_{ℓ+1}‖₂ ≤ (1+g)‖A_ℓ‖₂`` (if ``check_a``)
    or ``‖C_{ℓ+1}‖_F ≤ (1+g_C)‖C_ℓ‖_F``; a non-finite new state is always flagged
    (``sig_new`` may be None when ``check_a`` is False)."""
    bad = ~torch.isfinite(c_new)
    if sig_new is not None:
        bad = bad | ~torch.isfinite(sig_new)
    if math.isfinite(sg.cg):
        bad = bad | ~(c_new <= (1.0 + sg.cg) * c_old)          # NaN compares False: flagged
    if check_a:
        bad = bad | ~(sig_new <= (1.0 + sg.growth) * sig_old)
    return bad


@torch.no_grad()
def eagle_fallback(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
                   norms: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
    """One EAGLE step with the theory constants (η = 1/3, γ = 1, ρ = 1/‖A‖₂²) on each prompt of a
    batch (A (k, n, d), B (k, n', d), C (k, n, d'), D (k, n', d') in EAGLE's sign), through
    :func:`eagle_dist.kernels.eagle_update` mapped over the batch (``torch.vmap``). The step is
    scale-covariant — with s = 1/‖A‖₂, ``eagle_update(sA, sB, C, D, ρ = 1)`` is ``(sA', sB', C',
    D')`` — so each prompt is normalised and one ρ = 1 serves the batch. A zero or non-finite A is
    left as it is. ``norms``: the prompts' ‖A‖₂ when known."""
    if A.shape[0] == 0:
        return A, B, C, D
    norms = spectral_norm(A) if norms is None else norms.double()
    ok = (norms > 0) & torch.isfinite(norms)
    s = torch.where(ok, 1.0 / torch.where(ok, norms, torch.ones_like(norms)),
                    torch.ones_like(norms)).to(A.dtype)[:, None, None]
    step = torch.vmap(partial(eagle_update, eta=THEORY_ETA, gamma=THEORY_GAMMA, rho=1.0))
    A2, B2, C2, D2 = step(A * s, B * s, C, D)
    A2, B2 = A2 / s, B2 / s
    keep = ~ok[:, None, None]
    if bool(keep.any()):
        A2, B2 = torch.where(keep, A, A2), torch.where(keep, B, B2)
        C2, D2 = torch.where(keep, C, C2), torch.where(keep, D, D2)
    return A2, B2, C2, D2


@dataclass
class SafeguardedOutput:
    prediction: torch.Tensor        # (B, n', d')
    fallback: torch.Tensor          # (B, L) bool: the prompts whose layer ℓ took the EAGLE step


@torch.no_grad()
def safeguarded_forward(model, X: torch.Tensor, sg: Safeguard = Safeguard(),
                        norms: Optional[torch.Tensor] = None) -> SafeguardedOutput:
    """The model's prediction with the per-layer safeguard (module docstring), for a centralized
    model (unconstrained or compute-limited, any number of heads, tied or not). For the
    distributed regime use :func:`eagle_dist.model.kernel.kernel_forward` (the checks there use
    only what each worker holds). ``norms``: the prompts' ‖A‖₂ when the caller has them."""
    c = model.cfg
    if c.regime == "distributed":
        raise ValueError("safeguarded_forward is for centralized models; for model.regime="
                         "distributed use eagle_dist.model.kernel.kernel_forward(model, X, sg), "
                         "whose checks use each worker's own shard")
    n, d = c.n, c.d
    sign = -1.0 if c.readout == "neg" else 1.0            # transformer D = sign · EAGLE's D
    Z = model.embed(X)
    sig = spectral_norm(Z[:, :n, :d]) if norms is None else norms.double()
    cn = torch.linalg.vector_norm(Z[:, :n, d:].double(), dim=(1, 2))
    L = len(model.layers)
    fallback = torch.zeros(X.shape[0], L, dtype=torch.bool)
    for l, layer in enumerate(model.layers):
        Zn = layer(Z, n)
        last = l == L - 1                   # the readout never reads A_L: no A check, no norm
        sig_n = None if last else spectral_norm(Zn[:, :n, :d])
        cn_n = torch.linalg.vector_norm(Zn[:, :n, d:].double(), dim=(1, 2))
        bad = flag(sig, sig_n, cn, cn_n, sg, check_a=not last)
        if bool(bad.any()):
            idx = bad.nonzero().flatten()
            Zo = Z[idx]
            A2, B2, C2, D2 = eagle_fallback(Zo[:, :n, :d], Zo[:, n:, :d], Zo[:, :n, d:],
                                            sign * Zo[:, n:, d:], norms=sig[idx])
            Zf = torch.cat([torch.cat([A2, C2], 2), torch.cat([B2, sign * D2], 2)], 1)
            Zn = Zn.clone()
            Zn[idx] = Zf.to(Zn.dtype)
            cn_n = cn_n.clone()
            if sig_n is not None:
                sig_n = sig_n.clone()
                sig_n[idx] = spectral_norm(A2)
            cn_n[idx] = torch.linalg.vector_norm(C2.double(), dim=(1, 2))
            fallback[idx, l] = True
        Z, sig, cn = Zn, sig_n, cn_n
    return SafeguardedOutput(prediction=model.readout(Z), fallback=fallback)


__all__ = ["Safeguard", "SafeguardedOutput", "safeguarded_forward", "spectral_norm", "flag",
           "eagle_fallback", "THEORY_ETA", "THEORY_GAMMA"]
