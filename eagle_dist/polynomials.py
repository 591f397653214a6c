"""Odd polynomial steps that lift the singular values of A — the *lift phase* of EAGLE.

EAGLE's stable A-update (:func:`eagle_dist.kernels.eagle_update`, ``η = 1/3``, rescale 3/2) is the
cubic Newton–Schulz step ``σ → (3σ − σ³)/2`` (Björck & Bowie 1971; Higham 2008, §8.3). Any odd
polynomial ``p(σ) = a σ + b σ³ + c σ⁵`` can take its place, applied in **Gram form**::

    G = AᵀA  (d x d)                            P = a I + b G + c G²          (d x d)
    A ← A P,   B ← B P                                                        (1)

    wide A (n < d):  K = AAᵀ (n x n),   A ← (a I + b K + c K²) A,
                     B ← a B + (B Aᵀ)(b I + c K) A                             (1')

(1') is (1) rewritten with ``AᵀA·AᵀA = Aᵀ K A``. With ``A = U Σ Vᵀ``, (1) gives ``A ← U p(Σ) Vᵀ``
and ``P = V p(Σ)Σ⁻¹ Vᵀ + a (I − V Vᵀ)``: singular vectors are kept, singular values are mapped by
``p``, and B is multiplied by the SAME right factor. So, whenever ``p(σ) > 0`` on A's singular
values, ``(A P)⁺ = V (p(Σ))⁻¹ Uᵀ`` and ``B P (A P)⁺ = B V Σ⁻¹ Uᵀ = B A⁺``: the Nyström estimate
``B A⁺`` — hence EAGLE's invariant ``D + B A⁺ C`` — is unchanged in exact arithmetic.

Which polynomial: after normalising ``‖A‖₂ = 1`` the singular values lie in ``[ℓ, u]``. The greedy
choice (Amsel, Persson, Musco & Gower 2025, *The Polar Express*, arXiv:2505.16932) takes, at every
step, the odd quintic that is best in the minimax sense on the current interval,

    p_k = argmin_{p odd, deg 5} max_{x ∈ [ℓ_k, u_k]} |1 − p(x)|,   [ℓ_{k+1}, u_{k+1}] = p_k([ℓ_k, u_k]),

and Polar Express proves this greedy composition optimal (worst case on ``[ℓ, u]``) among
compositions of odd quintics. ``p_k`` equioscillates (Chebyshev alternation for the Haar system
``{x, x³, x⁵}`` on ``[ℓ, u]``, ``ℓ > 0``; Trefethen, *Approximation Theory and Approximation
Practice*, ch. 10): ``1 − p = ±E`` alternately at ``ℓ < q < r < u`` (``q, r``: roots of ``p'``),
found by the Remez exchange below. Related: Chen & Chow's scaled cubic Newton–Schulz (2014) and
the dynamically weighted Halley iteration (QDWH; Nakatsukasa, Bai & Gygi 2010), which also carry
``[ℓ_k, 1]`` from step to step.

Safety margins (what keeps the iteration valid when ``ℓ`` and ``u`` are only estimates):

* **Top margin.** Each step is designed for ``[ℓ, u·(1 + m)]``, and its recorded image is the image
  of that widened interval, so a singular value up to ``m`` above the assumed top (a slightly low
  power-iteration estimate of ``‖A‖₂``, rounding) stays inside the next interval. Polar Express uses
  ``p(x/1.01)`` (all steps but the last) for the same purpose. Here ``m = safety·min(1, (u − ℓ)/u)``:
  the full margin while the interval is wide, shrinking with it once the polynomial is flat at its
  top (near convergence ``p ≈ (15x − 10x³ + 3x⁵)/8`` with ``p'(1) = p''(1) = 0``, so values just
  above ``u`` are mapped back inside and the steps stay self-correcting). Without this shrink the
  widening would stop the interval from ever getting narrower than about ``m``.
* **Cushion** (Polar Express, λ = 0.024): the minimax problem is solved on
  ``[max(ℓ, λ·u), u]``, never closer to 0. For tiny ``ℓ`` the exact greedy polynomial dips to
  ``1 − E ≈ 0`` inside the interval (it nearly annihilates part of the spectrum); the cushioned one
  keeps ``p ≥ p(λu) > 0`` there and bounds its slope at 0. It is then rescaled so that the image of
  the true ``[ℓ, u(1 + m)]`` is symmetric about 1 (Polar Express's recentering).
* **Below ℓ** (``ℓ`` over-estimated, or rank deficiency): every step is increasing on
  ``[0, q]`` with ``q > ℓ`` its first critical point, and ``p(x) > x`` there, so a singular value
  under the assumed ``ℓ`` still grows monotonically (by at least ``p(ℓ)/ℓ``), never changes sign
  and never overtakes a larger one; the cubic finish (self-correcting on ``(0, √3)``) completes it.
* **Amplification.** On a direction outside A's row space ``P`` acts as ``a = p'(0)`` (see ``P``
  above), so B's component there — the residual of a noisy least-squares problem, or the rounding
  noise in a numerically null direction of A — is multiplied by ``a`` every step (cubic: 1.5;
  cushioned quintic: about 8 on the first step, 4 after). :attr:`LiftStep.amplification` reports it.

Cost per step in GEMM-equivalents (square A; symmetric products at half, as SYRK): quintic 2
(``G``, ``G²``, ``A P``), cubic 1.5 (``G``, ``A G``); B's products are thin.

Example (the schedule that brings ``[1e-4, 1]`` into ``[0.9, 1.1]``)::

    >>> from eagle_dist.polynomials import lift_schedule
    >>> steps = lift_schedule(1e-4, delta=0.1)
    >>> len(steps), round(steps[-1].lo_next, 3) >= 0.9
    (7, True)

This module imports only ``math``, ``numpy`` and ``torch`` (the lowest floor of the layering, tests/test_layering.py).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

CUSHION = 0.02407327424182761   # Polar Express's cushion λ: design intervals start at λ·u or above
DEFAULT_SAFETY = 0.01           # top margin m: Polar Express's 1.01
DEFAULT_SWITCH = 0.1            # lift until [1 − δ, 1 + δ] with δ = 0.1, then the cubic (see plan_hybrid)
_CD_MAX_TOP = 1.15              # largest top for EAGLE's C/D step with ρ = 1 (needs σ⁴ < 2), margin kept
_TABLE_FLOOR = 2.0 ** -27          # breakpoint tables start here (below float64's sqrt(eps))
_TIGHT = 1.0 - 3e-5             # ℓ/u above this: the osculating quintic is as good (E < 4e-14)


# ------------------------------------------------------------------------------------------------
# Odd polynomials
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OddPolynomial:
    """``p(x) = a x + b x³ + c x⁵``; applied to A as the right factor ``a I + b G + c G²``."""

    a: float
    b: float
    c: float = 0.0

    def __call__(self, x):
        """``p(x)`` for a float, NumPy array or torch tensor (Horner in ``x²``)."""
        y = x * x
        return x * (self.a + y * (self.b + self.c * y))

    @property
    def coefficients(self) -> Tuple[float, float, float]:
        return (self.a, self.b, self.c)

    def scaled(self, s: float) -> "OddPolynomial":
        """``s · p(x)``."""
        return OddPolynomial(s * self.a, s * self.b, s * self.c)

    def input_scaled(self, t: float) -> "OddPolynomial":
        """``p(x / t)``: the polynomial designed on ``[ℓ, u]`` moved to ``[tℓ, tu]``."""
        return OddPolynomial(self.a / t, self.b / t ** 3, self.c / t ** 5)

    def critical_points(self) -> Tuple[float, ...]:
        """Positive roots of ``p'`` (a quadratic in ``x²``), increasing."""
        ys = _critical_y(np.array([self.a]), np.array([self.b]), np.array([self.c]))
        return tuple(sorted(math.sqrt(float(y[0])) for y in ys if 0.0 < y[0] < math.inf))

    def image(self, lo: float, hi: float) -> Tuple[float, float]:
        """``(min, max)`` of ``p`` on ``[lo, hi]`` (endpoints and the critical points inside)."""
        mn, mx = _image(*(np.array([v], dtype=float) for v in (self.a, self.b, self.c, lo, hi)))
        return float(mn[0]), float(mx[0])

    def factor(self, G: torch.Tensor) -> torch.Tensor:
        """The right factor ``a I + b G + c G²`` for a symmetric Gram matrix ``G`` (one symmetric
        product ``G·G`` when ``c ≠ 0``)."""
        P = self.b * G if self.c == 0.0 else torch.addmm(G, G, G, beta=self.b, alpha=self.c)
        return P.add_(torch.eye(G.shape[0], dtype=G.dtype, device=G.device), alpha=self.a)


NEWTON_SCHULZ = OddPolynomial(1.5, -0.5, 0.0)                # EAGLE's stable step, η = 1/3
NEWTON_SCHULZ_QUINTIC = OddPolynomial(15 / 8, -10 / 8, 3 / 8)  # osculating: p(1)=1, p'(1)=p''(1)=0


def minimax_quintic(lo: float, hi: float, *, max_iter: int = 100) -> Tuple[OddPolynomial, float]:
    """The odd quintic minimising ``max_{x∈[lo,hi]} |1 − p(x)|`` and that error ``E``.

    Remez exchange (Polar Express's degree-5 step): with reference points ``lo < q < r < hi``
    solve the 4 x 4 linear system ``p(lo) = 1 − E, p(q) = 1 + E, p(r) = 1 − E, p(hi) = 1 + E`` for
    ``(a, b, c, E)``, move ``q, r`` to the roots of ``p'``, repeat until ``E`` is stable. The
    problem is solved on ``[lo/hi, 1]`` and moved back (:meth:`OddPolynomial.input_scaled`). For
    ``lo/hi ≥ 1 − 3e-5`` (Polar Express: ``1 − 5e-6``) the osculating polynomial
    ``(15x − 10x³ + 3x⁵)/8`` at ``hi`` (the limit as the interval closes) is returned: there both
    leave ``E < 4e-14``, and the 4 x 4 system is close to singular.
    """
    lo, hi = _check_interval(lo, hi)
    t = lo / hi
    if t >= _TIGHT:
        p = NEWTON_SCHULZ_QUINTIC.input_scaled(hi)
    else:
        a, b, c = _remez(np.array([t]), max_iter=max_iter)
        p = (OddPolynomial(float(a[0]), float(b[0]), float(c[0])) if math.isfinite(a[0])
             else NEWTON_SCHULZ_QUINTIC).input_scaled(hi)
    mn, mx = p.image(lo, hi)
    return p, max(1.0 - mn, mx - 1.0)


def _remez(t: np.ndarray, max_iter: int = 100):
    """Coefficient arrays ``(a, b, c)`` of the minimax odd quintics on ``[t_i, 1]`` (vectorised
    Remez exchange, see :func:`minimax_quintic`; ``0 < t_i < 1``). Where the exchange loses the
    alternation (intervals so narrow that the 4 x 4 system is numerically singular) the entries
    are NaN and callers use the osculating polynomial, the limit of the minimax one."""
    m = t.size
    q, r = (3.0 * t + 1.0) / 4.0, (t + 3.0) / 4.0
    signs = np.broadcast_to(np.array([1.0, -1.0, 1.0, -1.0]), (m, 4))
    E_old = np.full(m, np.inf)
    ok = np.ones(m, dtype=bool)
    for _ in range(max_iter):
        X = np.stack([t, q, r, np.ones(m)], axis=1)                     # (m, 4) reference points
        X2 = X * X
        M = np.stack([X, X * X2, X * X2 * X2, signs], axis=2)           # (m, 4, 4)
        sol = np.linalg.solve(M, np.ones((m, 4, 1)))[..., 0]            # (m, 4): a, b, c, E
        y1, y2 = _critical_y(sol[:, 0], sol[:, 1], sol[:, 2])
        ok &= (y1 > t * t) & (y1 < y2) & (y2 < 1.0)
        q = np.where(ok, np.sqrt(np.where(ok, y1, 0.25)), q)
        r = np.where(ok, np.sqrt(np.where(ok, y2, 0.81)), r)
        if np.all(~ok | (np.abs(sol[:, 3] - E_old) <= 1e-15)):
            break
        E_old = sol[:, 3]
    nan = np.full(m, np.nan)
    return tuple(np.where(ok, sol[:, j], nan) for j in range(3))


def _critical_y(a, b, c):
    """The roots ``y₁ ≤ y₂`` of ``p'(x) = a + 3b y + 5c y²`` (``y = x²``; NaN where there are
    none, ±inf for the missing one when ``c = 0``), without cancellation."""
    B, C = 3.0 * b, 5.0 * c
    disc = B * B - 4.0 * C * a
    with np.errstate(invalid="ignore", divide="ignore"):
        qq = -0.5 * (B + np.copysign(np.sqrt(disc), B))
        u, v = qq / C, a / qq
    return np.minimum(u, v), np.maximum(u, v)


def _image(a, b, c, lo, hi):
    """``(min, max)`` of ``p = a x + b x³ + c x⁵`` on ``[lo, hi]``, elementwise (arrays)."""
    y1, y2 = _critical_y(a, b, c)
    xs = [lo, hi, np.sqrt(np.where(y1 > 0, y1, 0.0)), np.sqrt(np.where(y2 > 0, y2, 0.0))]
    inside = [np.ones_like(lo, dtype=bool)] * 2 + [(x > lo) & (x < hi) for x in xs[2:]]
    with np.errstate(invalid="ignore"):                # x = inf (no second root) is masked out
        vals = [x * (a + x * x * (b + c * x * x)) for x in xs]
    mn = np.min([np.where(k, v, np.inf) for k, v in zip(inside, vals)], axis=0)
    mx = np.max([np.where(k, v, -np.inf) for k, v in zip(inside, vals)], axis=0)
    return mn, mx


def _quintic_steps(lo: np.ndarray, hi: np.ndarray, safety: float, cushion: float):
    """Vectorised :func:`quintic_step`: ``(a, b, c, lo_next, hi_next, margin)`` arrays."""
    margin = safety * np.minimum(1.0, (hi - lo) / hi)
    top = hi * (1.0 + margin)
    t = np.minimum(np.maximum(lo, cushion * top), top * _TIGHT) / top
    a = np.full(lo.shape, 15 / 8)
    b = np.full(lo.shape, -10 / 8)
    c = np.full(lo.shape, 3 / 8)
    wide = t < _TIGHT
    if np.any(wide):
        ra, rb, rc = _remez(t[wide])
        fine = np.isfinite(ra)                                         # else: osculating
        a[wide] = np.where(fine, ra, a[wide])
        b[wide] = np.where(fine, rb, b[wide])
        c[wide] = np.where(fine, rc, c[wide])
    a, b, c = a / top, b / top ** 3, c / top ** 5                     # designed on [t·top, top]
    mn, mx = _image(a, b, c, lo, np.maximum(top, lo))
    s = 2.0 / (mn + mx)                                                # recentre about 1
    return a * s, b * s, c * s, mn * s, mx * s, margin


# ------------------------------------------------------------------------------------------------
# Steps and schedules
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiftStep:
    """One polynomial step and the singular-value interval it promises.

    ``[lo, hi]``: the interval assumed before the step; ``margin``: the step is valid for singular
    values up to ``hi·(1 + margin)``; ``[lo_next, hi_next] = p([lo, hi·(1 + margin)])``: where those
    singular values are after it. Values below ``lo`` stay below ``lo_next`` and grow (the step is
    increasing and ``p(x) > x`` on ``(0, lo]``)."""

    poly: OddPolynomial
    lo: float
    hi: float
    lo_next: float
    hi_next: float
    margin: float = 0.0
    kind: str = "quintic"

    @property
    def amplification(self) -> float:
        """``a = p'(0)``: the factor on B's component outside A's row space (and on A's
        numerically-null directions) — see the module docstring."""
        return self.poly.a

    @property
    def delta_next(self) -> float:
        """Half-width of the promised interval around 1: ``max(1 − lo_next, hi_next − 1)``."""
        return max(1.0 - self.lo_next, self.hi_next - 1.0)


def quintic_step(lo: float, hi: float = 1.0, *, safety: float = DEFAULT_SAFETY,
                 cushion: float = CUSHION) -> LiftStep:
    """The greedy minimax quintic for singular values in ``[lo, hi]`` with the safety margins of
    the module docstring: designed on ``[max(lo, λ·u), u]`` with ``u = hi·(1 + m)``,
    ``m = safety·min(1, (hi − lo)/hi)``, ``λ = cushion``, then scaled by ``2 / (p(lo) + max p)``
    so the image of ``[lo, u]`` is ``[1 − E', 1 + E']`` (Polar Express's recentering)."""
    lo, hi = _check_interval(lo, hi, allow_equal=True)
    safety = _check_fraction("safety", safety, upper=0.5, fix="Polar Express uses 0.01")
    cushion = _check_fraction("cushion", cushion, upper=0.9, fix="Polar Express uses 0.024")
    a, b, c, lo_next, hi_next, margin = (float(v[0]) for v in _quintic_steps(
        np.array([lo]), np.array([hi]), safety, cushion))
    return LiftStep(OddPolynomial(a, b, c), lo, hi, lo_next, hi_next, margin)


def newton_schulz_step(lo: float, hi: float = 1.0) -> LiftStep:
    """EAGLE's cubic step ``σ → (3σ − σ³)/2`` on ``[lo, hi]`` (``hi < √3``, where it is positive
    and self-correcting: every ``σ ∈ (0, √3)`` converges to 1; ``max p = p(1) = 1``)."""
    lo, hi = _check_interval(lo, hi, allow_equal=True)
    if hi >= math.sqrt(3.0):
        raise ValueError(f"hi={hi!r}: the cubic step maps σ ≥ √3 to σ ≤ 0; normalise ‖A‖₂ first "
                         "(or lift with quintic_step until hi < √3)")
    lo_next, hi_next = NEWTON_SCHULZ.image(lo, hi)
    return LiftStep(NEWTON_SCHULZ, lo, hi, lo_next, hi_next, 0.0, kind="cubic")


def lift_schedule(lo: float, hi: float = 1.0, *, delta: float = DEFAULT_SWITCH,
                  safety: float = DEFAULT_SAFETY, cushion: float = CUSHION,
                  max_steps: int = 100) -> List[LiftStep]:
    """Greedy quintic steps from ``[lo, hi]`` until the promised interval lies in
    ``[1 − delta, 1 + delta]``. The length grows like ``log(1/lo) / log(4.1)`` (after the first
    step the cushioned polynomial lifts the bottom by about 4.1 relative to the top) plus a few
    steps of convergence (cubic: ``δ → ≈ 2.5 δ³`` once ``δ`` is small)."""
    lo, hi = _check_interval(lo, hi, allow_equal=True)
    delta = _check_fraction("delta", delta, upper=0.9, positive=True,
                            fix="e.g. 0.1 to switch to the cubic, 1e-12 to converge")
    return _iterate(lambda l, h: quintic_step(l, h, safety=safety, cushion=cushion), lo, hi,
                    delta, max_steps)


def newton_schulz_schedule(lo: float, hi: float = 1.0, *, delta: float = 1e-12,
                           max_steps: int = 200) -> List[LiftStep]:
    """Cubic steps from ``[lo, hi]`` until the interval lies in ``[1 − delta, 1 + delta]``."""
    delta = _check_fraction("delta", delta, upper=0.9, positive=True, fix="e.g. 1e-12")
    return _iterate(newton_schulz_step, lo, hi, delta, max_steps)


def _iterate(step, lo: float, hi: float, delta: float, max_steps: int) -> List[LiftStep]:
    steps: List[LiftStep] = []
    while not (lo >= 1.0 - delta and hi <= 1.0 + delta):
        if len(steps) >= max_steps:
            raise ArithmeticError(f"[{lo:.3g}, {hi:.3g}] is not within 1 ± {delta:g} after "
                                  f"{max_steps} steps; raise max_steps or delta")
        steps.append(step(lo, hi))
        lo, hi = steps[-1].lo_next, steps[-1].hi_next
    return steps


@dataclass(frozen=True)
class HybridPlan:
    """Quintic lift steps, then cubic steps; ``cost`` in GEMM-equivalents of a square A (quintic 2,
    cubic 1.5: symmetric products at half)."""

    quintic: Tuple[LiftStep, ...]
    cubic: Tuple[LiftStep, ...]

    @property
    def steps(self) -> Tuple[LiftStep, ...]:                    # in order: quintic, then cubic
        return self.quintic + self.cubic

    @property
    def cost(self) -> float:
        return 2.0 * len(self.quintic) + 1.5 * len(self.cubic)

    @property
    def amplification(self) -> float:
        """``Π a_k``: the total factor on B's component outside A's row space."""
        return float(np.prod([s.amplification for s in self.steps])) if self.steps else 1.0


def plan_hybrid(lo: float, hi: float = 1.0, *, switch: Optional[float] = None,
                delta: float = 1e-12, safety: float = DEFAULT_SAFETY,
                cushion: float = CUSHION) -> HybridPlan:
    """The hybrid: ``N`` greedy quintic steps, then cubic steps until the interval is within
    ``1 ± delta``.

    ``switch=None`` (default): ``N`` minimises the cost ``2N + 1.5·(cubic steps)`` over every prefix
    of the greedy schedule (``N = 0`` is EAGLE's cubic alone); among equal costs the plan with the
    smaller amplification ``Π a_k`` wins. ``switch=δ_s``: the first ``N`` whose interval lies in
    ``1 ± δ_s`` ("lift until σ_min ≥ 1 − δ_s"). That rule is not monotone in ``ℓ``: a lift that
    ends just inside the band needs two more cubic steps (3 GEMM-equivalents) where one more
    quintic (2) would have done — :func:`plan_for` picks the cheapest valid plan.

    The cubic phase is EAGLE's stable loop, whose C/D step (``ρ = 1``) contracts only while
    ``σ⁴ < 2``; when the lift ends with a top above ``1.15`` the last quintic is scaled by
    ``1/hi`` (A and B together: the invariant is kept), so the cubic phase starts from
    ``[lo/hi, 1]`` — EAGLE's normalised state ``‖A‖₂ ≤ 1``."""
    lo, hi = _check_interval(lo, hi, allow_equal=True)
    delta = _check_fraction("delta", delta, upper=0.5, positive=True, fix="e.g. 1e-12")
    if switch is not None:
        switch = _check_fraction("switch", switch, upper=0.9, positive=True,
                                 fix="lift until σ ≥ 1 − switch; e.g. 0.1, or None (cheapest)")
        q = lift_schedule(lo, hi, delta=switch, safety=safety, cushion=cushion)
        return _hybrid(q, lo, hi, delta)
    full = lift_schedule(lo, hi, delta=delta, safety=safety, cushion=cushion)
    best, best_key, amp = 0, None, 1.0
    for N in range(len(full) + 1):
        if N:
            amp *= full[N - 1].amplification
        if best_key is not None and 2.0 * N > best_key[0]:
            break
        l2, h2 = (full[N - 1].lo_next, full[N - 1].hi_next) if N else (lo, hi)
        if h2 > _CD_MAX_TOP:
            if N == 0:                                 # the cubic phase needs ‖A‖₂ ≤ 1.15
                continue
            l2, h2 = l2 / h2, 1.0
        cubic = float(_ns_counts(np.array([l2]), np.array([h2]), delta)[0])
        key = (2.0 * N + 1.5 * cubic, amp * 1.5 ** cubic)
        if best_key is None or key < best_key:
            best, best_key = N, key
    return _hybrid(full[:best], lo, hi, delta)


def plan_for(lo: float, hi: float = 1.0, *, switch: Optional[float] = DEFAULT_SWITCH,
             delta: float = 1e-12, safety: float = DEFAULT_SAFETY,
             cushion: float = CUSHION) -> HybridPlan:
    """The cheapest plan valid for singular values in ``[lo, hi]``: :func:`plan_hybrid` at the
    largest breakpoint ``hi·ℓ_j ≤ lo`` (:func:`plan_breakpoints`). A plan designed for a smaller
    lower bound is valid too, and with a fixed ``switch`` it can be cheaper (κ = 1e4: the plan for
    ℓ = 1e-4 costs 20, the one for 6.8e-5 costs 19)."""
    lo, hi = _check_interval(lo, hi, allow_equal=True)
    table = plan_breakpoints(_TABLE_FLOOR, switch, delta, safety, cushion)
    below = [hi * l for l in table if hi * l <= lo]
    return plan_hybrid(below[-1] if below else lo, hi, switch=switch, delta=delta, safety=safety,
                       cushion=cushion)


def _hybrid(q: Sequence[LiftStep], lo: float, hi: float, delta: float) -> HybridPlan:
    q = list(q)
    if q and q[-1].hi_next > _CD_MAX_TOP:
        last = q[-1]
        s = 1.0 / last.hi_next
        q[-1] = LiftStep(last.poly.scaled(s), last.lo, last.hi, last.lo_next * s, 1.0, last.margin)
    lo2, hi2 = (q[-1].lo_next, q[-1].hi_next) if q else (lo, hi)
    if hi2 > _CD_MAX_TOP:                      # N = 0 from a top above 1.15: normalise first
        raise ValueError(f"hi={hi!r}: the cubic phase needs ‖A‖₂ ≤ {_CD_MAX_TOP}; normalise A")
    return HybridPlan(tuple(q), tuple(newton_schulz_schedule(lo2, hi2, delta=delta)))


def _plan_costs(ells: np.ndarray, switch: Optional[float], delta: float, safety: float,
                cushion: float, max_steps: int = 100) -> np.ndarray:
    """``plan_hybrid(ℓ, 1, switch=…).cost`` for an array of ``ℓ`` (vectorised, same arithmetic)."""
    lo, hi = ells.astype(float).copy(), np.ones(ells.shape)
    n = np.zeros(ells.shape)

    def finish(l, h):                                  # top-normalise, then the cubic phase
        big = h > _CD_MAX_TOP
        return _ns_counts(np.where(big, l / h, l), np.where(big, 1.0, h), delta)

    band = switch if switch is not None else delta
    best = np.where(hi > _CD_MAX_TOP, np.inf, 1.5 * finish(lo, hi)) if switch is None else None
    for _ in range(max_steps):
        active = ~((lo >= 1.0 - band) & (hi <= 1.0 + band))
        if not np.any(active):
            break
        a, b, c, l2, h2, _ = _quintic_steps(lo[active], hi[active], safety, cushion)
        lo[active], hi[active] = l2, h2
        n[active] += 1
        if switch is None:
            best = np.minimum(best, 2.0 * n + 1.5 * finish(lo, hi))
    else:
        raise ArithmeticError("plan costs: the schedule did not reach the band")
    return 2.0 * n + 1.5 * finish(lo, hi) if switch is not None else best


def _ns_counts(lo: np.ndarray, hi: np.ndarray, delta: float) -> np.ndarray:
    """Cubic steps :func:`newton_schulz_schedule` takes from each ``[lo_i, hi_i]`` (vectorised)."""
    lo, hi = lo.copy(), hi.copy()
    k = np.zeros(lo.shape)
    for _ in range(200):
        active = ~((lo >= 1.0 - delta) & (hi <= 1.0 + delta))
        if not np.any(active):
            break
        l, h = lo[active], hi[active]
        pa, pb = NEWTON_SCHULZ(l), NEWTON_SCHULZ(h)
        lo[active] = np.minimum(pa, pb)
        hi[active] = np.where((l <= 1.0) & (1.0 <= h), 1.0, np.maximum(pa, pb))
        k[active] += 1
    return k


@functools.lru_cache(maxsize=64)
def plan_breakpoints(floor: float, switch: Optional[float] = DEFAULT_SWITCH, delta: float = 1e-12,
                     safety: float = DEFAULT_SAFETY, cushion: float = CUSHION) -> Tuple[float, ...]:
    """Values ``floor = ℓ_0 < ℓ_1 < …`` of the lower bound at which :func:`plan_hybrid` gets
    cheaper: ``cost(ℓ_0) > cost(ℓ_1) > …``, so a certified ``σ_min ≥ ℓ_j`` buys the plan
    ``plan_hybrid(ℓ_j)``. Costs are evaluated on a log grid (32 points per decade); every drop of
    their running minimum (a plan designed for ``ℓ' ≤ ℓ`` is valid at ``ℓ`` too — with
    ``switch=None`` the cost is not monotone in ``ℓ``) is located by bisection on ``log ℓ``
    (levels that fall in one cell are found in turn). Cached."""
    floor, _ = _check_interval(floor, 1.0)
    top = 0.99 if switch is None else 1.0 - switch     # the cheapest plans start about here

    def cost(x):
        return _plan_costs(np.asarray(x, dtype=float), switch, delta, safety, cushion)

    grid = np.exp(np.linspace(math.log(floor), math.log(top), 2 + int(32 * math.log10(top / floor))))
    env = np.minimum.accumulate(cost(grid))            # a plan for ℓ' ≤ ℓ is valid at ℓ too
    out = [floor]
    left, right = grid[:-1], grid[1:]
    level, lev_right = env[:-1], env[1:]
    keep = lev_right < level
    left, right, level, lev_right = left[keep], right[keep], level[keep], lev_right[keep]
    while left.size:
        a, b = np.log(left), np.log(right)             # cost(e^a) ≥ level > cost(e^b)
        for _ in range(14):
            m = 0.5 * (a + b)
            lower = cost(np.exp(m)) < level
            b, a = np.where(lower, m, b), np.where(lower, a, m)
        found = np.exp(b)
        out.extend(float(x) for x in found)
        cf = cost(found)
        more = cf > lev_right                          # another level inside the same cell
        left, right, level, lev_right = found[more], right[more], cf[more], lev_right[more]
    # at a discontinuity the scalar and the vectorised plan may round to different sides: keep
    # the breakpoints the scalar plan agrees with, nudged up by 1e-6 relative where needed
    kept, last = [floor], plan_hybrid(floor, 1.0, switch=switch, delta=delta, safety=safety,
                                      cushion=cushion).cost
    for x in sorted(out)[1:]:
        for k in range(4):
            y = x * (1.0 + 1e-6) ** k
            c = plan_hybrid(y, 1.0, switch=switch, delta=delta, safety=safety, cushion=cushion).cost
            if c < last:
                kept.append(y)
                last = c
                break
    return tuple(kept)


def cholesky_error_bound(k: int, dtype: torch.dtype = torch.float64, hi: float = 1.0) -> float:
    """``sqrt(e)``, ``e = (γ_{k+1}·k + u)·hi²``: singular values below about this cannot be
    certified by :func:`certified_lower_bound` on a ``k x k`` Gram matrix of ``dtype``
    (3.2e-6·hi for k = 300 in float64). A lift phase that could not certify ``ℓ`` on its first
    Gram matrix can try again once its own lower end ``lo_k`` exceeds about twice this."""
    u = torch.finfo(dtype).eps / 2.0
    ku = (k + 1) * u
    return math.sqrt((ku / (1.0 - ku) * k + u) * hi * hi)


def certified_lower_bound(G, *, hi: float = 1.0, floor: Optional[float] = None,
                          switch: Optional[float] = DEFAULT_SWITCH, delta: float = 1e-12,
                          safety: float = DEFAULT_SAFETY,
                          cushion: float = CUSHION) -> Tuple[float, int]:
    """A lower bound ``ℓ ≥ floor`` on the smallest singular value of A, certified from its Gram
    matrix ``G = AᵀA`` (or ``AAᵀ``) by Cholesky factorisations; returns ``(ℓ, factorisations)``.

    Test: if ``G − t I`` has a Cholesky factor in floating point then ``λ_min(G) ≥ t − e`` with
    ``e = (γ_{k+1}·k + u)·‖G‖₂``, ``γ_j = j u / (1 − j u)``, ``k = dim G``, ``u`` the unit
    roundoff (Demmel 1989; Higham 2002, *Accuracy and Stability of Numerical Algorithms*, Thm 10.3:
    the computed factor satisfies ``G − tI + ΔG = R̂ᵀR̂``, ``|ΔG| ≤ γ_{k+1}|R̂ᵀ||R̂|``, and
    ``‖ |R̂ᵀ||R̂| ‖₂ ≤ k ‖R̂‖₂²``; the ``u`` term covers the rounding of the shift). So the test
    uses ``t = ℓ² + e`` and certifies ``σ_min ≥ ℓ``; ``‖G‖₂ ≤ hi²`` is assumed (``hi`` bounds
    ``‖A‖₂``). The rounding in forming ``G`` itself is a backward error in A and is not counted.

    Candidates: ``hi·ℓ_j`` for the breakpoints of :func:`plan_breakpoints` (plans are
    scale-invariant) above ``floor`` and ``sqrt(e)``; a binary search finds the largest certified
    one in ``⌈log₂ #candidates⌉`` factorisations of ``k³/3`` flops (1/6 GEMM-equivalent each at
    ``k = n = d``). ``floor`` (default ``sqrt(eps)·hi``) is returned when nothing larger is
    certified: A rank deficient, or ``σ_min < sqrt(e)`` (:func:`cholesky_error_bound`, 3.2e-6 for
    k = 300 in float64: κ beyond ~3e5 is certified only after a few lift steps; in float32 it is
    7e-2, so form G in float64 for the test).

    Example::

        >>> import torch
        >>> A = torch.diag(torch.logspace(0, -3, 50, dtype=torch.float64))
        >>> ell, tests = certified_lower_bound(A.T @ A)
        >>> 1e-3 / 2 < ell <= 1e-3, tests <= 6
        (True, True)
    """
    if not isinstance(G, torch.Tensor):
        G = torch.as_tensor(np.asarray(G))
    if G.ndim != 2 or G.shape[0] != G.shape[1] or not G.is_floating_point():
        raise ValueError(f"G has shape {tuple(G.shape)} and dtype {G.dtype}; pass the square "
                         "floating-point Gram matrix AᵀA or AAᵀ")
    k = G.shape[0]
    u = torch.finfo(G.dtype).eps / 2.0
    if floor is None:
        floor = math.sqrt(2.0 * u) * hi
    floor, hi = _check_interval(floor, hi)
    err = cholesky_error_bound(k, G.dtype, hi) ** 2
    table = plan_breakpoints(_TABLE_FLOOR, None if switch is None else float(switch),
                             float(delta), float(safety), float(cushion))
    # only candidates the bound can resolve: the test is then monotone in ℓ (binary search)
    cands = [floor] + [hi * l for l in table if hi * l > max(floor, math.sqrt(err))]
    eye = torch.eye(k, dtype=G.dtype, device=G.device)

    def certified(l: float) -> bool:
        _, info = torch.linalg.cholesky_ex(G - (l * l + err) * eye)
        return int(info) == 0

    lo_i, hi_i, tests, best = 1, len(cands) - 1, 0, 0    # cands[0] = floor needs no test
    while lo_i <= hi_i:
        mid, tests = (lo_i + hi_i) // 2, tests + 1
        if certified(cands[mid]):
            best, lo_i = mid, mid + 1
        else:
            hi_i = mid - 1
    return cands[best], tests


# ------------------------------------------------------------------------------------------------
# The Gram-form update
# ------------------------------------------------------------------------------------------------
def apply_right_factor(A: torch.Tensor, B: torch.Tensor, poly: OddPolynomial,
                       gram: Optional[torch.Tensor] = None):
    """``(A P, B P, G)`` with ``P = a I + b AᵀA + c (AᵀA)²`` — formula (1), or (1') when A is wide.

    ``gram``: ``AᵀA`` (tall/square) or ``AAᵀ`` (wide) if already formed (the C/D step of the same
    iteration needs it too); returned as ``G`` either way. Never modifies its inputs."""
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A {tuple(A.shape)} and B {tuple(B.shape)} must be 2-D with the same "
                         "number of columns d")
    n, d = A.shape
    if d <= n:
        G = A.T @ A if gram is None else gram                  # (d, d)
        P = poly.factor(G)                                       # (d, d)
        return A @ P, B @ P, G
    K = A @ A.T if gram is None else gram                        # (n, n)
    # (a I + b K + c K²) A  and  a B + (B Aᵀ)(b I + c K) A
    PK = poly.factor(K)                                          # a I + b K + c K²    (n, n)
    inner = poly.c * K
    inner.diagonal().add_(poly.b)                                # b I + c K           (n, n)
    return PK @ A, torch.addmm(B, (B @ A.T) @ inner, A, beta=poly.a), K


# ------------------------------------------------------------------------------------------------
def _check_interval(lo, hi, allow_equal: bool = False) -> Tuple[float, float]:
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name}={v!r} must be a real number (a singular value bound)")
    lo, hi = float(lo), float(hi)
    if not (0.0 < lo and (lo <= hi if allow_equal else lo < hi) and hi < math.inf):
        raise ValueError(f"need 0 < lo {'≤' if allow_equal else '<'} hi, got lo={lo!r}, hi={hi!r}: "
                         "lo bounds the smallest singular value from below (e.g. sqrt(eps) or "
                         "1/κ), hi the largest from above (1 after normalising ‖A‖₂)")
    return lo, hi


def _check_fraction(name: str, v, *, upper: float, fix: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
            or not ((0.0 < float(v) if positive else 0.0 <= float(v)) and float(v) < upper):
        raise ValueError(f"{name}={v!r} must be a number in {'(' if positive else '['}0, {upper}); "
                         f"{fix}")
    return float(v)
