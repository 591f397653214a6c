"""The process entry points of the distributed runtime (one module, run with ``python -m``):

* under ``torchrun`` — every rank builds the same (seeded) problem, takes its column shard and
  runs :func:`eagle_dist.distributed.rank.worker_main`, the code the spawned-process and Ray
  backends run. Rank 0 writes ``result.json``, ``history.csv``, ``summary.md`` and the resolved
  ``config.yaml`` to ``output.dir``::

      torchrun --standalone --nproc_per_node=4 -m eagle_dist.distributed.torchrun \\
          --config configs/distributed.yaml
      # two nodes (run on each, node_rank 0 and 1):
      torchrun --nnodes=2 --node_rank=0 --nproc_per_node=2 --rdzv-backend=c10d \\
          --rdzv-endpoint=HEAD:29500 -m eagle_dist.distributed.torchrun --config ...

  ``solve.workers`` must equal ``WORLD_SIZE``; it is filled in from ``WORLD_SIZE`` when the config
  leaves it out. gloo on CPU, NCCL when every rank has a GPU (``LOCAL_RANK`` picks it). A column
  store (``problem.source: store``) must be on a path every node can read; each rank reads only
  its own columns.
* ``--rank-payload FILE`` — a rank started by the ``torch`` backend
  (:mod:`eagle_dist.distributed.launch_torch`): it first arranges to die with its driver, then
  reads and deletes its payload and runs it.

(Training has its own torchrun entry, ``python -m eagle_dist.model.launch``: this package never
imports the model package.)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional

log = logging.getLogger("eagle_dist.torchrun")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--rank-payload"]:
        from .launch_torch import die_with_parent, run_spawned_rank
        if len(argv) != 2:
            sys.exit("usage: python -m eagle_dist.distributed.torchrun --rank-payload FILE")
        die_with_parent()
        run_spawned_rank(argv[1])
        return 0
    return solve_main(argv)


def solve_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m eagle_dist.distributed.torchrun",
                                 description="A distributed solve as one torchrun rank.")
    ap.add_argument("--config", required=True, help="YAML run config (see configs/)")
    ap.add_argument("--out", default=None, help="override output.dir")
    args = ap.parse_args(argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        ap.exit(2, "eagle-dist torchrun entry: RANK / WORLD_SIZE are not set; launch with "
                   "torchrun --nproc_per_node=M -m eagle_dist.distributed.torchrun --config ...\n")
    from ..config import load_config, save_config
    from ..control import SolverOptions
    from ..data.from_config import problem_from_config
    from ..result import results_table
    from .plan import assemble, data_source, prepare
    from .rank import worker_main
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(levelname)s %(message)s")
    cfg = load_config(args.config, {"solve": {"workers": world}})
    if args.out:
        cfg.output.dir = args.out
    sc = cfg.solve
    problem, shards = problem_from_config(cfg.problem, workers=world)
    opts = SolverOptions(tol=sc.tol, max_iter=sc.max_iter, target_error=sc.target_error,
                         time_budget=sc.time_budget, device=sc.device, dtype=sc.dtype,
                         seed=sc.seed, progress=False,
                         record_error=data_source(problem).has_reference).validate()
    plan = prepare(problem, opts, method=sc.method, workers=world,
                   shards=shards if shards is not None else sc.shards, eta=sc.eta,
                   gamma=sc.gamma, normalization=sc.normalization, accelerate=sc.accelerate,
                   timeout=sc.timeout, mode=sc.mode, verify=sc.verify, rcond=sc.rcond)
    if shards is not None:
        plan.shards = "alpha"
    log.info("%r, %d ranks, method %s", problem, world, sc.method)
    t0 = time.perf_counter()
    out = worker_main(plan.tasks[rank])
    if rank != 0:
        return 0
    res = assemble(plan, [out], backend=f"torchrun/{out.backend}", wall=time.perf_counter() - t0)
    log.info("%s: %s after %d rounds, error %.3g, %d bytes/worker/round, %.3f s",
             res.method, res.status.value, res.rounds, res.error,
             res.bytes_per_worker_per_round, res.time_s)
    if cfg.output.dir:
        os.makedirs(cfg.output.dir, exist_ok=True)
        res.to_json(os.path.join(cfg.output.dir, "result.json"))
        res.history_to_csv(os.path.join(cfg.output.dir, "history.csv"))
        save_config(cfg, os.path.join(cfg.output.dir, "config.yaml"))
        where = ["| rank | local rank | node rank | host | device |", "|---|---|---|---|---|"]
        where += [f"| {p['rank']} | {p['local_rank']} | {p['node_rank']} | {p['host']} | "
                  f"{p['device']} |" for p in res.info["placement"]]
        with open(os.path.join(cfg.output.dir, "summary.md"), "w") as f:
            f.write(f"# torchrun solve\n\n`{' '.join(sys.argv)}` (WORLD_SIZE={world} on "
                    f"{res.info['nodes']} node(s))\n\n{problem!r}\n\n{results_table([res])}\n\n"
                    "Where the ranks ran:\n\n" + "\n".join(where) + "\n")
        log.info("wrote %s", cfg.output.dir)
    return 0 if res.converged else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
