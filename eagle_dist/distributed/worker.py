"""The one worker code path of distributed EAGLE / GD (SPEC §2b), shared by every backend.

Each round::

    every worker μ:   (A^μ, B^μ, C'_μ, D'_μ) ← kernel(A^μ, B^μ, C, D)     # purely local
    all-reduce:       C ← mean_μ C'_μ,   D ← mean_μ D'_μ                   # the only message

:func:`run_rounds` runs this loop for the workers held by *one process*: one worker per process
under torchrun / Ray / the spawned-process backend (``comm`` = a torch.distributed all-reduce),
all M workers in the in-process backend (``comm`` = identity). The message is one flat tensor of
``(n + n')·d'`` numbers (+1 control number when a time budget or callback needs a collective
vote), so the bytes each worker sends are counted from the tensor actually reduced.

Every rank holds the tiny ``n' x d'`` reference, so stopping decisions (D-step, target error,
max rounds) are computed from bit-identical reduced tensors and agree on all ranks without extra
communication.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..kernels import eagle_update, lift_cap, spectral_norm_sq
from ..result import Status
from ..solvers.common import Monitor, SolverOptions

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                  "tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class EagleKernel:
    """The default kernel: :func:`eagle_update` in the normalised form (``ρ = 1``, rescale
    ``1/(1 − η)``); ``eta = 0`` is distributed gradient descent. Picklable for Ray / spawn."""

    eta: float = 1.0 / 3.0
    gamma: float = 1.0

    def __call__(self, A, B, C, D, *, update_ab: bool = True):
        scale = 1.0 / (1.0 - self.eta) if (update_ab and self.eta > 0) else 1.0
        return eagle_update(A, B, C, D, eta=self.eta, gamma=self.gamma, rho=1.0, scale=scale,
                            update_ab=update_ab and self.eta > 0)


@dataclass
class FaultInjection:
    """Chaos testing: make ``rank`` exit (``"exit"``) or stall (``"hang"``) at ``round``."""

    rank: int
    round: int
    mode: str = "exit"

    def maybe_fire(self, rank: int, rnd: int) -> None:
        if rank == self.rank and rnd == self.round:
            if self.mode == "exit":
                os._exit(17)
            elif self.mode == "hang":
                time.sleep(10 ** 6)
            elif self.mode == "raise":
                raise RuntimeError(f"injected fault on rank {rank} at round {rnd}")


@dataclass
class RoundConfig:
    """Everything a worker needs besides its data (identical on every rank)."""

    workers: int
    normalization: str = "local"           # "local": ρ_μ from ‖A^μ‖; "global": one max-norm
    accelerate: bool = False
    accel_tol: float = 1e-10
    opts: SolverOptions = field(default_factory=SolverOptions)
    fault: Optional[FaultInjection] = None


class ShardWorker:
    """One column shard ``(A^μ, B^μ)`` and its local kernel state."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, kernel: Kernel, rank: int):
        self.A, self.B, self.kernel, self.rank = A, B, kernel, rank
        self.update_ab = True
        self.frozen_at: Optional[int] = None
        self._has_update_flag = isinstance(kernel, EagleKernel)
        # numerical-rank guard (kernels.lift_cap): freeze A^μ, B^μ before noise is lifted
        self.cap = lift_cap(A.dtype, kernel.eta) if self._has_update_flag else None

    def norm_sq(self) -> float:
        return spectral_norm_sq(self.A, iters=200, rtol=1e-8)[0]

    def scale(self, s: float) -> None:
        """Scale A^μ and B^μ together (leaves B^μ A^μ⁺ unchanged)."""
        self.A, self.B = self.A * s, self.B * s

    def local_update(self, C: torch.Tensor, D: torch.Tensor, rnd: int, cfg: RoundConfig):
        if self._has_update_flag:
            A_new, B_new, Cp, Dp = self.kernel(self.A, self.B, C, D, update_ab=self.update_ab)
        else:
            A_new, B_new, Cp, Dp = self.kernel(self.A, self.B, C, D)
        if cfg.accelerate and self.update_ab:
            change = float(torch.linalg.vector_norm(A_new - self.A) / torch.linalg.vector_norm(A_new))
            if change * change < cfg.accel_tol:
                self.update_ab, self.frozen_at = False, rnd
        if self.cap is not None and self.update_ab and rnd >= self.cap:
            self.update_ab = False
        self.A, self.B = A_new, B_new
        return Cp, Dp


AllReduce = Callable[[torch.Tensor, str], torch.Tensor]   # (tensor, "sum" | "max") -> reduced


@dataclass
class RoundsOutput:
    D: np.ndarray
    status: str
    rounds: int
    history: dict
    bytes_per_round: int          # per worker
    setup_bytes: int              # per worker, before the first round (normalisation)
    time_s: float
    frozen_at: List[int]


def run_rounds(local: Sequence[ShardWorker], C: torch.Tensor, D: torch.Tensor, comm: AllReduce,
               cfg: RoundConfig, reference: Optional[torch.Tensor], denominator: Optional[float],
               is_main: bool = True) -> RoundsOutput:
    """The round loop of SPEC §2b for the workers this process holds (see module docstring)."""
    M = cfg.workers
    opts = cfg.opts
    setup_bytes = 0
    # Normalisation: local (each worker ‖A^μ‖₂ = 1) or global (one max-norm all-reduce).
    norms = torch.tensor([w.norm_sq() for w in local], dtype=torch.float64)
    if cfg.normalization == "global":
        mx = torch.tensor([float(norms.max())], dtype=C.dtype, device=C.device)
        mx = comm(mx, "max")
        setup_bytes = mx.numel() * mx.element_size()
        for w in local:
            w.scale(1.0 / float(mx[0]) ** 0.5)
    else:
        for w, s2 in zip(local, norms.tolist()):
            w.scale(1.0 / s2 ** 0.5)

    n_c, n_d = C.numel(), D.numel()
    voting = opts.time_budget is not None or opts.callback is not None
    # Rules that only the main rank can evaluate (time budget, user callback) travel as a vote in
    # the message; every other rule is evaluated identically on every rank.
    mon = Monitor(_quiet(opts, progress=opts.progress and is_main), reference, desc=f"rounds(M={M})",
                  C0_norm=float(torch.linalg.vector_norm(C)), denominator=denominator)
    bytes_per_round = 0
    rnd = 0
    status = None
    while status is None:
        rnd += 1
        if cfg.fault is not None:
            cfg.fault.maybe_fire(local[0].rank, rnd)
        buf = torch.zeros(n_c + n_d + (1 if voting else 0), dtype=C.dtype, device=C.device)
        for w in local:
            Cp, Dp = w.local_update(C, D, rnd, cfg)
            buf[:n_c] += Cp.reshape(-1)
            buf[n_c:n_c + n_d] += Dp.reshape(-1)
        if voting and is_main:
            if opts.time_budget is not None and mon.elapsed() >= opts.time_budget:
                buf[-1] = 1.0
            elif opts.callback is not None and len(mon.history) and opts.callback(
                    mon.iteration, {"step": mon.history.step[-1], "error": mon.history.error[-1],
                                    "time": mon.elapsed()}):
                buf[-1] = 2.0
        bytes_per_round = buf.numel() * buf.element_size()
        buf = comm(buf, "sum")
        C_new = (buf[:n_c] / M).reshape(C.shape)
        D_new = (buf[n_c:n_c + n_d] / M).reshape(D.shape)
        vote = float(buf[-1]) if voting else 0.0
        D_old, C, D = D, C_new, D_new
        status = mon.record(D, D_old, C_norm=float(torch.linalg.vector_norm(C)))
        if status is None and vote > 0:
            status = Status.TIME_BUDGET if vote == 1.0 else Status.CONVERGED
            mon.close()
    if not bool(torch.isfinite(D).all()):
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    h = mon.history
    return RoundsOutput(D=D.cpu().numpy(), status=status.value, rounds=mon.iteration,
                        history=dict(step=h.step, error=h.error, time=h.time),
                        bytes_per_round=bytes_per_round, setup_bytes=setup_bytes,
                        time_s=mon.elapsed(),
                        frozen_at=[w.frozen_at if w.frozen_at is not None else -1 for w in local])


def _quiet(opts: SolverOptions, progress: bool) -> SolverOptions:
    """The rules every rank evaluates alike: no user callback, no time budget (voted instead)."""
    return replace(opts, progress=progress, callback=None, time_budget=None)
