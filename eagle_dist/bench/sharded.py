"""``eagle-dist bench sharded``: SuiteSparse matrices solved by column-sharded workers (Ray) in
two orientations, from column stores that each worker reads its own shard of.

* ``protocol`` — the paper's square ``r x r`` block (``w A = B``, C = I, B the held-out row or a
  random consistent one where that row is zero): the columns of the block are sharded, which
  makes α tiny (each shard spans only part of Rʳ).
* ``lstsq`` — a tall m x k matrix M as m samples of k features: ``A = Mᵀ`` (k x m), the samples
  are sharded, ``B = w_true A`` with ``w_true`` in M's row space (the minimum-norm answer is
  known exactly, also for rank-deficient M).

Per problem: the diversity index α of the shards, the centralized EAGLE iteration count, and on
the Ray backend distributed EAGLE in the Gram mode and in the paper's mode, distributed CG on
the normal equations and distributed GD, each with rounds, bytes per worker per round, the
rounds' own time and the wall-clock (with actor start-up), status and error against the known
answer. Iterative runs are capped (rounds and seconds); a capped run is a row that says so.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from . import report

log = logging.getLogger(__name__)

LSTSQ_MATRICES = ("HB/abb313", "HB/ash958", "HB/illc1033", "HB/well1033", "HB/illc1850",
                  "HB/well1850", "NYPA/Maragal_3", "NYPA/Maragal_4", "NYPA/Maragal_5")
METHODS = ("eagle-gram", "eagle-paper", "cg", "gd")


def _problems(orientations, matrices):
    from ..data.suitesparse import SHIPPED, shipped_manifest
    man = shipped_manifest()
    for orient in orientations:
        names = list(matrices or (SHIPPED if orient == "protocol" else LSTSQ_MATRICES))
        for name in names:
            r = man.get(name) or next((v for k, v in man.items() if k.endswith("/" + name)), None)
            if r is None:
                raise ValueError(f"matrix {name!r} is not shipped; choose from {list(SHIPPED)}")
            rows, cols, rank = int(r["rows"]), int(r["cols"]), int(r["rank"])
            if orient == "lstsq" and rows <= cols:
                continue                                  # not tall: no sample orientation
            n = rank if orient == "protocol" else cols
            yield orient, f"{r['group']}/{r['name']}", n


def _solve(store, method, workers, backend, cfg):
    from .. import solve
    kw = dict(workers=workers, backend=backend, tol=cfg["tol"], timeout=600,
              startup_timeout=600, record_error=True)
    if method.startswith("eagle"):
        mode = method.split("-")[1]
        kw.update(mode=mode, max_iter=cfg["eagle_rounds"] if mode == "gram" else cfg["paper_rounds"],
                  time_budget=cfg["time_budget"])
        return solve(store, "eagle", **kw)
    kw.update(max_iter=cfg["cg_rounds"] if method == "cg" else cfg["gd_rounds"],
              time_budget=cfg["time_budget"])
    return solve(store, method, **kw)


def sharded_sweep(out: str, *, orientations: Sequence[str] = ("protocol", "lstsq"),
                  matrices: Optional[Sequence[str]] = None, workers: int = 4,
                  backend: str = "ray", methods: Sequence[str] = METHODS, tol: float = 1e-10,
                  max_dim: int = 1300, gram_max_dim: int = 2500, eagle_rounds: int = 500,
                  paper_rounds: int = 300, cg_rounds: int = 20000, gd_rounds: int = 300,
                  time_budget: Optional[float] = 600.0,
                  seed: int = 0, store_dir: Optional[str] = None, command: str = "") -> List[dict]:
    from .. import solve
    from ..data.store import write_store_from_mtx
    from ..distributed.shards import diversity_index, make_shards
    for o in orientations:
        if o not in ("protocol", "lstsq"):
            raise ValueError(f"orientation {o!r}; use protocol and/or lstsq")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method {m!r}; use {', '.join(METHODS)}")
    cfg = dict(tol=tol, eagle_rounds=eagle_rounds, paper_rounds=paper_rounds,
               cg_rounds=cg_rounds, gd_rounds=gd_rounds, time_budget=time_budget)
    report.ensure_dir(out)
    store_dir = store_dir or os.path.join(out, "stores")
    rows: List[Dict[str, Any]] = []
    for orient, name, n in _problems(orientations, matrices):
        base = dict(matrix=name, orientation=orient, n=n, workers=workers)
        run_methods = [m for m in methods if n <= (gram_max_dim if m == "eagle-gram" else max_dim)]
        for m in methods:
            if m not in run_methods:
                lim = gram_max_dim if m == "eagle-gram" else max_dim
                rows.append(dict(base, method=m, status=f"not run: n = {n} > {lim} (a round costs "
                                 "O(n²·d/M) flops per worker with C = I; see --max-dim)"))
        if not run_methods:
            continue
        spath = os.path.join(store_dir, f"{name.replace('/', '_')}-{orient}")
        t0 = time.perf_counter()
        try:
            store = write_store_from_mtx(name, spath, layout=orient, seed=seed, overwrite=True)
            write_s = time.perf_counter() - t0
            prob = store.to_problem()                   # small: the bench's own α and centralized run
            shards = make_shards(store.d, workers, "contiguous")
            alpha = diversity_index(prob.A, shards)
            central = solve(prob, "eagle", tol=tol, max_iter=eagle_rounds, record_error=True,
                            fast_path=False)       # the C/D iteration the rounds replay
        except Exception as exc:  # noqa: BLE001 - a failure is a row, not a gap
            for m in run_methods:
                rows.append(dict(base, method=m, status=f"failed to build the problem: "
                                 f"{type(exc).__name__}: {exc}"[:200]))
            continue
        base.update(d=store.d, alpha=alpha, kappa=prob.condition_number,
                    central_iterations=central.iterations, central_status=central.status.value,
                    write_s=write_s)
        print(f"{name} ({orient}): n = {store.n}, d = {store.d}, α = {alpha:.3g}, κ = "
              f"{base['kappa']:.3g}, centralized EAGLE {central.iterations} it", flush=True)
        for m in run_methods:
            t1 = time.perf_counter()
            try:
                res = _solve(store, m, workers, backend, cfg)
                row = dict(base, method=m, status=res.status.value, rounds=res.rounds,
                           error=res.error, bytes_per_worker_per_round=res.bytes_per_worker_per_round,
                           bytes_sent_per_worker=res.info.get("bytes_sent_per_worker"),
                           rounds_time_s=res.info.get("rounds_time_s"),
                           wall_s=time.perf_counter() - t1, mode=res.info.get("mode"),
                           backend_used=res.backend)
            except Exception as exc:  # noqa: BLE001 - a failure is a row, not a gap
                row = dict(base, method=m, status=f"failed: {type(exc).__name__}: {exc}"[:200],
                           wall_s=time.perf_counter() - t1)
            rows.append(row)
            print("  " + ", ".join(f"{k}={report.fmt(row.get(k))}" for k in
                                   ("method", "status", "rounds", "error", "rounds_time_s",
                                    "wall_s")), flush=True)
        shutil.rmtree(spath, ignore_errors=True)
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["orientation"] != "protocol", r["matrix"], order[r["method"]]))
    _write(out, rows, cfg, workers, backend, command)
    return rows


def _write(out, rows, cfg, workers, backend, command):
    report.write_csv(rows, os.path.join(out, "sharded.csv"))
    table_rows = []
    for r in rows:
        sent = r.get("bytes_sent_per_worker")
        table_rows.append(dict(r, MB_sent=None if sent is None else sent / 1e6))
    cols = ["matrix", "orientation", "n", "d", "alpha", "kappa", "central_iterations", "method",
            "status", "rounds", "error", "bytes_per_worker_per_round", "MB_sent", "rounds_time_s",
            "wall_s"]
    heads = ["matrix", "orientation", "n", "d (columns sharded)", "α", "κ(A)", "centralized it",
             "method", "status", "rounds", "error", "bytes/worker/round", "MB sent/worker",
             "rounds time (s)", "wall (s)"]
    table = report.markdown_table(table_rows, cols, heads)
    notes = [f"M = {workers} workers, contiguous column shards, backend {backend}; tolerance "
             f"{cfg['tol']:g} (EAGLE: certified D-step rule; CG: LSQR's tests on the true "
             f"residual; GD: D-step). Caps: EAGLE Gram {cfg['eagle_rounds']} rounds, paper mode "
             f"{cfg['paper_rounds']}, CG {cfg['cg_rounds']}, GD {cfg['gd_rounds']} "
             f"(and {cfg['time_budget']} s of rounds per solve as a safety); status "
             "`max_iterations` / `time_budget` = stopped there, not converged. The caps of the "
             "paper's mode and GD are rounds, not seconds, so their rows do not depend on the "
             "machine's load: they show how far each gets in that many rounds.",
             "error: relative Frobenius error against the store's known answer (protocol: the "
             "held-out row's D_true, exact when the rank holds; lstsq: w_true, exact by "
             "construction). `bytes/worker/round` is the all-reduce message while A moves; the "
             "Gram mode sends nothing once A, B are frozen, so `MB sent/worker` is the total.",
             "rounds time: the rounds themselves; wall: the whole solve including Ray actor "
             "start-up and each worker reading its shard from the store (~10-30 s on this "
             "2-core machine, shared with other work).",
             "α is the diversity index of the shards (smallest positive eigenvalue of the mean "
             "projector onto the shards' ranges): the paper's mode needs ~1/α rounds per decade."]
    report.write_markdown(os.path.join(out, "summary.md"),
                          "Sharded SuiteSparse: distributed EAGLE (both modes), CG and GD", command,
                          table, notes, files=["sharded.csv"])


def _cmd(args) -> int:
    from .common import strs
    command = "eagle-dist " + " ".join(sys.argv[1:]) if sys.argv and "eagle" in sys.argv[0] \
        else "eagle-dist bench sharded"
    rows = sharded_sweep(args.out, orientations=strs(args.orientations),
                         matrices=strs(args.matrices) if args.matrices else None,
                         workers=args.workers, backend=args.backend, methods=strs(args.methods),
                         tol=args.tol, max_dim=args.max_dim, gram_max_dim=args.gram_max_dim,
                         time_budget=args.time_budget,
                         paper_rounds=args.paper_rounds, cg_rounds=args.cg_rounds,
                         gd_rounds=args.gd_rounds, seed=args.seed, store_dir=args.store_dir,
                         command=command)
    print(f"wrote {args.out}/summary.md ({len(rows)} rows)")
    return 0


def add_parser(bsub) -> None:
    p = bsub.add_parser("sharded", help="SuiteSparse matrices on sharded Ray workers (both "
                                        "orientations): α, rounds, bytes, wall-clock")
    p.add_argument("--out", default="runs/bench/sharded")
    p.add_argument("--orientations", default="protocol,lstsq")
    p.add_argument("--matrices", default=None, help="comma list (default: every shipped matrix; "
                                                    "lstsq: the tall ones)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--backend", default="ray", choices=["ray", "torch", "inprocess"])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--max-dim", type=int, default=1300,
                   help="run the paper's mode, CG and GD only for n up to this")
    p.add_argument("--gram-max-dim", type=int, default=2500,
                   help="run the Gram mode only for n up to this")
    p.add_argument("--time-budget", type=float, default=600.0,
                   help="safety limit in seconds of rounds per solve")
    p.add_argument("--paper-rounds", type=int, default=300)
    p.add_argument("--cg-rounds", type=int, default=20000)
    p.add_argument("--gd-rounds", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store-dir", default=None, help="where the stores go (removed after use)")
    p.set_defaults(fn=_cmd)
