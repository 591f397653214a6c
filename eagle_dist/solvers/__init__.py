"""Single-machine solvers: EAGLE (centralized / sketched), GD, SGD and the direct and Krylov baselines.

Every entry of :data:`METHODS` has the signature ``fn(problem, opts, **method_kwargs) -> SolveResult``.
"""
from __future__ import annotations

from functools import partial

from . import baselines
from ..control import SolverOptions
from .eagle import eagle


def _gd(problem, opts, **kw):
    """Gradient descent on ½‖W A − B‖² with lr 1/‖A‖₂² = the EAGLE loop with η = 0."""
    kw.pop("eta", None)
    return eagle(problem, opts, eta=0.0, method_name="gd" if kw.get("sketch_size") is None else "sgd", **kw)


METHODS = {
    "eagle": eagle,
    "gd": _gd,
    "sgd": _gd,            # needs sketch_size
    "cg": baselines.cg,
    "lsmr": baselines.lsmr,
    "lsqr": baselines.lsqr,
    "lstsq": baselines.lstsq,
    "lstsq-gelsd": partial(baselines.lstsq, driver="gelsd"),
    "lstsq-gelsy": partial(baselines.lstsq, driver="gelsy"),
    "pinv": baselines.pinv,
}

ITERATIVE = ("eagle", "gd", "sgd", "cg", "lsmr", "lsqr")
SKETCHABLE = ("eagle", "sgd", "gd")

__all__ = ["METHODS", "ITERATIVE", "SKETCHABLE", "SolverOptions", "eagle"]
