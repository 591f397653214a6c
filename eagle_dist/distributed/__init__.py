"""Distributed EAGLE and distributed GD over column shards.

Backends: ``inprocess`` (all workers in this process), ``torch`` (spawned processes with a
torch.distributed process group, like torchrun) and ``ray`` (one actor per shard forming the same
process group). One worker code path: :func:`.worker.run_rounds` via :func:`.runtime.worker_main`.
"""
from .runtime import WorkerFailure, shutdown_ray, solve_distributed, worker_main
from .shards import (alpha_problem, diversity_index, make_shards, max_alpha_below_one,
                     shard_condition_numbers, validate_shards)
from .worker import EagleKernel, FaultInjection, RoundConfig, ShardWorker, run_rounds

__all__ = ["solve_distributed", "worker_main", "WorkerFailure", "shutdown_ray", "alpha_problem",
           "diversity_index", "make_shards", "validate_shards", "max_alpha_below_one",
           "shard_condition_numbers", "EagleKernel", "FaultInjection", "RoundConfig",
           "ShardWorker", "run_rounds"]
