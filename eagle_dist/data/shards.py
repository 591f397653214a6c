"""Column shards, their validation, the diversity index α, and α-controlled test problems.

(A data-layer module: the distributed runtime uses it, and so do the problem sources of
:mod:`eagle_dist.data.from_config`; ``eagle_dist.distributed`` re-exports every name.)

Worker μ owns columns ``shards[μ]`` of A and B (``A^μ = A[:, shards[μ]]``). The diversity index is

    α = smallest positive eigenvalue of (1/M) Σ_μ P_μ,   P_μ = projector onto range(A^μ)

(α = 1 when every shard spans the joint range; 1/M for complementary orthogonal shards).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np

from ..problem import Problem
from .generators import _check_real, _check_seed, _is_int

ShardSpec = Union[str, Sequence[Sequence[int]]]


def make_shards(d: int, workers: int, kind: ShardSpec = "contiguous", *, seed: int = 0) -> List[np.ndarray]:
    """Column index arrays for ``workers`` shards of ``d`` columns, validated.

    ``kind``: ``"contiguous"`` (balanced blocks), ``"random"`` (balanced random partition) or an
    explicit list of index sequences (must partition ``0..d-1``).
    """
    if not _is_int(workers) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    if not _is_int(d) or d < 1:
        raise ValueError(f"d={d!r} (the number of columns of A) must be a positive integer")
    workers, d = int(workers), int(d)
    if workers > d:
        raise ValueError(f"workers={workers} exceeds the number of columns d={d}: every worker needs "
                         "at least one column; use workers <= d")
    if isinstance(kind, str):
        if kind == "contiguous":
            return [np.asarray(s, dtype=np.int64) for s in np.array_split(np.arange(d), workers)]
        if kind == "random":
            perm = np.random.default_rng(_check_seed(seed)).permutation(d)
            return [np.sort(s).astype(np.int64) for s in np.array_split(perm, workers)]
        raise ValueError(f"shards={kind!r}; use 'contiguous', 'random' or a list of column-index lists")
    return validate_shards(kind, d, workers)


def validate_shards(shards: Sequence[Sequence[int]], d: int, workers: Optional[int] = None) -> List[np.ndarray]:
    """Check that explicit shards partition the columns ``0..d-1`` (no gaps, no overlaps, none empty)."""
    if isinstance(shards, (str, bytes, dict)) or not hasattr(shards, "__iter__"):
        raise TypeError(f"shards={shards!r} must be 'contiguous', 'random' or a list of column-index "
                        "lists, one per worker (e.g. [[0, 1], [2, 3]])")
    out = []
    for i, s in enumerate(shards):
        try:
            arr = np.asarray(s)
        except ValueError as exc:        # e.g. a ragged nested list inside one shard
            raise ValueError(f"shard {i} is not a flat list of column indices ({exc})") from None
        if arr.ndim == 0:
            raise ValueError(f"shard {i} is {s!r}, not a list of column indices; pass one list per "
                             "worker, e.g. [[0, 1], [2, 3]]")
        if arr.size and not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
            # np.asarray(..., int64) would silently truncate 1.5 to 1
            raise ValueError(f"shard {i} has {arr.dtype} entries; shards must hold integer column "
                             "indices (e.g. [[0, 1], [2, 3]] or numpy integer arrays)")
        out.append(arr.astype(np.int64).ravel())
    if workers is not None and len(out) != workers:
        raise ValueError(f"{len(out)} shards given but workers={workers}; pass one shard per worker")
    for i, s in enumerate(out):
        if s.size == 0:
            raise ValueError(f"shard {i} is empty; every worker needs at least one column")
        if s.min() < 0 or s.max() >= d:
            raise ValueError(f"shard {i} has column indices outside 0..{d - 1}")
    allc = np.concatenate(out)
    counts = np.bincount(allc, minlength=d)
    if np.any(counts > 1):
        raise ValueError(f"shards overlap: columns {np.flatnonzero(counts > 1)[:10].tolist()} appear in "
                         "more than one shard; each column must belong to exactly one worker")
    if np.any(counts == 0):
        raise ValueError(f"shards miss columns {np.flatnonzero(counts == 0)[:10].tolist()}; the shards "
                         "must cover every column of A")
    return out


def diversity_index(A: np.ndarray, shards: Sequence[np.ndarray], *, rtol: Optional[float] = None) -> float:
    """The diversity index α for the column shards of ``A`` (float64, via SVDs of each shard).

    Ranks use the cut-off ``rtol · σ_max`` (default ``max(shape)·eps``); eigenvalues of the mean
    projector below ``1e-10`` count as zero.
    """
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    Pbar = np.zeros((n, n))
    for s in shards:
        U, sig, _ = np.linalg.svd(A[:, s], full_matrices=False)
        if sig.size == 0 or sig[0] == 0:
            continue
        tol = (rtol if rtol is not None else max(A[:, s].shape) * np.finfo(float).eps) * sig[0]
        Ur = U[:, sig > tol]
        Pbar += Ur @ Ur.T
    Pbar /= len(shards)
    ev = np.linalg.eigvalsh(Pbar)
    pos = ev[ev > 1e-10]
    return float(pos.min()) if pos.size else 0.0


def shard_condition_numbers(A: np.ndarray, shards: Sequence[np.ndarray]) -> List[float]:
    """κ(A^μ) over nonzero singular values, per shard."""
    out = []
    for s in shards:
        sig = np.linalg.svd(np.asarray(A[:, s], dtype=np.float64), compute_uv=False)
        sig = sig[sig > sig[0] * max(A[:, s].shape) * np.finfo(float).eps]
        out.append(float(sig[0] / sig[-1]))
    return out


def max_alpha_below_one(workers: int) -> float:
    """The largest α < 1 any sharding can have: ``(M − 1)/M``.

    If some shard's range ``R_μ`` misses a direction ``v`` of the joint range, then
    ``vᵀ P̄ v = (1/M) Σ_ν ‖P_ν v‖² ≤ (M − 1)/M``; otherwise all ranges are equal and α = 1. So for
    M = 3 no sharding has α in (2/3, 1) — the paper's α = 0.83 at M = 3 cannot be produced under
    the definition of α (see README, "Distributed").
    """
    return (workers - 1) / workers


def alpha_problem(n: int = 200, d_per_worker: int = 200, workers: int = 4, *, alpha: float = 1.0,
                  kappa_max: float = 1e3, n_query: int = 2, d_query: int = 1, noise: float = 0.0,
                  seed: int = 0):
    """A consistent distributed problem with diversity index ``alpha`` and κ(A^μ) = ``kappa_max``.

    ``alpha`` must be 1 or lie in ``(0, (M − 1)/M]`` (:func:`max_alpha_below_one`).

    Construction: an orthonormal basis of ``Rⁿ`` is split into a shared part ``S``
    (``n − M − 1`` vectors) and an innovation part ``V = span(e₀, e₁, …, e_M)``. Worker μ's range
    is ``S ⊕ (V ∩ w_μ^⊥)`` with ``w_μ ∝ e₀ + t·e_μ``: it misses one direction of ``V``. On ``V``
    the mean projector is ``I − (1/M) Σ w_μ w_μᵀ``, whose smallest eigenvalue rises monotonically
    from 0 (``t → 0``, all workers miss almost the same direction) to ``1 − 1/M`` (``t → ∞``);
    ``t`` is found by bisection. α = 1: every worker spans ``Rⁿ``. Each shard is
    ``A^μ = Q_μ diag(σ) V_μᵀ`` with σ geometric in ``[1/kappa_max, 1]`` and random orthonormal
    ``V_μ`` (``d_per_worker x rank``). ``B = W A``, ``C = A Z``, ``D = W A Z`` (consistent).

    Returns ``(problem, shards)``; ``problem.meta`` records the achieved α and max κ(A^μ).
    """
    from ..problem import check_memory, dense_problem_bytes
    for k, v in (("n", n), ("d_per_worker", d_per_worker), ("workers", workers),
                 ("n_query", n_query), ("d_query", d_query)):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{k}={v!r} must be a positive integer")
    n, d_per_worker, n_query, d_query = int(n), int(d_per_worker), int(n_query), int(d_query)
    check_memory(dense_problem_bytes(n, d_per_worker * workers, n_query, d_query),
                 f"an alpha problem with n = {n}, d = {d_per_worker} x {workers}", "use smaller n / d")
    alpha = _check_real("alpha", alpha, low=0.0, low_open=True,
                        what=" (the target diversity index: 1, or at most (M-1)/M)")
    kappa_max = _check_real("kappa_max", kappa_max, low=1.0,
                            what=" (the condition number of every shard)")
    noise = _check_real("noise", noise, low=0.0, what=" (it is a standard deviation)")
    seed = _check_seed(seed)
    M = int(workers)
    amax = max_alpha_below_one(M)
    if not (alpha == 1.0 or 0.0 < alpha <= amax + 1e-12):
        raise ValueError(f"alpha={alpha!r} is not achievable with {M} workers: use 1 or a value in "
                         f"(0, {amax:.3g}] (a shard missing any direction caps α at (M-1)/M)")
    if M < 1 or n < M + 2:
        raise ValueError(f"n={n} must be at least workers + 2 = {M + 2}")
    if d_per_worker < n:
        raise ValueError(f"d_per_worker={d_per_worker} must be >= n={n} so each shard has full rank "
                         "on its range")
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    S, E = Q[:, : n - M - 1], Q[:, n - M - 1:]          # shared (n-M-1), innovation (M+1)

    def innovation_bases(t: float):
        """Per worker, an orthonormal basis of ``w_μ^⊥`` in E-coordinates: ``(M+1) x M``."""
        out = []
        for m in range(M):
            w = np.zeros(M + 1)
            w[0], w[m + 1] = 1.0, t
            w /= np.linalg.norm(w)
            P = np.eye(M + 1) - np.outer(w, w)
            U, _, _ = np.linalg.svd(P)
            out.append(U[:, :M])
        return out

    def ranges(t: float):
        return [np.concatenate([S, E @ U], axis=1) for U in innovation_bases(t)]   # (n, n-1) each

    def alpha_of(t: float) -> float:
        # P̄ = S Sᵀ + E Ḡ Eᵀ with Ḡ = (1/M) Σ U_μ U_μᵀ ((M+1) x (M+1), Ḡ ≼ I): its positive
        # eigenvalues are 1 (on span S) and Ḡ's, so α is Ḡ's smallest positive eigenvalue. Working
        # in the (M+1)-dimensional innovation space keeps each bisection step O(M³), not O(n³)
        # (the n x n version took minutes at n = 1000).
        G = sum(U @ U.T for U in innovation_bases(t)) / M
        ev = np.linalg.eigvalsh(G)
        return float(ev[ev > 1e-10].min())

    if alpha == 1.0:
        Rs = [Q] * M
    else:
        lo, hi = 1e-8, 1e8
        for _ in range(200):                              # bisection in log t
            mid = np.sqrt(lo * hi)
            if alpha_of(mid) < alpha:
                lo = mid
            else:
                hi = mid
        Rs = ranges(np.sqrt(lo * hi))
    blocks = []
    for R in Rs:
        r = R.shape[1]
        sig = np.logspace(0.0, -np.log10(kappa_max), r)
        V, _ = np.linalg.qr(rng.standard_normal((d_per_worker, r)))
        blocks.append((R * sig) @ V.T)                   # (n, d_per_worker), rank r
    A = np.concatenate(blocks, axis=1)
    d = d_per_worker * M
    shards = [np.arange(m * d_per_worker, (m + 1) * d_per_worker, dtype=np.int64) for m in range(M)]
    W = rng.standard_normal((n_query, n)) / np.sqrt(n)
    Z = rng.standard_normal((d, d_query))
    B, C = W @ A, A @ Z
    D = B @ Z
    if noise > 0:
        A, B, C, D = (x + noise * rng.standard_normal(x.shape) for x in (A, B, C, D))
    prob = Problem.from_arrays(A, B, C, D, name=f"alpha({alpha:g},M={M})",
                               meta=dict(generator="alpha_problem", alpha_target=alpha,
                                         alpha=diversity_index(A, shards),
                                         kappa_max=max(shard_condition_numbers(A, shards)),
                                         workers=M, seed=seed, noise=noise))
    return prob, shards
