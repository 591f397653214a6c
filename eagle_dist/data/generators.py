"""Seeded problem generators.

* :func:`controlled` — exact spectrum: κ(A), rank, sizes, noise; consistent (``D = D̂``) when noiseless.
* :func:`paper_training` — the transformers' training distribution (rank-s ``X = R₁R₂ᵀ/√s`` with
  anisotropic ``Σ = diag(α₀, α₀², …)``).
* :func:`distribution` — the paper's six evaluation distributions (``svd``, ``student_t``,
  ``gaussian``, ``correlated``, ``sparse_rademacher``, ``clustered``), each building a full
  ``(n + n') x (d + d')`` matrix ``X`` of rank ``s`` from factors, then splitting it.
  ``definition="paper"`` follows the paper's appendix (Fig. 19) literally; the default
  ``"code"`` keeps this package's original variants (see :data:`DEFINITIONS`).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..problem import Problem

DISTRIBUTIONS = ("svd", "student_t", "gaussian", "correlated", "sparse_rademacher", "clustered")
#: ``distribution(definition=…)``: ``"code"`` (the default, this package's original variants) or
#: ``"paper"`` (the paper's Fig. 19 definitions). They differ in five of six kinds:
#:
#: ============================  ========================================  ===============================================
#: kind                          ``"code"``                                ``"paper"``
#: ============================  ========================================  ===============================================
#: ``svd``                       ``U diag(σ) Vᵀ``, σ log-uniform [1e-2, 1]  the same divided by ``√s``
#: ``student_t``                 factors t(ν = 4)                          factors t(4) / ``√(ν/(ν−2))`` (unit variance)
#: ``gaussian``                  factors N(0, 1)                           the same
#: ``correlated``                the s latent columns correlated           every factor column ~ N(0, Σ), Σ Toeplitz
#:                               (Toeplitz ρ = 0.8, s x s)                 ρ^|i−j| over the rows (ρ = 0.8): correlated rows
#: ``sparse_rademacher``         ±1 w.p. 0.1, one forced nonzero per row   ±1/√p w.p. p = 0.1 (no forced entries)
#: ``clustered``                 centre (5, scale 3) + N(0, 1), rank s     one-hot membership of k = 5 clusters times
#:                                                                         N(0, 1) centres: X is block-constant, rank ≤ 5
#: ============================  ========================================  ===============================================
#:
#: Factor kinds build ``X = R₁ R₂ᵀ / √s``. The paper's ``clustered`` has rank ≤ k = 5 whatever
#: ``rank`` says (its caption's "rank 240" cannot hold for it); ``meta["rank"]`` reports 5 then.
DEFINITIONS = ("code", "paper")
CLUSTERS = 5


def _is_int(v) -> bool:
    """A Python or NumPy integer (``np.int64`` included), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_seed(seed, name: str = "seed") -> int:
    """A non-negative integer seed (NumPy integers accepted), named in the error otherwise."""
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"{name}={seed!r} must be a non-negative integer (e.g. {name}=0)")
    return int(seed)


def _check_real(name: str, value, *, low: float = -np.inf, low_open: bool = False,
                what: str = "") -> float:
    """A finite real number (Python or NumPy) at least ``low`` (above it if ``low_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else float("nan")
    if not (ok and np.isfinite(v) and (v > low if low_open else v >= low)):
        bound = "" if low == -np.inf else f" {'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{name}={value!r} must be a finite number{bound}{what}")
    return v


def _check_sizes(**sizes):
    """Positive integer sizes, and dense blocks that fit in memory (refused before allocating)."""
    from ..problem import check_memory, dense_problem_bytes
    for k, v in sizes.items():
        if not _is_int(v) or v < 1:
            raise ValueError(f"{k}={v!r} must be a positive integer")
    n, d = int(sizes.get("n", 1)), int(sizes.get("d", 1))
    nq, dq = int(sizes.get("n_query", 1)), int(sizes.get("d_query", 1))
    # the generators also form n x n / d x d orthogonal factors
    check_memory(dense_problem_bytes(n, d, nq, dq) + 8.0 * (n * n + d * d),
                 f"a generated problem with n = {n}, d = {d}", "use smaller n / d")


def _haar(rng, m, k):
    Q, R = np.linalg.qr(rng.standard_normal((m, k)))
    return Q * np.sign(np.diag(R))


def controlled(n: int = 240, d: int = 240, n_query: int = 2, d_query: int = 2, *,
               kappa: float = 1e2, rank: Optional[int] = None, noise: float = 0.0,
               spectrum: str = "geometric", seed: int = 0, dtype=np.float64) -> Problem:
    """``A = U diag(σ) Vᵀ`` with ``σ`` from 1 down to ``1/kappa`` (``rank`` nonzero values),
    ``C = A Z``, ``B = W A``, ``D = W A Z`` (so ``rank X = rank A`` and ``D = B A⁺ C``), then i.i.d.
    ``N(0, noise²)`` added to every block (the hidden ``D_true`` keeps its noise too).

    ``spectrum``: ``"geometric"`` (evenly spaced in log) or ``"loguniform"`` (random in log, with
    both endpoints kept so κ is exact).
    """
    _check_sizes(n=n, d=d, n_query=n_query, d_query=d_query)
    r = min(n, d) if rank is None else rank
    if not _is_int(r) or not (1 <= r <= min(n, d)):
        raise ValueError(f"rank={rank!r} must be an integer in 1..min(n, d) = 1..{min(n, d)}")
    r = int(r)
    kappa = _check_real("kappa", kappa, low=1.0, what=" (the condition number of A)")
    noise = _check_real("noise", noise, low=0.0, what=" (it is a standard deviation)")
    if spectrum not in ("geometric", "loguniform"):
        raise ValueError(f"spectrum={spectrum!r}; use 'geometric' or 'loguniform'")
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    if r == 1:
        sig = np.ones(1)
    elif spectrum == "geometric":
        sig = np.logspace(0.0, -np.log10(kappa), r)
    else:
        inner = np.sort(rng.uniform(-np.log10(kappa), 0.0, r - 2))[::-1]
        sig = 10.0 ** np.concatenate([[0.0], inner, [-np.log10(kappa)]])
    U, V = _haar(rng, n, r), _haar(rng, d, r)
    A = (U * sig) @ V.T
    Z = rng.standard_normal((d, d_query))
    W = rng.standard_normal((n_query, n)) / np.sqrt(n)
    C, B = A @ Z, W @ A
    D = B @ Z
    if noise > 0:
        A, B, C, D = (x + noise * rng.standard_normal(x.shape) for x in (A, B, C, D))
    meta = dict(generator="controlled", kappa=kappa, rank=r, noise=noise, seed=seed)
    return Problem.from_arrays(A.astype(dtype), B.astype(dtype), C.astype(dtype),
                               D.astype(dtype), name=f"controlled(k={kappa:g},r={r})", meta=meta)


def split(X: np.ndarray, n: int, d: int, *, name: str, meta: dict, dtype=np.float64) -> Problem:
    """Split ``X`` into ``[[A, C], [B, D]]`` with ``A = X[:n, :d]`` and keep ``D`` as ``D_true``."""
    X = np.asarray(X, dtype=dtype)
    if not (0 < n < X.shape[0] and 0 < d < X.shape[1]):
        raise ValueError(f"n={n}, d={d} must leave non-empty blocks in X of shape {X.shape}")
    return Problem.from_arrays(X[:n, :d], X[n:, :d], X[:n, d:], X[n:, d:], name=name, meta=meta)


def paper_training(n: int = 18, d: int = 18, n_query: int = 2, d_query: int = 2, *, s: int = 10,
                   alpha0: float = 0.7, noise: float = 0.0, seed: int = 0) -> Problem:
    """One sample of the paper's training distribution."""
    _check_sizes(n=n, d=d, n_query=n_query, d_query=d_query, s=s)
    alpha0 = _check_real("alpha0", alpha0, low=0.0, low_open=True,
                         what=" (Σ = diag(α₀, α₀², …); the paper uses 0.7)")
    noise = _check_real("noise", noise, low=0.0, what=" (a variance)")
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    scale = np.sqrt(alpha0 ** np.arange(1, s + 1))           # Σ = diag(α₀, α₀², …), s x s
    R1 = rng.standard_normal((n + n_query, s)) * scale
    R2 = rng.standard_normal((d + d_query, s)) * scale
    X = R1 @ R2.T / np.sqrt(s)
    if noise > 0:
        X = X + np.sqrt(noise) * rng.standard_normal(X.shape)   # ``noise`` is a variance (0.01)
    return split(X, n, d, name="paper_training", meta=dict(generator="paper_training", s=s,
                                                           alpha0=alpha0, noise=noise, seed=seed))


def _factor(rng, kind: str, m: int, s: int) -> np.ndarray:
    if kind == "gaussian":
        return rng.standard_normal((m, s))
    if kind == "student_t":
        return rng.standard_t(4.0, size=(m, s))
    if kind == "correlated":
        idx = np.arange(s)
        L = np.linalg.cholesky(0.8 ** np.abs(idx[:, None] - idx[None, :]))   # Toeplitz ρ = 0.8
        return rng.standard_normal((m, s)) @ L.T
    if kind == "sparse_rademacher":
        mask = rng.random((m, s)) < 0.1
        F = np.where(mask, rng.choice([-1.0, 1.0], size=(m, s)), 0.0)
        F[np.arange(m), rng.integers(0, s, m)] = rng.choice([-1.0, 1.0], size=m)  # no zero rows
        return F
    if kind == "clustered":
        centers = rng.standard_normal((5, s)) * 3.0
        return centers[rng.integers(0, 5, m)] + rng.standard_normal((m, s))
    raise ValueError(kind)


def _paper_factor(rng, kind: str, m: int, s: int) -> np.ndarray:
    """One ``m x s`` factor of the paper's Fig. 19 distributions (see :data:`DEFINITIONS`)."""
    if kind == "gaussian":
        return rng.standard_normal((m, s))
    if kind == "student_t":
        nu = 4.0
        return rng.standard_t(nu, size=(m, s)) / np.sqrt(nu / (nu - 2.0))     # unit variance
    if kind == "correlated":
        idx = np.arange(m)
        L = np.linalg.cholesky(0.8 ** np.abs(idx[:, None] - idx[None, :]))   # m x m Toeplitz
        return L @ rng.standard_normal((m, s))              # every column ~ N(0, Σ): rows correlated
    if kind == "sparse_rademacher":
        p = 0.1
        mask = rng.random((m, s)) < p
        return np.where(mask, rng.choice([-1.0, 1.0], size=(m, s)), 0.0) / np.sqrt(p)
    if kind == "clustered":
        centers = rng.standard_normal((CLUSTERS, s))
        return centers[rng.integers(0, CLUSTERS, m)]        # one-hot membership x centres
    raise ValueError(kind)


def distribution(kind: str = "gaussian", n: int = 240, d: int = 240, n_query: int = 2,
                 d_query: int = 2, *, rank: Optional[int] = None, noise: float = 0.0,
                 seed: int = 0, dtype=np.float64, definition: str = "code") -> Problem:
    """A rank-``rank`` matrix ``X`` (default ``min(n, d)``, so ``A`` is generically full rank and
    the data consistent) from one of :data:`DISTRIBUTIONS`; ``noise`` is the standard deviation
    of Gaussian noise added to every entry.

    ``definition``: ``"code"`` (default; this package's original variants) or ``"paper"`` (the
    paper's Fig. 19 definitions: scaled Student-t and sparse Rademacher, correlated rows, the SVD
    construction divided by ``√s``, block-constant clusters of rank ≤ 5); the table in
    :data:`DEFINITIONS` lists the differences. With a seed and a kind, the noise is drawn after X
    from the same stream, so ``noise=0`` with the same seed gives the noiseless X.

    Example:
        >>> p = distribution("student_t", 40, 40, seed=0, definition="paper")
        >>> p.A.shape, p.meta["definition"]
        ((40, 40), 'paper')
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"distribution {kind!r} is unknown; choose one of {DISTRIBUTIONS}")
    if definition not in DEFINITIONS:
        raise ValueError(f"definition={definition!r}; use 'code' (this package's variants, the "
                         "default) or 'paper' (the paper's Fig. 19 definitions)")
    _check_sizes(n=n, d=d, n_query=n_query, d_query=d_query)
    s = min(n, d) if rank is None else rank
    if not _is_int(s) or not (1 <= s <= min(n, d)):
        raise ValueError(f"rank={rank!r} must be an integer in 1..min(n, d) = 1..{min(n, d)}")
    s = int(s)
    noise = _check_real("noise", noise, low=0.0, what=" (it is a standard deviation)")
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    paper = definition == "paper"
    if kind == "svd":
        # X = U diag(σ) Vᵀ, σ log-uniform in [1e-2, 1] (the paper: divided by √s)
        sig = 10.0 ** rng.uniform(-2.0, 0.0, s)
        X = (_haar(rng, n + n_query, s) * sig) @ _haar(rng, d + d_query, s).T
        if paper:
            X = X / np.sqrt(s)
    else:
        fac = _paper_factor if paper else _factor
        X = fac(rng, kind, n + n_query, s) @ fac(rng, kind, d + d_query, s).T / np.sqrt(s)
    if noise > 0:
        X = X + noise * rng.standard_normal(X.shape)
    rank_x = min(s, CLUSTERS) if (paper and kind == "clustered") else s
    meta = dict(generator=kind, rank=rank_x, noise=noise, seed=seed)
    if paper:
        meta["definition"] = "paper"     # absent for "code": existing metadata stays as it was
    return split(X, n, d, name=kind if not paper else f"{kind}(paper)", meta=meta, dtype=dtype)
