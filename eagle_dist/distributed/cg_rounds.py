"""Distributed CG on the normal equations ``W (A Aᵀ) = B Aᵀ`` (``method="cg"``, ``workers > 1``):
each round one all-reduce of ``P·A Aᵀ = Σ_μ (P A^μ) A^μᵀ`` (``n′·n`` numbers) and the centralized
CG step on every rank (:func:`eagle_dist.control.normal_cg_step`, shared with the centralized
CG); ``converged`` only after LSQR's tests on the true residual (one more all-reduce of
``n′·n + 1`` numbers, when the recurrence says they may pass). Entered through
:func:`eagle_dist.distributed.worker.run_rounds`.
"""
from __future__ import annotations

import math

import torch

from ..control import Monitor, ResidualRule, cg_check_due, lsq_ratio, norm64, normal_cg_step
from ..result import Status
from .worker import RoundsOutput, _output, _quiet, _record, _reduce_round, _round_buffer


def cg_rounds(local, C, D, comm, cfg, reference, denominator, is_main, on_round) -> RoundsOutput:
    """Distributed CG on the normal equations ``W (A Aᵀ) = B Aᵀ`` (module docstring)."""
    opts = cfg.opts
    n, nq = C.shape[0], D.shape[0]
    dq = D.shape[1]
    if on_round is not None:
        on_round(0)
    # set-up: R₀ = B Aᵀ = Σ B^μ A^μᵀ, ‖A‖_F², ‖B‖_F² in one all-reduce
    buf = torch.zeros(nq * n + 2, dtype=C.dtype, device=C.device)
    for w in local:
        buf[:nq * n] += (w.B @ w.A.T).reshape(-1)
        buf[-2] += norm64(w.A) ** 2
        buf[-1] += norm64(w.B) ** 2
    setup_bytes = buf.numel() * buf.element_size()
    buf = comm(buf, "sum")
    R = buf[:nq * n].reshape(nq, n).clone()
    a_norm, b_norm = math.sqrt(float(buf[-2])), math.sqrt(float(buf[-1]))
    W = torch.zeros(nq, n, dtype=C.dtype, device=C.device)
    P, rr = R.clone(), (R * R).sum(dim=1)
    st = {"W": W, "R": R, "best": (math.inf, W, 0), "checked": -10, "check_bytes": 0}

    def true_check() -> float:
        """LSQR's tests on the true residual: ‖B − W A‖² and (B − W A) Aᵀ summed over shards."""
        b = torch.zeros(nq * n + 1, dtype=C.dtype, device=C.device)
        for w in local:
            Rm = w.B - st["W"] @ w.A
            b[:nq * n] += (Rm @ w.A.T).reshape(-1)
            b[-1] += norm64(Rm) ** 2
        st["check_bytes"] += b.numel() * b.element_size()
        b = comm(b, "sum")
        return lsq_ratio(math.sqrt(max(float(b[-1]), 0.0)), norm64(b[:nq * n]), b_norm, a_norm,
                         norm64(st["W"]))

    def residual() -> float:
        rec = norm64(st["R"])                        # replicated: the same gate on every rank
        if rec < st["best"][0]:
            st["best"] = (rec, st["W"], mon.iteration)
        if not cg_check_due(rec, opts.tol, a_norm, b_norm, mon.iteration, st["checked"]):
            return math.inf
        st["checked"] = mon.iteration
        return true_check()

    voting = opts.time_budget is not None or opts.callback is not None
    rule = ResidualRule(residual)                  # CG: the residual check alone decides
    mon = Monitor(_quiet(opts, progress=opts.progress and is_main), reference,
                  desc=f"rounds(M={cfg.workers}, cg)", rule=rule, denominator=denominator)
    mon.on_round = on_round
    bytes_per_round = bytes_sent = 0
    status, rnd = None, 0
    D_old = D
    while status is None:
        rnd += 1
        buf = _round_buffer(local, cfg, rnd, nq * n, voting, C)
        for w in local:
            buf[:nq * n] += ((P @ w.A) @ w.A.T).reshape(-1)
        buf, vote, bytes_per_round = _reduce_round(buf, comm, mon, opts, voting, is_main)
        bytes_sent += bytes_per_round
        W, R, P, rr, _, broke = normal_cg_step(W, R, P, rr, buf[:nq * n].reshape(nq, n))
        st["W"], st["R"] = W, R
        D_old, D = D, W @ C
        status = _record(mon, D, D_old, C, dq, vote)
        if status is None and broke:
            # no search direction left: the true residual check decides
            val = true_check()
            rule.last_residual = val
            status = Status.CONVERGED if val <= opts.tol else Status.INEXACT
            mon.close()
    if status is Status.NON_FINITE and not bool(torch.isfinite(D).all()):
        D = D_old if bool(torch.isfinite(D_old).all()) else torch.zeros_like(D)
    elif status is not Status.CONVERGED and st["best"][1] is not W:
        D = st["best"][1] @ C                         # never worse than the best residual seen
    return _output(mon, D, status, local, bytes_per_round=bytes_per_round,
                   setup_bytes=setup_bytes, bytes_sent=bytes_sent + st["check_bytes"], mode="cg",
                   best_iteration=st["best"][2])
