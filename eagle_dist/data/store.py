"""Column-partitioned problem stores: a distributed worker reads only its own columns.

A store is a folder ("Zarr-style": a JSON manifest and plain ``.npy`` chunks, readable with NumPy
alone)::

    manifest.json          format, version, name, n, d, n_query, d_query, dtype, parts, meta
    C.npy                  n x d'   (replicated on every worker)
    D_true.npy             n' x d'  (optional: the known answer, e.g. a consistent problem's)
    parts/A-00000.npy      k x n    columns [start, stop) of A, stored TRANSPOSED so that any
    parts/B-00000.npy      k x n'   column range is one contiguous byte range of the file

Each part's entry in the manifest records its column range and the largest |entry| and squared
Frobenius norm of its A and B columns, so the driver can scale the blocks (exact powers of two)
and size messages without reading any of A.

A store may come from someone else, so nothing in its manifest is trusted (version 2): every file
it names must be a relative path that resolves inside the store folder (no ``..``, no absolute
path, no symlink leading out) to a regular file (a FIFO would hang the reader); its ``.npy``
header must have the shape and dtype the manifest implies; its size and SHA-256 are recorded at
writing time and checked — sizes by :meth:`ColumnStore.open` (a ``stat``, no data read), hashes
by whoever reads the file (a worker, its own parts only), so a part edited after writing is
refused instead of being solved against a stale ``D_true``. Version-1 stores (no sizes or hashes)
are still read, with a warning that their integrity cannot be checked. A worker opens the parts that overlap its shard with
``mmap_mode="r"`` and copies only its own rows of them (its columns of A), so per-worker memory is
its shard, and the driver's memory does not grow with d.

Write one with :func:`write_store` (arrays, or an iterator of column blocks for data that never
fits in memory), :func:`write_store_from_mtx` (a Matrix Market file in the least-squares or the
paper's protocol layout), or ``eagle-dist shard`` on the command line.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "eagle_dist.column_store"
VERSION = 2                    # 2: size and sha256 of every file; 1: none (read with a warning)
#: columns per part file when the writer is not told otherwise (parts of ~8 MiB or more)
DEFAULT_PART_BYTES = 8 << 20
LAYOUTS = ("lstsq", "protocol")

#: bytes of A / B columns read from part files by *this process* (tests check the driver's stays 0)
READ_BYTES = {"A": 0, "B": 0}
#: files whose SHA-256 this process has checked: (resolved path, size, mtime_ns) -> True
_VERIFIED: Dict[Tuple[str, int, int], bool] = {}


class StoreError(ValueError):
    """A column store that cannot be used as it is; the message names the file and the field."""


def _sha256(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _npy_header(path: Path) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from an ``.npy`` header (no data read)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
        raise ValueError(f"unsupported .npy version {version}")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _check_part_entry(man: Path, k: int, q: Any, version: int) -> None:
    if not isinstance(q, dict):
        raise StoreError(f"{man}: parts[{k}] must be an object")
    for key in ("start", "stop"):
        v = q.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise StoreError(f"{man}: parts[{k}].{key} = {v!r} must be a non-negative integer")
    for key in ("A", "B"):
        if not isinstance(q.get(key), str):
            raise StoreError(f"{man}: parts[{k}].{key} = {q.get(key)!r} must be a file name")
    for key in ("max_abs_A", "max_abs_B", "fro2_A", "fro2_B"):
        v = q.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 <= v < float("inf")):
            raise StoreError(f"{man}: parts[{k}].{key} = {v!r} must be a finite number >= 0")


@dataclass
class ColumnStore:
    """An opened store (only the manifest is read). Blocks: ``A`` (n x d), ``B`` (n' x d), ``C``
    (n x d'), optional ``D_true`` (n' x d')."""

    path: Path
    name: str
    n: int
    d: int
    n_query: int
    d_query: int
    dtype: np.dtype
    parts: List[Dict[str, Any]]
    has_d_true: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)
    version: int = VERSION
    #: manifest name -> (resolved path, {"size", "sha256"} or None for a version-1 store)
    files: Dict[str, Tuple[Path, Optional[dict]]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "ColumnStore":
        """Read and check the manifest and every file's header and size (no array data is read).
        Raises :class:`StoreError` (a ``ValueError``) naming the file and the field."""
        p = Path(path)
        man = p / "manifest.json"
        if not man.is_file():
            raise FileNotFoundError(f"{p} is not a column store (no manifest.json); write one with "
                                    "`eagle-dist shard FILE.mtx --out DIR` or "
                                    "eagle_dist.data.store.write_store(DIR, A, B, C)")
        try:
            with open(man, encoding="utf-8") as f:
                m = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{man}: not valid JSON ({exc}); the store is damaged — write it "
                             "again") from None
        if not isinstance(m, dict):
            raise StoreError(f"{man}: the manifest must be a JSON object")
        if m.get("format") != FORMAT:
            raise StoreError(f"{man}: format {m.get('format')!r} is not {FORMAT!r}")
        version = m.get("version", 0)
        if not isinstance(version, int) or version < 1:
            raise StoreError(f"{man}: version={version!r} must be a positive integer")
        if version > VERSION:
            raise StoreError(f"{man}: store version {version} is newer than this eagle_dist "
                             f"reads ({VERSION}); upgrade eagle_dist")
        def field_(key, kind=int, positive=True):
            v = m.get(key)
            ok = isinstance(v, kind) and not isinstance(v, bool) and (not positive or v >= 1)
            if not ok:
                raise StoreError(f"{man}: field {key!r} = {v!r} must be a positive integer")
            return v
        n, d, nq, dq = (field_(k) for k in ("n", "d", "n_query", "d_query"))
        dtype_name = m.get("dtype", "float64")
        if dtype_name not in ("float32", "float64"):
            raise StoreError(f"{man}: dtype={dtype_name!r}; a store holds float32 or float64")
        raw_parts = m.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise StoreError(f"{man}: field 'parts' must be a non-empty list")
        for k, q in enumerate(raw_parts):
            _check_part_entry(man, k, q, version)
        parts = sorted(raw_parts, key=lambda q: q["start"])
        edge = 0
        for q in parts:
            if q["start"] != edge or q["stop"] <= q["start"]:
                raise StoreError(f"{man}: parts do not tile the columns 0..{d - 1} "
                                 f"(part {q['A']} starts at {q['start']}, expected {edge})")
            edge = q["stop"]
        if edge != d:
            raise StoreError(f"{man}: parts end at column {edge}, but d = {d}")
        store = cls(path=p, name=str(m.get("name", p.name)), n=n, d=d, n_query=nq,
                    d_query=dq, dtype=np.dtype(dtype_name), parts=parts,
                    has_d_true=bool(m.get("D_true")),
                    meta=dict(m.get("meta", {})) if isinstance(m.get("meta"), dict) else {})
        store.version = version
        store.files = {}
        if version < 2:
            log.warning("%s: a version-1 store records no file sizes or hashes; its parts "
                        "cannot be checked for changes since writing (write it again to get "
                        "a version-%d store)", p, VERSION)
        # every file: contained, regular, the right header and (version 2) the recorded size
        store._check_file("C", m.get("C", "C.npy"), (n, dq), m.get("files", {}).get("C"))
        if store.has_d_true:
            store._check_file("D_true", m["D_true"], (nq, dq), m.get("files", {}).get("D_true"))
        for q in parts:
            k = q["stop"] - q["start"]
            store._check_file(q["A"], q["A"], (k, n), q.get("A_file"), part=q)
            store._check_file(q["B"], q["B"], (k, nq), q.get("B_file"), part=q)
        return store

    def _resolve(self, rel: Any, what: str) -> Path:
        """The file ``rel`` of the store, refused unless it is a relative path that resolves
        inside the store folder to a regular file."""
        where = f"{self.path / 'manifest.json'}: {what}"
        if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
            raise StoreError(f"{where}: file name {rel!r} must be a non-empty relative path")
        pure = Path(rel)
        if pure.is_absolute() or any(part == ".." for part in pure.parts):
            raise StoreError(f"{where}: file {rel!r} points outside the store (absolute or "
                             "'..' paths are refused); a store names only files inside its folder")
        root = self.path.resolve()
        try:
            full = (self.path / pure).resolve(strict=True)
        except FileNotFoundError:
            raise StoreError(f"{where}: file {rel!r} is missing from the store") from None
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{where}: file {rel!r} cannot be resolved ({exc})") from None
        if root not in full.parents:
            raise StoreError(f"{where}: file {rel!r} resolves to {full}, outside the store "
                             f"{root} (a symlink out of the store is refused)")
        import stat
        mode = os.stat(full).st_mode
        if not stat.S_ISREG(mode):
            raise StoreError(f"{where}: file {rel!r} is not a regular file (a FIFO, device or "
                             "folder); refusing to read it")
        return full

    def _check_file(self, what: str, rel: Any, shape: Tuple[int, int], rec: Any,
                    part: Optional[dict] = None) -> None:
        full = self._resolve(rel, what)
        try:
            shp, _fortran, dt = _npy_header(full)
        except Exception as exc:  # noqa: BLE001 - any unreadable header
            raise StoreError(f"{full}: not a readable .npy file ({type(exc).__name__}: {exc}); "
                             "the store is damaged — write it again") from None
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            raise StoreError(f"{full}: dtype {dt} — a store file must hold real float32/float64 "
                             "numbers (complex, integer, string or object arrays are refused)")
        if tuple(shp) != tuple(shape):
            raise StoreError(f"{full}: shape {tuple(shp)}, but the manifest implies {shape} "
                             f"({what}: n = {self.n}, n' = {self.n_query}, d' = {self.d_query}"
                             + (f", columns {part['start']}..{part['stop'] - 1}" if part else "")
                             + ")")
        entry = None
        if self.version >= 2:
            if not (isinstance(rec, dict) and isinstance(rec.get("size"), int)
                    and isinstance(rec.get("sha256"), str) and len(rec["sha256"]) == 64):
                raise StoreError(f"{self.path / 'manifest.json'}: {what}: no valid size/sha256 "
                                 "record (a version-2 store records both for every file)")
            size = os.stat(full).st_size
            if size != rec["size"]:
                raise StoreError(f"{full}: {size} bytes, but {rec['size']} were written; the file "
                                 "changed after the store was written — write the store again")
            entry = rec
        self.files[str(rel)] = (full, entry)

    def _verified(self, rel: str) -> Path:
        """The resolved file ``rel``, its SHA-256 checked once per process (version 2)."""
        full, rec = self.files[rel]
        if rec is None:
            return full
        st = os.stat(full)
        key = (str(full), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            if _sha256(full) != rec["sha256"]:
                raise StoreError(f"{full}: contents differ from what was written (SHA-256 "
                                 "mismatch); the file changed after the store was written — "
                                 "write the store again")
            _VERIFIED[key] = True
        return full

    # what the driver may know without reading A --------------------------------------------
    @property
    def max_abs_A(self) -> float:
        return max(float(q["max_abs_A"]) for q in self.parts)

    @property
    def max_abs_B(self) -> float:
        return max(float(q["max_abs_B"]) for q in self.parts)

    @property
    def fro_A(self) -> float:
        return float(np.sqrt(sum(float(q["fro2_A"]) for q in self.parts)))

    @property
    def fro_B(self) -> float:
        return float(np.sqrt(sum(float(q["fro2_B"]) for q in self.parts)))

    @property
    def dense_bytes(self) -> int:
        """Bytes of A and B held densely (float64), i.e. what a driver holding the problem needs."""
        return 8 * (self.n + self.n_query) * self.d

    def _load_small(self, what: str) -> np.ndarray:
        rel = next(r for r in self.files if r == what or (what == "C" and r.endswith("C.npy"))
                   or (what == "D_true" and r.endswith("D_true.npy")))
        x = np.load(self._verified(rel), allow_pickle=False).astype(np.float64)
        if not np.isfinite(x).all():
            raise StoreError(f"{self.files[rel][0]}: {what} has NaN or inf entries")
        return x

    def load_C(self) -> np.ndarray:
        return self._load_small("C")

    def load_D_true(self) -> Optional[np.ndarray]:
        return self._load_small("D_true") if self.has_d_true else None

    # what a worker reads ----------------------------------------------------------------------
    def columns(self, cols) -> Tuple[np.ndarray, np.ndarray]:
        """``(A[:, cols], B[:, cols])`` as C-contiguous float64, reading only the parts that hold
        ``cols`` (a ``(start, stop)`` pair or an index array) and, within each part, only those
        columns' bytes (memory-mapped, so untouched columns are never read)."""
        if isinstance(cols, tuple) and len(cols) == 2:
            idx = np.arange(int(cols[0]), int(cols[1]), dtype=np.int64)
        else:
            idx = np.asarray(cols, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.d):
            raise ValueError(f"columns outside 0..{self.d - 1} requested from store {self.path}")
        A = np.empty((self.n, idx.size), dtype=np.float64)
        B = np.empty((self.n_query, idx.size), dtype=np.float64)
        starts = np.array([q["start"] for q in self.parts])
        which = np.searchsorted(starts, idx, side="right") - 1
        for k in np.unique(which):
            q = self.parts[int(k)]
            sel = np.flatnonzero(which == k)
            local = idx[sel] - q["start"]
            contiguous = local.size > 1 and np.all(np.diff(local) == 1)
            rows = slice(int(local[0]), int(local[-1]) + 1) if contiguous or local.size == 1 \
                else local
            for name, out in (("A", A), ("B", B)):
                arr = np.load(self._verified(q[name]), mmap_mode="r", allow_pickle=False)
                chunk = np.asarray(arr[rows], dtype=np.float64)     # (k, n): only these bytes read
                if not np.isfinite(chunk).all():
                    bad = int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                    raise StoreError(f"{self.files[q[name]][0]}: {name} column "
                                     f"{q['start'] + int(np.atleast_1d(local)[bad])} has NaN or "
                                     "inf entries; clean the data and write the store again")
                out[:, sel] = chunk.T
                READ_BYTES[name] += chunk.nbytes
                del arr
        return A, B

    def to_problem(self):
        """The whole problem in memory (checks the memory first): small stores, tests, references."""
        from ..problem import Problem, check_memory
        check_memory(self.dense_bytes + 8 * self.n * self.d,
                     f"the whole store {self.path} ({self.n} x {self.d})",
                     "solve it distributed (solve(store, workers=M)) instead of loading it")
        A, B = self.columns((0, self.d))
        return Problem.from_arrays(A, B, self.load_C(), self.load_D_true(), name=self.name,
                                   meta=dict(self.meta, store=str(self.path)))

    def __repr__(self) -> str:
        return (f"ColumnStore({str(self.path)!r}, name={self.name!r}, A={self.n}x{self.d}, "
                f"B={self.n_query}x{self.d}, C={self.n}x{self.d_query}, {len(self.parts)} parts, "
                f"D_true={'yes' if self.has_d_true else 'no'})")


@dataclass(frozen=True)
class ShardRef:
    """What a worker is sent instead of its arrays: the store and its columns (picklable)."""

    path: str
    cols: Any                      # (start, stop) or an index array
    scale_A: float = 1.0
    scale_B: float = 1.0

    def load(self) -> Tuple[np.ndarray, np.ndarray]:
        A, B = ColumnStore.open(self.path).columns(self.cols)
        if self.scale_A != 1.0:
            A /= self.scale_A
        if self.scale_B != 1.0:
            B /= self.scale_B
        return A, B

    @property
    def size(self) -> int:
        return int(self.cols[1] - self.cols[0]) if isinstance(self.cols, tuple) else len(self.cols)


# ------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------
def _prepare_dir(path: Path, overwrite: bool) -> Path:
    """Check that ``path`` may receive a store and return a fresh temporary folder beside it: the
    store is written there and renamed into place at the end (:func:`_commit_dir`), so a write
    that fails half-way leaves nothing that blocks a retry."""
    import tempfile
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; choose a folder for the store")
        if (path / "manifest.json").is_file():
            if not overwrite:
                raise FileExistsError(f"{path} already holds a store; pass overwrite=True "
                                      "(--overwrite) to replace it")
        elif any(path.iterdir()):
            raise FileExistsError(f"{path} exists, is not empty and is not a store; choose a new "
                                  "folder (it is never deleted)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.writing-", dir=path.parent))
    (tmp / "parts").mkdir()
    return tmp


def _commit_dir(tmp: Path, path: Path) -> None:
    if path.exists():
        # an existing store (overwrite=True) or an empty folder: replaced only now, when the
        # new store is complete
        shutil.rmtree(path) if (path / "manifest.json").is_file() else path.rmdir()
    os.replace(tmp, path)


def _file_record(path: Path) -> Dict[str, Any]:
    return dict(size=os.stat(path).st_size, sha256=_sha256(path))


def write_store(path: Union[str, os.PathLike], A=None, B=None, C=None, D_true=None, *,
                blocks: Optional[Iterable[Tuple[np.ndarray, np.ndarray]]] = None,
                n: Optional[int] = None, n_query: Optional[int] = None,
                part_columns: Optional[int] = None, name: Optional[str] = None,
                meta: Optional[Dict[str, Any]] = None, dtype=np.float64,
                overwrite: bool = False) -> ColumnStore:
    """Write a column store.

    Either ``A`` (n x d, dense or SciPy sparse) and ``B`` (n' x d), cut into parts of
    ``part_columns`` columns (default: ~8 MiB of A per part), or ``blocks``: an iterable of
    ``(A_k, B_k)`` column blocks, written as they come (the whole of A is never in memory; give
    ``n`` and ``n_query`` then). ``C`` (n x d', default ``I_n``) is replicated; ``D_true``
    (n' x d') is stored when given. Returns the opened store.
    """
    import scipy.sparse as sp
    path = Path(path)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype}; use float32 or float64")
    if blocks is None:
        if A is None or B is None:
            raise ValueError("write_store needs A and B, or blocks=iterable of (A_k, B_k)")
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
            raise ValueError(f"A {A.shape} and B {B.shape} must be 2-D with the same number of "
                             "columns")
        n, n_query, d = A.shape[0], B.shape[0], A.shape[1]
        if part_columns is None:
            part_columns = max(1, DEFAULT_PART_BYTES // (8 * max(n, 1)))
        if not isinstance(part_columns, (int, np.integer)) or part_columns < 1:
            raise ValueError(f"part_columns={part_columns!r} must be a positive integer")
        csc = (A.tocsc() if sp.issparse(A) else None), (B.tocsc() if sp.issparse(B) else None)

        def cut():
            for a in range(0, d, part_columns):
                b = min(d, a + part_columns)
                yield tuple((m[:, a:b].toarray() if s is not None else np.asarray(m[:, a:b]))
                            for m, s in ((A, csc[0]), (B, csc[1])))
        blocks = cut()
    elif n is None or n_query is None:
        raise ValueError("with blocks=..., give n (rows of A) and n_query (rows of B)")
    final = path
    path = _prepare_dir(final, overwrite)
    try:
        _write_parts(path, final, blocks, n, n_query, C, D_true, name, meta, dtype)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    _commit_dir(path, final)
    return ColumnStore.open(final)


def _write_parts(path, final, blocks, n, n_query, C, D_true, name, meta, dtype) -> None:
    import scipy.sparse as sp
    parts, start = [], 0
    for k, (a, b) in enumerate(blocks):
        a, b = np.asarray(a), np.asarray(b)
        for nm, x in (("A_k", a), ("B_k", b)):
            if x.ndim != 2 or x.dtype.kind not in "fiub":
                raise ValueError(f"block {k}: {nm} must be a real 2-D numeric array, got "
                                 f"{x.dtype} with shape {x.shape}")
        if a.shape[0] != n or b.shape[0] != n_query or a.shape[1] != b.shape[1] or a.shape[1] == 0:
            raise ValueError(f"block {k}: A_k {a.shape} / B_k {b.shape} do not match n = {n}, "
                             f"n' = {n_query} with the same (nonzero) number of columns")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"block {k} (columns {start}..) has NaN or inf entries")
        fa, fb = f"parts/A-{k:05d}.npy", f"parts/B-{k:05d}.npy"
        np.save(path / fa, np.ascontiguousarray(a.T, dtype=dtype))
        np.save(path / fb, np.ascontiguousarray(b.T, dtype=dtype))
        a64 = a.astype(np.float64, copy=False)
        b64 = b.astype(np.float64, copy=False)
        parts.append(dict(start=start, stop=start + a.shape[1], A=fa, B=fb,
                          A_file=_file_record(path / fa), B_file=_file_record(path / fb),
                          max_abs_A=float(np.abs(a64).max()),
                          max_abs_B=float(np.abs(b64).max()) if b64.size else 0.0,
                          fro2_A=float(np.sum(a64 * a64)),
                          fro2_B=float(np.sum(b64 * b64))))
        start += a.shape[1]
    if not parts:
        raise ValueError("no columns written (empty A or empty blocks)")
    if all(q["max_abs_A"] == 0 for q in parts):
        raise ValueError("A is all zeros: B A⁺ C is then 0 for any B, C and there is nothing to "
                         "solve")
    C = np.eye(n) if C is None else (C.toarray() if sp.issparse(C) else np.asarray(C))
    if C.dtype.kind not in "fiub":
        raise ValueError(f"C has dtype {C.dtype}; pass a real numeric array")
    if C.ndim != 2 or C.shape[0] != n:
        raise ValueError(f"C has shape {C.shape}; expected (n, d') = ({n}, ?)")
    if not np.isfinite(C).all():
        raise ValueError("C has NaN or inf entries; clean the data first")
    np.save(path / "C.npy", C.astype(dtype))
    files = {"C": _file_record(path / "C.npy")}
    if D_true is not None:
        D_true = np.asarray(D_true, dtype=np.float64)
        if D_true.shape != (n_query, C.shape[1]):
            raise ValueError(f"D_true has shape {D_true.shape}; expected (n', d') = "
                             f"{(n_query, C.shape[1])}")
        np.save(path / "D_true.npy", D_true)
        files["D_true"] = _file_record(path / "D_true.npy")
    man = dict(format=FORMAT, version=VERSION, name=name or final.name, n=int(n), d=int(start),
               n_query=int(n_query), d_query=int(C.shape[1]), dtype=str(dtype),
               D_true="D_true.npy" if D_true is not None else None, C="C.npy", files=files,
               parts=parts, meta=meta or {})
    with open(path / "manifest.json", "w") as f:
        json.dump(man, f, indent=1, default=_json_default)


def lstsq_layout(M, *, seed: int = 0, noise: float = 0.0):
    """The least-squares orientation of an m x k matrix ``M`` (m samples of k features): the
    problem ``w A = B`` with ``A = Mᵀ`` (k x m: features x samples, so sharding the columns of A
    shards the samples), ``C = I_k`` (``D = w``) and a right-hand side by a documented rule:
    ``w_true = z M`` for ``z ~ N(0, I_m)`` (seeded) scaled to unit norm — it lies in the row space
    of M, so ``B = w_true A`` has the minimum-norm solution ``B A⁺ = w_true`` exactly, whatever
    the rank of M — then ``D_true = w_true``. With ``noise > 0``, ``B`` gets i.i.d. N(0, noise²)
    entries added (a genuine least-squares problem) and ``D_true`` is not known (``None``).
    Returns ``(A, B, D_true)``; ``A`` stays sparse when ``M`` is."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    A = M.T.tocsc() if sp.issparse(M) else np.asarray(M, dtype=np.float64).T
    z = rng.standard_normal((1, A.shape[1]))
    w = np.asarray((A @ z.T).T)                   # z M = (Mᵀ zᵀ)ᵀ, 1 x k
    nrm = np.linalg.norm(w)
    if nrm == 0:
        raise ValueError("the matrix is zero; there is nothing to solve")
    w = w / nrm
    B = np.asarray((A.T @ w.T).T)                 # w A, 1 x m
    if noise > 0:
        B = B + noise * rng.standard_normal(B.shape)
        return A, B, None
    return A, B, w


def write_store_from_mtx(source: Union[str, os.PathLike], path: Union[str, os.PathLike], *,
                         layout: str = "lstsq", seed: int = 0, noise: float = 0.0,
                         part_columns: Optional[int] = None, rank: Optional[int] = None,
                         c_block: str = "identity", rhs: str = "auto",
                         overwrite: bool = False) -> ColumnStore:
    """A store from a Matrix Market file (or shipped SuiteSparse name).

    ``layout="lstsq"`` (:func:`lstsq_layout`): a tall m x k matrix as m samples of k features;
    A = Mᵀ is k x m and the workers' column shards are sample shards. Only M's nonzeros are held
    (sparse) while writing, never a dense copy of the whole of A.
    ``layout="protocol"``: the paper's square r x r protocol (:func:`load_suitesparse`, dense,
    with ``rank``, ``c_block``, ``rhs``); its columns are the r chosen columns.
    """
    from .suitesparse import load_mtx, load_suitesparse, resolve_matrix
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; use one of {LAYOUTS}")
    src = resolve_matrix(source)
    stem = src.name.replace(".mtx.gz", "").replace(".mtx", "")
    meta: Dict[str, Any] = dict(source=str(src), layout=layout)
    if layout == "lstsq":
        M = load_mtx(src)
        A, B, D_true = lstsq_layout(M, seed=seed, noise=noise)
        meta.update(matrix_shape=list(M.shape), nnz=int(M.nnz), seed=seed, noise=noise,
                    rhs="w_true = z M / |z M| (row space of M), B = w_true A"
                        + (f" + N(0, {noise:g}^2)" if noise > 0 else ""))
        return write_store(path, A, B, None, D_true, part_columns=part_columns,
                           name=f"{stem} (lstsq)", meta=meta, overwrite=overwrite)
    # orient="auto": a matrix of full row rank (lp_bnl2, r05) has no row left for B; its
    # transpose is used, as in `eagle-dist bench suitesparse`
    prob = load_suitesparse(src, rank=rank, c_block=c_block, rhs=rhs, seed=seed, orient="auto")
    meta.update({k: v for k, v in prob.meta.items() if k in ("rank", "b_row", "rhs", "c_block",
                                                              "transposed", "suitesparse")})
    # the protocol holds the dense r x r block anyway, so the writer can afford the float64
    # reference where the answer is not known by construction (C = I and the held-out row)
    D_true = prob.D_true
    meta["D_true"] = "known by construction"
    if D_true is None:
        D_true = prob.reference
        meta["D_true"] = "B A⁺ C by numpy pinv, computed by the writer"
    return write_store(path, prob.A, prob.B, prob.C, D_true, part_columns=part_columns,
                       name=f"{stem} (protocol r={prob.n})", meta=meta, overwrite=overwrite)
