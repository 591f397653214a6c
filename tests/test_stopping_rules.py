"""The stopping rules (:mod:`eagle_dist.control`) on their own: each method family's rule is one
object, checked here against hand-made step sequences, independent of any solver."""
from __future__ import annotations

import math

import pytest
import torch

from eagle_dist.control import (LinearSystem, Monitor, ResidualRule, StepRule, VerifyRule,
                                SolverOptions)
from eagle_dist.result import Status


def _feed(mon: Monitor, steps):
    """Record iterates whose relative steps are exactly ``steps``; return (iteration, status)."""
    D = torch.ones(2, 2, dtype=torch.float64)
    for s in steps:
        # ‖D_new − D_old‖ / ‖D_new‖ = s with D_new = D, D_old = D (1 − s)
        status = mon.record(D, D * (1.0 - s))
        if status is not None:
            return mon.iteration, status
    return mon.iteration, None


def test_step_rule_needs_patience_non_increasing_small_steps():
    mon = Monitor(SolverOptions(tol=1e-3, patience=3, max_iter=50), None, rule=StepRule())
    # 1e-4 counts; the bigger 5e-4 resets the count; then three non-increasing steps pass
    it, st = _feed(mon, [1e-1, 1e-4, 5e-4, 4e-4, 3e-4, 2e-4])
    assert (it, st) == (6, Status.CONVERGED)


def test_step_rule_waits_for_the_lift_point_or_an_early_certificate():
    opts = SolverOptions(tol=1e-3, patience=1, max_iter=50)
    it, st = _feed(Monitor(opts, None, rule=StepRule(certify_from=6)), [1e-4] * 10)
    assert (it, st) == (6, Status.CONVERGED)
    calls = []

    def certifier():
        calls.append(1)
        return len(calls) >= 2
    rule = StepRule(certify_from=6, certifier=certifier)
    it, st = _feed(Monitor(opts, None, rule=rule), [1e-1, 1e-4, 1e-4, 1e-4])
    # the certifier is asked only once the step rule holds (it costs a Gram product)
    assert (it, st, rule.certified_at, len(calls)) == (3, Status.CONVERGED, 3, 2)


def test_step_rule_confirmed_by_a_residual_keeps_going_until_it_passes():
    vals = iter([0.5, 1e-2, 1e-5])
    rule = StepRule(confirm=ResidualRule(lambda: next(vals)))
    mon = Monitor(SolverOptions(tol=1e-4, patience=1, max_iter=50), None, rule=rule)
    it, st = _feed(mon, [1e-5] * 10)
    assert (it, st) == (3, Status.CONVERGED)
    assert mon.last_residual == 1e-5


def test_verify_rule_returns_its_own_verdict():
    rule = StepRule(confirm=VerifyRule(lambda: Status.UNVERIFIED))
    mon = Monitor(SolverOptions(tol=1e-3, patience=1, max_iter=50), None, rule=rule)
    assert _feed(mon, [1e-4] * 3) == (1, Status.UNVERIFIED)


def test_residual_rule_ignores_steps():
    vals = iter([1.0, 1.0, 1e-9])
    mon = Monitor(SolverOptions(tol=1e-6, max_iter=50), None, rule=ResidualRule(lambda: next(vals)))
    assert _feed(mon, [0.0, 0.0, 0.5]) == (3, Status.CONVERGED)


def test_target_residual_only_stops_on_the_true_residual():
    A = torch.eye(3, dtype=torch.float64)
    B = torch.ones(2, 3, dtype=torch.float64)
    W = {"w": torch.zeros(2, 3, dtype=torch.float64)}
    resynced = []
    system = LinearSystem(A, B, lambda _D: W["w"], estimate=lambda: 0.0,   # an optimistic lie
                          resync=resynced.append)
    mon = Monitor(SolverOptions(target_residual=1e-8, max_iter=3), None, system=system)
    it, st = _feed(mon, [1e-9] * 5)
    assert (it, st) == (3, Status.MAX_ITERATIONS)          # the estimate never decides
    assert resynced and resynced[-1] == pytest.approx(1.0)
    W["w"] = B.clone()
    mon = Monitor(SolverOptions(target_residual=1e-8, max_iter=3), None, system=system)
    assert _feed(mon, [0.5]) == (1, Status.CONVERGED)
    assert mon.last_system_residual == 0.0


def test_target_residual_needs_a_system():
    with pytest.raises(ValueError, match="target_residual"):
        Monitor(SolverOptions(target_residual=1e-6), None, desc="x")


def test_guard_returns_the_best_iterate_when_steps_grow():
    mon = Monitor(SolverOptions(tol=1e-30, max_iter=50), None, guard_from=1)
    D = torch.ones(2, 2, dtype=torch.float64)
    for k, s in enumerate([1e-3, 1e-6, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3]):
        status = mon.record(D * (k + 1), D * (k + 1) * (1.0 - s))
        if status is not None:
            break
    assert status is Status.DIVERGED and mon.best_iteration == 2
    assert torch.equal(mon.final(D), D * 2)
    assert math.isnan(mon.last_residual)
