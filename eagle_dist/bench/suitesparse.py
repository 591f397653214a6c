"""``eagle-dist bench suitesparse``: the paper's real-data table (Table 2) and runtime vs tolerance.

For every shipped matrix (``eagle_dist/data/matrices``) and every ``--mtx`` file the paper's
protocol (:func:`eagle_dist.data.load_suitesparse`, ``c_block="identity"``) builds the linear
system ``w A = B``: ``A`` an ``r x r`` full-rank block of the matrix (``r`` its numerical rank, cut
at ``max(m, n)·eps·σ_max``), ``B`` one further row. Two documented departures (both reported per
matrix): where every remaining row is zero on the chosen columns (HB/bcsstm13) B would be 0, so a
consistent random right-hand side ``B = w_true A`` (``w_true ~ N(0, 1)``, seeded) is used
(``rhs = random``); a matrix of full row rank has no row left for B and its transpose is used
(``transposed``). The rank-revealing step (dense SVD, two pivoted QRs, the block's SVD) is cached
on disk by file SHA-256 (``--cache-dir``, default ``~/.cache/eagle_dist/suitesparse``).

Methods: EAGLE, SVD least squares (``lstsq-gelsd``), QR least squares (``lstsq-gelsy``), CG on
the normal equations, LSMR, LSQR. Stopping rule, the paper's: ``‖wA − B‖²_F ≤ τ‖B‖²_F``, i.e.
``solve(..., target_residual=√τ)`` — every iterative method stops on its TRUE residual
(:class:`eagle_dist.control.Monitor`; SciPy's LSMR/LSQR stop on their recurrence residual and are
checked on the true one before ``converged`` is said). τ sweeps 1e-3 (the paper's) down to 1e-10;
each (matrix, method, τ) is its own solve, repeated ``--repeats`` times, and the table gives the
median wall-clock (around the whole ``solve`` call, after one untimed warm-up solve per method on
a tiny problem; the float64 reference, not needed by the timed solves, is computed before the
timers). Direct methods are solved once per repeat; a τ they do not meet is ``not_reached``.
A τ an iterative method did not reach (cap or time budget) ends that method's sweep on that matrix:
the tighter τ are rows with status ``not_attempted``. Matrices above ``--max-dim`` (protocol) or
``--max-rank`` (solves) are rows with status ``skipped``; a protocol failure is a row with status
``protocol_error``. Every matrix × method × τ is a row.

On a CUDA machine (``--device auto``) EAGLE, CG and the direct methods run in torch on the GPU and
LSMR in ``cupyx.scipy.sparse.linalg`` when CuPy is installed (LSQR stays SciPy: CuPy's ``lsqr`` is
a direct solve); the ``backend`` column says what ran.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..control import relative_residual, resolve_device
from ..data.suitesparse import SHIPPED, default_cache_dir, load_mtx, load_suitesparse
from . import report
from .common import RESULTS_ROOT, SweepResult, check_positive_int, floats, print_headline
from .common import progress as _progress, strs, threads as _threads
from .common import walltime_solve as _walltime_solve, warm_up as _warm_up

log = logging.getLogger(__name__)

METHODS = ("eagle", "lstsq-gelsd", "lstsq-gelsy", "cg", "lsmr", "lsqr", "auto")
#: methods that take the residual target (auto: it passes it to what it runs)
ITERATIVE = ("eagle", "cg", "lsmr", "lsqr", "auto")
TOLERANCES = (1e-3, 1e-4, 1e-6, 1e-8, 1e-10)
PAPER_TOL = 1e-3
LABELS = {"eagle": "EAGLE", "lstsq-gelsd": "SVD lstsq", "lstsq-gelsy": "QR lstsq",
          "cg": "CG (normal eq.)", "lsmr": "LSMR", "lsqr": "LSQR", "auto": "auto"}
# the paper's Table 2 / Table 4 (GPU seconds at τ = 1e-3: EAGLE / SVD / CG / LSMR; rank, κ)
PAPER = {
    "NYPA/Maragal_4": (801, 1.38e7, 0.625, 0.849, 1.55, 2.34),
    "NYPA/Maragal_5": (2147, 1.22e6, 0.632, 1.40, 1.75, 1.40),
    "Meszaros/pf2177": (9662, 2.19e3, 3.43, 4.23, 1.75, 3.51),
    "HB/dwt_1007": (1000, 2.97e3, 0.640, 0.902, 4.65, 9.73),
    "HB/bcsstm13": (1241, 2.70e4, 0.697, 0.955, 3.17, 1.16),
    "Priebel/162bit": (3460, 1.68e4, 0.847, 2.35, 16.7, 57.1),
    "Schulthess/N_pid": (2048, 2.47e2, 0.675, 1.15, 1.27, 1.96),
}
FULL = dict(repeats=3, tolerances=TOLERANCES, max_iter=200_000, eagle_max_iter=500)
QUICK = dict(repeats=1, tolerances=(1e-3, 1e-8), max_iter=20_000, eagle_max_iter=200)
QUICK_MATRICES = ("HB/abb313",)


def _matrix_name(source: str) -> str:
    if source in SHIPPED:
        return source
    name = Path(source).name
    for ext in (".mtx.gz", ".mtx"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _min_dim(source: str) -> int:
    """min(rows, cols) from the Matrix Market size line (no entries read)."""
    import gzip
    from ..data.suitesparse import resolve_matrix
    path = resolve_matrix(source)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if line and not line.startswith("%"):
                parts = line.split()
                return min(int(parts[0]), int(parts[1]))
    raise ValueError(f"{path}: no size line")


def _solve_row(problem, method: str, tol: float, cap: int, common: Dict[str, Any],
               time_budget: Optional[float]) -> Dict[str, Any]:
    """One timed solve at ``τ = tol`` (squared relative residual); the residual is re-measured
    here in float64 on the problem's own arrays (:func:`eagle_dist.control.relative_residual`)."""
    kw = dict(common)
    if method in ITERATIVE:
        kw.update(target_residual=math.sqrt(tol), max_iter=cap, time_budget=time_budget,
                  record_error=False)
    try:
        res, wall = _walltime_solve(problem, method, **kw)
    except Exception as exc:      # a failure is a row, not a gap
        log.warning("%s on %s failed: %s", method, problem.name, exc)
        return dict(status="error", iterations=0, time_s=float("nan"), rel_residual_sq=float("nan"),
                    backend="", detail=f"{type(exc).__name__}: {exc}"[:200])
    rel = relative_residual(torch.from_numpy(np.asarray(problem.A, dtype=np.float64)),
                            torch.from_numpy(np.asarray(problem.B, dtype=np.float64)),
                            torch.from_numpy(np.asarray(res.D, dtype=np.float64)))
    status = res.status.value
    if method not in ITERATIVE:
        status = "converged" if (res.converged and rel * rel <= tol) else (
            "not_reached" if res.converged else status)
    backend = res.info.get("krylov_backend") or res.info.get("driver_used") or ""
    dev = res.info.get("device", "cpu")
    return dict(status=status, iterations=res.iterations, time_s=wall, rel_residual_sq=rel * rel,
                backend=f"{backend}@{dev}" if backend else str(dev), detail="")


def _placeholder(status: str, detail: str) -> Dict[str, Any]:
    return dict(status=status, iterations=0, time_s=float("nan"), rel_residual_sq=float("nan"),
                backend="", detail=detail)


def _aggregate(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (matrix, method, τ): medians over the repeats; ``status`` is the one status
    when all repeats agree, else ``a×status1,b×status2``; ``reached`` counts converged repeats."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["matrix"], r["method"], r["tolerance"]), []).append(r)
    out = []
    for (matrix, method, tol), rs in groups.items():
        statuses = [r["status"] for r in rs]
        uniq = sorted(set(statuses))
        status = uniq[0] if len(uniq) == 1 else ",".join(f"{statuses.count(s)}×{s}" for s in uniq)
        tm = report.stats(r["time_s"] for r in rs)
        out.append(dict(
            matrix=matrix, method=method, tolerance=tol, repeats=len(rs), status=status,
            reached=sum(s == "converged" for s in statuses),
            time_s_median=tm["median"], time_s_min=tm["min"], time_s_max=tm["max"],
            iterations_median=report.stats(r["iterations"] for r in rs)["median"],
            rel_residual_sq_median=report.stats(r["rel_residual_sq"] for r in rs)["median"],
            backend=rs[0]["backend"], detail=rs[0]["detail"]))
    return out


def suitesparse_sweep(out: Optional[str] = None, *, matrices: Optional[Sequence[str]] = None,
                      mtx: Sequence[str] = (), methods: Optional[Sequence[str]] = None,
                      tolerances: Optional[Sequence[float]] = None, repeats: Optional[int] = None,
                      max_iter: Optional[int] = None, eagle_max_iter: Optional[int] = None,
                      time_budget: Optional[float] = None, max_dim: int = 4000,
                      max_rank: int = 2500, device: str = "auto", dtype: str = "float64",
                      threads: Optional[int] = None, seed: int = 0,
                      cache_dir: Optional[str] = None, quick: bool = False,
                      progress: bool = True) -> SweepResult:
    """Solve the SuiteSparse protocol problems to ``‖wA − B‖² ≤ τ‖B‖²`` (see the module docstring).

    ``matrices``: shipped names (default: all shipped; ``quick``: HB/abb313 only) — pass ``[]``
    with ``mtx`` for user files only. ``mtx``: extra Matrix Market paths. ``tolerances``: the τ
    values (squared relative residuals; default 1e-3, 1e-4, 1e-6, 1e-8, 1e-10). ``time_budget``:
    seconds per iterative solve (None: only the iteration caps ``max_iter`` / ``eagle_max_iter``).
    ``quick=True``: one small matrix, τ ∈ {1e-3, 1e-8}, one repeat — seconds.
    """
    cfg = dict(QUICK if quick else FULL)
    for k, v in (("repeats", repeats), ("tolerances", tolerances), ("max_iter", max_iter),
                 ("eagle_max_iter", eagle_max_iter)):
        if v is not None:
            cfg[k] = v
    for k, v in (("repeats", cfg["repeats"]), ("max_iter", cfg["max_iter"]),
                 ("eagle_max_iter", cfg["eagle_max_iter"]), ("max_dim", max_dim),
                 ("max_rank", max_rank)):
        check_positive_int(k, v)
    if threads is None and quick:
        threads = 1
    tols = sorted({float(t) for t in cfg["tolerances"]}, reverse=True)
    if not tols or any(not (0 < t < 1) for t in tols):
        raise ValueError(f"tolerances={cfg['tolerances']!r} must be numbers in (0, 1), e.g. "
                         "1e-3,1e-6,1e-10 (squared relative residuals)")
    methods = list(methods) if methods is not None else list(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods={methods!r}: choose from {METHODS}")
    if time_budget is not None and not (time_budget > 0):
        raise ValueError(f"time_budget={time_budget!r} must be a positive number of seconds")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype={dtype!r}; use float64 or float32")
    dev = resolve_device(device)
    if matrices is None:
        matrices = list(QUICK_MATRICES if quick else SHIPPED)
    sources = [str(m) for m in matrices] + [str(p) for p in mtx]
    for p in mtx:
        if not os.path.isfile(p):
            raise ValueError(f"--mtx {p!r} does not exist; pass an existing .mtx or .mtx.gz file")
    if not sources:
        raise ValueError("no matrices: pass shipped names (matrices=) or --mtx files")
    out = out or os.path.join(RESULTS_ROOT, "suitesparse")
    report.ensure_dir(out)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    command = report.command_line("eagle-dist bench suitesparse", dict(
        out=out, matrices=list(matrices) if matrices else None,
        mtx=None, methods=methods, tolerances=tols, repeats=cfg["repeats"],
        max_iter=cfg["max_iter"], eagle_max_iter=cfg["eagle_max_iter"], time_budget=time_budget,
        max_dim=max_dim, max_rank=max_rank, device=device, dtype=dtype, threads=threads,
        seed=seed), ["quick"] if quick else [])
    if mtx:
        command += " --mtx " + " ".join(str(p) for p in mtx)

    rows: List[Dict[str, Any]] = []
    infos: List[Dict[str, Any]] = []
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        _warm_up([(m, {}) for m in methods], dtype, str(dev))
        bar = _progress(len(sources) * len(methods), "suitesparse", progress)
        for src in sources:
            name = _matrix_name(src)
            info: Dict[str, Any] = dict(matrix=name)
            problem, skip = None, None
            try:
                dim = _min_dim(src)
                if dim > max_dim:
                    skip = ("skipped", f"min(rows, cols) = {dim} > --max-dim {max_dim} "
                                       "(dense protocol and solves are O(dim³))")
                else:
                    problem = load_suitesparse(src, c_block="identity", rhs="auto", orient="auto",
                                               seed=seed, cache_dir=cache, dtype=np.dtype(dtype),
                                               report=True)
                    st = problem.meta["protocol"]
                    info.update({k: st[k] for k in (
                        "nnz", "rank", "threshold", "sigma_max", "full_cond", "block_cond",
                        "block_rank", "transposed", "cached", "seconds")})
                    info.update(shape="x".join(map(str, load_mtx(src).shape)),
                                rhs=problem.meta["rhs"])
                    if st["rank"] > max_rank:
                        skip = ("skipped", f"rank {st['rank']} > --max-rank {max_rank}")
                        problem = None
                    else:
                        _ = problem.reference          # float64 pinv, outside every timer
            except (ValueError, MemoryError) as exc:
                skip = ("protocol_error", f"{exc}"[:200])
            info["status"] = skip[0] if skip else "solved"
            info["detail"] = skip[1] if skip else ""
            infos.append(info)
            for m in methods:
                bar.set_postfix_str(f"{name} {m}")
                stop_detail = None
                direct: Dict[int, Dict[str, Any]] = {}
                for tol in tols:
                    for rep in range(cfg["repeats"]):
                        base = dict(matrix=name, method=m, tolerance=tol, repeat=rep,
                                    device=str(dev), dtype=dtype)
                        if skip:
                            rows.append({**base, **_placeholder(*skip)})
                        elif stop_detail:
                            rows.append({**base, **_placeholder("not_attempted", stop_detail)})
                        elif m not in ITERATIVE:
                            if rep not in direct:       # one solve per repeat, every τ reads it
                                direct[rep] = _solve_row(problem, m, 1.0, 1, dict(
                                    dtype=dtype, device=str(dev)), None)
                            r = dict(direct[rep])
                            if r["status"] in ("converged", "not_reached"):
                                r["status"] = ("converged" if r["rel_residual_sq"] <= tol
                                               else "not_reached")
                            rows.append({**base, **r})
                        else:
                            cap = cfg["eagle_max_iter"] if m == "eagle" else cfg["max_iter"]
                            rows.append({**base, **_solve_row(problem, m, tol, cap, dict(
                                dtype=dtype, device=str(dev), seed=seed), time_budget)})
                    if m in ITERATIVE and not skip and not stop_detail:
                        last = [r for r in rows if r["matrix"] == name and r["method"] == m
                                and r["tolerance"] == tol]
                        if not any(r["status"] == "converged" for r in last):
                            stop_detail = f"τ = {report.fmt(tol)} not reached ({last[0]['status']})"
                bar.update(1)
        load_end = report.load_average()
        bar.close()

    summary = _aggregate(rows)
    files = [report.write_csv(rows, os.path.join(out, "suitesparse.csv")),
             report.write_csv(summary, os.path.join(out, "suitesparse_summary.csv")),
             report.write_csv(infos, os.path.join(out, "suitesparse_matrices.csv"))]
    files += _plot(out, summary, infos, methods, tols)
    headline = _headline(summary, methods, tols)
    notes = _notes(threads, time_budget, cfg, cache) + report.load_notes(load_start, load_end)
    md = report.write_markdown(
        os.path.join(out, "summary.md"), "SuiteSparse real-data benchmark (paper Table 2)",
        command, _long_table(summary, tols), notes, machine=machine,
        sections={"Matrices and the protocol": _matrix_table(infos),
                  f"Seconds to ‖wA − B‖² ≤ {report.fmt(PAPER_TOL)}‖B‖² (the paper's table)":
                      _wide_table(summary, infos, methods),
                  "Where EAGLE is fastest (matrices solved, per τ)": _wins_table(summary, methods,
                                                                                 tols)},
        files=files)
    files.append(md)
    return SweepResult(name="suitesparse", out=out, rows=rows, summary=summary,
                       headline=headline, files=files, command=command)


# ---------------------------------------------------------------------------------------------
# tables and plots
# ---------------------------------------------------------------------------------------------
def _cell(s: Optional[Dict[str, Any]]) -> str:
    if s is None:
        return "—"
    if s["status"] == "converged":
        return report.fmt(s["time_s_median"])
    return f"{s['status']}" + (f" ({report.fmt(s['time_s_median'])} s)"
                               if math.isfinite(s["time_s_median"]) else "")


def _index(summary):
    return {(s["matrix"], s["method"], s["tolerance"]): s for s in summary}


def _matrix_table(infos) -> str:
    return report.markdown_table(infos, {
        "matrix": "matrix", "size": lambda r: r.get("shape", "—"),
        "nnz": lambda r: report.fmt(r.get("nnz")),
        "rank r (threshold)": lambda r: f"{r['rank']} ({report.fmt(r['threshold'])})"
        if "rank" in r else "—",
        "κ of the r×r block": lambda r: report.fmt(r.get("block_cond")),
        "σ_max/σ_r of the matrix": lambda r: report.fmt(r.get("full_cond")),
        "paper rank / κ": lambda r: (f"{PAPER[r['matrix']][0]} / "
                                     f"{report.fmt(PAPER[r['matrix']][1])}")
        if r["matrix"] in PAPER else "—",
        "B": lambda r: {"row": "held-out row", "random": "random w_true·A (row was 0)"}.get(
            r.get("rhs"), "—") + (", transposed" if r.get("transposed") else ""),
        "status": lambda r: r["status"] + (f": {r['detail']}" if r["detail"] else "")})


def _wide_table(summary, infos, methods) -> str:
    idx = _index(summary)
    # lists, not a header -> column mapping: a method given twice keeps both columns
    heads = ["matrix"] + [LABELS[m] for m in methods] + ["paper GPU: EAGLE / SVD / CG / LSMR"]
    cols = (["matrix"]
            + [lambda r, m=m: _cell(idx.get((r["matrix"], m, PAPER_TOL))) for m in methods]
            + [lambda r: " / ".join(report.fmt(x) for x in PAPER[r["matrix"]][2:])
               if r["matrix"] in PAPER else "—"])
    if any(s["tolerance"] == PAPER_TOL for s in summary):
        body = report.markdown_table(infos, cols, heads)
    else:
        body = f"(τ = {PAPER_TOL} was not in the sweep)"
    return (f"Median wall-clock seconds; a cell that is not a number is the status (a failure or "
            f"an unreached τ is shown, never left out).\n\n{body}")


def _long_table(summary, tols) -> str:
    table = report.markdown_table(summary, {
        "matrix": "matrix", "method": lambda r: LABELS.get(r["method"], r["method"]),
        "τ": lambda r: report.fmt(r["tolerance"]), "status": "status",
        "reached": lambda r: f"{r['reached']}/{r['repeats']}",
        "seconds (median)": lambda r: report.fmt(r["time_s_median"]),
        "seconds min–max": lambda r: f"{report.fmt(r['time_s_min'])}–"
                                     f"{report.fmt(r['time_s_max'])}",
        "iterations": lambda r: report.fmt(r["iterations_median"]),
        "‖wA−B‖²/‖B‖²": lambda r: report.fmt(r["rel_residual_sq_median"]),
        "backend": "backend"})
    return ("Every matrix × method × τ (τ: the squared relative residual to reach; seconds: "
            "median wall-clock of the repeats; iterations of a direct method: 1).\n\n" + table)


def _wins(summary, methods, tols):
    """Per τ: matrices where every method converged or EAGLE converged, and who was fastest."""
    idx = _index(summary)
    mats = sorted({s["matrix"] for s in summary})
    out = []
    for tol in tols:
        row = dict(tolerance=tol, solved=0, eagle_fastest=0, eagle_beats={m: 0 for m in methods})
        for mat in mats:
            e = idx.get((mat, "eagle", tol))
            if e is None or e["status"] == "skipped" or e["status"] == "protocol_error":
                continue
            row["solved"] += 1
            te = e["time_s_median"] if e["status"] == "converged" else math.inf
            others = {m: idx[(mat, m, tol)] for m in methods if m != "eagle" and (mat, m, tol) in idx}
            t_other = {m: (s["time_s_median"] if s["status"] == "converged" else math.inf)
                       for m, s in others.items()}
            for m, t in t_other.items():
                if te < t:
                    row["eagle_beats"][m] += 1
            if te < math.inf and all(te < t for t in t_other.values()):
                row["eagle_fastest"] += 1
        out.append(row)
    return out


def _wins_table(summary, methods, tols) -> str:
    wins = _wins(summary, methods, tols)
    others = [m for m in methods if m != "eagle"]
    # lists, not a header -> column mapping: a method given twice keeps both columns
    heads = ["τ", "matrices", "EAGLE fastest"] + [f"EAGLE faster than {LABELS[m]}" for m in others]
    cols = ([lambda r: report.fmt(r["tolerance"]), "solved", "eagle_fastest"]
            + [lambda r, m=m: str(r["eagle_beats"][m]) for m in others])
    return ("Counts of matrices (an unreached τ counts as infinitely slow).\n\n"
            + report.markdown_table(wins, cols, heads))


def _headline(summary, methods, tols) -> Dict[str, Any]:
    idx = _index(summary)
    mats = sorted({s["matrix"] for s in summary})
    head: Dict[str, Any] = {"matrices": len(mats)}
    for tol in (tols[0], tols[-1]):
        w = _wins(summary, methods, [tol])[0]
        head[f"eagle_fastest_at_{report.fmt(tol)}"] = f"{w['eagle_fastest']}/{w['solved']}"
    conv = sum(1 for m in mats if (m, "eagle", tols[-1]) in idx
               and idx[(m, "eagle", tols[-1])]["status"] == "converged")
    head[f"eagle_converged_at_{report.fmt(tols[-1])}"] = conv
    return head


def _notes(threads, time_budget, cfg, cache) -> List[str]:
    blas = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")}
    return [
        "Units: wall-clock seconds around the whole `solve` call (tensor set-up and EAGLE's norm "
        "estimate included), median of the repeats; τ is the squared relative residual "
        "‖wA − B‖²_F / ‖B‖²_F, re-measured in float64 after every solve.",
        f"Threads: torch {threads if threads is not None else 'default'}; BLAS environment "
        f"{blas} (NumPy/SciPy's BLAS is not governed by torch's setting: on a busy 2-core "
        "machine a 2-thread BLAS made dense SVDs 10-40x slower, so set these to 1 there).",
        f"Caps: EAGLE {cfg['eagle_max_iter']} iterations, CG/LSMR/LSQR {cfg['max_iter']}; time "
        f"budget per solve: {f'{time_budget} s' if time_budget else 'none'}.",
        "Dense arrays throughout (the r×r block is densified; LSMR/LSQR get a dense A). On a CPU "
        "a dense EAGLE iteration costs ~3 r³ flops and ~20-40 are needed, while a QR solve costs "
        "~(4/3) r³ once: expect QR/SVD lstsq to win on wall-clock here; EAGLE's case on a CPU is "
        "the iteration count at tight τ against the Krylov methods.",
        f"Rank-revealing step cached in {cache} (keyed by the file's SHA-256).",
    ]


def _plot(out, summary, infos, methods, tols) -> List[str]:
    idx = _index(summary)
    panels = []
    for info in infos:
        mat = info["matrix"]
        if info["status"] != "solved":
            continue
        series = []
        for m in methods:
            xs, ys = [], []
            for tol in tols:
                s = idx.get((mat, m, tol))
                if s and s["status"] == "converged":
                    xs.append(tol)
                    ys.append(s["time_s_median"])
            if xs:
                series.append(dict(x=xs, y=ys, label=LABELS[m], marker="o",
                                   color=report.color_for(m)))
        panels.append(dict(title=f"{mat} (r = {info.get('rank')}, κ = "
                                 f"{report.fmt(info.get('block_cond'))})",
                           xlabel="τ: ‖wA − B‖² ≤ τ‖B‖²", ylabel="seconds (median)",
                           logx=True, logy=True, series=series))
    if not panels:
        return []
    path = os.path.join(out, "suitesparse_time_vs_tolerance.png")
    return [report.plot_panels(path, panels, ncols=min(3, len(panels)),
                               title="Runtime vs tolerance (converged runs only)")]


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _cmd(args) -> int:
    return print_headline(suitesparse_sweep(
        args.out, matrices=args.matrices, mtx=args.mtx or (), methods=args.methods,
        tolerances=args.tolerances, repeats=args.repeats, max_iter=args.max_iter,
        eagle_max_iter=args.eagle_max_iter, time_budget=args.time_budget, max_dim=args.max_dim,
        max_rank=args.max_rank, device=args.device, dtype=args.dtype, threads=args.threads,
        seed=args.seed, cache_dir=args.cache_dir, quick=args.quick,
        progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``suitesparse`` under ``eagle-dist bench``."""
    p = bsub.add_parser("suitesparse", help="real-data table: SuiteSparse matrices, EAGLE vs "
                        "SVD/QR lstsq, CG, LSMR, LSQR to ‖wA − B‖² ≤ τ‖B‖²",
                        description=suitesparse_sweep.__doc__.split("\n")[0])
    default_out = os.path.join(RESULTS_ROOT, "suitesparse")
    p.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    p.add_argument("--matrices", type=strs, default=None,
                   help="shipped matrices, comma-separated (default: all shipped)")
    p.add_argument("--mtx", nargs="+", default=None, metavar="PATH",
                   help="extra Matrix Market files (.mtx / .mtx.gz)")
    p.add_argument("--methods", type=strs, default=None, help=f"default {','.join(METHODS)}")
    p.add_argument("--tolerances", type=floats, default=None,
                   help="τ values (squared relative residual; default 1e-3,1e-4,1e-6,1e-8,1e-10)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    p.add_argument("--max-iter", type=int, default=None, help="cap for CG/LSMR/LSQR (200000)")
    p.add_argument("--eagle-max-iter", type=int, default=None, help="cap for EAGLE (500)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per iterative solve")
    p.add_argument("--max-dim", type=int, default=4000,
                   help="skip matrices with min(rows, cols) above this (default 4000)")
    p.add_argument("--max-rank", type=int, default=2500,
                   help="skip the solves of matrices of rank above this (default 2500)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random right-hand side rule")
    p.add_argument("--cache-dir", default=None,
                   help="protocol cache (default $EAGLE_DIST_CACHE or ~/.cache/eagle_dist/suitesparse)")
    p.add_argument("--smoke", "--quick", dest="quick", action="store_true",
                   help="HB/abb313 only, τ ∈ {1e-3, 1e-8}, one repeat: a seconds-long check "
                        "(--quick: its old name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=_cmd)
