"""EAGLE, centralized and compute-limited (sketched) — the loop around :func:`eagle_update`.

Computes ``D̂ = B A⁺ C`` (SPEC §1) by iterating the UPDATE of SPEC §2 from ``D₀ = 0``.
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

Stopping: see :mod:`eagle_dist.solvers.common`. The D-step rule is the paper's; it is a heuristic:
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

import math
from typing import Optional

import numpy as np
import torch

from ..kernels import eagle_update, lift_cap, orthonormal_sketch, sampling_sketch, spectral_norm_sq
from ..result import SolveResult
from .common import Monitor, SolverOptions, reference_tensor, resolve_device, resolve_dtype, to_tensors

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
          method_name: str = "eagle") -> SolveResult:
    """Run EAGLE (or GD/SGD with ``eta = 0``) on ``problem``; see the module docstring.

    ``eta=None``: 1/3 unsketched, :func:`sketched_eta` with a sketch.
    """
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, problem.dtype)
    if eta is None:
        ok = isinstance(sketch_size, (int, np.integer)) and 1 <= sketch_size <= problem.d
        eta = sketched_eta(int(sketch_size), problem.d) if ok else 1.0 / 3.0
    if not (0.0 <= eta < 1.0):
        raise ValueError(f"eta={eta!r} must lie in [0, 1) (η = 1 maps the top singular value to 0); "
                         "the proofs use 1/3")
    if not (0.0 < gamma < 2.0):
        raise ValueError(f"gamma={gamma!r} must lie in (0, 2) for the C-update to contract; use 1")
    d = problem.d
    if sketch_size is not None:
        if not isinstance(sketch_size, int) or not (1 <= sketch_size <= d):
            raise ValueError(f"sketch_size={sketch_size!r} must be an integer in 1..d = 1..{d}")
        if sketch_kind not in SKETCH_KINDS:
            raise ValueError(f"sketch_kind={sketch_kind!r}; use one of {SKETCH_KINDS}")
    if norm == "auto":
        norm = "stable" if (sketch_size is None and eta <= 1.0 / 3.0) else "power"
    if norm not in ("stable", "power"):
        raise ValueError(f"norm={norm!r}; use 'auto', 'stable' or 'power'")
    if norm == "stable" and (eta > 1.0 / 3.0 or sketch_size is not None):
        raise ValueError("norm='stable' needs eta <= 1/3 and no sketch (the rescale keeps ‖A‖₂ = 1 "
                         "only then); use norm='power'")

    A, B, C = to_tensors(problem, device, dtype)
    D = torch.zeros(problem.n_query, problem.d_query, dtype=dtype, device=device)
    ref = reference_tensor(problem, device, opts.record_error or opts.target_error is not None)
    gen = torch.Generator(device="cpu").manual_seed(opts.seed)

    # Normalise once: B A⁺ is unchanged by scaling A and B together (SPEC §2, stable form).
    s2, v = spectral_norm_sq(A, iters=200, rtol=1e-8)
    inv = 1.0 / (s2 ** 0.5) if s2 > 0.0 else math.inf
    if not math.isfinite(inv) or inv == 0.0:
        # without this guard an overflowing norm gave inv = 0, zeroed A and B and reported
        # "converged" with D = 0; an underflowing one raised ZeroDivisionError
        raise ValueError(f"A: ‖A‖₂² = {s2:g} is not a positive finite number in Python floats; "
                         "rescale A and B by the same factor (B A⁺ is unchanged)")
    A, B = A * inv, B * inv
    scale = 1.0 / (1.0 - eta) if norm == "stable" else 1.0

    mon = Monitor(opts, ref, desc=method_name, denominator=problem.error_denominator, C0_norm=float(torch.linalg.vector_norm(C, dtype=torch.float64)))
    update_ab = eta > 0.0
    frozen_at = None
    # numerical-rank guard (see kernels.lift_cap): stop lifting singular values below sqrt(eps)
    cap = lift_cap(dtype, eta, 1.0 if sketch_size is None else sketch_size / d)
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
                                  scale=scale, update_ab=update_ab)
        if update_ab:
            ab_steps += 1
            if ab_steps >= cap:
                update_ab, scale = False, 1.0
        if accelerate and update_ab and sketch is None:
            # ‖A_new − A‖_F² = Σ (f(σ) − σ)²: small once the spectrum has settled (SPEC §2b)
            change = float(torch.linalg.vector_norm(A - A_old) / torch.linalg.vector_norm(A))
            if change * change < accel_tol:
                update_ab, scale = False, 1.0
                frozen_at = mon.iteration + 1
        status = mon.record(D, D_old, rho=rho, C_norm=float(torch.linalg.vector_norm(C, dtype=torch.float64)))

    if status.value == "non_finite" and not bool(torch.isfinite(D).all()):
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    D_np = D.cpu().numpy()
    info = {"eta": eta, "gamma": gamma, "norm": norm, "device": str(device),
            "dtype": str(dtype).replace("torch.", "")}
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
