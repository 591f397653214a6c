"""``eagle-dist bench scale``: a sharded solve whose dense A does not fit in the driver's share of
memory, with the driver's and the workers' peak memory measured as d grows.

For each d a column store is written block by block (the writer never holds A: each block of
columns is generated, written and dropped), then solved by M workers (in-process and Ray) in the
Gram mode, each solve in a fresh driver process so that its peak resident memory (``ru_maxrss``)
is the solve's own. The problem: ``A = U diag(σ) Gᵀ / √d`` (n x d, G Gaussian, σ geometric from 1
to 1/κ), ``C = I_n``, ``B = w A`` with ``w ~ N(0, I_n)``; A has full row rank, so ``B A⁺ = w`` is
the known answer (stored as ``D_true``) — no pinv of A anywhere.

"The driver's share" is the machine's memory divided by M + 1 (the driver and M workers on one
machine). The in-process backend runs every worker inside the driver process by design, so its
peak is the workers' shards; the Ray driver holds no shard.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

from .report import machine_description

SCALE_CODE = r"""
import json, sys, time
from eagle_dist import solve
from eagle_dist.data.store import ColumnStore
from eagle_dist.distributed.runtime import peak_rss_bytes
path, workers, backend, tol = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = ColumnStore.open(path)
t0 = time.perf_counter()
res = solve(s, "eagle", workers=workers, backend=backend, mode="gram", tol=tol, max_iter=200,
            record_error=True,   # against the store's D_true (the driver never reads A)
            timeout=600, startup_timeout=600)
wall = time.perf_counter() - t0
out = dict(status=res.status.value, rounds=res.rounds, error=res.error, wall_s=wall,
           bytes_per_worker_per_round=res.bytes_per_worker_per_round,
           driver_peak_rss_bytes=peak_rss_bytes(),
           worker_peak_rss_bytes=res.info["worker_peak_rss_bytes"],
           shard_bytes_max=res.info["shard_bytes_max"],
           loaded_by_worker=res.info["loaded_by_worker"])
if backend == "ray":
    from eagle_dist.distributed import shutdown_ray
    shutdown_ray()
print("RESULT " + json.dumps(out))
"""


def write_synthetic_store(path: str, n: int, d: int, *, kappa: float = 1e2, seed: int = 0,
                          block_bytes: int = 64 << 20):
    """The bench's problem, streamed to a store in blocks of ~``block_bytes`` of A."""
    from ..data.store import write_store
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    sig = np.logspace(0.0, -np.log10(kappa), n)
    US = U * sig / np.sqrt(d)
    w = rng.standard_normal((1, n))
    k = max(1, block_bytes // (8 * n))

    def blocks():
        for a in range(0, d, k):
            G = rng.standard_normal((min(k, d - a), n))
            Ak = US @ G.T
            yield Ak, w @ Ak
    return write_store(path, blocks=blocks(), n=n, n_query=1, C=np.eye(n), D_true=w,
                       name=f"scale n={n} d={d}", meta=dict(generator="bench scale", kappa=kappa,
                                                              seed=seed), overwrite=True)


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _solve_in_fresh_driver(path: str, workers: int, backend: str, tol: float) -> Dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", SCALE_CODE, path, str(workers), backend, str(tol)],
                       capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        err = (r.stderr.strip().splitlines() or ["?"])[-1]
        return dict(status=f"failed (exit {r.returncode}): {err}")
    return json.loads(line[len("RESULT "):])


def run(args) -> int:
    from .common import ints, strs
    ds, backends = ints(args.d), strs(args.backends)
    for b in backends:
        if b not in ("inprocess", "torch", "ray"):
            raise ValueError(f"--backends: unknown backend {b!r}; use inprocess, torch, ray")
    if args.workers < 1 or args.n < 2 or any(d < args.workers for d in ds):
        raise ValueError("--workers must be >= 1, --n >= 2 and every --d >= --workers")
    os.makedirs(args.out, exist_ok=True)
    share = _total_memory() / (args.workers + 1)
    rows: List[Dict[str, Any]] = []
    for d in ds:
        spath = os.path.join(args.store_dir, f"scale-n{args.n}-d{d}")
        t0 = time.perf_counter()
        store = write_synthetic_store(spath, args.n, d, kappa=args.kappa, seed=args.seed)
        write_s = time.perf_counter() - t0
        dense = 8 * args.n * d
        for b in backends:
            print(f"d = {d:,} ({dense / 2 ** 30:.2f} GiB of A), {b}, M = {args.workers} ...",
                  flush=True)
            r = _solve_in_fresh_driver(spath, args.workers, b, args.tol)
            r.update(d=d, n=args.n, backend=b, workers=args.workers, dense_A_GiB=dense / 2 ** 30,
                     driver_share_GiB=share / 2 ** 30, write_s=write_s, parts=len(store.parts))
            rows.append(r)
            print("  " + json.dumps(r), flush=True)
        if not args.keep_stores:
            shutil.rmtree(spath, ignore_errors=True)
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cmd = "eagle-dist " + " ".join(sys.argv[1:]) if sys.argv and "eagle" in sys.argv[0] else \
        f"eagle-dist bench scale --d {args.d} --backends {args.backends}"
    gib = 2 ** 30
    lines = ["# Sharded solves beyond the driver's memory", "",
             f"Command: `{cmd}`; {machine_description()}.", "",
             f"M = {args.workers} workers, Gram mode, n = {args.n}, κ(A) ≈ {args.kappa:g}, "
             f"tol {args.tol:g}; the driver's share of this machine's "
             f"{_total_memory() / gib:.1f} GiB is 1/(M + 1) = {share / gib:.2f} GiB. Each solve "
             "runs in a fresh driver process; peaks are each process's `VmHWM` (the driver's own "
             "process, which for in-process also holds every worker; the largest worker's for "
             "Ray). Error: relative, against the store's D_true = w "
             "(exact: A has full row rank).", "",
             "| d | dense A (GiB) | backend | status | rounds | error | driver peak (GiB) | "
             "largest worker peak (GiB) | shard (GiB) | bytes/worker/round | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "rounds" not in r:
            lines.append(f"| {r['d']:,} | {r['dense_A_GiB']:.2f} | {r['backend']} | {r['status']} "
                         "| | | | | | | |")
            continue
        lines.append(f"| {r['d']:,} | {r['dense_A_GiB']:.2f} | {r['backend']} | {r['status']} | "
                     f"{r['rounds']} | {r['error']:.2e} | {r['driver_peak_rss_bytes'] / gib:.2f} | "
                     f"{r['worker_peak_rss_bytes'] / gib:.2f} | {r['shard_bytes_max'] / gib:.3f} | "
                     f"{r['bytes_per_worker_per_round']:,} | {r['wall_s']:.0f} |")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/summary.md")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("scale", help="M workers on stores larger than the driver's memory share; "
                                     "driver / worker peak memory vs d")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--n", type=int, default=64, help="rows of A")
    p.add_argument("--d", default="750000,1500000,3000000,6000000",
                   help="comma list of column counts (dense A = 8·n·d bytes)")
    p.add_argument("--backends", default="inprocess,ray")
    p.add_argument("--kappa", type=float, default=1e2)
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store-dir", default="runs/bench/scale/stores",
                   help="where the stores are written (removed after each d unless --keep-stores)")
    p.add_argument("--keep-stores", action="store_true")
    p.add_argument("--out", default="runs/bench/scale")
    p.set_defaults(fn=run)
