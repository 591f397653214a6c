"""Machinery the distributed sweeps (``rounds``, ``backends``) share: their result type, the
distributed solve they time, the verdict cell of their headline tables and their common options."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np

from ..api import solve
from ..distributed.worker import EagleKernel
from ..problem import Problem
from .common import RESULTS_ROOT


@dataclass
class SweepResult:
    """Raw rows per table, the headline numbers (targets and whether they were met) and the files
    written."""

    name: str
    out: str
    tables: Dict[str, List[Dict[str, Any]]]
    headline: Dict[str, Any]
    files: List[str] = field(default_factory=list)
    command: str = ""


def _kernel(method: str) -> EagleKernel:
    """The worker kernel of ``method``; passing it explicitly keeps ``M = 1`` on the distributed
    round loop (``solve`` would otherwise run the centralized solver)."""
    return EagleKernel(eta=0.0 if method == "gd" else 1.0 / 3.0, gamma=1.0)


def distributed_solve(problem: Problem, shards, method: str, **kw):
    """Distributed EAGLE (``"eagle"``, ``"eagle-accel"``), GD (``"gd"``) or CG on the normal
    equations (``"cg"``; at M = 1 the centralized CG, the same iteration) through the public API."""
    if method == "cg":
        if len(shards) == 1:                      # M = 1: the centralized CG (no shards to pass)
            return solve(problem, "cg", **kw)
        return solve(problem, "cg", workers=len(shards), shards=[np.asarray(s) for s in shards],
                     **kw)
    base = "gd" if method == "gd" else "eagle"
    kw.setdefault("mode", "paper")                # these sweeps study the paper's algorithm
    return solve(problem, base, workers=len(shards), shards=[np.asarray(s) for s in shards],
                 kernel=_kernel(base), accelerate=(method == "eagle-accel"), **kw)


def yes(b: Any) -> str:
    """The verdict cell of a headline table: ``**met**`` or ``**not met**``."""
    return "**met**" if b else "**not met**"


def add_distributed_args(p, sweep: str) -> None:
    """The options every distributed sweep (``rounds``, ``backends``) takes."""
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, sweep),
                   help=f"output directory (default {os.path.join(RESULTS_ROOT, sweep)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the driver (default: torch's; 1 is faster on a busy "
                        "machine)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a seconds-long check")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
