"""Public entry points: :func:`solve` (any method, any regime, any backend) and :func:`lstsq`."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import numpy as np

from .problem import Problem, as_float_array
from .result import SolveResult
from .solvers import METHODS, SKETCHABLE, SolverOptions
from .control import thread_budget
from .data.from_config import problem_from_config  # noqa: F401 - part of the API


BACKENDS = ("inprocess", "torch", "ray")
DISTRIBUTED_METHODS = ("eagle", "gd", "cg")


class ConvergenceWarning(RuntimeWarning):
    """Emitted by :func:`lstsq` when it returns an ``x`` whose status is not ``converged``."""


class SolveError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when the status is not ``converged``."""

    def __init__(self, result: SolveResult):
        super().__init__(f"{result.method}: {result.status.message}")
        self.result = result


def solve(problem: Problem, method: str = "eagle", *, tol: float = 1e-10, max_iter: int = 1000,
          target_error: Optional[float] = None, target_residual: Optional[float] = None,
          time_budget: Optional[float] = None,
          callback: Optional[Callable[[int, dict], bool]] = None, device: Optional[str] = None,
          dtype: Optional[str] = None, seed: int = 0, progress: bool = False,
          record_error: bool = True, patience: int = 2,
          sketch_size: Optional[int] = None, sketch_kind: str = "orthonormal",
          eta: Optional[float] = None, gamma: Optional[float] = None, norm: str = "auto",
          accelerate: bool = False,
          workers: int = 1, backend: str = "inprocess", shards: Any = "contiguous",
          normalization: str = "local", timeout: float = 60.0, address: Optional[str] = None,
          kernel: Optional[Callable] = None, mode: str = "auto", verify: bool = True,
          rcond: Optional[float] = None, threads: Optional[int] = None,
          startup_timeout: float = 120.0, throw: bool = False) -> SolveResult:
    """Complete ``D̂ = B A⁺ C`` for ``problem`` with ``method``.

    Methods: ``eagle``, ``gd``, ``sgd`` (sketched GD), ``cg`` (normal equations), ``lsmr``,
    ``lsqr``, ``lstsq`` / ``lstsq-gelsd`` (SVD), ``lstsq-gelsy`` (QR), ``pinv``.

    Regimes: centralized (default); sketched with ``sketch_size=r`` (``eagle``/``sgd``;
    ``sketch_kind`` ``"orthonormal"`` or ``"sample"``, a fresh sketch every iteration); distributed
    with ``workers=M > 1`` or ``backend != "inprocess"`` (``eagle``/``gd``; column shards given by
    ``shards``: ``"contiguous"``, ``"random"`` or a list of column-index arrays). Distributed
    ``mode``: ``"paper"`` (the paper's algorithm: all-reduce the mean (C', D'), (n + n')·d'
    numbers a round, rounds grow like 1/α, exact only on consistent data — ``verify`` checks that
    with a probe column and reports ``inexact`` otherwise), ``"gram"`` (all-reduce A Aᵀ and
    B Aᵀ, (n + n')·n numbers while A moves and nothing after: the centralized iterates, exact on
    any data, rounds independent of α and M) or ``"auto"`` (Gram while (n + n')·n ≤ 4M numbers
    or n ≤ d', else paper).

    ``rcond`` (EAGLE): singular values below ``rcond·σ_max`` count as zero (default sqrt(eps),
    κ up to 6.7e7 resolved in float64). ``converged`` for EAGLE means the D-step rule held after
    the lift phase was complete (or A was certified well conditioned), so every direction above
    rcond is resolved; CG/GD/LSMR/LSQR check the true residual with LSQR's tests.

    Stopping (all methods): relative D-step ``≤ tol`` (``patience`` times in a row),
    ``target_error`` on the true relative error, ``target_residual`` on the true relative residual
    ``‖W A − B‖_F / ‖B‖_F`` of the linear system (centralized/sketched; EAGLE, GD and SGD need
    ``C = I`` so that ``D = W``; CG/LSMR/LSQR work for any C; direct methods ignore it),
    ``max_iter``, ``time_budget`` seconds, or
    ``callback(iteration, info)`` returning True. See :class:`eagle_dist.result.Status`.

    ``timeout`` (distributed): seconds a collective may wait and a rank may stay silent before
    the run fails with ``WorkerFailure``; ``startup_timeout``: seconds for processes / Ray actors
    to start and form their group.

    ``threads``: torch threads for a centralized solve (default: one thread below 250,000 entries
    of A, where more threads only add overhead on a busy machine; torch's setting above).

    ``throw=True`` raises :class:`SolveError` unless the status is ``converged``.

    Example:
        >>> import numpy as np
        >>> from eagle_dist import Problem, solve
        >>> rng = np.random.default_rng(0)
        >>> A = rng.standard_normal((50, 60)); W = rng.standard_normal((2, 50))
        >>> res = solve(Problem.from_arrays(A, W @ A, np.eye(50)), "eagle")
        >>> bool(np.allclose(res.D, W, atol=1e-8))
        True
    """
    if threads is not None and (isinstance(threads, (bool, np.bool_))
                                or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"threads={threads!r} must be a positive integer or None (automatic)")
    from .data.store import ColumnStore
    sharded = isinstance(problem, ColumnStore)
    if not (isinstance(problem, Problem) or sharded):
        raise TypeError(f"problem must be an eagle_dist.Problem or a ColumnStore, got "
                        f"{type(problem).__name__}; build one with Problem.from_arrays(A, B, C), "
                        "eagle_dist.data generators or eagle_dist.data.store.ColumnStore.open(DIR)")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {sorted(METHODS)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
    if isinstance(workers, (bool, np.bool_)) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    opts = SolverOptions(tol=tol, max_iter=max_iter, target_error=target_error,
                         target_residual=target_residual, time_budget=time_budget, callback=callback, device=device, dtype=dtype,
                         seed=seed, progress=progress, record_error=record_error,
                         patience=patience).validate()
    distributed = workers > 1 or backend != "inprocess" or kernel is not None or sharded
    if sharded and method not in DISTRIBUTED_METHODS:
        raise ValueError(f"method={method!r} on a column store: a store is solved by distributed "
                         "workers that each read their own columns ('eagle', 'gd' or 'cg'); for "
                         f"another method load it whole with store.to_problem()")
    if distributed:
        if method not in DISTRIBUTED_METHODS:
            raise ValueError(f"method={method!r} has no distributed form; use 'eagle', 'gd' or 'cg' "
                             "with workers > 1 (LSMR/LSQR and direct methods need all data on one "
                             "machine)")
        if sketch_size is not None:
            raise ValueError("sketch_size and workers > 1 cannot be combined; pick one regime")
        if target_residual is not None:
            raise ValueError("target_residual is not supported by distributed solves; use tol or "
                             "target_error")
        from .distributed import solve_distributed
        result = solve_distributed(
            problem, opts, method=method, workers=int(workers), backend=backend, shards=shards,
            eta=eta, gamma=gamma, normalization=normalization, accelerate=accelerate,
            timeout=timeout, address=address, kernel=kernel, mode=mode, verify=verify,
            rcond=rcond, startup_timeout=startup_timeout)
    else:
        kw: dict = {}
        if method == "sgd" and sketch_size is None:
            raise ValueError("method='sgd' needs sketch_size=r (1..d); for full-batch use method='gd'")
        if sketch_size is not None:
            if method not in SKETCHABLE:
                raise ValueError(f"method={method!r} has no sketched form; sketch_size works with "
                                 f"{SKETCHABLE}")
            kw.update(sketch_size=sketch_size, sketch_kind=sketch_kind)
        if method in ("gd", "sgd") and eta is not None:
            raise ValueError(f"eta={eta!r}: method={method!r} is EAGLE with eta = 0 (A and B never "
                             "move); drop eta, or use method='eagle'")
        if method in ("eagle", "gd", "sgd"):
            kw.update(norm=norm)
            if gamma is not None:
                kw["gamma"] = gamma
            if method == "eagle":
                kw["accelerate"] = accelerate
                kw["rcond"] = rcond
                if eta is not None:
                    kw["eta"] = eta
        else:
            extra = [k for k, v in (("eta", eta), ("gamma", gamma), ("rcond", rcond))
                     if v is not None]
            if extra:
                raise ValueError(f"{extra} only apply to eagle/gd/sgd, not method={method!r}")
        with thread_budget(problem.n * problem.d, threads):
            result = METHODS[method](problem, opts, **kw)
    if throw and not result.converged:
        raise SolveError(result)
    return result


def lstsq(A, b, *, method: str = "eagle", tol: float = 1e-12, max_iter: int = 1000,
          return_result: bool = False, **kwargs):
    """SciPy-style least squares ``min_x ‖A x − b‖₂`` (minimum-norm ``x``) solved with EAGLE.

    ``A`` is ``(m, k)`` in the usual orientation; ``b`` is ``(m,)`` or ``(m, p)``. Internally the
    block problem has ``A_here = Aᵀ`` (``k x m``), ``B = bᵀ`` and ``C = I_k`` so ``D = xᵀ``
   . Returns ``x`` (and the :class:`SolveResult` when ``return_result=True``).

    Example:
        >>> import numpy as np
        >>> from eagle_dist import lstsq
        >>> A = np.random.default_rng(1).standard_normal((30, 5)); x0 = np.arange(5.0)
        >>> bool(np.allclose(lstsq(A, A @ x0), x0))
        True
    """
    A = as_float_array(A, "A")
    b_arr = np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b)
    vector = b_arr.ndim == 1
    if vector:
        b_arr = b_arr.reshape(-1, 1)
    b_arr = as_float_array(b_arr, "b")
    if b_arr.shape[0] != A.shape[0]:
        raise ValueError(f"b has {b_arr.shape[0]} rows but A has {A.shape[0]}; b must be (m,) or (m, p) "
                         f"with m = {A.shape[0]}")
    k = A.shape[1]
    prob = Problem.from_arrays(A.T, b_arr.T, np.eye(k, dtype=A.dtype), name="lstsq")
    res = solve(prob, method, tol=tol, max_iter=max_iter, **kwargs)
    if not res.converged and not return_result:
        # the caller gets only x: say loudly that it is not a certified least-squares solution
        warnings.warn(f"lstsq({method!r}): x is NOT certified — {res.status.message}",
                      ConvergenceWarning, stacklevel=2)
    x = res.D.T                                   # (k, p)
    x = x[:, 0] if vector else x
    return (x, res) if return_result else x


def run_config(cfg, *, progress: bool = False) -> "tuple[Problem, SolveResult]":
    """Build the problem of a :class:`eagle_dist.config.RunConfig` and solve it as configured
    (``solve.backend``; ``workers = 1`` with the in-process backend is a centralized solve)."""
    sc = cfg.solve
    problem, shards = problem_from_config(cfg.problem, workers=sc.workers)
    kw = dict(tol=sc.tol, max_iter=sc.max_iter, target_error=sc.target_error,
              time_budget=sc.time_budget, device=sc.device, dtype=sc.dtype, seed=sc.seed,
              progress=progress, eta=sc.eta, gamma=sc.gamma, accelerate=sc.accelerate)
    if sc.method == "eagle":
        kw["rcond"] = sc.rcond
    from .data.store import ColumnStore
    if isinstance(problem, ColumnStore):
        kw["record_error"] = problem.has_d_true      # no reference unless the store carries one
    if sc.workers > 1 or sc.backend != "inprocess":
        kw.update(workers=sc.workers, backend=sc.backend,
                  shards=shards if shards is not None else sc.shards,
                  normalization=sc.normalization, timeout=sc.timeout, address=sc.address,
                  mode=sc.mode, verify=sc.verify)
    return problem, solve(problem, sc.method, **kw)
