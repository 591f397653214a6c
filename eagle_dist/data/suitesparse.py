"""Matrix Market files and the paper's SuiteSparse protocol.

Protocol (:func:`load_suitesparse`): for a matrix ``M`` of numerical rank ``r``, pick ``r``
columns by QR with column pivoting on ``M`` and ``r`` rows by QR with column pivoting on the chosen
columns' transpose, so that the ``r x r`` block ``A`` is full rank. ``B`` is one further row (of
the rows not chosen, the one of largest norm on the chosen columns, so it is not a zero row): ``w A =
B`` like a linear system. The remaining columns of the chosen rows form ``C`` and B's row there is
``D_true``; when ``rank M = r`` every row lies in the span of the chosen ones, so
``D_true = B A⁻¹ C`` exactly. With ``c_block="identity"`` (or no column left over) ``C = I_r``
and ``D = w``.

:func:`protocol_step` is the rank-revealing step on its own (cached on disk by file hash when a
``cache_dir`` is given) with what a report needs: the rank found and the threshold it was cut at,
σ_max/σ_rank of the whole matrix and κ of the chosen block. Two documented departures, both
opt-in: ``rhs="auto"`` replaces a zero B (HB/bcsstm13: every row outside the block is zero on its
columns) by a consistent random right-hand side ``B = w_true A`` (seeded),
and ``orient="auto"`` uses the transpose of a matrix of full row rank, which has no row left for B.

The shipped copies (``eagle_dist/data/matrices``, with ``MANIFEST.csv`` and attribution in its
README) come from the SuiteSparse Matrix Collection (Davis & Hu, ACM TOMS 38(1), 2011; MIT /
CC-BY 4.0). Note: the paper quotes ranks 801 / 2147 for Maragal_4 / Maragal_5; the numerical
ranks of these copies (SVD, cut-off ``max(m, n)·eps·σ_max``) are 872 / 2308.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import scipy.io
import scipy.linalg
import scipy.sparse as sp

from ..problem import Problem

log = logging.getLogger(__name__)

_DIR = Path(__file__).resolve().parent / "matrices"


def shipped_manifest() -> Dict[str, dict]:
    with open(_DIR / "MANIFEST.csv", newline="") as f:
        return {f"{r['group']}/{r['name']}": r for r in csv.DictReader(f)}


SHIPPED = tuple(sorted(shipped_manifest()))


def shipped_path(name: str) -> Path:
    """Path of a shipped matrix by SuiteSparse name (``"HB/dwt_1007"`` or just ``"dwt_1007"``)."""
    matches = [k for k in SHIPPED if k == name or k.split("/")[1] == name]
    if not matches:
        raise ValueError(f"matrix {name!r} is not shipped; choose one of {list(SHIPPED)} or pass a "
                         "path to a .mtx / .mtx.gz file")
    if len(matches) > 1:
        raise ValueError(f"matrix name {name!r} is ambiguous ({matches}); use GROUP/NAME")
    return _DIR / f"{matches[0]}.mtx.gz"


def resolve_matrix(source: Union[str, os.PathLike]) -> Path:
    p = Path(source)
    if p.exists():
        return p
    if isinstance(source, str) and not source.endswith((".mtx", ".gz")):
        return shipped_path(source)
    raise ValueError(f"Matrix Market file {str(source)!r} does not exist; pass an existing .mtx or "
                     f".mtx.gz path or a shipped name ({', '.join(SHIPPED)})")


def _check_header_size(f, path, coordinate: bool = True) -> None:
    """Read the size line after the banner and comments; refuse, before reading the entries, a
    header whose entry count is impossible or whose matrix would not fit in memory: the
    real-data protocol densifies it (about 3 dense copies), and the reader holds the
    coordinate entries (row, column, value; twice for a symmetric file) as well."""
    from ..problem import check_memory
    for raw in f:
        line = raw.decode("latin-1").strip()
        if not line or line.startswith("%"):
            continue
        parts = line.split()
        try:
            rows, cols = int(parts[0]), int(parts[1])
            nnz = int(parts[2]) if coordinate else rows * cols
        except (IndexError, ValueError):
            expected = "rows cols entries" if coordinate else "rows cols"
            raise ValueError(f"{path}: malformed Matrix Market content (size line "
                             f"{line[:80]!r}; expected '{expected}')") from None
        if rows < 0 or cols < 0 or nnz < 0:
            raise ValueError(f"{path}: negative size {line[:80]!r} in the header")
        if nnz > rows * cols:
            raise ValueError(f"{path}: malformed Matrix Market content (the header announces "
                             f"{nnz} entries for a {rows} x {cols} matrix)")
        check_memory(8.0 * rows * cols * 3 + 48.0 * nnz, f"{path} ({rows} x {cols}, {nnz} entries)",
                     "the real-data protocol densifies the matrix: use a smaller matrix")
        return
    raise ValueError(f"{path}: malformed Matrix Market content (no size line after the banner)")


def load_mtx(source: Union[str, os.PathLike]) -> sp.csr_matrix:
    """Read a (optionally gzipped) Matrix Market file as a float64 CSR matrix.

    Pattern matrices read as ones; symmetric files are expanded. Raises ``ValueError`` for a
    missing, unreadable, non-numeric (complex) or dense-array-but-empty file.
    """
    path = resolve_matrix(source)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.readline().decode("latin-1").lower()
            if not head.startswith("%%matrixmarket"):
                raise ValueError(f"{path}: missing '%%MatrixMarket' banner; not a Matrix Market file")
            if "complex" in head:
                raise ValueError(f"{path}: complex Matrix Market files are not supported (real or "
                                 "pattern only)")
            _check_header_size(f, path, coordinate="array" not in head.split()[2:3])
            f.seek(0)
            try:
                M = scipy.io.mmread(f)
            except ValueError as exc:
                # SciPy's own ValueErrors ("Line 4: Invalid integer value.") name neither the
                # file nor the problem; the `except ValueError: raise` below used to pass them on
                raise ValueError(f"{path}: malformed Matrix Market content ({exc})") from exc
    except ValueError:
        raise
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read ({exc}); is it a valid (gzipped) .mtx?") from exc
    except Exception as exc:  # scipy raises assorted errors on malformed bodies
        raise ValueError(f"{path}: malformed Matrix Market content ({type(exc).__name__}: {exc})") from exc
    M = sp.csr_matrix(M, dtype=np.float64) if sp.issparse(M) else sp.csr_matrix(np.asarray(M, dtype=np.float64))
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"{path}: empty matrix of shape {M.shape}")
    if not np.all(np.isfinite(M.data)):
        # otherwise a NaN surfaced later as "A has a NaN entry" and an Inf as "rank=0 ..."
        bad = int(np.size(M.data) - np.count_nonzero(np.isfinite(M.data)))
        raise ValueError(f"{path}: {bad} NaN/Inf entries; clean the file first")
    return M


def numerical_rank(M: np.ndarray) -> int:
    """Number of singular values above ``max(m, n)·eps·σ_max`` (the manifest's definition)."""
    s = scipy.linalg.svd(M, compute_uv=False, check_finite=False)
    return _rank_of(s, M.shape)[0]


def _rank_of(s: np.ndarray, shape) -> "tuple[int, float]":
    """``(rank, threshold)``: singular values above ``threshold = max(m, n)·eps·σ_max``."""
    if s.size == 0 or s[0] == 0:
        return 0, 0.0
    thr = float(max(shape) * np.finfo(np.float64).eps * s[0])
    return int(np.sum(s > thr)), thr


RHS_RULES = ("row", "random", "auto")
ORIENTS = ("as_is", "auto")


def file_sha256(path: Union[str, os.PathLike]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where :func:`protocol_step` caches its rank-revealing step unless told otherwise:
    ``$EAGLE_DIST_CACHE`` or ``$XDG_CACHE_HOME/eagle_dist/suitesparse`` (``~/.cache/...``)."""
    env = os.environ.get("EAGLE_DIST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eagle_dist" / "suitesparse"


def protocol_step(source: Union[str, os.PathLike], *, rank: Optional[int] = None,
                  orient: str = "as_is", cache_dir: Union[None, str, os.PathLike] = None,
                  block_stats: bool = True, _dense: Optional[np.ndarray] = None) -> dict:
    """The rank-revealing step of the paper's protocol, with what a report needs.

    Returns a dict: ``path``, ``sha256`` of the file, ``shape`` (of the matrix the protocol used),
    ``transposed``, ``nnz``, ``rank`` with the ``threshold`` ``max(m, n)·eps·σ_max`` it was cut
    at (``rank_given`` when ``rank`` was passed), ``sigma_max``, ``sigma_rank`` and ``full_cond``
    (σ_max/σ_rank of the whole matrix), the chosen ``rows``/``cols``, ``b_row`` (the largest-norm
    remaining row on the chosen columns) and ``b_row_zero`` (that row is zero: the protocol's B
    would be 0), and the chosen ``r x r`` block's ``block_sigma_max``, ``block_sigma_min``,
    ``block_cond`` and ``block_rank`` (numerical rank, same rule; one more SVD, of the block:
    ``block_stats=False`` skips it and leaves them ``None``), plus ``seconds`` it took.

    ``orient="auto"``: a matrix of full row rank has no row left for B; its transpose is used
    when that has more rows than its rank (wide LP matrices such as lp_bnl2, r05).
    ``cache_dir``: the result is stored there as JSON keyed by the file's SHA-256 (and ``rank``,
    ``orient``) and read back on the next call; ``None`` computes it every time.
    """
    if orient not in ORIENTS:
        raise ValueError(f"orient={orient!r}; use one of {ORIENTS}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))):
        raise ValueError(f"rank={rank!r} must be a positive integer or None (numerical rank)")
    path = resolve_matrix(source)
    sha = file_sha256(path)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / (f"{sha[:24]}-{orient}-r{'auto' if rank is None else int(rank)}"
                                        f"{'-b' if block_stats else ''}.json")
        if cache_file.is_file():
            try:
                with open(cache_file) as f:
                    out = json.load(f)
                if out.get("sha256") == sha:
                    out["path"], out["cached"] = str(path), True
                    return out
            except (OSError, ValueError):
                log.warning("%s: unreadable cache entry; recomputing", cache_file)
    t0 = time.perf_counter()
    dense = load_mtx(path).toarray() if _dense is None else _dense
    nnz = int(np.count_nonzero(dense))
    s = scipy.linalg.svd(dense, compute_uv=False, check_finite=False)
    r_num, thr = _rank_of(s, dense.shape)
    transposed = False
    if orient == "auto" and r_num >= dense.shape[0] and dense.shape[1] > r_num:
        dense, transposed = dense.T, True
    m, ncol = dense.shape
    r = r_num if rank is None else int(rank)
    if not (1 <= r < m):
        raise ValueError(f"rank={r} must be in 1..rows-1 = 1..{m - 1} (one row beyond the r x r "
                         "block is needed for B)")
    if r > ncol:
        raise ValueError(f"rank={r} exceeds the number of columns {ncol}")
    _, _, cperm = scipy.linalg.qr(dense, mode="economic", pivoting=True, check_finite=False)
    cols = cperm[:r]
    _, _, rperm = scipy.linalg.qr(dense[:, cols].T, mode="economic", pivoting=True,
                                  check_finite=False)
    rows = rperm[:r]
    # B: the remaining row with the largest norm on the chosen columns (a zero row is trivial)
    others = rperm[r:]
    norms = np.linalg.norm(dense[np.ix_(others, cols)], axis=1)
    brow = int(others[np.argmax(norms)])
    sb = scipy.linalg.svd(dense[np.ix_(rows, cols)], compute_uv=False, check_finite=False) \
        if block_stats else None
    out = dict(path=str(path), sha256=sha, shape=[int(m), int(ncol)], transposed=transposed,
               nnz=nnz, rank=int(r), rank_given=rank is not None, numerical_rank=int(r_num),
               threshold=thr, sigma_max=float(s[0]) if s.size else 0.0,
               sigma_rank=float(s[r - 1]), full_cond=float(s[0] / s[r - 1]) if s[r - 1] > 0
               else float("inf"),
               rows=[int(i) for i in rows], cols=[int(j) for j in cols], b_row=brow,
               b_row_zero=bool(norms.max() == 0.0),
               block_sigma_max=None if sb is None else float(sb[0]),
               block_sigma_min=None if sb is None else float(sb[-1]),
               block_cond=None if sb is None else (float(sb[0] / sb[-1]) if sb[-1] > 0
                                                   else float("inf")),
               block_rank=None if sb is None else _rank_of(sb, (r, r))[0],
               seconds=time.perf_counter() - t0,
               cached=False)
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump({k: v for k, v in out.items() if k not in ("path", "cached")}, f)
            os.replace(tmp, cache_file)
        except OSError as exc:
            log.warning("cannot write the protocol cache %s (%s); continuing without", cache_file,
                        exc)
    return out


def load_suitesparse(source: Union[str, os.PathLike], *, rank: Optional[int] = None,
                     c_block: str = "rest", dtype=np.float64, rhs: str = "row",
                     orient: str = "as_is", seed: int = 0,
                     cache_dir: Union[None, str, os.PathLike] = None,
                     report: bool = False) -> Problem:
    """Build the real-data problem from a shipped name or a ``.mtx`` path (see module docstring).

    ``rank`` overrides the numerical rank (computed by a dense SVD otherwise). ``c_block``:
    ``"rest"`` (C = the remaining columns of the chosen rows, ``D_true`` their entries in B's row)
    or ``"identity"`` (C = I_r, so ``D = w`` solves the linear system ``w A = B`` as in the
    paper's real-data benchmark).

    ``rhs``: ``"row"`` (the protocol's B, the held-out row; it may be 0, e.g. HB/bcsstm13, which
    is logged), ``"random"`` (a consistent random right-hand side ``B = w_true A`` with
    ``w_true ~ N(0, 1)`` from ``seed``, so ``D_true = w_true C``) or ``"auto"`` (the row, or the
    random rule where the row is zero). ``orient`` and ``cache_dir``: see
    :func:`protocol_step`, whose report is in ``meta["protocol"]`` (with the chosen block's
    singular values and κ when ``report=True``: one more SVD, of the block).
    """
    if c_block not in ("rest", "identity"):
        raise ValueError(f"c_block={c_block!r}; use 'rest' or 'identity'")
    if rhs not in RHS_RULES:
        raise ValueError(f"rhs={rhs!r}; use one of {RHS_RULES}")
    path = resolve_matrix(source)
    M = load_mtx(path)
    dense = M.toarray()
    step = protocol_step(path, rank=rank, orient=orient, cache_dir=cache_dir,
                         block_stats=bool(report), _dense=dense)
    if step["transposed"]:
        dense = dense.T
    ncol = dense.shape[1]
    r, brow = step["rank"], step["b_row"]
    rows, cols = np.asarray(step["rows"]), np.asarray(step["cols"])
    rhs_used = rhs if rhs != "auto" else ("random" if step["b_row_zero"] else "row")
    if step["b_row_zero"] and rhs_used == "row":
        # e.g. HB/bcsstm13: every row outside the rank-r block is zero on its columns
        log.warning("%s: every row outside the %d x %d block is zero on its columns; B = 0 and the "
                    "problem is trivial (D̂ = 0); rhs='auto' uses a random consistent B", path.name,
                    r, r)
    rest = np.setdiff1d(np.arange(ncol), cols) if c_block == "rest" else np.empty(0, dtype=int)
    A = dense[np.ix_(rows, cols)]
    w_true = None
    if rhs_used == "random":
        w_true = np.random.default_rng(seed).standard_normal((1, r))
        B = w_true @ A
    else:
        B = dense[[brow]][:, cols]
    if rest.size:
        C = dense[np.ix_(rows, rest)]
        D = w_true @ C if w_true is not None else dense[[brow]][:, rest]
        if not np.any(D):
            # e.g. HB/dwt_1007: B's row misses every remaining column, so D̂ = B A⁻¹ C = 0 and
            # errors are measured against the data scale (Problem.error_denominator)
            log.warning("%s: the hidden block D is zero (row %d has no entries in the %d "
                        "remaining columns), so D̂ = 0 and the completion is a weak test; "
                        "c_block='identity' (--c-block identity) solves the linear system "
                        "w A = B instead", path.name, brow, rest.size)
    else:
        C, D = np.eye(r), (w_true if w_true is not None else None)
    name = path.name.replace(".mtx.gz", "").replace(".mtx", "")
    man = shipped_manifest()
    key = next((k for k in man if k.endswith("/" + name) and (_DIR / f"{k}.mtx.gz") == path), name)
    meta = dict(source=str(path), shape=M.shape, nnz=int(np.count_nonzero(M.data)), rank=r,
                rows=rows, cols=cols, b_row=brow, suitesparse=key, c_block=c_block, rhs=rhs_used,
                transposed=step["transposed"], protocol=step)
    return Problem.from_arrays(A.astype(dtype), B.astype(dtype), C.astype(dtype),
                               None if D is None else D.astype(dtype), name=key, meta=meta)
