"""Problem sources: seeded generators, Matrix Market / SuiteSparse files, and column shards
(their validation, the diversity index α, α-controlled problems)."""
from .generators import DISTRIBUTIONS, controlled, distribution, paper_training, split
from .shards import (alpha_problem, diversity_index, make_shards, max_alpha_below_one,
                     shard_condition_numbers, validate_shards)
from .suitesparse import SHIPPED, load_mtx, load_suitesparse, shipped_path

__all__ = ["DISTRIBUTIONS", "controlled", "distribution", "paper_training", "split",
           "SHIPPED", "load_mtx", "load_suitesparse", "shipped_path", "alpha_problem",
           "diversity_index", "make_shards", "max_alpha_below_one", "shard_condition_numbers",
           "validate_shards"]
