"""What every iterative solver shares: options, tensors on a device, and the iteration monitor.

One stopping vocabulary for every method (SPEC §2, §4):

* ``tol``: stop when the relative step ``‖D_ℓ − D_{ℓ−1}‖_F ≤ tol · ‖D_ℓ‖_F`` holds on ``patience``
  consecutive iterations with non-increasing steps (``CONVERGED``);
* ``target_error``: stop when ``‖D_ℓ − D̂‖_F ≤ target_error · ‖D̂‖_F`` (needs a reference; the
  benchmarks use it to count iterations to a fixed accuracy) (``CONVERGED``);
* ``max_iter`` (``MAX_ITERATIONS``), ``time_budget`` seconds (``TIME_BUDGET``);
* a non-finite iterate stops with ``NON_FINITE``; ``‖C_ℓ‖`` growing by 1e6 stops with ``DIVERGED``;
* ``callback(iteration, info) -> bool``: returning True stops with ``CONVERGED`` (user's rule).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..result import History, Status

_TINY = 1e-300


def resolve_device(device: Optional[str]) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; otherwise the named device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda[:k]'") \
            from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype, default: np.dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32 if np.dtype(default) == np.float32 else torch.float64
    table = {"float32": torch.float32, "float64": torch.float64, "fp32": torch.float32,
             "fp64": torch.float64, torch.float32: torch.float32, torch.float64: torch.float64,
             np.float32: torch.float32, np.float64: torch.float64}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise TypeError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'") from None


@dataclass(frozen=True)
class SolverOptions:
    """Options shared by every method (validated in :func:`eagle_dist.solve`)."""

    tol: float = 1e-10                 # relative D-step tolerance
    max_iter: int = 1000               # iterations / rounds
    target_error: Optional[float] = None   # stop on true relative error (needs a reference)
    time_budget: Optional[float] = None    # seconds
    patience: int = 2                  # consecutive small, non-increasing steps for ``tol``
    callback: Optional[Callable[[int, dict], bool]] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    seed: int = 0
    progress: bool = False
    record_error: bool = True          # compute error vs the reference each iteration

    def validate(self) -> "SolverOptions":
        if not (isinstance(self.tol, (int, float)) and self.tol > 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol={self.tol!r} must be a positive finite number, e.g. 1e-8")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter!r} must be a positive integer")
        if self.target_error is not None and not (self.target_error > 0):
            raise ValueError(f"target_error={self.target_error!r} must be positive (or None)")
        if self.time_budget is not None and not (self.time_budget > 0):
            raise ValueError(f"time_budget={self.time_budget!r} must be a positive number of seconds")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"patience={self.patience!r} must be an integer >= 1")
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be callable as callback(iteration, info) -> bool")
        return self


def _norm64(x: torch.Tensor) -> float:
    """Frobenius norm accumulated in float64 (no overflow/underflow for finite float32 data)."""
    return float(torch.linalg.vector_norm(x, dtype=torch.float64))


class Monitor:
    """Records the history of an iterative solve and decides when it stops (rules above)."""

    def __init__(self, opts: SolverOptions, reference: Optional[torch.Tensor], desc: str = "",
                 C0_norm: Optional[float] = None, denominator: Optional[float] = None):
        self.opts = opts
        self.ref = reference
        if reference is not None and denominator is None:
            denominator = float(torch.linalg.vector_norm(reference))
        self.ref_norm = denominator
        self.history = History()
        self.t0 = time.perf_counter()
        self.iteration = 0
        self._small = 0
        self._prev_step = math.inf
        self.C0_norm = C0_norm
        self.status: Optional[Status] = None
        self._bar = None
        if opts.progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=opts.max_iter, desc=desc or "solve", unit="it", leave=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def error_of(self, D: torch.Tensor) -> float:
        if self.ref is None:
            return float("nan")
        diff = float(torch.linalg.vector_norm(D.to(self.ref.dtype) - self.ref))
        return diff / self.ref_norm if self.ref_norm > 0 else diff

    def record(self, D_new: torch.Tensor, D_old: torch.Tensor, *, rho: float = float("nan"),
               C_norm: Optional[float] = None) -> Optional[Status]:
        """Record iteration ``ℓ`` and return a :class:`Status` if the solve must stop."""
        self.iteration += 1
        # norms summed in float64: in float32 a block of entries ~1e-20 (or ~1e20) squares to
        # 0 (or inf), which made a far-from-converged run stop as "converged" after 2 steps
        dn = _norm64(D_new)
        step = _norm64(D_new - D_old) / max(dn, _TINY)
        if dn == 0.0:
            step = 0.0 if _norm64(D_old) == 0.0 else math.inf
        want_err = self.opts.record_error or self.opts.target_error is not None
        err = self.error_of(D_new) if want_err else float("nan")
        self.history.append(step, err, self.elapsed(), rho)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(step=f"{step:.2e}", err=f"{err:.2e}")
        status = self._decide(step, err, dn, C_norm)
        if status is not None:
            self.close()
            self.status = status
        return status

    def _decide(self, step, err, dn, C_norm) -> Optional[Status]:
        o = self.opts
        if not (math.isfinite(dn) and math.isfinite(step)) or (C_norm is not None and not math.isfinite(C_norm)):
            return Status.NON_FINITE
        if C_norm is not None and self.C0_norm and C_norm > 1e6 * self.C0_norm:
            return Status.DIVERGED
        if o.target_error is not None and self.ref is not None:
            if err <= o.target_error:
                return Status.CONVERGED
        else:
            if step <= o.tol and step <= self._prev_step:
                self._small += 1
            else:
                self._small = 0
            if self._small >= o.patience:
                return Status.CONVERGED
        self._prev_step = step
        if o.callback is not None and o.callback(self.iteration, {"step": step, "error": err,
                                                                   "time": self.elapsed()}):
            return Status.CONVERGED
        if self.iteration >= o.max_iter:
            return Status.MAX_ITERATIONS
        if o.time_budget is not None and self.elapsed() >= o.time_budget:
            return Status.TIME_BUDGET
        return None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def pow2_scale(x) -> float:
    """The largest power of two ``≤ max|x|`` (1 for an all-zero ``x``; never above the dtype's
    maximum, which rounding up could exceed for float32 near 3.4e38). Dividing A and B by such
    factors is exact and leaves ``W = B A⁺`` recoverable as ``(s_B / s_A) W'``; methods that square
    the data scale (normal equations) use it so float32 data far from unit scale does not
    under/overflow."""
    m = float(abs(x).max())                   # blocks are never empty (Problem validates)
    if m == 0.0 or not math.isfinite(m):
        return 1.0
    return 2.0 ** math.floor(math.log2(m))


def to_tensors(problem, device: torch.device, dtype: torch.dtype):
    """The blocks as fresh tensors (the problem's arrays are never touched)."""
    def t(x):
        return torch.tensor(x, dtype=dtype, device=device)
    return t(problem.A), t(problem.B), t(problem.C)


def reference_tensor(problem, device, record: bool):
    """The float64 reference ``B A⁺ C`` on the device, or ``None`` when not wanted."""
    if not record:
        return None
    return torch.tensor(problem.reference, dtype=torch.float64, device=device)
