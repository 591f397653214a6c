"""The one result object every solver, regime and backend returns."""
from __future__ import annotations

import csv
import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np


class Status(str, enum.Enum):
    """Why a solve stopped. ``message`` says what it means and how to fix it."""

    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    TIME_BUDGET = "time_budget"
    DIVERGED = "diverged"
    NON_FINITE = "non_finite"
    INEXACT = "inexact"
    UNVERIFIED = "unverified"

    @property
    def ok(self) -> bool:
        return self is Status.CONVERGED

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged: the stopping rule was met and its check passed (EAGLE: the lift "
    "phase is complete, so the D-step bounds the remaining error; CG/GD/LSMR/LSQR: the "
    "normal-equation residual is below tol; target_residual: the TRUE relative residual "
    "‖W A − B‖_F / ‖B‖_F is below it; distributed: the exactness check passed)",
    Status.MAX_ITERATIONS: "max_iterations reached before the tolerance; the returned D is the best "
    "iterate seen. If the steps were still shrinking, increase max_iter; if they stalled, the "
    "tolerance is below what this precision/problem allows (loosen tol, use float64, or for "
    "sketched runs a larger sketch size)",
    Status.TIME_BUDGET: "time budget exhausted before the tolerance: try increasing time_budget",
    Status.DIVERGED: "diverged: the residual block C grew; step sizes too large for this data "
    "(try eta <= 1/3, gamma <= 1, or norm='power')",
    Status.NON_FINITE: "non-finite numbers (NaN/Inf) appeared; the returned D is the last finite "
    "iterate. Try float64, smaller step sizes, or check the input scaling",
    Status.UNVERIFIED: "unverified: the stopping rule was met but no independent check could be "
    "run (a custom kernel, or distributed EAGLE with verify=False), so the answer is NOT promised "
    "to meet the tolerance; rerun with verify=True or mode='gram', or check it yourself",
    Status.INEXACT: "inexact: the iteration stopped (it settled, broke down, or hit its condition "
    "limit) but the independent check shows the answer is NOT B A⁺ C to the tolerance; "
    "info['check'] holds the measured value. Distributed EAGLE in the paper's mode is exact only "
    "on consistent data: use mode='gram', which is exact for any data",
}


@dataclass
class History:
    """Per-iteration (or per-round) record. ``error`` is relative to the reference when one was given."""

    step: List[float] = field(default_factory=list)     # ‖D_ℓ − D_{ℓ−1}‖_F / max(‖D_ℓ‖_F, tiny)
    error: List[float] = field(default_factory=list)    # ‖D_ℓ − D̂‖_F / ‖D̂‖_F  (NaN if no reference)
    time: List[float] = field(default_factory=list)     # seconds since the solve started
    rho: List[float] = field(default_factory=list)      # step-size normaliser used (1 in stable form)
    # relative residual ‖W_ℓ A − B‖_F / ‖B‖_F, recorded when a ``target_residual`` is set (NaN
    # otherwise); see :class:`eagle_dist.control.Monitor` for when it is exact
    residual: List[float] = field(default_factory=list)

    def append(self, step: float, error: float, time: float, rho: float = float("nan"),
               residual: float = float("nan")) -> None:
        self.step.append(float(step))
        self.error.append(float(error))
        self.time.append(float(time))
        self.rho.append(float(rho))
        self.residual.append(float(residual))

    def __len__(self) -> int:
        return len(self.step)

    def rows(self) -> List[Dict[str, float]]:
        res = self.residual + [float("nan")] * (len(self.step) - len(self.residual))
        return [
            {"iteration": i + 1, "step": s, "error": e, "time_s": t, "rho": r, "residual": q}
            for i, (s, e, t, r, q) in enumerate(zip(self.step, self.error, self.time, self.rho,
                                                    res))
        ]


class LazyError:
    """The relative error of ``D`` against ``problem.reference``, evaluated on first use (an SVD
    of A in float64, cached on the problem)."""

    __slots__ = ("problem", "D")

    def __init__(self, problem, D):
        self.problem, self.D = problem, D

    def __call__(self) -> float:
        return float(self.problem.error(self.D))

    def __repr__(self) -> str:
        return "<error: computed on first access>"


@dataclass(frozen=True)
class SolveResult:
    """Outcome of :func:`eagle_dist.solve`.

    Attributes:
        D: the completed block ``(n', d')`` as a float64/float32 NumPy array.
        status: a :class:`Status`; ``status.message`` explains it.
        iterations: iterations (centralized/sketched) or communication rounds (distributed).
        time_s: wall-clock seconds of the solve (excluding problem construction).
        history: per-iteration :class:`History`.
        method, regime, backend, workers: what ran.
        bytes_per_worker_per_round: bytes each worker sent per round (0 for centralized).
        bytes_total: all bytes sent by all workers.
        error: final relative error against the reference (NaN when none was available).
        info: anything method-specific (e.g. rcond, sketch size, alpha).
    """

    D: np.ndarray
    status: Status
    iterations: int
    time_s: float
    history: History
    method: str
    regime: str = "centralized"
    backend: str = "inprocess"
    workers: int = 1
    bytes_per_worker_per_round: int = 0
    bytes_total: int = 0
    error: float = float("nan")
    info: Dict[str, Any] = field(default_factory=dict)

    def __getattribute__(self, name):
        # ``error`` may be deferred (:class:`LazyError`): the solve never pays for the float64
        # SVD reference unless errors were recorded; reading ``res.error`` computes it once,
        # outside ``time_s``
        value = object.__getattribute__(self, name)
        if name == "error" and isinstance(value, LazyError):
            value = value()
            object.__setattr__(self, "error", value)
        return value

    @property
    def known_error(self) -> float:
        """``error`` if it is already known, else NaN — never computes the reference (tables,
        JSON summaries)."""
        value = object.__getattribute__(self, "error")
        return float("nan") if isinstance(value, LazyError) else value

    @property
    def converged(self) -> bool:
        return self.status.ok

    @property
    def rounds(self) -> int:
        return self.iterations

    def summary(self) -> Dict[str, Any]:
        out = {
            "method": self.method,
            "regime": self.regime,
            "backend": self.backend,
            "workers": self.workers,
            "status": self.status.value,
            "iterations": self.iterations,
            "time_s": self.time_s,
            "error": self.known_error,
            "bytes_per_worker_per_round": self.bytes_per_worker_per_round,
            "bytes_total": self.bytes_total,
        }
        out.update({k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))})
        return out

    def to_json(self, path: str) -> None:
        """Strict JSON (RFC 8259): NaN/Inf, which JSON cannot carry, are written as null."""
        with open(path, "w") as f:
            json.dump(strict_json({"summary": self.summary(), "history": self.history.rows()}), f,
                      indent=2, allow_nan=False)

    def history_to_csv(self, path: str) -> None:
        rows = self.history.rows()
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["iteration", "step", "error", "time_s", "rho",
                                               "residual"])
            w.writeheader()
            w.writerows(rows)


def strict_json(obj):
    """``obj`` with every non-finite float replaced by ``None`` and NumPy scalars by Python ones,
    so ``json.dump(..., allow_nan=False)`` writes strict JSON any parser reads."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def pow2_exponent(x) -> int:
    """``e`` with ``2**e`` the largest power of two ``≤ max|x|`` (0 for an all-zero or non-finite
    ``x``)."""
    m = float(np.max(np.abs(np.asarray(x)))) if np.size(x) else 0.0
    if m == 0.0 or not np.isfinite(m):
        return 0
    return math.frexp(m)[1] - 1                  # m = f·2^k with f in [0.5, 1): 2^(k-1) ≤ m


def pow2_of(x) -> float:
    """The largest power of two ``≤ max|x|`` (1 for an all-zero or non-finite ``x``). Dividing a
    block by it is exact; solvers normalise every block this way before they start."""
    return math.ldexp(1.0, pow2_exponent(x))


class BlockScale(NamedTuple):
    """Power-of-two exponents of A, B, C: the solvers iterate on ``A/2^a, B/2^b, C/2^c`` (exact)
    and ``B A⁺ C = 2^(b + c − a) · B' A'⁺ C'``. The exponent is kept as an integer until the very
    end: forming ``s_B s_C / s_A`` as a float underflows to 0 for blocks near 1e-164 (and turned
    a correct answer into D = 0) although the answer itself, near 1e-164, is representable."""

    a: int
    b: int
    c: int

    @classmethod
    def of(cls, A, B, C) -> "BlockScale":
        return cls(pow2_exponent(A), pow2_exponent(B), pow2_exponent(C))

    @property
    def factors(self) -> Tuple[float, float, float]:
        """``(2^a, 2^b, 2^c)``: each representable, since each is at most its block's max."""
        return math.ldexp(1.0, self.a), math.ldexp(1.0, self.b), math.ldexp(1.0, self.c)

    @property
    def exponent(self) -> int:
        """``e`` with ``D = 2^e D'``."""
        return self.b + self.c - self.a

    def to_unit(self, x):
        """``x / 2^e`` for a quantity at the scale of D (a reference, a denominator), exact."""
        return _ldexp(x, -self.exponent)

    def from_unit(self, x):
        """``2^e x``: D' at unit scale back to the data's scale, exact (entry by entry)."""
        return _ldexp(x, self.exponent)


def _ldexp(x, e: int):
    import torch
    if isinstance(x, torch.Tensor):
        return torch.ldexp(x, torch.tensor(e, dtype=torch.int32 if x.dtype != torch.float64
                                           else torch.int64, device=x.device))
    if isinstance(x, np.ndarray):
        return np.ldexp(x, e)
    return math.ldexp(float(x), e)


def unscale_completion(D_unit: np.ndarray, scale: "BlockScale", dtype) -> Tuple[np.ndarray, Optional[str]]:
    """``D = 2^e D'`` in ``dtype`` and, when the true answer leaves the dtype's range (entries
    overflow, or a nonzero ``D'`` underflows to all zeros), a note saying so — the caller then
    reports ``non_finite`` with that note instead of a converged 0 or inf."""
    D64 = scale.from_unit(np.asarray(D_unit, dtype=np.float64))
    with np.errstate(over="ignore", under="ignore"):
        D = D64.astype(dtype)
    name = np.dtype(dtype).name
    if not np.isfinite(D).all():
        return np.zeros_like(D), (f"B A⁺ C is outside the {name} range (about 2^{scale.exponent} "
                                  f"times the unit-scale answer); solve in float64 or rescale "
                                  "the blocks")
    if np.any(D_unit) and not np.any(D):
        return D, (f"B A⁺ C is below the smallest {name} number (about 2^{scale.exponent} times "
                   "the unit-scale answer): every entry underflows to 0; rescale B or C (the "
                   "answer scales with them)")
    return D, None


def safe_norm(x, ord=None) -> float:
    """Frobenius (or ``ord=2`` spectral) norm in float64 that neither underflows below ~1e-154
    nor overflows above ~1e154 (``np.linalg.norm`` squares the entries): the array is divided by
    its largest power-of-two magnitude first, which is exact."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    m = float(np.max(np.abs(x)))
    if m == 0.0 or not np.isfinite(m):
        return m
    s = 2.0 ** np.floor(np.log2(m))
    return float(s * np.linalg.norm(x / s, ord))


def relative_error(D: np.ndarray, ref: Optional[np.ndarray], denominator: Optional[float] = None) -> float:
    """THE error metric: ``‖D − D̂‖_F / den`` with ``den = Problem.error_denominator``
    (``‖D̂‖_F``, or the data scale when ``D̂`` is numerically zero); ``‖D̂‖_F`` if not given.
    Norms are scaled (:func:`safe_norm`), so entries of 1e-170 or 1e200 are measured correctly."""
    if ref is None:
        return float("nan")
    den = safe_norm(ref) if denominator is None else float(denominator)
    num = safe_norm(np.asarray(D, dtype=np.float64) - ref)
    return num / den if den > 0 else num


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if x == x else "nan"
    return str(x)


def results_table(results) -> str:
    """A markdown table of solve results (what `solve` prints and writes to summary.md)."""
    results = list(results)
    cols = ["method", "regime", "backend", "workers", "status", "iterations", "error", "time_s",
            "bytes_per_worker_per_round"]
    if any("mode" in r.info for r in results):
        cols.insert(3, "mode")                    # distributed: paper or gram
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        s = r.summary()
        lines.append("| " + " | ".join(_fmt(s.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)
