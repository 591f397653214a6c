"""EAGLE, centralized and compute-limited (sketched) — the loop around :func:`eagle_update`.

Computes ``D̂ = B A⁺ C`` by iterating the UPDATE (the paper's Algorithm 1) from ``D₀ = 0``.
Gradient descent (``gd``) and sketched gradient descent (``sgd``) are the same loop with ``η = 0``:
the D iterate of GD on ``½‖W A − B‖²`` from ``W₀ = 0`` with step ``γρ`` is exactly ``W_ℓ C``.

Normalisation (``norm``):

* ``"stable"`` (default when ``η ≤ 1/3`` and unsketched): scale A, B once so ``‖A‖₂ ≈ 1`` (power
  iteration), then ``ρ = 1`` and rescale A, B by ``1/(1 − η)`` after each update. For ``η = 1/3``
  the A-update is Newton–Schulz, ``σ → (3σ − σ³)/2``, which fixes ``σ = 1`` and is self-correcting
  for ``σ < √3``, so a power-iteration estimate of ``‖A‖₂`` is enough.
* ``"power"``: ``ρ_ℓ = 1/‖A_ℓ S_ℓ‖₂²`` by warm-started power iteration every iteration (any
  ``0 < η < 1``; always used for sketched runs, where ``‖A S‖₂`` changes with ``S``).

Numerical-rank guard: after :func:`eagle_dist.kernels.lift_cap` A/B updates (51 in float64 for
η = 1/3) A and B are frozen, so rounding noise in numerically-null directions is never lifted.

Stopping: see :mod:`eagle_dist.control`. The D-step rule is the paper's; it is a heuristic:
directions of A with tiny singular values contribute tiny steps until Newton–Schulz has lifted
them, so a loose ``tol`` can stop before they are resolved. ``target_error`` gives an exact rule
when a reference is known.

Example:
    >>> from eagle_dist import solve
    >>> from eagle_dist.data import controlled
    >>> res = solve(controlled(n=100, d=100, kappa=1e3, seed=0), method="eagle", tol=1e-10)
    >>> res.status.value, res.error < 1e-8
    ('converged', True)
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional

import numpy as np
import torch

from ..kernels import (default_rcond, eagle_update, lift_cap, lift_point, orthonormal_sketch,
                       sampling_sketch, spectral_norm_sq, well_conditioned)
from ..result import SolveResult, Status, unscale_completion
from .factor import eagle_fast, fast_path_applies
from ..control import (LinearSystem, Monitor, ResidualRule, SolverOptions, StepRule, identity_c,
                       norm64, reference_tensor, resolve_device, resolve_dtype, scaled_tensors)

SKETCH_KINDS = ("orthonormal", "sample")


def sketched_eta(sketch_size: int, d: int) -> float:
    """Default η for a sketch of ``r`` of ``d`` columns: ``min(1/3, 0.8·r/d)``.

    With a sketch the A-update ``A (I − ηρ S ÃᵀÃ Sᵀ)`` does not only shrink A's large singular
    values: ``S Sᵀ`` mixes every direction into the sketched ones, and at small ``r/d`` that mixing
    at η = 1/3 makes κ(A_ℓ) *grow* (orthonormal sketch, r = d/8: κ 10 → ~1e4 in 2,000 iterations,
    error stuck at 2e-2 to 4e-2). Iterations to 1e-4 (controlled, κ(A) = 10 / 100, seeds 0 and 1;
    X = not reached in 6,000), η = 1/3 / 0.2 / 0.1 / 0.05:

    * n = 64, r = 8, orthonormal: X / 2627 / 873 / 924; sampling: 506 / 557 / 696 / 816
    * n = 240, r = 30, orthonormal: X / X / 2526 / 2655; sampling: 3862 / 2458 / 1951 / 2658
    * n = 240, r = 60, orthonormal: 1096 / 426 / 534 / 855; sampling: 482 / 396 / 569 / 882

    so the best η tracks ``r/d`` (≈ 0.1 at d/8, ≈ 0.2 at d/4) and 1/3 is right from about d/2 on.
    An explicit ``eta`` always wins.
    """
    return min(1.0 / 3.0, 0.8 * sketch_size / d)


def eagle(problem, opts: SolverOptions, *, eta: Optional[float] = None, gamma: float = 1.0,
          sketch_size: Optional[int] = None, sketch_kind: str = "orthonormal",
          norm: str = "auto", accelerate: bool = False, accel_tol: float = 1e-10,
          rcond: Optional[float] = None, filter_order: Optional[int] = None,
          method_name: str = "eagle") -> SolveResult:
    """Run EAGLE (or GD/SGD with ``eta = 0``) on ``problem``; see the module docstring.

    ``eta=None``: 1/3 unsketched, :func:`sketched_eta` with a sketch. ``rcond``: singular values
    below ``rcond·σ_max`` are treated as zero (default ``sqrt(eps)``). ``filter_order``: the C/D
    step of :func:`eagle_dist.kernels.eagle_update` (default 1, the filtered step, for EAGLE; 0,
    plain gradient descent, for GD/SGD). Once A and B are frozen the filtered step uses order 2
    (two extra thin products): with A fixed, numerically-null directions lifted to ~rcond would
    otherwise keep adding ``b·eps`` per iteration (rank-1 A, B outside its row space: 6e-9 after
    1,000 iterations with order 1).
    """
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    if sketch_size is not None:
        if isinstance(sketch_size, (bool, np.bool_)) or not isinstance(sketch_size, numbers.Integral) \
                or not (1 <= sketch_size <= problem.d):
            raise ValueError(f"sketch_size={sketch_size!r} must be an integer in 1..d = 1..{problem.d}")
        sketch_size = int(sketch_size)
        if sketch_kind not in SKETCH_KINDS:
            raise ValueError(f"sketch_kind={sketch_kind!r}; use one of {SKETCH_KINDS}")
    eta_given, norm_given = eta, norm
    if eta is None:
        eta = sketched_eta(sketch_size, problem.d) if sketch_size is not None else 1.0 / 3.0
    if not _real(eta) or not (0.0 <= eta < 1.0):
        raise ValueError(f"eta={eta!r} must lie in [0, 1) (η = 1 maps the top singular value to 0); "
                         "the proofs use 1/3")
    if not _real(gamma) or not (0.0 < gamma < 2.0):
        raise ValueError(f"gamma={gamma!r} must lie in (0, 2) for the C-update to contract; use 1")
    eta, gamma = float(eta), float(gamma)
    if rcond is None:
        rcond = default_rcond(dtype)
    if not _real(rcond) or not (0.0 < rcond < 1.0):
        raise ValueError(f"rcond={rcond!r} must lie in (0, 1): singular values below rcond·σ_max "
                         "are treated as zero (default sqrt(eps))")
    rcond = float(rcond)
    if filter_order is None:
        filter_order = 1 if eta > 0.0 else 0
    d = problem.d
    if norm == "auto":
        norm = "stable" if (sketch_size is None and eta <= 1.0 / 3.0) else "power"
    if norm not in ("stable", "power"):
        raise ValueError(f"norm={norm!r}; use 'auto', 'stable' or 'power'")
    if norm == "stable" and (eta > 1.0 / 3.0 or sketch_size is not None):
        raise ValueError("norm='stable' needs eta <= 1/3 and no sketch (the rescale keeps ‖A‖₂ = 1 "
                         "only then); use norm='power'")

    fell_back = None
    if fast_path_applies(problem, opts, sketch_size=sketch_size, eta=None if eta_given is None
                         else eta, gamma=gamma, norm=norm_given, accelerate=accelerate,
                         method_name=method_name):
        fast = eagle_fast(problem, opts, rcond=rcond)
        if fast.converged or fast.status is Status.TIME_BUDGET:
            return fast
        if opts.time_budget is not None:               # the iteration gets what is left
            opts = dataclasses.replace(opts, time_budget=opts.time_budget - fast.time_s)
        # not certified (a rank-deficient, inconsistent system can hit the lift's rounding
        # floor): the C/D iteration, whose filtered step has no such floor, takes over
        fell_back = (f"fast path not certified (check {fast.info['check']:.3g} after "
                     f"{fast.info['refinements']} refinements): solved by the C/D iteration")

    # Every block is divided by a power of two first (exact): data at 1e-170 or 1e200 is then
    # handled at unit scale, and D = 2^(b+c−a) D' is undone at the end (result.BlockScale)
    A, B, C, bscale = scaled_tensors(problem, device, dtype)
    system = None
    if opts.target_residual is not None:
        # the residual of W A = B needs W; EAGLE's iterate is D = W C, which is W when C = I
        # (scaled: D' = D s_A / s_B and ‖D' A' − B'‖ / ‖B'‖ = ‖D A − B‖ / ‖B‖)
        if not identity_c(problem):
            raise ValueError(f"target_residual: method {method_name!r} iterates D = W C and can "
                             "measure ‖W A − B‖ only when C is the identity (D = W); use "
                             "method='cg', 'lsmr' or 'lsqr' (they track W), or target_error")
        system = LinearSystem(A, B, lambda D_: D_)
    D = torch.zeros(problem.n_query, problem.d_query, dtype=dtype, device=device)
    want_ref = opts.record_error or opts.target_error is not None
    ref = reference_tensor(problem, device, want_ref)
    if ref is not None:
        ref = bscale.to_unit(ref)
    gen = torch.Generator(device="cpu").manual_seed(opts.seed)

    # Normalise once: B A⁺ is unchanged by scaling A and B together (the stable form).
    s2, v = spectral_norm_sq(A, iters=200, rtol=1e-8)
    if not (s2 > 0.0 and math.isfinite(s2)):
        raise ValueError(f"A: ‖A‖₂² = {s2:g} after power-of-two scaling; A looks numerically zero "
                         "(check the data or the block split)")
    inv = 1.0 / (s2 ** 0.5)
    A, B = A * inv, B * inv
    scale = 1.0 / (1.0 - eta) if norm == "stable" else 1.0

    frac = 1.0 if sketch_size is None else sketch_size / d
    update_ab = eta > 0.0
    # numerical-rank guard (kernels.lift_cap): stop lifting singular values below rcond
    cap = lift_cap(dtype, eta, frac, rcond)
    # from lift_point on every singular value above rcond is lifted, so the D-step bounds the
    # remaining error; earlier, a well-conditioned A certifies it (kernels.well_conditioned)
    certify_from = lift_point(dtype, eta, frac, rcond) if eta > 0.0 else 0
    state = {"A": A, "lam": 1.0, "next_check": 0}

    def certifier() -> bool:
        it = mon.iteration
        if it < state["next_check"]:
            return False
        state["next_check"] = it + 5            # a Gram product: not every iteration
        lam = 1.0 if norm == "stable" else spectral_norm_sq(state["A"], iters=50, rtol=1e-6)[0]
        return well_conditioned(state["A"], lam)

    def grad_residual() -> float:
        # GD/SGD certify a residual: ‖Aᵀ C_ℓ‖ / ‖Aᵀ C₀‖, the part of C still to be transferred
        return norm64(state["A"].T @ state["C"]) / max(state["AC0"], 1e-300)

    if eta == 0.0:
        state["C"], state["AC0"] = C, norm64(A.T @ C)
    # EAGLE: the step rule once certified; GD (η = 0): the step rule confirmed by its residual
    rule = StepRule(certify_from, certifier=certifier if eta > 0.0 else None,
                    confirm=ResidualRule(grad_residual) if eta == 0.0 else None)
    mon = Monitor(opts, ref, desc=method_name, rule=rule,
                  denominator=bscale.to_unit(problem.error_denominator) if want_ref else None,
                  C0_norm=norm64(C),
                  guard_from=(cap + 1) if (eta > 0.0 and sketch_size is None) else None,
                  system=system)
    frozen_at = None
    ab_steps = 0
    rho = 1.0
    status = None
    while status is None:
        sketch = None
        if sketch_size is not None and sketch_size < d:
            if sketch_kind == "sample":
                sketch = sampling_sketch(d, sketch_size, generator=gen, device=device)
            else:
                sketch = orthonormal_sketch(d, sketch_size, generator=gen, dtype=dtype, device=device)
        if norm == "power":
            if sketch is None:
                s2, v = spectral_norm_sq(A, iters=30, v0=v, rtol=1e-4)
            elif sketch.dtype == torch.int64:
                s2, _ = spectral_norm_sq(A.index_select(1, sketch), iters=30, rtol=1e-4)
            else:
                s2, _ = spectral_norm_sq(A @ sketch, iters=30, rtol=1e-4)
            rho = 1.0 / s2 if s2 > 0 else 0.0
        A_old, D_old = A, D
        A, B, C, D = eagle_update(A, B, C, D, eta=eta, gamma=gamma, rho=rho, sketch=sketch,
                                  scale=scale, update_ab=update_ab,
                                  filter_order=filter_order if update_ab or filter_order == 0 else 2)
        state["A"], state["C"] = A, C
        if update_ab:
            ab_steps += 1
            if ab_steps >= cap:
                update_ab, scale = False, 1.0
        if accelerate and update_ab and sketch is None:
            # The paper's accelerated variant: freeze once ‖I − AᵀA‖_F² is tiny (every singular value
            # settled at 1; a change-based test froze before isolated small ones were lifted)
            change = norm64(A - A_old) / max(norm64(A), 1e-300)
            if change * change < accel_tol and well_conditioned(
                    A, 1.0 if norm == "stable" else spectral_norm_sq(A, iters=50)[0],
                    margin=accel_tol * min(A.shape)):
                update_ab, scale = False, 1.0
                frozen_at = mon.iteration + 1
        status = mon.record(D, D_old, rho=rho, C_norm=norm64(C))

    if status.value == "non_finite" and not bool(torch.isfinite(D).all()):
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    D = mon.final(D)
    # the iteration ran at unit scale; undoing the scale may leave the dtype's range
    D_np, range_note = unscale_completion(D.to(torch.float64).cpu().numpy(), bscale,
                                          np.float32 if dtype == torch.float32 else np.float64)
    if range_note:
        status = Status.NON_FINITE
    info = {"eta": eta, "gamma": gamma, "norm": norm, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "rcond": rcond, "filter_order": filter_order,
            "lift_cap": cap, "certify_from": certify_from,
            "certified_at": mon.certified_at if mon.certified_at is not None else -1,
            "best_iteration": mon.best_iteration}
    if range_note:
        info["range"] = range_note
    if fell_back:
        info["fast_path"] = fell_back
    if eta == 0.0 and not math.isnan(mon.last_residual):
        info["residual"] = mon.last_residual
    if system is not None:
        info["rel_residual"] = mon.last_system_residual
    if sketch_size is not None:
        info.update(sketch_size=sketch_size, sketch_kind=sketch_kind)
    if accelerate:
        info["ab_frozen_at"] = frozen_at if frozen_at is not None else -1
    return SolveResult(
        D=D_np, status=status, iterations=mon.iteration, time_s=mon.elapsed(), history=mon.history,
        method=method_name, regime="sketched" if sketch_size is not None else "centralized",
        error=problem.error(D_np) if ref is not None else float("nan"),
        info=info,
    )


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
