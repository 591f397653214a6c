"""The one spelling of every solve option: :class:`SolveOptions`.

Python (``solve(problem, method, **options)`` or ``options=SolveOptions(...)``), the command
line (``eagle-dist solve --tol 1e-8 …`` or ``solve.tol=1e-8``) and YAML run configs (the
``solve:`` section) all read this one dataclass: its field names are the keyword names, the YAML
keys and (with ``-`` for ``_``) the CLI flags; its defaults are the only defaults; its
:meth:`SolveOptions.validate` is the only validation; :data:`APPLIES_TO` says which methods and
regimes each option belongs to, checked once (an option given for a method it does not apply to
is an error naming both, never silently dropped).

Floor 1 of the layering: imports nothing of ours.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional

import numpy as np

#: default of ``startup_timeout`` (one value: the distributed runtime imports it)
STARTUP_TIMEOUT_S = 300.0

#: methods by family (the names solve() accepts)
LOOP_EAGLE = ("eagle", "gd", "sgd")
KRYLOV = ("cg", "lsmr", "lsqr")
DIRECT = ("lstsq", "lstsq-gelsd", "lstsq-gelsy", "pinv")
ALL_METHODS = LOOP_EAGLE + KRYLOV + DIRECT + ("auto",)
DISTRIBUTED_METHODS = ("eagle", "gd", "cg")
#: what method="auto" chooses among (eagle_dist.solvers.auto)
AUTO_CANDIDATES = ("lstsq", "eagle", "lsmr")
SKETCHABLE = ("eagle", "sgd")
BACKENDS = ("inprocess", "torch", "ray")


def _opt(default, help: str, group: str, *, cli: bool = True, choices=None, flag=None):
    return field(default=default, metadata=dict(help=help, group=group, cli=cli,
                                                choices=choices, flag=flag))


@dataclass(frozen=True)
class SolveOptions:
    """Every option of :func:`eagle_dist.solve`; see the module docstring. Groups: stopping,
    numerics, eagle (EAGLE/GD/SGD), sketch (compute-limited regime), distributed, python."""

    # -- stopping (every method) ------------------------------------------------------------
    tol: float = _opt(1e-10, "tolerance of each method's own stopping rule (EAGLE: relative "
                      "D-step; CG/LSMR/LSQR: LSQR's residual tests)", "stopping")
    max_iter: int = _opt(1000, "iterations (centralized) or rounds (distributed)", "stopping")
    target_error: Optional[float] = _opt(
        None, "stop when the true relative error ≤ this (0 < t < 1; needs the float64 "
        "reference, an SVD of A)", "stopping")
    target_residual: Optional[float] = _opt(
        None, "stop when ‖W A − B‖_F ≤ t‖B‖_F on the true residual (0 < t < 1; the paper's "
        "real-data rule ‖wA − B‖² ≤ 1e-3‖B‖² is t = 1e-3 ** 0.5); EAGLE/GD/SGD need C = I",
        "stopping")
    time_budget: Optional[float] = _opt(None, "stop after this many seconds", "stopping")
    patience: int = _opt(2, "consecutive small, non-increasing steps for the tol rule",
                         "stopping")
    # -- numerics ----------------------------------------------------------------------------
    device: Optional[str] = _opt(None, "auto | cpu | cuda[:k] (default: CUDA when available)",
                                 "numerics")
    dtype: Optional[str] = _opt(None, "float32 | float64 (default: the problem's)", "numerics",
                                choices=("float32", "float64"))
    seed: int = _opt(0, "seed of sketches and probes", "numerics")
    threads: Optional[int] = _opt(None, "torch threads of a centralized solve (default: 1 below "
                                  "250,000 entries of A, torch's setting above)", "numerics")
    record_error: bool = _opt(False, "record the true error every iteration (computes the "
                              "float64 pinv reference: an SVD of A; res.error is otherwise "
                              "computed on first access, outside the solve)", "numerics")
    # -- EAGLE / GD / SGD --------------------------------------------------------------------
    eta: Optional[float] = _opt(None, "EAGLE: A/B step size (default 1/3; sketched "
                                "min(1/3, 0.8 r/d))", "eagle")
    gamma: Optional[float] = _opt(None, "EAGLE/GD/SGD: C/D step size (default 1)", "eagle")
    norm: str = _opt("auto", "EAGLE/GD/SGD normalisation: auto | stable | power", "eagle",
                     choices=("auto", "stable", "power"))
    rcond: Optional[float] = _opt(None, "EAGLE: singular values below rcond·σ_max count as zero "
                                  "(default sqrt(eps))", "eagle")
    accelerate: bool = _opt(False, "EAGLE: freeze A, B once A is conditioned", "eagle")
    fast_path: bool = _opt(True, "EAGLE on a linear system (C = I): centralized, lift A alone "
                           "with quintic steps and solve with the factor (eagle_dist.factorize); "
                           "distributed Gram mode, W = (B Aᵀ)(A Aᵀ)⁺ from one all-reduce, "
                           "refined on the true residual (distributed.gram_fast); both "
                           "certified by the true residual; false: the C/D iteration", "eagle")
    precision: str = _opt("auto", "EAGLE fast path: float64 | float32 (lift in float32, finish "
                          "and refine in float64) | auto (float32 from min(n, d) = 512)", "eagle",
                          choices=("auto", "float64", "float32"))
    # -- compute-limited ---------------------------------------------------------------------
    sketch_size: Optional[int] = _opt(None, "compute-limited regime: r columns per iteration "
                                      "(EAGLE/SGD)", "sketch")
    sketch_kind: str = _opt("orthonormal", "orthonormal | sample", "sketch",
                            choices=("orthonormal", "sample"))
    # -- distributed -------------------------------------------------------------------------
    workers: int = _opt(1, "M column shards (> 1: distributed; EAGLE, GD, CG)", "distributed")
    backend: str = _opt("inprocess", "inprocess | torch | ray", "distributed", choices=BACKENDS)
    shards: Any = _opt("contiguous", "contiguous | random | explicit column lists (Python, "
                       "YAML)", "distributed")
    normalization: str = _opt("local", "local (each ‖A^μ‖₂ = 1) | global", "distributed",
                              choices=("local", "global"))
    mode: str = _opt("auto", "distributed EAGLE: paper (all-reduce the mean (C', D'); exact on "
                     "consistent data only) | gram (all-reduce A Aᵀ, B Aᵀ; exact on any data) | "
                     "auto", "distributed", choices=("auto", "paper", "gram"))
    verify: bool = _opt(True, "paper mode: carry a probe column that checks the answer",
                        "distributed")
    timeout: float = _opt(60.0, "seconds a collective may wait / a worker may stay silent",
                          "distributed")
    # 300 s: on a 2-core machine under full load four Ray actors importing torch at once took
    # over 120 s (measured: README's 4-worker run beside a busy loop and a second test process)
    startup_timeout: float = _opt(STARTUP_TIMEOUT_S, "seconds for processes / Ray actors to start",
                                  "distributed")
    address: Optional[str] = _opt(None, "Ray cluster address (default: RAY_ADDRESS, else a "
                                  "local Ray)", "distributed")
    # -- Python only -------------------------------------------------------------------------
    callback: Optional[Callable] = _opt(None, "callback(iteration, info) -> bool: True stops",
                                        "python", cli=False)
    kernel: Optional[Any] = _opt(None, "distributed: a per-worker kernel (e.g. a trained "
                                 "transformer layer, eagle_dist.model.kernel.LearnedKernel)",
                                 "python", cli=False)
    progress: bool = _opt(False, "a progress line / bar for long solves", "python", cli=False)
    throw: bool = _opt(False, "raise SolveError unless converged", "python", cli=False)

    # -------------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> FrozenSet[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, kwargs: Dict[str, Any], base: Optional["SolveOptions"] = None) -> "SolveOptions":
        """Options from keywords (unknown names are a TypeError naming the close ones)."""
        unknown = sorted(set(kwargs) - cls.names())
        if unknown:
            import difflib
            hints = {u: difflib.get_close_matches(u, sorted(cls.names()), n=1) for u in unknown}
            extra = "; ".join(f"{u!r} (did you mean {h[0]!r}?)" if h else repr(u)
                              for u, h in hints.items())
            raise TypeError(f"unknown solve option(s) {extra}; the options are the fields of "
                            "eagle_dist.SolveOptions")
        return replace(base or cls(), **kwargs)

    def given(self) -> FrozenSet[str]:
        """The options that differ from their defaults (what a caller set)."""
        default = _DEFAULT
        return frozenset(f.name for f in fields(self)
                         if not _same(getattr(self, f.name), getattr(default, f.name)))

    def is_distributed(self, problem_is_store: bool = False) -> bool:
        """The distributed regime: M > 1 workers, a process backend, a per-worker kernel or a
        column store (whose workers read their own columns)."""
        return (self.workers > 1 or self.backend != "inprocess" or self.kernel is not None
                or problem_is_store)

    # -------------------------------------------------------------------------------------------
    def validate(self, method: Optional[str] = None, *, store: bool = False) -> "SolveOptions":
        """Check every value (and, with ``method``, that every option set applies to it and its
        regime); returns a copy with NumPy scalars made Python numbers. The one validation."""
        def real(v) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))

        def integer(v) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))

        def positive_finite(name, v, example):
            if not (real(v) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name}={v!r} must be a positive finite number, e.g. {example}")

        positive_finite("tol", self.tol, "1e-8")
        if not integer(self.max_iter) or self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter!r} must be a positive integer, e.g. 1000")
        # below 1: D = 0 already has relative error 1 and relative residual 1, so a target at or
        # above 1 would let any output (a learned kernel's, a first iterate) count as converged
        if self.target_error is not None and not (real(self.target_error)
                                                  and 0 < self.target_error < 1):
            raise ValueError(f"target_error={self.target_error!r} must lie in (0, 1) — a relative "
                             "error such as 1e-8 (D = 0 already has error 1) — or None")
        if self.target_residual is not None and not (
                real(self.target_residual) and 0 < self.target_residual < 1):
            raise ValueError(f"target_residual={self.target_residual!r} must lie in (0, 1) — a "
                             "relative residual ‖W A − B‖_F / ‖B‖_F such as 1e-4 (D = 0 already "
                             "has residual 1) — or None")
        if self.target_error is not None and self.target_residual is not None:
            raise ValueError("target_error and target_residual cannot both be set; pick one "
                             "stopping rule")
        if self.time_budget is not None and not (real(self.time_budget) and self.time_budget > 0
                                                 and not math.isnan(self.time_budget)):
            raise ValueError(f"time_budget={self.time_budget!r} must be a positive number of "
                             "seconds")
        if not integer(self.patience) or self.patience < 1:
            raise ValueError(f"patience={self.patience!r} must be an integer >= 1")
        if not integer(self.seed):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        if self.threads is not None and (not integer(self.threads) or self.threads < 1):
            raise ValueError(f"threads={self.threads!r} must be a positive integer or None "
                             "(automatic)")
        for name in ("progress", "record_error", "accelerate", "verify", "throw", "fast_path"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be callable as callback(iteration, info) -> bool")
        if self.device is not None and not _is_device(self.device):
            raise ValueError(f"device={self.device!r} is not a device for this solver; use "
                             "'auto', 'cpu' or 'cuda[:k]'")
        if self.dtype is not None and self.dtype not in ("float32", "float64", "fp32", "fp64") \
                and not _is_float_dtype(self.dtype):
            raise TypeError(f"dtype={self.dtype!r} is not supported; use 'float32' or 'float64'")
        for name, allowed in (("norm", ("auto", "stable", "power")),
                              ("precision", ("auto", "float64", "float32")),
                              ("sketch_kind", ("orthonormal", "sample")),
                              ("backend", BACKENDS), ("normalization", ("local", "global")),
                              ("mode", ("auto", "paper", "gram"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {allowed}")
        if not integer(self.workers) or self.workers < 1:
            raise ValueError(f"workers={self.workers!r} must be a positive integer")
        for name in ("timeout", "startup_timeout"):
            positive_finite(name, getattr(self, name), "60")
        if self.sketch_size is not None and not integer(self.sketch_size):
            # the range 1..d is checked by the solver, which knows d
            raise ValueError(f"sketch_size={self.sketch_size!r} must be an integer in 1..d")
        for name in ("eta", "gamma", "rcond"):
            v = getattr(self, name)
            if v is not None and not (real(v) and math.isfinite(v)):
                raise ValueError(f"{name}={v!r} must be a finite number or None")
        out = replace(
            self, tol=float(self.tol), max_iter=int(self.max_iter), patience=int(self.patience),
            seed=int(self.seed), workers=int(self.workers),
            target_error=None if self.target_error is None else float(self.target_error),
            target_residual=None if self.target_residual is None else float(self.target_residual),
            time_budget=None if self.time_budget is None else float(self.time_budget),
            timeout=float(self.timeout), startup_timeout=float(self.startup_timeout),
            sketch_size=self.sketch_size if self.sketch_size is None else int(self.sketch_size),
            threads=None if self.threads is None else int(self.threads),
            progress=bool(self.progress), record_error=bool(self.record_error),
            accelerate=bool(self.accelerate), verify=bool(self.verify), throw=bool(self.throw),
            fast_path=bool(self.fast_path))
        if method is not None:
            out._check_applies(method, store)
        return out

    def _check_applies(self, method: str, store: bool) -> None:
        if method not in ALL_METHODS:
            raise ValueError(f"method={method!r} is unknown; choose one of {sorted(ALL_METHODS)}")
        dist = self.is_distributed(store)
        given = self.given()
        regime = "distributed" if dist else ("sketched" if self.sketch_size is not None
                                             else "centralized")
        for name in sorted(given):
            ok = APPLIES_TO.get(name)
            if ok is None:
                continue
            methods, regimes = ok
            if method == "auto" and methods is not None:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to "
                                 f"method='auto' (it is for {', '.join(methods)}; auto picks "
                                 f"among {', '.join(AUTO_CANDIDATES)} and would drop it when "
                                 "another wins); name the method instead")
            if methods is not None and method not in methods:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to "
                                 f"method={method!r} (it is for {', '.join(methods)}); drop it "
                                 + ("(gd/sgd are EAGLE with eta = 0: A and B never move), or "
                                    "use method='eagle'" if name == "eta" else "or change method"))
            if regimes is not None and regime not in regimes:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to a "
                                 f"{regime} solve (it is for {' / '.join(regimes)} solves)"
                                 + ("; set workers=M > 1" if "distributed" in regimes else ""))
        if dist and method == "auto":
            raise ValueError("method='auto' chooses among centralized methods only; for a "
                             "distributed solve name the method ('eagle', 'gd' or 'cg'; "
                             "'eagle' picks its paper or Gram mode with mode='auto')")
        if dist and method not in DISTRIBUTED_METHODS:
            raise ValueError(f"method={method!r} has no distributed form; use 'eagle', 'gd' or "
                             "'cg' with workers > 1 (LSMR/LSQR and direct methods need all data "
                             "on one machine)" if not store else
                             f"method={method!r} on a column store: a store is solved by "
                             "distributed workers that each read their own columns ('eagle', "
                             "'gd' or 'cg'); for another method load it whole with "
                             "store.to_problem()")
        if method == "sgd" and self.sketch_size is None:
            raise ValueError("method='sgd' needs sketch_size=r (1..d); for full-batch use "
                             "method='gd'")
        if dist and self.sketch_size is not None:
            raise ValueError("sketch_size and workers > 1 cannot be combined; pick one regime")


_DEFAULT = SolveOptions()
#: validated options of recent keyword-only calls, keyed by (method, store, sorted keywords):
#: validate() is a pure function of those, and the options are frozen, so a repeated call (many
#: small solves in a loop) reuses the checked object instead of re-checking ~40 fields
_VALIDATED: Dict[Any, "SolveOptions"] = {}
_VALIDATED_MAX = 64


def validated_options(kwargs: Dict[str, Any], method: str, store: bool = False) -> SolveOptions:
    """``SolveOptions.from_kwargs(kwargs).validate(method, store=store)``, memoised for keywords
    whose values are plain numbers, strings, booleans or None."""
    if all(v is None or type(v) in (int, float, str, bool) for v in kwargs.values()):
        key = (method, store, tuple(sorted((k, type(v).__name__, v) for k, v in kwargs.items())))
        hit = _VALIDATED.get(key)
        if hit is not None:
            return hit
        out = SolveOptions.from_kwargs(kwargs).validate(method, store=store)
        if len(_VALIDATED) >= _VALIDATED_MAX:
            _VALIDATED.pop(next(iter(_VALIDATED)))
        _VALIDATED[key] = out
        return out
    return SolveOptions.from_kwargs(kwargs).validate(method, store=store)

#: option -> (methods it applies to or None = all, regimes or None = all). Checked only for the
#: options a caller set (differing from the default).
APPLIES_TO: Dict[str, tuple] = {
    "eta": (("eagle",), None),
    "gamma": (LOOP_EAGLE, None),
    "norm": (LOOP_EAGLE, ("centralized", "sketched")),
    "rcond": (("eagle",), None),
    "accelerate": (("eagle",), None),
    "fast_path": (("eagle",), ("centralized", "distributed")),
    "precision": (("eagle",), ("centralized",)),
    "sketch_size": (SKETCHABLE, ("sketched",)),
    "sketch_kind": (SKETCHABLE, ("sketched",)),
    "target_residual": (None, ("centralized", "sketched")),
    "threads": (None, ("centralized", "sketched")),
    "shards": (DISTRIBUTED_METHODS, ("distributed",)),
    "normalization": (("eagle", "gd"), ("distributed",)),
    "mode": (("eagle", "gd"), ("distributed",)),
    "verify": (("eagle",), ("distributed",)),
    "timeout": (DISTRIBUTED_METHODS, ("distributed",)),
    "startup_timeout": (DISTRIBUTED_METHODS, ("distributed",)),
    "address": (DISTRIBUTED_METHODS, ("distributed",)),
    "kernel": (("eagle", "gd"), ("distributed",)),
}


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - arrays and odd objects: not the default
        return False


def _is_device(dev) -> bool:
    import re
    if isinstance(dev, str):
        return re.fullmatch(r"auto|cpu|cuda(:\d+)?", dev) is not None
    try:
        import torch
        return isinstance(dev, torch.device) and dev.type in ("cpu", "cuda")
    except ImportError:  # pragma: no cover
        return False


def _is_float_dtype(dt) -> bool:
    try:
        import torch
        if dt in (torch.float32, torch.float64):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        return np.dtype(dt) in (np.float32, np.float64)
    except TypeError:
        return False


def cli_fields() -> Iterable:
    """The fields the command line exposes (``--name-with-dashes``)."""
    return [f for f in fields(SolveOptions) if f.metadata.get("cli", True)]


__all__ = ["SolveOptions", "APPLIES_TO", "cli_fields", "ALL_METHODS", "DISTRIBUTED_METHODS",
           "SKETCHABLE", "BACKENDS"]
