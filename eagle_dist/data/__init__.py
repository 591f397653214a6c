"""Problem sources: seeded generators and Matrix Market / SuiteSparse files."""
from .generators import DISTRIBUTIONS, controlled, distribution, paper_training, split
from .suitesparse import SHIPPED, load_mtx, load_suitesparse, shipped_path

__all__ = ["DISTRIBUTIONS", "controlled", "distribution", "paper_training", "split",
           "SHIPPED", "load_mtx", "load_suitesparse", "shipped_path"]
