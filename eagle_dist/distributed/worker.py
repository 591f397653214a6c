"""The one worker code path of distributed EAGLE / GD, shared by every backend.

Two modes, both built on :func:`eagle_dist.kernels.eagle_update`:

* ``"paper"`` (the paper's algorithm)::

      every worker μ:   (A^μ, B^μ, C'_μ, D'_μ) ← kernel(A^μ, B^μ, C, D)     # purely local
      all-reduce:       C ← mean_μ C'_μ,   D ← mean_μ D'_μ                   # the only message

  ``(n + n')·d'`` numbers per round, rounds ≈ O(log κ_max + α⁻¹ log 1/ε). Exact (it converges
  to ``B A⁺ C``) only on *consistent* data; on noisy data it converges near, not to, it.
* ``"gram"`` (exact centralized iterates over shards): each round all-reduce ``A Aᵀ = Σ A^μA^μᵀ``
  and ``B Aᵀ = Σ B^μA^μᵀ`` (``(n + n')·n`` numbers), then every worker applies the centralized
  update to its shard and to the replicated C, D. Same iterates as the centralized solve whatever
  α and M, exact on any data; once A, B are frozen (the numerical-rank guard) the Gram blocks no
  longer change and the remaining rounds send nothing.

:func:`run_rounds` runs the loop for the workers held by *one process*: one worker per process
under torchrun / Ray / the spawned-process backend (``comm`` = a torch.distributed all-reduce),
all M workers in the in-process backend (``comm`` = identity, the sum taken over local workers).
Bytes are counted from the tensors actually reduced.

Verification (``verify=True``, paper mode): one extra *probe* column ``c = A x`` (x random) rides
along in C. Its exact answer is ``B A⁺ A x``, which equals ``B x`` — known from one all-reduce
of n' numbers at start-up — exactly when the data is consistent, i.e. exactly when the paper's
mode is exact. A probe that stops improving short of ``B x`` gives ``INEXACT`` with the measured
gap. The probe weighs each direction of range(A) by its singular value, though, and so cannot see
a direction the shards share too poorly to move (an eigenvalue of the mean projector ``P̄`` near
0: 3.7 % of D was missing, probe and D-steps "converged", on a problem with one singular value
3e-8 at M = 2). So ``CONVERGED`` also needs the untransferred part of the user's C, which weighs
every direction equally, to be small: ``‖C_ℓ‖_F ≤ max(10·tol, 100·eps)·‖C_0‖_F``. A remainder
that stops shrinking (C not in the range of A, or a direction no round can move) ends the run
``UNVERIFIED``: the paper's mode cannot tell the two apart; the Gram mode can.

Distributed CG on the normal equations (``method="cg"``, :mod:`.cg_rounds`): the honest second
baseline beside distributed GD. ``W``, the search direction ``P`` and the normal-equation residual
are replicated; each round every worker forms ``(P A^μ) A^μᵀ`` and one all-reduce of ``n'·n``
numbers gives ``P (A Aᵀ)``; the CG step (:func:`eagle_dist.control.normal_cg_step`, the one the
centralized CG uses) is then the same on every rank, and ``D = W C``. ``CONVERGED`` is said only
after LSQR's tests pass on the TRUE residual ``B − W A`` (one extra all-reduce of ``n'·n + n'``
numbers, made when the recurrence says the tests may pass or every 10 rounds), as centrally.

The Gram mode on a linear system (``C = I``, the default kernel, float64): the answer from one
all-reduce of ``(A Aᵀ, B Aᵀ)``, refined on the true residual and certified like CG
(:mod:`.gram_fast`; 3–4 rounds instead of 20–40); if it cannot certify, the Gram-mode iteration
runs and ``info["fast_path"]`` says so. ``fast_path=False`` asks for the iteration.

Every rank holds the same reduced tensors, so stopping decisions agree on all ranks without
extra communication.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar, List, Optional, Sequence

import numpy as np
import torch

from ..kernels import eagle_update, lift_cap, lift_point, spectral_norm_sq, well_conditioned
from ..result import Status
from ..control import (Monitor, SolverOptions, StepRule, VerifyRule, norm64)
from .gram_fast import gram_fast_rounds
from .network import CountingComm, Network
from .protocol import LocalKernel, as_local_kernel, is_certified

MODES = ("paper", "gram")


@dataclass(frozen=True)
class EagleKernel:
    """The default local kernel: :func:`eagle_update` in the normalised form (``ρ = 1``, rescale
    ``1/(1 − η)``); ``eta = 0`` is distributed gradient descent. Picklable for Ray / spawn.

    It implements :class:`eagle_dist.distributed.protocol.CertifiedKernel`: ``kernel(A, B, C, D,
    *, update_ab, gram=None, cross=None)`` returns the new blocks; ``cap(dtype)`` (A/B updates
    before the numerical-rank freeze) and ``certify_from(dtype)`` (rounds after which a tol-based
    stop can be certified). Any other :class:`~eagle_dist.distributed.protocol.LocalKernel` (e.g.
    a trained layer) or plain callable gets no freeze and no certificate: its runs end
    ``unverified``.
    """

    scale_invariant: ClassVar[bool] = True     # the update commutes with scaling
    fixed_shape: ClassVar[bool] = False        # any shape: a probe column may ride along

    eta: float = 1.0 / 3.0
    gamma: float = 1.0
    filter_order: Optional[int] = None       # None: 1 for EAGLE, 0 for GD
    rcond: Optional[float] = None            # None: sqrt(eps) of the dtype

    @property
    def order(self) -> int:
        return (1 if self.eta > 0 else 0) if self.filter_order is None else self.filter_order

    def __call__(self, A, B, C, D, *, update_ab: bool = True, gram=None, cross=None):
        do_ab = update_ab and self.eta > 0
        scale = 1.0 / (1.0 - self.eta) if do_ab else 1.0
        order = self.order if (do_ab or self.order == 0) else 2     # frozen: order 2 (see eagle)
        return eagle_update(A, B, C, D, eta=self.eta, gamma=self.gamma, rho=1.0, scale=scale,
                            update_ab=do_ab, filter_order=order, gram=gram, cross=cross)

    def bind(self, rank: int) -> "EagleKernel":
        return self                            # stateless: every worker runs the same instance

    def cap(self, dtype) -> Optional[int]:
        return lift_cap(dtype, self.eta, 1.0, self.rcond) if self.eta > 0 else None

    def certify_from(self, dtype) -> int:
        return lift_point(dtype, self.eta, 1.0, self.rcond)


@dataclass
class FaultInjection:
    """Chaos testing: make ``rank`` (-1: every rank) exit (``"exit"``), stall (``"hang"``), stop
    itself with SIGSTOP (``"stop"``) or raise (``"raise"``) at ``round``."""

    rank: int
    round: int
    mode: str = "exit"

    def maybe_fire(self, rank: int, rnd: int) -> None:
        if self.rank in (rank, -1) and rnd == self.round:    # rank -1: every rank
            if self.mode == "stop":
                import signal
                os.kill(os.getpid(), signal.SIGSTOP)
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
    normalization: str = "local"           # "local": ρ_μ from ‖A^μ‖; "global": one max-norm;
    #                                        "none": custom kernels on the data's own scale
    accelerate: bool = False
    accel_tol: float = 1e-10
    opts: SolverOptions = field(default_factory=SolverOptions)
    fault: Optional[FaultInjection] = None
    mode: str = "paper"                    # "paper" | "gram" (see the module docstring)
    method: str = "eagle"                  # "eagle" / "gd" (the kernel's rounds) | "cg"
    verify: bool = True                    # paper mode: carry the probe column
    network: Optional[Network] = None      # inject this network's delay into every all-reduce


class ShardWorker:
    """One column shard ``(A^μ, B^μ)`` and its local kernel state."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, kernel: LocalKernel, rank: int):
        # a stateful kernel (e.g. a trained layer stack) gives each worker its own instance
        kernel = as_local_kernel(kernel).bind(rank)
        self.A, self.B, self.kernel, self.rank = A, B, kernel, rank
        self.update_ab = True
        self.frozen_at: Optional[int] = None
        self.certified = is_certified(kernel)
        # numerical-rank guard (kernels.lift_cap): freeze A^μ, B^μ before noise is lifted
        self.cap = kernel.cap(A.dtype) if self.certified else None
        self.certify_from = kernel.certify_from(A.dtype) if self.certified else 0

    def norm_sq(self) -> float:
        return spectral_norm_sq(self.A, iters=200, rtol=1e-8)[0]

    def scale(self, s: float) -> None:
        """Scale A^μ and B^μ together (leaves B^μ A^μ⁺ unchanged)."""
        self.A, self.B = self.A * s, self.B * s

    def probe_parts(self, seed: int):
        """``(A^μ x^μ, B^μ x^μ)`` for this shard's part ``x^μ`` of a random probe vector."""
        g = torch.Generator(device="cpu").manual_seed(1_000_003 * (seed + 1) + self.rank)
        x = torch.randn(self.A.shape[1], generator=g, dtype=torch.float64).to(self.A)
        return self.A @ x, self.B @ x

    def local_update(self, C: torch.Tensor, D: torch.Tensor, rnd: int, cfg: RoundConfig,
                     gram: Optional[torch.Tensor] = None, cross: Optional[torch.Tensor] = None):
        if self.certified:
            A_new, B_new, Cp, Dp = self.kernel(self.A, self.B, C, D, update_ab=self.update_ab,
                                               gram=gram, cross=cross)
        else:
            A_new, B_new, Cp, Dp = self.kernel(self.A, self.B, C, D)
        if cfg.accelerate and self.update_ab and self.certified and gram is None:
            # the accelerated variant: freeze once ‖I − A^μᵀA^μ‖_F² is tiny (every singular
            # value settled; a change-only test froze before small ones were lifted)
            change = norm64(A_new - self.A) / max(norm64(A_new), 1e-300)
            if change * change < cfg.accel_tol and well_conditioned(
                    A_new, spectral_norm_sq(A_new, iters=50)[0], margin=cfg.accel_tol * min(A_new.shape)):
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
    bytes_per_round: int          # per worker: the largest message of a round
    setup_bytes: int              # per worker, before the first round (normalisation, probe)
    time_s: float
    frozen_at: List[int]
    bytes_sent: int = 0           # per worker, all rounds (gram mode sends nothing once frozen)
    mode: str = "paper"
    probe_gap: float = float("nan")
    c_remainder: float = float("nan")   # paper mode: ‖C_ℓ‖/‖C_0‖ of the user's C when checked
    certified_at: int = -1
    best_iteration: int = 0
    collectives: int = 0          # all-reduce calls of this worker (rounds, set-up and checks)
    collective_bytes: int = 0     # bytes this worker put into them
    injected_delay_s: float = 0.0  # delay added by RoundConfig.network (0: none injected)
    injected_wait_s: float = 0.0   # the time those waits took (≥ the delay)
    fast_path: str = ""           # the Gram-mode linear-system path: what it did (gram_fast)


def _sum_local(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    out = tensors[0].clone()
    for t in tensors[1:]:
        out += t
    return out


def run_rounds(local: Sequence[ShardWorker], C: torch.Tensor, D: torch.Tensor, comm: AllReduce,
               cfg: RoundConfig, reference: Optional[torch.Tensor], denominator: Optional[float],
               is_main: bool = True, on_round: Optional[Callable[[int], None]] = None) -> RoundsOutput:
    """The round loop (see the module docstring) for the workers this process holds.
    ``on_round(r)`` is called after every round (the launchers' liveness heartbeat). Every
    all-reduce is counted (calls, bytes), and delayed when ``cfg.network`` injects one."""
    counted = CountingComm(comm, cfg.network)
    note = ""
    if _gram_fast_applies(local, C, cfg):
        rcond = local[0].kernel.rcond or math.sqrt(torch.finfo(C.dtype).eps)
        got = gram_fast_rounds(local, D.shape[0], C.shape[0], counted, cfg, reference,
                               denominator, rcond, on_round)
        if got is not None:
            fields, W = got
            fields.pop("check")
            out = RoundsOutput(D=W.to(D.dtype).cpu().numpy(), **fields)
            out.collectives, out.collective_bytes = counted.calls, counted.nbytes
            out.injected_delay_s, out.injected_wait_s = counted.delayed_s, counted.waited_s
            return out
        note = (f"gram: not certified after {counted.calls} all-reduce(s) (the refinement "
                "stalled: κ(A)² u near 1?); the Gram-mode iteration ran")
    if cfg.method == "cg":
        from .cg_rounds import cg_rounds as rounds     # it builds on this module's helpers
    else:
        rounds = _eagle_rounds
    out = rounds(local, C, D, counted, cfg, reference, denominator, is_main, on_round)
    out.fast_path = note
    out.collectives, out.collective_bytes = counted.calls, counted.nbytes
    out.injected_delay_s, out.injected_wait_s = counted.delayed_s, counted.waited_s
    return out


def _gram_fast_applies(local, C: torch.Tensor, cfg: RoundConfig) -> bool:
    """The Gram mode on ``W A = B`` (C = I) with the default kernel, float64, nothing that needs
    the iteration itself (callback, time budget, accelerate, ``max_iter`` < 32, fast_path=False)
    — :mod:`eagle_dist.distributed.gram_fast`."""
    o = cfg.opts
    if not (cfg.method == "eagle" and cfg.mode == "gram" and o.fast_path and o.callback is None
            and o.time_budget is None and not cfg.accelerate and o.max_iter >= 32
            and C.dtype == torch.float64 and C.shape[0] == C.shape[1]):
        return False
    if not all(type(w.kernel) is EagleKernel and w.kernel.eta == 1.0 / 3.0
               and w.kernel.gamma == 1.0 and w.kernel.filter_order is None for w in local):
        return False
    return bool(torch.equal(C, torch.eye(C.shape[0], dtype=C.dtype, device=C.device)))


def _eagle_rounds(local, C, D, comm, cfg, reference, denominator, is_main, on_round):
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r}; use one of {MODES}")
    M = cfg.workers
    opts = cfg.opts
    setup_bytes = 0
    certified = all(w.certified for w in local)
    certify_from = max(w.certify_from for w in local)
    cap = max((w.cap or 0) for w in local)
    d_query = C.shape[1]
    eps = torch.finfo(C.dtype).eps
    c0 = norm64(C)                                   # the user's C, before the probe joins it

    # the probe column (paper mode): c = A x and its exact answer B x when data is consistent
    # (M = 1 is the centralized iteration. GD needs no probe when its mean gradient is the full
    # gradient — exact on any data, checked on its gradient residual — which holds
    # with global normalisation (one ρ for all); with local ρ_μ it solves a column-weighted
    # problem, exact only on consistent data, so it carries the probe like EAGLE)
    is_gd = certified and local[0].kernel.eta == 0.0 and cfg.normalization == "global"
    probe = cfg.mode == "paper" and cfg.verify and M > 1 and not is_gd
    bx = None
    if probe:
        parts = [w.probe_parts(opts.seed) for w in local]
        buf = torch.cat([_sum_local([p[0] for p in parts]), _sum_local([p[1] for p in parts])])
        setup_bytes += buf.numel() * buf.element_size()
        buf = comm(buf, "sum")
        c, bx = buf[:C.shape[0]], buf[C.shape[0]:]
        cn = norm64(c)
        if cn > 0.0:
            f = max(norm64(C), 1e-300) / cn              # the probe at the scale of C
            C = torch.cat([C, (c * f).reshape(-1, 1)], dim=1)
            D = torch.cat([D, torch.zeros(D.shape[0], 1, dtype=D.dtype, device=D.device)], dim=1)
            bx = bx * f
        else:
            probe = False

    voting = opts.time_budget is not None or opts.callback is not None

    def certifier() -> bool:
        if cfg.mode == "gram":
            return well_conditioned_gram(state["K"])
        # paper mode: every worker's A^μ well conditioned (one tiny collective, same rounds on
        # every rank because the step rule is evaluated on identical reduced tensors)
        bad = torch.tensor([0.0 if all(well_conditioned(w.A, spectral_norm_sq(w.A, iters=50)[0])
                                        for w in local) else 1.0], dtype=C.dtype, device=C.device)
        return float(comm(bad, "max")[0]) == 0.0

    gaps: List[float] = []

    def verify() -> Optional[Status]:
        if is_gd:
            # ‖Aᵀ C_ℓ‖ / ‖Aᵀ C₀‖ over all shards: the part of C still to be transferred
            g = torch.tensor([sum(norm64(w.A.T @ state["C"]) ** 2 for w in local)],
                             dtype=torch.float64)
            ratio = math.sqrt(float(comm(g.to(C.dtype), "sum")[0]) / max(state["g0"], 1e-300))
            return Status.CONVERGED if ratio <= opts.tol else None
        if not probe:
            # gram mode and M = 1 are the centralized iteration (exact); the paper's mode
            # without its probe cannot tell a biased fixed point from the answer
            return Status.CONVERGED if (cfg.mode == "gram" or M == 1) and certified \
                else Status.UNVERIFIED
        gap = probe_gap()
        gaps.append(gap)
        if gap <= max(10.0 * opts.tol, 100.0 * eps):
            return transferred(max(10.0 * opts.tol, 100.0 * eps))
        # not there: keep going while the probe improves; a probe stuck well above rounding
        # means the paper's mode has converged to a biased point (inconsistent data)
        if len(gaps) >= 10 and min(gaps[-5:]) > 0.5 * min(gaps[:-5]) and gap > math.sqrt(eps):
            return Status.INEXACT
        return None

    remainder: List["tuple[int, float]"] = []

    def transferred(thr: float) -> Optional[Status]:
        """The paper's mode, probe passed: how much of the user's C is still untransferred
        (every direction weighed equally, unlike the probe). Small: CONVERGED. Shrinking: go
        on. Stalled (at the recent rate the target is > 100·max_iter rounds away): UNVERIFIED."""
        t = norm64(state["C"][:, :d_query]) / c0 if c0 > 0.0 else 0.0
        state["c_remainder"] = t
        if t <= thr:
            return Status.CONVERGED
        remainder.append((mon.iteration, t))
        if len(remainder) >= 10:
            (i0, t0), (i1, t1) = remainder[-10], remainder[-1]
            rate = math.log(t0 / t1) / max(i1 - i0, 1)
            if not rate > 0.0 or math.log(t1 / thr) / rate > 100 * opts.max_iter:
                return Status.UNVERIFIED
        return None

    def probe_gap() -> float:
        num = norm64(state["D"][:, -1] - bx)
        den = norm64(bx)
        return num / den if den > 0 else (0.0 if num == 0 else math.inf)

    state = {"D": D, "C": C, "K": None, "g0": 1.0, "is_gd": is_gd, "c_remainder": float("nan")}
    if on_round is not None:
        on_round(0)
    rule = StepRule(certify_from if certified else 0,
                    certifier=certifier if certified and cap else None, confirm=VerifyRule(verify))
    mon = Monitor(_quiet(opts, progress=opts.progress and is_main), reference,
                  desc=f"rounds(M={M}, {cfg.mode})", rule=rule, C0_norm=norm64(C),
                  denominator=denominator, guard_from=(cap + 1) if (certified and cap) else None)
    mon.on_round = on_round
    rounds = _gram_rounds if cfg.mode == "gram" else _paper_rounds
    D_fin, status, bytes_per_round, bytes_sent, setup_bytes = rounds(
        local, C, D, comm, cfg, mon, state, voting, is_main, setup_bytes, d_query)
    return _output(mon, D_fin, status, local, bytes_per_round=bytes_per_round,
                   setup_bytes=setup_bytes, bytes_sent=bytes_sent, mode=cfg.mode,
                   probe_gap=probe_gap() if probe else float("nan"),
                   c_remainder=state["c_remainder"],
                   certified_at=mon.certified_at if mon.certified_at is not None else -1,
                   best_iteration=mon.best_iteration)


def _output(mon: Monitor, D_fin: torch.Tensor, status: Status, local, **fields) -> RoundsOutput:
    """The rank's :class:`RoundsOutput` (a non-finite D is never handed back)."""
    if not bool(torch.isfinite(D_fin).all()):
        D_fin = torch.zeros_like(D_fin)
    h = mon.history
    return RoundsOutput(D=D_fin.cpu().numpy(), status=status.value, rounds=mon.iteration,
                        history=dict(step=h.step, error=h.error, time=h.time),
                        time_s=mon.elapsed(),
                        frozen_at=[w.frozen_at if w.frozen_at is not None else -1 for w in local],
                        **fields)


def well_conditioned_gram(K: torch.Tensor) -> bool:
    """Gram-mode certificate: ``K = A Aᵀ`` (normalised, ‖A‖₂ = 1) has ``‖I − K‖_F² ≤ 1/4``."""
    E = K.clone()
    E.diagonal().sub_(1.0)
    return norm64(E) ** 2 <= 0.25


def _vote(buf: torch.Tensor, mon: Monitor, opts: SolverOptions, is_main: bool) -> None:
    if is_main:
        if opts.time_budget is not None and mon.elapsed() >= opts.time_budget:
            buf[-1] = 1.0
        elif opts.callback is not None and len(mon.history) and opts.callback(
                mon.iteration, {"step": mon.history.step[-1], "error": mon.history.error[-1],
                                "time": mon.elapsed()}):
            buf[-1] = 2.0


def _round_buffer(local, cfg: RoundConfig, rnd: int, size: int, voting: bool,
                  like: torch.Tensor) -> torch.Tensor:
    """Start round ``rnd``: fire an injected fault if one is due; a zero message of ``size``
    numbers (+1 slot for the driver's vote on the time budget / callback)."""
    if cfg.fault is not None:
        cfg.fault.maybe_fire(local[0].rank, rnd)
    return torch.zeros(size + (1 if voting else 0), dtype=like.dtype, device=like.device)


def _reduce_round(buf: torch.Tensor, comm, mon: Monitor, opts: SolverOptions, voting: bool,
                  is_main: bool):
    """Cast the vote, all-reduce the round's message; ``(reduced, vote, bytes sent)``."""
    if voting:
        _vote(buf, mon, opts, is_main)
    nbytes = buf.numel() * buf.element_size()
    buf = comm(buf, "sum")
    return buf, (float(buf[-1]) if voting else 0.0), nbytes


def _record(mon: Monitor, D: torch.Tensor, D_old: torch.Tensor, C: torch.Tensor, d_query: int,
            vote: float) -> Optional[Status]:
    """Record a round on the user's columns of D (the probe column, if any, is the last)."""
    status = mon.record(D[:, :d_query], D_old[:, :d_query], C_norm=norm64(C))
    if mon.on_round is not None:
        mon.on_round(mon.iteration)
    if status is None and vote > 0:
        status = Status.TIME_BUDGET if vote == 1.0 else Status.CONVERGED
        mon.close()
    return status


def _paper_rounds(local, C, D, comm, cfg, mon, state, voting, is_main, setup_bytes, dq):
    M, opts = cfg.workers, cfg.opts
    # Normalisation: local (each worker ‖A^μ‖₂ = 1) or global (one max-norm all-reduce).
    norms = torch.tensor([w.norm_sq() if cfg.normalization != "none" else 1.0 for w in local],
                         dtype=torch.float64)
    if cfg.normalization == "global":
        mx = torch.tensor([float(norms.max())], dtype=C.dtype, device=C.device)
        mx = comm(mx, "max")
        setup_bytes += mx.numel() * mx.element_size()
        for w in local:
            w.scale(1.0 / float(mx[0]) ** 0.5)
    elif cfg.normalization == "local":
        for w, s2 in zip(local, norms.tolist()):
            w.scale(1.0 / s2 ** 0.5)
    # "none": a kernel that works on the data's own scale (a trained transformer layer)
    if state["is_gd"]:                                       # GD's residual denominator
        g = torch.tensor([sum(norm64(w.A.T @ C) ** 2 for w in local)], dtype=C.dtype,
                         device=C.device)
        state["g0"] = float(comm(g, "sum")[0])
        setup_bytes += g.numel() * g.element_size()
    n_c, n_d = C.numel(), D.numel()
    bytes_per_round = bytes_sent = 0
    status, rnd = None, 0
    D_old = D
    while status is None:
        rnd += 1
        buf = _round_buffer(local, cfg, rnd, n_c + n_d, voting, C)
        for w in local:
            Cp, Dp = w.local_update(C, D, rnd, cfg)
            buf[:n_c] += Cp.reshape(-1)
            buf[n_c:n_c + n_d] += Dp.reshape(-1)
        buf, vote, bytes_per_round = _reduce_round(buf, comm, mon, opts, voting, is_main)
        bytes_sent += bytes_per_round
        D_old, C = D, (buf[:n_c] / M).reshape(C.shape)
        D = (buf[n_c:n_c + n_d] / M).reshape(D.shape)
        state["D"], state["C"] = D, C
        status = _record(mon, D, D_old, C, dq, vote)
    return _final(mon, D, D_old, status, dq), status, bytes_per_round, bytes_sent, setup_bytes


def _final(mon: Monitor, D: torch.Tensor, D_old: torch.Tensor, status: Status, dq: int):
    """The user's columns of the iterate to return: the last finite one after NON_FINITE,
    else what the monitor keeps (never worse than the best guarded iterate)."""
    if status is Status.NON_FINITE and not bool(torch.isfinite(D).all()):
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
        return D[:, :dq]
    return mon.final(D[:, :dq])


def _gram_rounds(local, C, D, comm, cfg, mon, state, voting, is_main, setup_bytes, dq):
    """Exact centralized EAGLE over column shards: all-reduce (A Aᵀ, B Aᵀ) while A, B move."""
    opts = cfg.opts
    n, nq = C.shape[0], D.shape[0]
    iu = torch.triu_indices(n, n, device=C.device)          # K is symmetric: send one triangle
    n_k, n_x = iu.shape[1], nq * n

    def reduce_grams(extra: int):
        buf = torch.zeros(n_k + n_x + extra, dtype=C.dtype, device=C.device)
        for w in local:
            buf[:n_k] += (w.A @ w.A.T)[iu[0], iu[1]]
            buf[n_k:n_k + n_x] += (w.B @ w.A.T).reshape(-1)
        return buf

    def unpack(buf):
        K = torch.zeros(n, n, dtype=C.dtype, device=C.device)
        K[iu[0], iu[1]] = buf[:n_k]
        K = K + K.triu(1).T
        return K, buf[n_k:n_k + n_x].reshape(nq, n)

    # global normalisation from the first Gram: ‖A‖₂² = λ_max(A Aᵀ) (identical on every rank)
    buf = comm(reduce_grams(0), "sum")
    setup_bytes += buf.numel() * buf.element_size()
    K, X = unpack(buf)
    lam = spectral_norm_sq(K, iters=200, rtol=1e-8)[0] ** 0.5     # ‖K‖₂ = λ_max(K) = ‖A‖₂²
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError("A is numerically zero: B A⁺ C = 0, nothing to complete")
    for w in local:
        w.scale(1.0 / math.sqrt(lam))
    K, X = K / lam, X / lam
    bytes_per_round = bytes_sent = 0
    status, rnd = None, 0
    D_old = D
    fresh = True                                             # K, X belong to the current A, B
    while status is None:
        rnd += 1
        if cfg.fault is not None:
            cfg.fault.maybe_fire(local[0].rank, rnd)
        moving = any(w.update_ab for w in local)
        if not fresh:
            buf = reduce_grams(1 if voting else 0)
            if voting:
                _vote(buf, mon, opts, is_main)
            bytes_per_round = max(bytes_per_round, buf.numel() * buf.element_size())
            bytes_sent += buf.numel() * buf.element_size()
            buf = comm(buf, "sum")
            K, X = unpack(buf)
            vote = float(buf[-1]) if voting else 0.0
        elif voting:
            vb = torch.zeros(1, dtype=C.dtype, device=C.device)
            _vote(vb, mon, opts, is_main)
            bytes_sent += vb.numel() * vb.element_size()
            vote = float(comm(vb, "sum")[0])
        else:
            vote = 0.0
        state["K"] = K
        for w in local:                                      # C, D come out identical on all
            Cn, Dn = w.local_update(C, D, rnd, cfg, gram=K, cross=X)
        fresh = not moving                                   # A, B moved: the Grams are stale
        D_old, C, D = D, Cn, Dn
        state["D"], state["C"] = D, C
        status = _record(mon, D, D_old, C, dq, vote)
    return _final(mon, D, D_old, status, dq), status, bytes_per_round, bytes_sent, setup_bytes


def _quiet(opts: SolverOptions, progress: bool) -> SolverOptions:
    """The rules every rank evaluates alike: no user callback, no time budget (voted instead)."""
    return replace(opts, progress=progress, callback=None, time_budget=None)
