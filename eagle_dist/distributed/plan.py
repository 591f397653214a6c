"""Planning a distributed solve: validate every argument and build each rank's
:class:`~eagle_dist.distributed.protocol.RankTask` before any process or actor exists
(:func:`prepare`), and turn the ranks' results into one :class:`SolveResult` (:func:`assemble`).

Where the data lives is decided in one place, :func:`data_source`: an in-memory
:class:`~eagle_dist.problem.Problem` (the driver slices the shards) or a column store (the driver
never reads A or B: scales from the manifest, each rank reads its own columns).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np
import torch

from ..control import SolverOptions, resolve_dtype
from ..data.shards import make_shards
from ..result import BlockScale, History, SolveResult, Status, pow2_exponent, unscale_completion
from .network import Network
from .protocol import RankResult, RankTask, as_local_kernel, is_certified, kernel_name
from .worker import MODES, EagleKernel, FaultInjection, RoundConfig

#: ``mode="auto"`` picks the Gram mode while its per-round message, (n + n')·n numbers, stays
#: at or below this many (32 MiB in float64) — or whenever n ≤ d', where the paper's message is
#: no smaller anyway — and the paper's mode beyond (large n: the paper's message is d'/n of the
#: Gram message, at the price of α-dependent rounds and exactness on consistent data only).
GRAM_AUTO_MAX_ELEMENTS = 4_194_304


def choose_mode(mode: str, n: int, n_query: int, d_query: int, method: str = "eagle") -> str:
    """Resolve ``mode`` (``"auto"`` by the cost model above; GD always runs the paper's loop,
    whose mean gradient is already exact)."""
    if mode not in ("auto",) + MODES:
        raise ValueError(f"mode={mode!r}; use 'auto', 'paper' or 'gram'")
    if method == "cg":
        if mode != "auto":
            raise ValueError(f"mode={mode!r} is for method='eagle'; distributed CG has one form "
                             "(all-reduce P·A Aᵀ, n'·n numbers a round): leave mode='auto'")
        return "cg"
    if method == "gd":
        if mode == "gram":
            raise ValueError("mode='gram' is for method='eagle'; distributed GD (all-reduced mean "
                             "gradients) is exact in the paper's loop already")
        return "paper"
    if mode != "auto":
        return mode
    return "gram" if (n <= d_query or (n + n_query) * n <= GRAM_AUTO_MAX_ELEMENTS) else "paper"


class _ArraySource:
    """An in-memory problem: the driver slices the shards."""

    def __init__(self, problem):
        self.problem = problem
        self.has_reference = True

    def C(self) -> np.ndarray:
        return self.problem.C

    def scale(self) -> BlockScale:
        p = self.problem
        return BlockScale.of(p.A, p.B, p.C)

    def shards(self, idx, scale: BlockScale, contiguous: bool):
        s_a, s_b, _ = scale.factors
        A = self.problem.A.astype(np.float64) / s_a
        B = self.problem.B.astype(np.float64) / s_b
        return [(np.ascontiguousarray(A[:, s]), np.ascontiguousarray(B[:, s])) for s in idx]

    def reference(self):
        return self.problem.reference, self.problem.error_denominator

    def error(self, D: np.ndarray) -> float:
        return self.problem.error(D)


class _StoreSource:
    """A column store: scales from the manifest; each rank is sent a ShardRef to read itself."""

    def __init__(self, store):
        self.store = store
        self.has_reference = store.has_d_true

    def C(self) -> np.ndarray:
        return self.store.load_C()

    def scale(self) -> BlockScale:
        s = self.store
        return BlockScale(pow2_exponent(np.array([s.max_abs_A])),
                          pow2_exponent(np.array([s.max_abs_B])), pow2_exponent(self.C()))

    def shards(self, idx, scale: BlockScale, contiguous: bool):
        from ..data.store import ShardRef
        s_a, s_b, _ = scale.factors
        return [(ShardRef(str(self.store.path), (int(s[0]), int(s[-1]) + 1) if contiguous else s,
                          scale_A=s_a, scale_B=s_b), None) for s in idx]

    def reference(self):
        return store_reference(self.store)

    def error(self, D: np.ndarray) -> float:
        from ..result import relative_error
        ref, den = store_reference(self.store)
        return relative_error(D, ref, den)


def data_source(problem):
    """The one place that decides how the data reaches the ranks."""
    from ..data.store import ColumnStore
    return _StoreSource(problem) if isinstance(problem, ColumnStore) else _ArraySource(problem)


@dataclass
class Plan:
    """A validated distributed solve: one task per rank, and what the driver needs to assemble
    the answer (``D = 2^scale.exponent · D'``)."""

    tasks: List[RankTask]
    method: str
    scale: BlockScale
    source: Any
    shards: str                      # "contiguous" | "random" | "explicit" (the label reported)


def prepare(problem, opts: SolverOptions, *, method: str = "eagle", workers: int = 2,
            shards="contiguous", eta: Optional[float] = None, gamma: Optional[float] = None,
            normalization: str = "local", accelerate: bool = False, timeout: float = 60.0,
            kernel=None, fault: Optional[FaultInjection] = None, mode: str = "auto",
            verify: bool = True, rcond: Optional[float] = None,
            network: Optional[Network] = None) -> Plan:
    """Validate everything and build each rank's task (no process is started here: bad shards,
    step sizes or timeouts fail before any worker exists).

    Every block is divided by its largest power of two first (exact); the plan's ``scale`` undoes
    it on D (``B A⁺ C`` scales as ``2^(b + c − a)``, kept as an integer exponent).
    ``network``: inject that network's delay into every all-reduce (checks the network model,
    :mod:`eagle_dist.distributed.network`)."""

    def real(v):
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)

    if method not in ("eagle", "gd", "cg"):
        raise ValueError(f"method={method!r} has no distributed form; use 'eagle', 'gd' or 'cg'")
    if method == "cg":
        given = [k for k, v in (("eta", eta), ("gamma", gamma), ("kernel", kernel),
                                ("rcond", rcond)) if v is not None]
        given += [k for k, v in (("accelerate", accelerate),
                                 ("normalization", normalization != "local")) if v]
        if given:
            raise ValueError(f"{given} do not apply to method='cg' (CG on the normal equations "
                             "has no step sizes, kernel or normalisation)")
    if method == "gd":
        if eta is not None and eta != 0:
            raise ValueError(f"eta={eta!r}: method='gd' is EAGLE with eta = 0; drop eta")
        eta = 0.0
    eta = 1.0 / 3.0 if eta is None else eta
    gamma = 1.0 if gamma is None else gamma
    if not real(eta) or not (0.0 <= eta <= 1.0 / 3.0):
        raise ValueError(f"eta={eta!r}: the distributed rounds use the normalised form (ρ_μ = 1 with "
                         "the 1/(1-η) rescale), valid for 0 <= eta <= 1/3")
    if not real(gamma) or not (0.0 < gamma < 2.0):
        raise ValueError(f"gamma={gamma!r} must lie in (0, 2); use 1")
    kernel = EagleKernel(eta=float(eta), gamma=float(gamma), rcond=rcond) if kernel is None \
        else as_local_kernel(kernel)
    custom = not isinstance(kernel, EagleKernel)
    if normalization not in ("local", "global") and not (custom and normalization == "none"):
        raise ValueError(f"normalization={normalization!r}; use 'local' or 'global' ('none' only "
                         "with a custom kernel that works on the data's own scale)")
    if custom and kernel.fixed_shape and verify:
        raise ValueError(f"{kernel_name(kernel)} works on blocks of a fixed shape and cannot "
                         "carry the probe column of verify=True; pass verify=False (its result is "
                         "then reported as unverified)")
    if not real(timeout) or not (timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a positive, finite number of seconds "
                         "(how long a collective may wait for a silent worker)")
    if not isinstance(verify, (bool, np.bool_)):
        raise ValueError(f"verify={verify!r} must be True or False")
    if rcond is not None and not (real(rcond) and 0.0 < rcond < 1.0):
        raise ValueError(f"rcond={rcond!r} must lie in (0, 1) (default sqrt(eps))")
    if custom and mode == "auto":
        mode = "paper"                     # a learned/custom layer is the paper's local kernel
    mode = choose_mode(mode, problem.n, problem.n_query, problem.d_query, method)
    if custom and mode == "gram":
        raise ValueError("a custom kernel runs in the paper's mode (mode='paper'): the Gram mode "
                         "is the centralized EAGLE update")
    source = data_source(problem)
    shard_idx = make_shards(problem.d, workers, shards, seed=opts.seed)
    dtype = "float32" if resolve_dtype(opts.dtype, problem.dtype) == torch.float32 else "float64"
    scale = source.scale() if kernel.scale_invariant else BlockScale(0, 0, 0)
    cfg = RoundConfig(workers=workers, normalization=normalization, accelerate=accelerate,
                      opts=opts, fault=fault, mode=mode, verify=bool(verify),
                      method="cg" if method == "cg" else "eagle", network=network)
    C = source.C().astype(np.float64) / scale.factors[2]
    ref = den = None
    if opts.record_error or opts.target_error is not None:
        ref, den = source.reference()
        ref, den = scale.to_unit(np.asarray(ref, dtype=np.float64)), scale.to_unit(float(den))
    contiguous = isinstance(shards, str) and shards == "contiguous"
    tasks = [RankTask(A=A, B=B, C=C, kernel=kernel, cfg=cfg, reference=ref, denominator=den,
                      dtype=dtype, device=opts.device or "auto", timeout=timeout)
             for A, B in source.shards(shard_idx, scale, contiguous)]
    return Plan(tasks=tasks, method=method, scale=scale, source=source,
                shards=shards if isinstance(shards, str) else "explicit")


def store_reference(store) -> "tuple[np.ndarray, float]":
    """``(reference, denominator)`` of a column store without reading A: its ``D_true`` (the
    known answer it was written with). A store without one has no reference at this scale; ask
    for it explicitly (``store.to_problem().reference`` loads the whole of A on this machine)."""
    D = store.load_D_true()
    if D is None:
        raise ValueError(f"record_error / target_error need a reference, and store {store.path} "
                         "has no D_true (the driver never reads A to compute B A⁺ C). Solve with "
                         "record_error=False (CLI: --no-reference) and rely on the residual "
                         "certificate, or write the store with a known answer")
    from ..result import safe_norm
    den = safe_norm(D)
    if not den > 0:                     # D̂ = 0: measure against the data scale ‖B‖‖C‖/‖A‖_F
        den = store.fro_B * safe_norm(store.load_C()) / max(store.fro_A, 1e-300)
    return D, float(den)


def assemble(plan: Plan, results: List[RankResult], *, backend: str, wall: float) -> SolveResult:
    """One :class:`SolveResult` from the ranks' results (rank 0's history; every rank's freeze
    and memory)."""
    task, r0 = plan.tasks[0], results[0]
    out, cfg = r0.rounds, task.cfg
    hist = History(step=list(out.history["step"]), error=list(out.history["error"]),
                   time=list(out.history["time"]), rho=[1.0] * len(out.history["step"]))
    status = Status(out.status)
    D, range_note = unscale_completion(out.D, plan.scale,
                                       np.float32 if task.dtype == "float32" else np.float64)
    if range_note or not np.isfinite(D).all():
        status, D = Status.NON_FINITE, np.zeros_like(D)
    itemsize = np.dtype(task.dtype).itemsize
    info = dict(mode=out.mode, normalization=cfg.normalization, shards=plan.shards,
                setup_bytes_per_worker=out.setup_bytes, rounds_time_s=out.time_s,
                wall_time_s=wall, message_elements=out.bytes_per_round // itemsize,
                bytes_sent_per_worker=out.bytes_sent, probe_gap=out.probe_gap,
                c_remainder=out.c_remainder, certified_at=out.certified_at,
                best_iteration=out.best_iteration, device=r0.device, rendezvous=r0.rendezvous,
                scale_exponent=plan.scale.exponent, collectives=out.collectives,
                collective_bytes_per_worker=out.collective_bytes)
    if cfg.network is not None:
        info.update(injected_network=cfg.network.name, injected_delay_s=out.injected_delay_s,
                    injected_wait_s=out.injected_wait_s)
    if out.fast_path:
        info["fast_path"] = out.fast_path
    placement = r0.placement or [dict(rank=r.rank, local_rank=r.local_rank, node_rank=r.node_rank,
                                      host=r.host, device=r.device) for r in results]
    info.update(placement=placement, nodes=len({p["node_rank"] for p in placement}))
    if range_note:
        info["note"] = range_note
    if cfg.method == "cg":
        info["check_rule"] = "min(S1, S2) of LSQR on B - W A"
    elif is_certified(task.kernel):
        info.update(eta=task.kernel.eta, gamma=task.kernel.gamma)
    else:
        info["kernel"] = kernel_name(task.kernel)
    if cfg.accelerate:
        frozen = [f for r in results for f in r.rounds.frozen_at]
        info["ab_frozen_at_min"], info["ab_frozen_at_max"] = int(min(frozen)), int(max(frozen))
    from .rank import peak_rss_bytes
    info.update(worker_peak_rss_bytes=max(r.peak_rss_bytes for r in results),
                shard_bytes_max=max(r.shard_bytes for r in results),
                driver_peak_rss_bytes=peak_rss_bytes(), loaded_by_worker=r0.loaded_by_worker)
    error = plan.source.error(D) if task.reference is not None else float("nan")
    return SolveResult(
        D=D, status=status, iterations=out.rounds, time_s=wall, history=hist,
        method=plan.method, regime="distributed", backend=backend, workers=cfg.workers,
        bytes_per_worker_per_round=out.bytes_per_round,
        bytes_total=cfg.workers * (out.bytes_sent + out.setup_bytes), error=error, info=info)


__all__ = ["prepare", "assemble", "choose_mode", "store_reference", "data_source", "Plan",
           "GRAM_AUTO_MAX_ELEMENTS"]
