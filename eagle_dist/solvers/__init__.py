"""Single-machine solvers: EAGLE (centralized / sketched), GD, SGD and the direct and Krylov baselines.

Every entry of :data:`METHODS` has the signature ``fn(problem, opts, **method_kwargs) -> SolveResult``
(``opts``: :class:`eagle_dist.options.SolveOptions`). The EAGLE/GD/SGD loop is
:mod:`eagle_dist.solvers.loop`; the direct and Krylov baselines :mod:`.baselines`.
"""
from __future__ import annotations

from functools import partial

from . import baselines
from .loop import eagle


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


def _auto(problem, opts, **kw):
    """The fastest method that can certify the request, by a cost model calibrated on this
    machine (:mod:`eagle_dist.solvers.auto`)."""
    from .auto import auto
    return auto(problem, opts)


METHODS["auto"] = _auto

__all__ = ["METHODS", "eagle"]
