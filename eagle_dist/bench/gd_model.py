"""Distributed gradient descent on consistent data: its exact error curve, to report the rounds
it needs beyond any cap that can be run (``eagle-dist bench rounds``, ``eagle-dist demo``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..kernels import spectral_norm_sq
from ..problem import Problem
from . import report


@dataclass
class GDPrediction:
    """The error of distributed GD after ``ℓ`` rounds on *consistent* data (``B = W A``).

    With shards normalised as the worker does (``A^μ, B^μ ← A^μ, B^μ / s_μ``; ``s_μ² = ‖A^μ‖₂²``
    locally, or the largest one globally) a GD round is ``C ← (I − γĒ) C``,
    ``D ← D + W γĒ C`` with ``Ē = (1/M) Σ_μ A^μA^μᵀ``, hence ``D_ℓ − D̂ = −W (I − γĒ)^ℓ C₀`` and

        error(ℓ) = ‖ W U diag((1 − γλ)^ℓ) Uᵀ C₀ ‖_F / den,      Ē = U diag(λ) Uᵀ

    (``den`` = :attr:`Problem.error_denominator`, the metric the solver reports).
    """

    lam: np.ndarray          # (k,) eigenvalues of Ē above the numerical floor
    G: np.ndarray            # (n', k) W U
    c: np.ndarray            # (k, d') Uᵀ C₀
    den: float
    gamma: float = 1.0

    @property
    def lambda_min(self) -> float:
        return float(self.lam.min())

    @property
    def condition(self) -> float:
        """κ(Ē₀) over its positive eigenvalues ≥ 1/α``)."""
        return float(self.lam.max() / self.lam.min())

    def error(self, rounds: int) -> float:
        # no clipping: the worker's power-iteration norm can sit slightly below ‖A^μ‖₂, so the
        # top λ may exceed 1 by ~1e-3 and that component flips sign each round (integer power)
        q = (1.0 - self.gamma * self.lam) ** int(rounds)                           # (k,)
        return float(np.linalg.norm(self.G @ (q[:, None] * self.c)) / self.den)

    def rounds_to(self, target: float, limit: float = 1e13) -> float:
        """The first ``ℓ`` with ``error(ℓ) ≤ target`` (doubling, then bisection; ∞ past ``limit``)."""
        if self.error(0) <= target:
            return 0.0
        hi = 1
        while self.error(hi) > target:
            hi *= 2
            if hi > limit:
                return math.inf
        lo = hi // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.error(mid) <= target:
                hi = mid
            else:
                lo = mid
        return float(hi)

    def max_rel_dev(self, measured: Sequence[float], points: int = 400) -> float:
        """Largest ``|predicted − measured| / measured`` over (log-spaced) measured rounds."""
        idx = report.log_subsample(len(measured), points)
        dev = [abs(self.error(i + 1) - measured[i]) / max(measured[i], 1e-300) for i in idx]
        return float(max(dev)) if dev else float("nan")


def gd_prediction(problem: Problem, shards: Sequence[np.ndarray], *, normalization: str = "local",
                  gamma: float = 1.0) -> GDPrediction:
    """:class:`GDPrediction` for ``problem`` split into ``shards`` (consistent data only)."""
    A = np.asarray(problem.A, dtype=np.float64)
    norms = [spectral_norm_sq(torch.tensor(A[:, s]), iters=200, rtol=1e-8)[0] for s in shards]
    if normalization == "global":
        norms = [max(norms)] * len(norms)
    E = np.zeros((problem.n, problem.n))
    for s, s2 in zip(shards, norms):
        As = A[:, s]
        E += As @ As.T / s2
    E /= len(shards)
    lam, U = np.linalg.eigh(E)
    keep = lam > 1e-13 * lam.max()
    lam, U = lam[keep], U[:, keep]
    # W = B A⁺ through the eigendecomposition of A Aᵀ (cheaper than pinv of the n x d matrix; only
    # a few correct digits are needed to predict round counts)
    sig2, V = np.linalg.eigh(A @ A.T)
    ok = sig2 > sig2.max() * 1e-24
    W = ((np.asarray(problem.B, np.float64) @ A.T) @ V[:, ok]) / sig2[ok] @ V[:, ok].T    # (n', n)
    return GDPrediction(lam=lam, G=W @ U, c=U.T @ np.asarray(problem.C, np.float64),
                        den=problem.error_denominator, gamma=gamma)


def tail_rate_rounds(errors: Sequence[float], target: float, frac: float = 0.25) -> float:
    """Rounds to ``target`` if the linear rate of the last ``frac`` of ``errors`` persisted
    (least-squares slope of ``log error`` vs round); ∞ when the tail does not decrease."""
    e = np.asarray(errors, dtype=np.float64)
    if e.size and e[-1] <= target:
        return float(np.argmax(e <= target) + 1)
    k = max(10, int(frac * e.size))
    if e.size < 10:
        return math.nan
    x = np.arange(e.size - k + 1, e.size + 1, dtype=np.float64)
    y = np.log(np.maximum(e[-k:], 1e-300))
    slope = np.polyfit(x, y, 1)[0]
    if not slope < 0:
        return math.inf
    return float(e.size + (math.log(target) - y[-1]) / slope)


# ---------------------------------------------------------------------------------------------
# the sweep (M-sweep and α-sweep)
# ---------------------------------------------------------------------------------------------
