"""The masked-block completion problem ``X = [[A, C], [B, ?]]``.

    A : n  x d      C : n  x d'
    B : n' x d      D : n' x d'   (hidden)

The Nyström completion is ``D̂ = B A⁺ C``. Least squares ``min_w ‖w A − b‖`` is ``B = b``,
``C = I`` (then ``D = w``). Rows of A are features, columns are samples (``A_here = A_usualᵀ``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

try:  # SciPy sparse input is accepted and densified
    import scipy.sparse as _sp
except ImportError:  # pragma: no cover - scipy is a hard dependency
    _sp = None


def available_memory() -> int:
    """Bytes this process may still allocate: ``MemAvailable`` of /proc/meminfo (Linux), else
    physical memory from ``os.sysconf``, else 2**62 (no guard)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2 ** 62


def check_memory(nbytes: float, what: str, fix: str = "use smaller sizes") -> None:
    """Refuse, before allocating, a job whose dense blocks would not fit in memory (with margin:
    at most 80 % of what is available), naming the sizes and the numbers."""
    avail = available_memory()
    if nbytes > 0.8 * avail:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB of memory as dense float64 "
                         f"blocks, but only {avail / 2**30:.3g} GiB are available; {fix}")


def dense_problem_bytes(n: int, d: int, n_query: int, d_query: int, reference: bool = True) -> float:
    """Bytes of the dense blocks A, B, C, D in float64, the solver's copies and (``reference``)
    the float64 pinv reference's SVD workspace: about 4 copies of A."""
    blocks = n * d + n_query * d + n * d_query + n_query * d_query
    return 8.0 * (blocks * 3 + (n * d + min(n, d) ** 2) * (2 if reference else 0))


def as_float_array(x: Any, name: str) -> np.ndarray:
    """Validate one block and return a float NumPy copy (never a view of the caller's data)."""
    if _sp is not None and _sp.issparse(x):
        check_memory(8.0 * x.shape[0] * x.shape[1], f"{name} (sparse {x.shape[0]} x {x.shape[1]}, "
                     "densified)", "pass a smaller block or use a sharded (distributed) solve")
        x = x.toarray()
    elif isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise TypeError(f"{name} is a torch tensor on the 'meta' device, which holds no values; "
                            "pass a tensor with data (CPU or CUDA)")
        x = x.detach()
        if x.layout != torch.strided:            # sparse COO / CSR tensors: densify, guarded
            shape = tuple(x.shape)
            check_memory(8.0 * float(np.prod(shape, dtype=np.float64)),
                         f"{name} (sparse torch tensor {shape}, densified)",
                         "pass a smaller block or use a sharded (distributed) solve")
            x = x.to_dense()
        x = x.cpu()
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.to(torch.float32)              # bfloat16 / float8 have no NumPy dtype
        try:
            x = x.numpy()
        except (TypeError, RuntimeError) as exc:
            raise TypeError(f"{name} has torch dtype {x.dtype}, which has no NumPy equivalent "
                            f"({exc}); pass a float or integer tensor") from None
    elif isinstance(x, np.ma.MaskedArray):
        masked = int(np.count_nonzero(np.ma.getmaskarray(x)))
        if masked:
            raise ValueError(f"{name} is a masked array with {masked} masked entries; their "
                             "hidden values would be used: fill them (x.filled(value)) or impute "
                             "them first")
        x = np.ma.getdata(x)
    elif not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array ({exc}); "
                            "pass a NumPy array, torch tensor or SciPy sparse matrix") from exc
    if x.dtype == object:
        raise TypeError(f"{name} has dtype object; pass a numeric array")
    if np.iscomplexobj(x):
        raise TypeError(f"{name} is complex ({x.dtype}); eagle_dist solves real problems — pass "
                        "the real part, or stack real and imaginary parts into a real problem")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == np.bool_):
        raise TypeError(f"{name} has unsupported dtype {x.dtype}; pass a real float or integer array")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}; reshape a vector b to (1, -1) "
                         "(a row) for B, or (-1, 1) for a single column of C")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); every block needs at least one row "
                         "and one column")
    out_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    x = np.array(x, dtype=out_dtype, copy=True)
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN/Inf entries; clean or impute them first")
    return x


@dataclass(frozen=True, eq=False)
class Problem:
    """A block-completion problem. Build it with :meth:`from_arrays`, a generator in
    :mod:`eagle_dist.data`, or :func:`eagle_dist.data.load_suitesparse`.

    ``D_true`` is the hidden block when it is known (synthetic data, SuiteSparse protocol); the
    reference for scoring is always :attr:`reference` = ``B A⁺ C`` in float64.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D_true: Optional[np.ndarray] = None
    name: str = "problem"
    meta: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, A, B, C=None, D_true=None, *, name: str = "problem",
                    meta: Optional[Dict[str, Any]] = None) -> "Problem":
        """Validate and copy the blocks. ``C=None`` means ``C = I_n`` (recover ``W* = B A⁺``)."""
        A = as_float_array(A, "A")
        B = as_float_array(B, "B")
        C = np.eye(A.shape[0], dtype=A.dtype) if C is None else as_float_array(C, "C")
        if B.shape[1] != A.shape[1]:
            raise ValueError(f"B has {B.shape[1]} columns but A has {A.shape[1]}; B must be "
                             f"(n', d) = (?, {A.shape[1]})")
        if C.shape[0] != A.shape[0]:
            raise ValueError(f"C has {C.shape[0]} rows but A has {A.shape[0]}; C must be "
                             f"(n, d') = ({A.shape[0]}, ?)")
        if D_true is not None:
            D_true = as_float_array(D_true, "D_true")
            if D_true.shape != (B.shape[0], C.shape[1]):
                raise ValueError(f"D_true has shape {D_true.shape}; expected (n', d') = "
                                 f"{(B.shape[0], C.shape[1])}")
        if not np.any(A):
            raise ValueError("A is all zeros: B A⁺ C is then 0 for any B, C and there is nothing "
                             "to solve; check the data or the block split")
        # one common dtype: float32 only if every block is float32
        dt = np.float32 if all(x.dtype == np.float32 for x in (A, B, C)) else np.float64
        A, B, C = (x.astype(dt, copy=False) for x in (A, B, C))
        return cls(A=A, B=B, C=C, D_true=D_true, name=name, meta=dict(meta or {}))

    @classmethod
    def from_linear_system(cls, A, b, *, name: str = "least squares") -> "Problem":
        """The least-squares problem ``min_x ‖A x − b‖`` in NumPy's orientation (``A`` is m x k:
        m samples of k features; ``b`` is (m,) or (m, p)) as a block problem: ``A_here = Aᵀ``
        (k x m), ``B = bᵀ``, ``C = I_k``, so ``D = xᵀ`` (the minimum-norm solution)."""
        A = as_float_array(A, "A")
        b_arr = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
        if b_arr.ndim == 1:
            b_arr = b_arr.reshape(-1, 1)
        b_arr = as_float_array(b_arr, "b")
        if b_arr.shape[0] != A.shape[0]:
            raise ValueError(f"b has {b_arr.shape[0]} rows but A has {A.shape[0]}; b must be "
                             f"(m,) or (m, p) with m = {A.shape[0]}")
        if not np.any(A):
            raise ValueError("A is all zeros: every x is a least-squares solution and the "
                             "minimum-norm one is 0; check the data")
        # both blocks are validated copies already (as_float_array): build the problem directly
        # rather than through from_arrays, which would validate and copy them a second time
        dt = np.float32 if A.dtype == np.float32 and b_arr.dtype == np.float32 else np.float64
        At, Bt = A.T.astype(dt, copy=False), b_arr.T.astype(dt, copy=False)
        return cls(A=At, B=Bt, C=np.eye(A.shape[1], dtype=dt), name=name, meta={})

    # shapes ----------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def d(self) -> int:
        return self.A.shape[1]

    @property
    def n_query(self) -> int:
        """n' (rows of B and D)."""
        return self.B.shape[0]

    @property
    def d_query(self) -> int:
        """d' (columns of C and D)."""
        return self.C.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.A.dtype

    # reference -------------------------------------------------------------------------------
    @functools.cached_property
    def reference(self) -> np.ndarray:
        """``D̂ = B A⁺ C`` in float64 via ``numpy.linalg.pinv`` (independent of EAGLE). Each block
        is divided by a power of two first (exact), so data at 1e-170 or 1e200 neither under- nor
        overflows inside the SVD; ``B A⁺ C`` scales as ``s_B s_C / s_A``."""
        from .result import BlockScale
        A, B, C = (x.astype(np.float64) for x in (self.A, self.B, self.C))
        scale = BlockScale.of(A, B, C)
        sa, sb, sc = scale.factors
        core = ((B / sb) @ np.linalg.pinv(A / sa)) @ (C / sc)
        return scale.from_unit(core)              # 2^(b+c−a) core, exact; no s_B·s_C underflow

    @functools.cached_property
    def error_denominator(self) -> float:
        """Denominator of the relative error: ``‖D̂‖_F``, unless ``D̂`` is numerically zero
        (below 1e-10 of the data scale ``‖B‖_F ‖C‖_F / ‖A‖₂``, e.g. rounding noise of an exact
        zero), in which case that data scale — so noise is not reported as a 100 % error.
        Norms are scaled (no under/overflow for entries far from 1)."""
        from .result import safe_norm
        # ‖B‖/‖A‖ first: the product ‖B‖‖C‖ alone underflows for blocks near 1e-164
        scale = (safe_norm(self.B) / max(safe_norm(self.A, 2), np.finfo(np.float64).tiny)
                 * safe_norm(self.C))
        ref = safe_norm(self.reference)
        return ref if ref > 1e-10 * scale else float(scale)

    def error(self, D) -> float:
        """Relative error of a completed block against :attr:`reference` (the one metric)."""
        from .result import relative_error
        return relative_error(D, self.reference, self.error_denominator)

    @functools.cached_property
    def singular_values(self) -> np.ndarray:
        return np.linalg.svd(self.A.astype(np.float64), compute_uv=False)

    @property
    def condition_number(self) -> float:
        """κ(A) over the numerically nonzero singular values (pinv's default cut-off)."""
        s = self.singular_values
        s = s[s > s[0] * max(self.A.shape) * np.finfo(np.float64).eps]
        return float(s[0] / s[-1])

    def completed(self, D: np.ndarray) -> np.ndarray:
        """The full matrix ``[[A, C], [B, D]]``."""
        return np.block([[self.A, self.C], [self.B, np.asarray(D, dtype=self.A.dtype)]])

    def __repr__(self) -> str:
        return (f"Problem(name={self.name!r}, A={self.n}x{self.d}, B={self.n_query}x{self.d}, "
                f"C={self.n}x{self.d_query}, dtype={self.dtype})")
