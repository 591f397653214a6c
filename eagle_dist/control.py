"""Run control shared by every solver, both distributed modes and (later) the model code: options,
device/dtype resolution, tensors on a device, thread budget and the iteration monitor.

Floor 1 of the layering (it imports only ``result``): ``solvers/``, ``distributed/`` and ``model/``
all depend on it, none on each other.

One stopping vocabulary for every method:

* ``tol``: stop when the relative step ``‖D_ℓ − D_{ℓ−1}‖_F ≤ tol · ‖D_ℓ‖_F`` holds on ``patience``
  consecutive iterations with non-increasing steps (``CONVERGED``);
* ``target_error``: stop when ``‖D_ℓ − D̂‖_F ≤ target_error · ‖D̂‖_F`` (needs a reference; the
  benchmarks use it to count iterations to a fixed accuracy) (``CONVERGED``);
* ``target_residual``: stop when the relative residual of the linear system ``W A = B``,
  ``‖W_ℓ A − B‖_F ≤ target_residual · ‖B‖_F``, holds on the TRUE residual (:func:`relative_residual`;
  the paper's real-data rule ``‖wA − B‖² ≤ τ‖B‖²`` is ``target_residual = √τ``). A method may
  give the monitor a cheap estimate (CG's recurrence); the true residual is computed whenever the
  estimate passes, and only the true one may stop the solve (``CONVERGED``);
* ``max_iter`` (``MAX_ITERATIONS``), ``time_budget`` seconds (``TIME_BUDGET``);
* a non-finite iterate stops with ``NON_FINITE``; ``‖C_ℓ‖`` growing by 1e6 stops with ``DIVERGED``;
* ``callback(iteration, info) -> bool``: returning True stops with ``CONVERGED`` (user's rule).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from .options import SolveOptions
from .result import History, Status

log = logging.getLogger("eagle_dist")

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


#: the one options object (:mod:`eagle_dist.options`); the loops read their stopping rules from it
SolverOptions = SolveOptions


def norm64(x: torch.Tensor) -> float:
    """Frobenius norm in float64, scaled by the largest magnitude first (exact power of two), so
    entries near 1e-170 or 1e200 neither underflow to 0 nor overflow to inf when squared."""
    x = x.detach()
    if x.numel() == 0:
        return 0.0
    # one pass, one host sync in the common case: a float64 norm in (1e-100, 1e100) is exact to
    # rounding (entries whose squares underflow add < numel·1e-308 to a square sum ≥ 1e-200, and
    # nothing overflowed); outside that window, or non-finite, take the scaled path below
    nrm = float(torch.linalg.vector_norm(x, dtype=torch.float64))
    if 1e-100 < nrm < 1e100:
        return nrm
    x = x.to(torch.float64)
    m = float(x.abs().max())
    if m == 0.0 or not math.isfinite(m):
        return m
    s = 2.0 ** math.floor(math.log2(m))
    return s * float(torch.linalg.vector_norm(x / s))



def relative_residual(A: torch.Tensor, B: torch.Tensor, W: torch.Tensor) -> float:
    """THE residual metric of the linear system ``W A = B``: ``‖W A − B‖_F / ‖B‖_F`` (scaled
    float64 norms; ``‖W A‖_F`` when ``B = 0``). Every method's ``target_residual`` rule and every
    report of a final residual use this one function."""
    num = norm64(W.to(A.dtype) @ A - B)
    den = norm64(B)
    return num / den if den > 0 else num


def lsq_ratio(r_norm: float, ra_norm: float, b_norm: float, a_norm: float,
              w_norm: float) -> float:
    """LSQR's two stopping tests from norms (Frobenius throughout, ``R = B − W A``):
    ``min(‖R‖ / (‖B‖ + ‖A‖ ‖W‖), ‖R Aᵀ‖ / (‖A‖ ‖R‖))``; ``≤ tol`` means passed (S1: consistent
    systems, S2: the normal equations hold). Shared by the centralized and distributed checks."""
    s1 = r_norm / max(b_norm + a_norm * w_norm, 1e-300)
    s2 = ra_norm / max(a_norm * r_norm, 1e-300) if r_norm > 0 else 0.0
    val = min(s1, s2)
    return val if math.isfinite(val) else math.inf


def cg_check_due(rec: float, tol: float, a_norm: float, b_norm: float, iteration: int,
                 last_checked: int, every: int = 10) -> bool:
    """When CG on the normal equations computes its true residual check: when the recurrence
    ``‖(B − W A) Aᵀ‖`` says the S2 test may pass (``‖B − W A‖ ≤ ‖B‖`` for every CG iterate), or
    every ``every`` iterations."""
    return rec <= tol * a_norm * b_norm or iteration - last_checked >= every


def normal_cg_step(W: torch.Tensor, R: torch.Tensor, P: torch.Tensor, rr: torch.Tensor,
                   Q: torch.Tensor):
    """One step of CG on the normal equations ``W (A Aᵀ) = B Aᵀ``, one CG per row of W, given
    ``Q = P (A Aᵀ)``; returns ``(W, R, P, rr, alpha, broke)`` (``broke``: no direction left).
    The centralized (:func:`eagle_dist.solvers.baselines.cg`) and distributed loops share it."""
    pq = (P * Q).sum(dim=1)
    ok = pq > 0
    alpha = torch.where(ok, rr / torch.where(ok, pq, torch.ones_like(pq)), torch.zeros_like(pq))
    W = W + alpha[:, None] * P
    R = R - alpha[:, None] * Q
    rr_new = (R * R).sum(dim=1)
    beta = torch.where(rr > 0, rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)),
                       torch.zeros_like(rr))
    P = R + beta[:, None] * P
    return W, R, P, rr_new, alpha, not bool(ok.any())


def identity_c(problem) -> bool:
    """Whether ``C`` is the identity, so ``D = W`` (the linear-system form ``w A = B``)."""
    C = problem.C
    return C.shape[0] == C.shape[1] and bool(np.array_equal(C, np.eye(C.shape[0], dtype=C.dtype)))

#: seconds between log lines of a long solve when no progress bar is shown
LOG_EVERY_S = 30.0


class Progress:
    """Progress of long work, wherever a person waits: a throttled bar when stderr is a terminal
    (redrawn at most every 0.5 s), otherwise a log line every ``LOG_EVERY_S`` seconds (5 s when
    progress was asked for), never a flood of redraws into a file."""

    def __init__(self, desc: str, total: Optional[int], unit: str = "it", show: bool = False):
        import sys
        self.desc, self.total = desc, total
        self.t0 = self._last = time.perf_counter()
        self._bar = None
        if show and sys.stderr is not None and sys.stderr.isatty():
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5,
                             maxinterval=5.0)
        self._every = 5.0 if show else LOG_EVERY_S
        self._count = 0

    def update(self, count: int, line: str = "", **postfix) -> None:
        if self._bar is not None:
            self._bar.update(count - self._count)
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)
        else:
            now = time.perf_counter()
            if now - self._last >= self._every:
                self._last = now
                of = f"/{self.total}" if self.total else ""
                log.info("%s: %d%s, %s, %.1f s", self.desc, count, of, line, now - self.t0)
        self._count = count

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Rule:
    """A method family's ``tol`` rule: :meth:`check` sees each recorded step and returns a
    :class:`Status` that ends the solve, or ``None``. ``last_residual`` is the last independent
    check computed (NaN when the rule computes none); ``certified_at`` the iteration where an
    early certificate was granted (``None``: none); ``certify_from`` the first iteration whose
    step may be accepted (progress lines call the ones before it the lift phase)."""

    last_residual = float("nan")
    certified_at: Optional[int] = None
    certify_from = 0

    def check(self, mon: Monitor, step: float) -> Optional[Status]:  # pragma: no cover
        raise NotImplementedError


class ResidualRule(Rule):
    """The residual check alone decides: ``residual() ≤ tol`` (CG: its D-steps say nothing on
    singular systems). Also the confirmation step of :class:`StepRule` for GD."""

    def __init__(self, residual: Callable[[], float]):
        self.residual = residual

    def check(self, mon: Monitor, step: float) -> Optional[Status]:
        self.last_residual = float(self.residual())
        return Status.CONVERGED if self.last_residual <= mon.opts.tol else None


class VerifyRule(Rule):
    """A confirmation that returns its own verdict: ``CONVERGED``, ``INEXACT`` or ``UNVERIFIED``
    ends the solve, ``None`` goes on (distributed EAGLE's probe and transfer checks)."""

    def __init__(self, verify: Callable[[], Optional[Status]]):
        self.verify = verify

    def check(self, mon: Monitor, step: float) -> Optional[Status]:
        return self.verify()


class StepRule(Rule):
    """EAGLE's family: the relative step ``‖D_ℓ − D_ℓ₋₁‖ ≤ tol ‖D_ℓ‖`` on ``patience``
    consecutive non-increasing steps, counted as soon as they hold but accepted only once the
    iterate is certified — from ``certify_from`` on (EAGLE: the lift phase is complete, so the
    D-step bounds the remaining error; before that a direction with a small singular value makes
    tiny steps while most of its mass is still missing), or earlier when ``certifier()`` says so
    (A already well conditioned). Then ``confirm`` (a :class:`Rule`) has the last word; without
    one the step rule alone gives ``CONVERGED``."""

    def __init__(self, certify_from: int = 0, certifier: Optional[Callable[[], bool]] = None,
                 confirm: Optional[Rule] = None):
        self.certify_from = int(certify_from)
        self.certifier = certifier
        self.confirm = confirm
        self._small = 0
        self._prev = math.inf

    @property
    def last_residual(self) -> float:                      # type: ignore[override]
        return self.confirm.last_residual if self.confirm is not None else float("nan")

    def check(self, mon: Monitor, step: float) -> Optional[Status]:
        self._small = self._small + 1 if (step <= mon.opts.tol and step <= self._prev) else 0
        self._prev = step
        if self._small < mon.opts.patience or not self._certified(mon.iteration):
            return None
        return Status.CONVERGED if self.confirm is None else self.confirm.check(mon, step)

    def _certified(self, iteration: int) -> bool:
        if iteration >= self.certify_from:
            return True
        if self.certifier is not None and self.certifier():
            self.certified_at = iteration
            return True
        return False


class LinearSystem:
    """What ``target_residual`` checks: the relative residual ``‖W A − B‖ / ‖B‖`` of the (scaled)
    blocks, with ``current_w(D_new) -> W`` giving the iterate's ``W`` (EAGLE/GD with ``C = I``:
    ``D`` itself). ``estimate`` (optional) is a cheap ``() -> float`` estimate (CG's recurrence):
    the true residual is computed only once it passes, only the true one can stop the solve, and
    ``resync(true)`` is told the true value when the estimate was too optimistic."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor,
                 current_w: Callable[[torch.Tensor], torch.Tensor],
                 estimate: Optional[Callable[[], float]] = None,
                 resync: Optional[Callable[[float], None]] = None):
        self.A, self.B, self.current_w = A, B, current_w
        self.estimate, self.resync = estimate, resync
        self.last_true = float("nan")                  # the last TRUE relative residual computed

    def residual(self, D_new: torch.Tensor, target: float):
        """``(residual, passed)``: the estimate while it is above ``target``, then the truth."""
        if self.estimate is not None:
            est = float(self.estimate())
            if not est <= target:
                return est, False
        true = relative_residual(self.A, self.B, self.current_w(D_new))
        self.last_true = true
        if not true <= target and self.resync is not None:
            self.resync(true)                          # the estimate drifted: resynchronise it
        return true, true <= target


class Monitor:
    """Records the history of an iterative solve and decides when it stops (rules above).

    The decision, in order: a non-finite iterate (``NON_FINITE``) or ``‖C_ℓ‖`` grown 1e6-fold
    past ``C0_norm`` (``DIVERGED``); the guard (``guard_from``: from this iteration on the steps
    must not grow — EAGLE with A and B frozen; the monitor keeps the iterate with the smallest
    step, :attr:`best`, and stops with ``DIVERGED`` when the steps grow persistently); then the
    request's target — ``target_error`` against the reference, ``target_residual`` on ``system``
    (a :class:`LinearSystem`) — or else the method's ``rule`` (a :class:`Rule`, default
    :class:`StepRule`); then the user's callback, ``max_iter`` and ``time_budget``.
    """

    def __init__(self, opts: SolverOptions, reference: Optional[torch.Tensor], desc: str = "",
                 rule: Optional[Rule] = None, *, C0_norm: Optional[float] = None,
                 denominator: Optional[float] = None, guard_from: Optional[int] = None,
                 system: Optional[LinearSystem] = None):
        self.opts = opts
        if opts.target_residual is not None and system is None:
            raise ValueError(f"target_residual is not supported by {desc or 'this solver'}")
        self.rule = rule if rule is not None else StepRule()
        self.system = system
        self.ref = reference
        if reference is not None and denominator is None:
            denominator = norm64(reference)
        self.ref_norm = denominator
        self.history = History()
        self.t0 = time.perf_counter()
        self.iteration = 0
        self.C0_norm = C0_norm
        self.status: Optional[Status] = None
        self.guard_from = guard_from
        self.best: Optional[torch.Tensor] = None     # iterate with the smallest guarded step
        self.best_step = math.inf
        self.best_iteration = 0
        self._rising = 0
        self.desc = desc or "solve"
        self.on_round: Optional[Callable[[int], None]] = None    # distributed: per-round hook
        # no total: a bar against the iteration cap gives meaningless percentages and ETAs; the
        # line shows what drives convergence instead (the lift phase, then step vs tol, or the
        # error / residual against its target)
        self._progress = Progress(self.desc, None, "it", opts.progress)

    @property
    def certified_at(self) -> Optional[int]:
        return self.rule.certified_at

    @property
    def last_residual(self) -> float:
        """The method rule's last independent check (NaN when it computed none)."""
        return self.rule.last_residual

    @property
    def last_system_residual(self) -> float:
        """The last TRUE relative residual of ``target_residual`` (NaN when none was computed)."""
        return self.system.last_true if self.system is not None else float("nan")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def error_of(self, D: torch.Tensor) -> float:
        if self.ref is None:
            return float("nan")
        diff = norm64(D.to(self.ref.dtype) - self.ref)
        return diff / self.ref_norm if self.ref_norm > 0 else diff

    def record(self, D_new: torch.Tensor, D_old: torch.Tensor, *, rho: float = float("nan"),
               C_norm: Optional[float] = None) -> Optional[Status]:
        """Record iteration ``ℓ`` and return a :class:`Status` if the solve must stop."""
        self.iteration += 1
        # scaled float64 norms: a block of entries ~1e-20 in float32 (or 1e-170 in float64)
        # squares to 0, which made a far-from-converged run stop as "converged" after 2 steps
        dn = norm64(D_new)
        step = norm64(D_new - D_old) / max(dn, _TINY)
        if dn == 0.0:
            step = 0.0 if norm64(D_old) == 0.0 else math.inf
        o = self.opts
        want_err = o.record_error or o.target_error is not None
        err = self.error_of(D_new) if want_err else float("nan")
        res, res_ok = (self.system.residual(D_new, o.target_residual)
                       if o.target_residual is not None else (float("nan"), False))
        self.history.append(step, err, self.elapsed(), rho, res)
        certify_from = self.rule.certify_from
        if self.iteration < certify_from:
            phase = f"lift phase {self.iteration}/{certify_from}"
        elif o.target_error is not None:
            phase = f"error {err:.1e} → target {o.target_error:.0e}"
        elif o.target_residual is not None:
            phase = f"residual {res:.1e} → target {o.target_residual:.0e}"
        else:
            phase = f"step {step:.1e} → tol {o.tol:.0e}"
        self._progress.update(self.iteration, phase, phase=phase)
        status = self._decide(step, err, dn, C_norm, D_new, res_ok)
        if status is not None:
            self.close()
            self.status = status
        return status

    def _guard(self, step: float, D_new: torch.Tensor) -> Optional[Status]:
        """Best-iterate bookkeeping and the growth rule once steps must be non-increasing."""
        if self.guard_from is None or self.iteration < self.guard_from or not math.isfinite(step):
            return None
        if self.best is None or step < 0.5 * self.best_step:
            # a clear improvement only: at the rounding floor the steps jitter, and the earliest
            # iterate at the floor is the one rounding has had least time to move
            self.best_step, self.best_iteration = step, self.iteration
            self.best = D_new.clone()
            self._rising = 0
            return None
        floor = 100.0 * torch.finfo(D_new.dtype).eps
        if step > max(10.0 * self.best_step, floor):
            self._rising += 1
            if self._rising >= 5:
                return Status.DIVERGED
        return None

    def _decide(self, step, err, dn, C_norm, D_new, res_ok=False) -> Optional[Status]:
        o = self.opts
        if not (math.isfinite(dn) and math.isfinite(step)) or (C_norm is not None and not math.isfinite(C_norm)):
            return Status.NON_FINITE
        if C_norm is not None and self.C0_norm and C_norm > 1e6 * self.C0_norm:
            return Status.DIVERGED
        guarded = self._guard(step, D_new)
        if guarded is not None:
            return guarded
        if o.target_error is not None and self.ref is not None:
            if err <= o.target_error:
                return Status.CONVERGED
        elif o.target_residual is not None:
            if res_ok:
                return Status.CONVERGED
        else:
            verdict = self.rule.check(self, step)
            if verdict is not None:
                return verdict
        if o.callback is not None and o.callback(self.iteration, {"step": step, "error": err,
                                                                   "time": self.elapsed()}):
            return Status.CONVERGED
        if self.iteration >= o.max_iter:
            return Status.MAX_ITERATIONS
        if o.time_budget is not None and self.elapsed() >= o.time_budget:
            return Status.TIME_BUDGET
        return None

    def final(self, D: torch.Tensor) -> torch.Tensor:
        """The iterate to return. After a tol-based ``CONVERGED`` the last one; otherwise (the
        iteration ran out, hit its budget or the steps grew) the guarded best iterate when there
        is one — the solver never hands back an iterate worse than the best it has seen."""
        if self.best is not None and self.status is not Status.CONVERGED:
            return self.best
        return D

    def close(self) -> None:
        self._progress.close()


#: below this many entries of A (about 500 x 500) a solve runs on one thread: measured on this
#: 2-core machine, torch's default 2 threads made CG 2.8x (n = 60) to 4x (n = 240) slower with
#: another process busy on the second core, and EAGLE 1.6-2.3x; from n ≈ 600 on a quiet machine
#: two threads win (EAGLE 0.30 s vs 0.58 s), so large problems keep torch's setting.
SMALL_PROBLEM_ENTRIES = 250_000


def machine_is_busy() -> bool:
    """Whether other work already fills the cores (1-minute load average ≥ cores − 0.5). Then a
    multi-threaded BLAS call spends its time waiting for descheduled threads: measured on this
    2-core machine at load 12, a 1000 x 1000 float64 lstsq took 106 s with torch's 2 threads."""
    import os
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def thread_budget(entries: int, threads: Optional[int] = None):
    """Run the enclosed solve on ``threads`` torch threads (``None``: 1 for small problems, else
    torch's current setting); the previous setting is restored afterwards."""
    old = torch.get_num_threads()
    want = threads if threads is not None else (
        1 if entries < SMALL_PROBLEM_ENTRIES or machine_is_busy() else old)
    if want != old:
        torch.set_num_threads(int(want))
    try:
        yield int(want)
    finally:
        if want != old:
            torch.set_num_threads(old)


def to_tensors(problem, device: torch.device, dtype: torch.dtype):
    """The blocks as fresh tensors (the problem's arrays are never touched)."""
    def t(x):
        return torch.tensor(x, dtype=dtype, device=device)
    return t(problem.A), t(problem.B), t(problem.C)


def scaled_tensors(problem, device: torch.device, dtype: torch.dtype):
    """``(A/2^a, B/2^b, C/2^c, BlockScale(a, b, c))``: every block divided by its largest power
    of two in float64 *before* the cast (exact), so float64 data far outside float32's range
    still converts; ``B A⁺ C = 2^(b+c−a) · B' A'⁺ C'`` (:class:`eagle_dist.result.BlockScale`,
    the exponent kept as an integer so the factor itself never under/overflows)."""
    from .result import BlockScale
    scale = BlockScale.of(problem.A, problem.B, problem.C)
    out = [torch.tensor(np.asarray(x, dtype=np.float64) / s, dtype=dtype, device=device)
           for x, s in zip((problem.A, problem.B, problem.C), scale.factors)]
    return out[0], out[1], out[2], scale


def reference_tensor(problem, device, record: bool):
    """The float64 reference ``B A⁺ C`` on the device, or ``None`` when not wanted."""
    if not record:
        return None
    return torch.tensor(problem.reference, dtype=torch.float64, device=device)
