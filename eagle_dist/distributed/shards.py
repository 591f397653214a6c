"""Moved to :mod:`eagle_dist.data.shards` (shards and α are data, used by the runtime and by the
problem sources alike); this module keeps the old import path working."""
from ..data.shards import (ShardSpec, alpha_problem, diversity_index, make_shards,  # noqa: F401
                           max_alpha_below_one, shard_condition_numbers, validate_shards)

__all__ = ["ShardSpec", "alpha_problem", "diversity_index", "make_shards", "max_alpha_below_one",
           "shard_condition_numbers", "validate_shards"]
