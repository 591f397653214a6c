"""Distributed EAGLE, GD and CG over column shards.

Backends: ``inprocess`` (all workers in this process), ``torch`` (spawned processes with a
torch.distributed process group, like torchrun) and ``ray`` (one actor per shard forming the same
process group, locally or on a cluster). One worker code path: :func:`.worker.run_rounds` via
:func:`.rank.worker_main`; one supervision loop (:mod:`.supervise`); see :mod:`.runtime` for the
layout. Shards and α live in :mod:`eagle_dist.data.shards` and are re-exported here.
"""
from ..data.shards import (alpha_problem, diversity_index, make_shards, max_alpha_below_one,
                           shard_condition_numbers, validate_shards)
from .protocol import CertifiedKernel, LocalKernel, RankResult, RankTask
from .runtime import (WorkerFailure, release_ray_actors, run_ranks, shutdown_ray,
                      solve_distributed, worker_main)
from .worker import EagleKernel, FaultInjection, RoundConfig, ShardWorker, run_rounds

__all__ = ["solve_distributed", "run_ranks", "worker_main", "WorkerFailure", "shutdown_ray",
           "release_ray_actors", "alpha_problem", "diversity_index", "make_shards",
           "validate_shards", "max_alpha_below_one", "shard_condition_numbers", "EagleKernel",
           "FaultInjection", "RoundConfig", "ShardWorker", "run_rounds", "LocalKernel",
           "CertifiedKernel", "RankTask", "RankResult"]
