"""Public entry points: :func:`solve` (any method, any regime, any backend) and :func:`lstsq`."""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Optional

import numpy as np

from .control import thread_budget
from .options import SolveOptions, validated_options
from .problem import Problem
from .result import LazyError, SolveResult
from .solvers import METHODS
from .data.from_config import problem_from_config  # noqa: F401 - part of the API




class ConvergenceWarning(RuntimeWarning):
    """Emitted by :func:`lstsq` when it returns an ``x`` whose status is not ``converged``."""


class SolveError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when the status is not ``converged``."""

    def __init__(self, result: SolveResult):
        super().__init__(f"{result.method}: {result.status.message}")
        self.result = result


def solve(problem: Problem, method: str = "eagle", *, options: Optional[SolveOptions] = None,
          **kwargs: Any) -> SolveResult:
    """Complete ``D̂ = B A⁺ C`` for ``problem`` with ``method``.

    Every keyword is a field of :class:`eagle_dist.SolveOptions` (the one spelling of each
    option, shared with the CLI flags and the YAML ``solve:`` section); ``options=`` passes a
    prepared object, keywords override it. An option set for a method or regime it does not apply
    to is an error, never silently dropped.

    Methods: ``eagle``, ``gd``, ``sgd`` (sketched GD), ``cg`` (normal equations), ``lsmr``,
    ``lsqr``, ``lstsq`` / ``lstsq-gelsd`` (SVD), ``lstsq-gelsy`` (QR), ``pinv``.

    Regimes: centralized (default); sketched with ``sketch_size=r`` (``eagle``/``sgd``;
    ``sketch_kind`` ``"orthonormal"`` or ``"sample"``, a fresh sketch every iteration); distributed
    with ``workers=M > 1``, ``backend != "inprocess"``, a per-worker ``kernel`` or a column store
    (``eagle``/``gd``/``cg``; column shards given by ``shards``: ``"contiguous"``, ``"random"``
    or a list of column-index arrays). Distributed ``mode``: ``"paper"`` (the paper's algorithm:
    all-reduce the mean (C', D'), (n + n')·d' numbers a round, rounds grow like 1/α, exact only on
    consistent data — ``verify`` checks that with a probe column and reports ``inexact``
    otherwise), ``"gram"`` (all-reduce A Aᵀ and B Aᵀ, (n + n')·n numbers while A moves and nothing
    after: the centralized iterates, exact on any data, rounds independent of α and M) or
    ``"auto"`` (Gram while (n + n')·n ≤ 4M numbers or n ≤ d', else paper).

    ``converged`` for EAGLE means the D-step rule held after the lift phase was complete (or A
    was certified well conditioned), so every direction above ``rcond`` is resolved; CG/GD/LSMR/
    LSQR check the true residual with LSQR's tests; direct methods the forward-error bound.

    Stopping (all methods): relative D-step ``≤ tol`` (``patience`` times in a row),
    ``target_error`` on the true relative error, ``target_residual`` on the true relative residual
    ``‖W A − B‖_F / ‖B‖_F`` of the linear system (centralized/sketched; EAGLE, GD and SGD need
    ``C = I`` so that ``D = W``), ``max_iter``, ``time_budget`` seconds, or
    ``callback(iteration, info)`` returning True. See :class:`eagle_dist.result.Status`.

    The float64 reference ``B pinv(A) C`` (an SVD of A) is computed only when asked:
    ``record_error=True`` (error after every iteration) or ``target_error``; otherwise
    ``result.error`` is computed on first access, outside the solve and its ``time_s``.

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
    from .data.store import ColumnStore
    sharded = isinstance(problem, ColumnStore)
    if not (isinstance(problem, Problem) or sharded):
        raise TypeError(f"problem must be an eagle_dist.Problem or a ColumnStore, got "
                        f"{type(problem).__name__}; build one with Problem.from_arrays(A, B, C), "
                        "eagle_dist.data generators or eagle_dist.data.store.ColumnStore.open(DIR)")
    if options is not None and not isinstance(options, SolveOptions):
        raise TypeError(f"options={options!r} must be an eagle_dist.SolveOptions")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {sorted(METHODS)}")
    opts = (SolveOptions.from_kwargs(kwargs, options).validate(method, store=sharded)
            if options is not None else validated_options(kwargs, method, sharded))
    if opts.is_distributed(sharded):
        from .distributed import solve_distributed
        result = solve_distributed(
            problem, opts, method=method, workers=opts.workers, backend=opts.backend,
            shards=opts.shards, eta=opts.eta, gamma=opts.gamma, normalization=opts.normalization,
            accelerate=opts.accelerate, timeout=opts.timeout, address=opts.address,
            kernel=opts.kernel, mode=opts.mode, verify=opts.verify, rcond=opts.rcond,
            startup_timeout=opts.startup_timeout)
    else:
        kw: dict = {}
        if opts.sketch_size is not None:
            kw.update(sketch_size=opts.sketch_size, sketch_kind=opts.sketch_kind)
        if method in ("eagle", "gd", "sgd"):
            kw.update(norm=opts.norm)
            if opts.gamma is not None:
                kw["gamma"] = opts.gamma
            if method == "eagle":
                kw.update(accelerate=opts.accelerate, rcond=opts.rcond)
                if opts.eta is not None:
                    kw["eta"] = opts.eta
        with thread_budget(problem.n * problem.d, opts.threads):
            result = METHODS[method](problem, opts, **kw)
    if not sharded and isinstance(object.__getattribute__(result, "error"), float) \
            and math.isnan(result.known_error) and not opts.record_error:
        # no reference was computed: result.error is evaluated on first access (outside time_s)
        result = dataclasses.replace(result, error=LazyError(problem, result.D))
    if opts.throw and not result.converged:
        raise SolveError(result)
    return result


def solve_least_squares(A, b, *, method: str = "eagle", tol: float = 1e-12,
                        max_iter: int = 1000, return_result: bool = False, **kwargs):
    """Least squares in NumPy's orientation: the minimum-norm ``x`` of ``min_x ‖A x − b‖₂``.

    ``A`` is ``(m, k)`` (m samples, k features), ``b`` is ``(m,)`` or ``(m, p)``; returns ``x``
    of shape ``(k,)`` or ``(k, p)`` — one array, not NumPy's ``(x, residuals, rank, s)`` tuple
    (that is why this is not called ``lstsq``). ``return_result=True`` returns
    ``(x, SolveResult)``. Internally the block problem has ``A_here = Aᵀ`` (``k x m``),
    ``B = bᵀ`` and ``C = I_k``, so ``D = xᵀ`` (see :meth:`Problem.from_linear_system`); every
    other keyword is a :class:`SolveOptions` field (``workers=M`` shards the samples).

    An ``x`` that is not ``converged`` comes with a :class:`ConvergenceWarning` (or use
    ``return_result=True`` and read the status).

    Example:
        >>> import numpy as np
        >>> from eagle_dist import solve_least_squares
        >>> A = np.random.default_rng(1).standard_normal((30, 5)); x0 = np.arange(5.0)
        >>> bool(np.allclose(solve_least_squares(A, A @ x0), x0))
        True
    """
    prob, vector = Problem.from_linear_system(A, b), None
    vector = np.ndim(b.detach().cpu().numpy() if hasattr(b, "detach") else b) == 1
    res = solve(prob, method, tol=tol, max_iter=max_iter, **kwargs)
    if not res.converged and not return_result:
        # the caller gets only x: say loudly that it is not a certified least-squares solution
        warnings.warn(f"solve_least_squares({method!r}): x is NOT certified — "
                      f"{res.status.message}", ConvergenceWarning, stacklevel=2)
    x = res.D.T                                   # (k, p)
    x = x[:, 0] if vector else x
    return (x, res) if return_result else x


def run_config(cfg, *, progress: bool = False) -> "tuple[Problem, SolveResult]":
    """Build the problem of a :class:`eagle_dist.config.RunConfig` and solve it as configured:
    the ``solve:`` section is a :class:`SolveOptions` plus ``method``."""
    sc = cfg.solve
    problem, shards = problem_from_config(cfg.problem, workers=sc.workers)
    opts = sc.solve_options(progress=progress)
    if shards is not None:                        # source: alpha brings its own column shards
        opts = dataclasses.replace(opts, shards=shards)
    from .data.store import ColumnStore
    if isinstance(problem, ColumnStore) and opts.record_error and not problem.has_d_true:
        raise ValueError("solve.record_error: the store has no D_true to measure errors against "
                         "(and a store is never loaded whole for a reference); drop it")
    return problem, solve(problem, sc.method, options=opts)
