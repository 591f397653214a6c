"""Matrix Market files and the paper's SuiteSparse protocol.

Protocol (:func:`load_suitesparse`): for a matrix ``M`` of numerical rank ``r``, pick ``r``
columns by QR with column pivoting on ``M`` and ``r`` rows by QR with column pivoting on the chosen
columns' transpose, so that the ``r x r`` block ``A`` is full rank. ``B`` is one further row (of
the rows not chosen, the one of largest norm on the chosen columns, so it is not a zero row): ``w A =
B`` like a linear system. The remaining columns of the chosen rows form ``C`` and B's row there is
``D_true``; when ``rank M = r`` every row lies in the span of the chosen ones, so
``D_true = B A⁻¹ C`` exactly. With ``c_block="identity"`` (or no column left over) ``C = I_r``
and ``D = w``.

The shipped copies (``eagle_dist/data/matrices``, with ``MANIFEST.csv`` and attribution in its
README) come from the SuiteSparse Matrix Collection (Davis & Hu, ACM TOMS 38(1), 2011; MIT /
CC-BY 4.0). Note: the paper quotes ranks 801 / 2147 for Maragal_4 / Maragal_5; the numerical
ranks of these copies (SVD, cut-off ``max(m, n)·eps·σ_max``) are 872 / 2308.
"""
from __future__ import annotations

import csv
import gzip
import logging
import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import scipy.io
import scipy.linalg
import scipy.sparse as sp

from ..problem import Problem

log = logging.getLogger(__name__)

_DIR = Path(__file__).resolve().parent / "matrices"


def _manifest() -> Dict[str, dict]:
    with open(_DIR / "MANIFEST.csv", newline="") as f:
        return {f"{r['group']}/{r['name']}": r for r in csv.DictReader(f)}


SHIPPED = tuple(sorted(_manifest()))


def shipped_path(name: str) -> Path:
    """Path of a shipped matrix by SuiteSparse name (``"HB/dwt_1007"`` or just ``"dwt_1007"``)."""
    matches = [k for k in SHIPPED if k == name or k.split("/")[1] == name]
    if not matches:
        raise ValueError(f"matrix {name!r} is not shipped; choose one of {list(SHIPPED)} or pass a "
                         "path to a .mtx / .mtx.gz file")
    if len(matches) > 1:
        raise ValueError(f"matrix name {name!r} is ambiguous ({matches}); use GROUP/NAME")
    return _DIR / f"{matches[0]}.mtx.gz"


def _resolve(source: Union[str, os.PathLike]) -> Path:
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
    path = _resolve(source)
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
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.sum(s > max(M.shape) * np.finfo(np.float64).eps * s[0]))


def load_suitesparse(source: Union[str, os.PathLike], *, rank: Optional[int] = None,
                     c_block: str = "rest", dtype=np.float64) -> Problem:
    """Build the real-data problem from a shipped name or a ``.mtx`` path (see module docstring).

    ``rank`` overrides the numerical rank (computed by a dense SVD otherwise). ``c_block``:
    ``"rest"`` (C = the remaining columns of the chosen rows, ``D_true`` their entries in B's row)
    or ``"identity"`` (C = I_r, so ``D = w`` solves the linear system ``w A = B`` as in the
    paper's real-data benchmark).
    """
    if c_block not in ("rest", "identity"):
        raise ValueError(f"c_block={c_block!r}; use 'rest' or 'identity'")
    path = _resolve(source)
    M = load_mtx(path)
    dense = M.toarray()
    m, ncol = dense.shape
    r = numerical_rank(dense) if rank is None else int(rank)
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
    if norms.max() == 0.0:
        # e.g. HB/bcsstm13: every row outside the rank-r block is zero, so B = 0 and D̂ = 0
        log.warning("%s: every row outside the %d x %d block is zero on its columns; B = 0 and the "
                    "problem is trivial (D̂ = 0)", path.name, r, r)
    rest = np.setdiff1d(np.arange(ncol), cols) if c_block == "rest" else np.empty(0, dtype=int)
    A = dense[np.ix_(rows, cols)]
    B = dense[[brow]][:, cols]
    if rest.size:
        C, D = dense[np.ix_(rows, rest)], dense[[brow]][:, rest]
        if not np.any(D):
            # e.g. HB/dwt_1007: B's row misses every remaining column, so D̂ = B A⁻¹ C = 0 and
            # errors are measured against the data scale (Problem.error_denominator)
            log.warning("%s: the hidden block D is zero (row %d has no entries in the %d "
                        "remaining columns), so D̂ = 0 and the completion is a weak test; "
                        "c_block='identity' (--c-block identity) solves the linear system "
                        "w A = B instead", path.name, brow, rest.size)
    else:
        C, D = np.eye(r), None
    name = path.name.replace(".mtx.gz", "").replace(".mtx", "")
    man = _manifest()
    key = next((k for k in man if k.endswith("/" + name) and (_DIR / f"{k}.mtx.gz") == path), name)
    meta = dict(source=str(path), shape=M.shape, nnz=int(np.count_nonzero(M.data)), rank=r, rows=rows, cols=cols,
                b_row=brow, suitesparse=key, c_block=c_block)
    return Problem.from_arrays(A.astype(dtype), B.astype(dtype), C.astype(dtype),
                               None if D is None else D.astype(dtype), name=key, meta=meta)
