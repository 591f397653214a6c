"""Build the problem a YAML config describes (shared by ``eagle-dist run``, the torchrun entry and
the API): deterministic by seed, so every torchrun rank builds the same problem."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ProblemConfig


def problem_from_config(pc: "ProblemConfig", workers: int = 1):
    """``(problem, shards_or_None)`` from a :class:`ProblemConfig` (deterministic by seed, so every
    torchrun rank builds the same problem)."""
    from . import DISTRIBUTIONS, controlled, distribution, load_suitesparse, paper_training
    from ..problem import check_memory, dense_problem_bytes
    if pc.source == "store":
        from .store import ColumnStore
        if not pc.path:
            raise ValueError("problem.source=store needs problem.path (a column-store folder "
                             "written by `eagle-dist shard`)")
        return ColumnStore.open(pc.path), None        # each worker reads only its own columns
    if pc.source != "mtx":
        d_total = pc.d * (workers if pc.source == "alpha" else 1)
        for name, v in (("n", pc.n), ("d", pc.d), ("n_query", pc.n_query), ("d_query", pc.d_query)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"problem.{name}={v!r} must be a positive integer")
        check_memory(dense_problem_bytes(pc.n, d_total, pc.n_query, pc.d_query),
                     f"a {pc.source} problem with n = {pc.n}, d = {d_total}",
                     "use smaller n / d")
    if pc.source == "controlled":
        return controlled(pc.n, pc.d, pc.n_query, pc.d_query, kappa=pc.kappa, rank=pc.rank,
                          noise=pc.noise, seed=pc.seed), None
    if pc.source == "alpha":
        from .shards import alpha_problem
        return alpha_problem(pc.n, pc.d, workers, alpha=pc.alpha, kappa_max=pc.kappa,
                             n_query=pc.n_query, d_query=pc.d_query, noise=pc.noise, seed=pc.seed)
    if pc.source == "mtx":
        if not pc.path:
            raise ValueError("problem.source=mtx needs problem.path (a .mtx file or shipped name)")
        return load_suitesparse(pc.path, rank=pc.rank, c_block=pc.c_block), None
    if pc.source == "paper_training":
        return paper_training(pc.n, pc.d, pc.n_query, pc.d_query, noise=pc.noise, seed=pc.seed), None
    if pc.source in DISTRIBUTIONS:
        return distribution(pc.source, pc.n, pc.d, pc.n_query, pc.d_query, rank=pc.rank,
                            noise=pc.noise, seed=pc.seed), None
    raise ValueError(f"problem.source={pc.source!r}; use controlled, alpha, mtx, store, paper_training or one of {DISTRIBUTIONS}")
