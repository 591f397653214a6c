"""eagle_dist — EAGLE, the second-order iteration linear transformers discover, for masked-block
completion ``D̂ = B A⁺ C``: centralized, sketched and distributed (arXiv 2509.19702)."""
from .api import ConvergenceWarning, SolveError, solve, solve_least_squares
from .kernels import eagle_update
from .options import SolveOptions
from .problem import Problem
from .solvers.factor import EagleFactorization, factorize
from .result import History, SolveResult, Status

__version__ = "0.1.0"

__all__ = ["Problem", "solve", "solve_least_squares", "SolveOptions", "factorize",
           "EagleFactorization", "SolveResult", "Status", "History", "SolveError", "ConvergenceWarning",
           "eagle_update", "__version__"]
