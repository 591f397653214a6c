"""``eagle-dist bench <sweep>``: each sweep module registers its own sub-command."""
from __future__ import annotations

import importlib

# module name (in eagle_dist.bench) -> registered by its ``add_parser``
SWEEPS = ("kappa", "sketch", "gemm", "rounds", "backends", "train", "suitesparse", "scale",
          "sharded", "noise", "rankdef", "distributions", "stepsize", "seedavg", "evaluate",
          "noisy", "warmstart", "fastpath")


def add_bench_parser(sub) -> None:
    pb = sub.add_parser("bench", help="benchmark sweeps -> CSV / PNG / markdown")
    bsub = pb.add_subparsers(dest="sweep", required=True)
    for name in SWEEPS:
        importlib.import_module(f"eagle_dist.bench.{name}").add_parser(bsub)
