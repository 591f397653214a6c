"""Faster polynomials with the accuracy kept (issue 16, item 2): a numerical study.

Compares, on problems with exact spectra (``eagle_dist.data.controlled``, n = d = 300, float64):

  (a) ``eagle``      the current solver, ``solve(p, "eagle")`` (cubic Newton–Schulz + filtered C/D);
  (b) ``quintic``    greedy quintic lift to 1 ± 1e-12 (``polynomials.lift_schedule``), no C/D step,
                     then the read-out ``D = B Aᵀ C`` (A orthogonal ⇒ A⁺ = Aᵀ); 20 more
                     osculating steps show how its floor grows;
  (b2) ``quintic+cd`` the same quintic steps with EAGLE's C/D step at every step (to separate the
                     read-out from the polynomial as the source of the floor);
  (c) ``hybrid``     ``polynomials.plan_for(ℓ, switch=0.1)``: quintic lift to 1 ± 0.1 with the C/D
                     step, then EAGLE's stable cubic step with the filtered C/D step until the
                     interval is 1 ± 1e-12, then A and B frozen and the C/D step alone (the
                     solver's post-cap mode);
  (d) ``lift+frozen`` quintic lift to 1 ± switch with the C/D step, then A and B frozen at once and
                     the C/D step alone (thin products only).

Every variant starts from the same normalisation (``kernels.spectral_norm_sq``, as the solver) and
takes ``ℓ`` — the lower end of the singular-value interval the schedule assumes — from one of three
policies: ``known`` (1/κ of the generator), ``certified`` (``polynomials.certified_lower_bound``:
Cholesky tests on the first Gram matrix, their flops counted) and ``rcond`` (√eps, no knowledge).

GEMM-equivalents are COUNTED, not modelled: a ``TorchDispatchMode`` sees every ``mm``/``addmm`` the
code runs (the solver's too) and adds ``2·m·k·n`` flops, half for a symmetric product (``XᵀX`` or
``G·G``: SYRK), in units of one ``n x d x min(n, d)`` product. Mat-vecs of the shared power iteration
are counted apart. Errors are ``Problem.error`` (relative to the float64 ``pinv`` reference).

The invariant ``D + B A⁺ C`` is checked against ``numpy.linalg.pinv`` after every step of (c).

Run (5-7 minutes on 2 loaded cores; ``--smoke``: n = 60, under a minute)::

    OMP_NUM_THREADS=1 python benchmarks/polynomial_study.py --out benchmarks/results/polynomials

Writes ``runs.csv`` (one row per problem x variant x ℓ policy), ``traces.csv`` (error and counts
after every step), ``switch.csv`` (the switch-over sweep), ``meta.json``, three PNGs and
``summary.md``; ``report(out)`` rebuilds the summary and plots from the CSVs.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from eagle_dist import solve
from eagle_dist import polynomials as poly
from eagle_dist.data import controlled
from eagle_dist.kernels import eagle_update, spectral_norm_sq
from eagle_dist.problem import Problem

log = logging.getLogger("polynomial_study")
aten = torch.ops.aten
TARGET = 1e-10
RCOND = math.sqrt(torch.finfo(torch.float64).eps)


# ------------------------------------------------------------------------------------------------
# Counting products
# ------------------------------------------------------------------------------------------------
_PRODUCTS = {aten.mm.default: (0, 1), aten.addmm.default: (1, 2),
             aten.mv.default: (0, 1), aten.addmv.default: (1, 2)}


class Counter(TorchDispatchMode):
    """Flops of every matrix product run inside it: ``plain`` (2mkn each), ``sym`` (symmetric
    products ``XᵀX``/``XXᵀ``/``G·G`` at half, as SYRK forms one triangle), ``matvec`` apart.
    Cholesky factorisations (k³/3 flops) are added to both and kept in ``other`` too."""

    def __init__(self):
        super().__init__()
        self.plain = self.sym = self.matvec = self.other = 0.0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            if func in _PRODUCTS:
                i, j = _PRODUCTS[func]
                x, y = args[i], args[j]
                if y.ndim == 1:
                    self.matvec += 2.0 * x.shape[0] * x.shape[1]
                else:
                    f = 2.0 * x.shape[0] * x.shape[1] * y.shape[1]
                    self.plain += f
                    self.sym += 0.5 * f if _symmetric_product(x, y) else f
            elif func is aten.linalg_cholesky_ex.default:
                f = args[0].shape[-1] ** 3 / 3.0                 # k³/3 flops (1/6 of a GEMM)
                self.other += f
                self.plain += f
                self.sym += f
        return func(*args, **kwargs)


def _symmetric_product(x: torch.Tensor, y: torch.Tensor) -> bool:
    """``x = yᵀ`` as a view (a Gram matrix) or ``x is y`` square (``G·G`` of a symmetric G)."""
    if x.data_ptr() != y.data_ptr():
        return False
    transposed = tuple(x.shape) == tuple(y.shape)[::-1] and tuple(x.stride()) == tuple(y.stride())[::-1]
    same = tuple(x.shape) == tuple(y.shape) and tuple(x.stride()) == tuple(y.stride()) \
        and x.shape[0] == x.shape[1]
    return transposed or same


# ------------------------------------------------------------------------------------------------
# Problems
# ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    problem: Problem
    ell_known: float             # a lower bound on σ_min/σ_max of the nonzero spectrum
    pinv_rtol: Optional[float] = None   # cut-off for the invariant check (rank-deficient case)


def make_cases(kappas, seeds, n: int) -> List[Case]:
    cases = []
    for kappa in kappas:
        for s in seeds:
            cases.append(Case(f"kappa={kappa:g}", controlled(n, n, kappa=kappa, seed=s), 1.0 / kappa))
    for s in seeds:
        # rank 2n/3, κ = 1e4 on the nonzero part; noise on B and C puts part of B in A's null space
        p = controlled(n, n, kappa=1e4, rank=2 * n // 3, seed=s)
        rng = np.random.default_rng(1000 + s)
        B = p.B + 1e-3 * np.linalg.norm(p.B) / math.sqrt(p.B.size) * rng.standard_normal(p.B.shape)
        C = p.C + 1e-3 * np.linalg.norm(p.C) / math.sqrt(p.C.size) * rng.standard_normal(p.C.shape)
        cases.append(Case("rank-deficient", Problem.from_arrays(p.A, B, C, name="rankdef",
                                                                meta={"seed": s}), 1e-4,
                          pinv_rtol=1e-6))
        # noisy least squares: w A = b with n/2 features and n samples (A wide), b = w* A + noise;
        # the residual lies outside A's row space. C = query points (D = w C, predictions).
        m = n // 2
        p = controlled(m, n, kappa=1e3, seed=s)
        rng = np.random.default_rng(2000 + s)
        B = p.B + 1e-2 * np.linalg.norm(p.B) / math.sqrt(p.B.size) * rng.standard_normal(p.B.shape)
        C = rng.standard_normal((m, 2))
        cases.append(Case("noisy-lstsq", Problem.from_arrays(p.A, B, C, name="noisy-lstsq",
                                                             meta={"seed": s}), 1e-3))
    return cases


# ------------------------------------------------------------------------------------------------
# The prototype loop (what the solver's lift phase would run)
# ------------------------------------------------------------------------------------------------
def normalised(problem: Problem):
    """Float64 tensors with ``‖A‖₂ ≈ 1`` (the solver's power iteration) and ``D = 0``."""
    A, B, C = (torch.tensor(x, dtype=torch.float64) for x in (problem.A, problem.B, problem.C))
    s2, _ = spectral_norm_sq(A, iters=200, rtol=1e-8)
    inv = 1.0 / math.sqrt(s2)
    return A * inv, B * inv, C, torch.zeros(problem.n_query, problem.d_query, dtype=torch.float64)


def gram(A: torch.Tensor) -> torch.Tensor:
    """``AᵀA`` (tall or square) or ``AAᵀ`` (wide): the smaller Gram matrix."""
    return A.T @ A if A.shape[1] <= A.shape[0] else A @ A.T


def cd_step(A, B, C, D, rho: float, order: int = 1):
    """EAGLE's filtered C/D step alone (the kernel, A and B untouched): with OLD A, B, C,
    ``C ← C − ρ^{m+1}(AAᵀ)^{m+1} C``, ``D ← D + ρ^{m+1} B (AᵀA)^m Aᵀ C``."""
    _, _, C, D = eagle_update(A, B, C, D, eta=0.0, gamma=1.0, rho=rho, update_ab=False,
                              filter_order=order)
    return C, D


def lift(A, B, C, D, steps, *, cd: bool, on_step: Callable, G0: Optional[torch.Tensor] = None,
         replan: Optional[Callable] = None):
    """Run quintic (Gram form, ``polynomials.apply_right_factor``) and cubic (the kernel) steps.

    Quintic step k on the interval ``[lo, hi]`` (valid up to ``top = hi·(1 + margin)``): the C/D
    step with ``ρ = 1/top²`` (so ``ρσ² ≤ 1`` and the C-update contracts), then
    ``A, B ← A P, B P``. Cubic step: ``eagle_update`` in EAGLE's stable form (η = 1/3, ×3/2, ρ = 1,
    filtered C/D). ``G0``: the first Gram matrix if already formed (by the ℓ certificate).
    ``replan(step, G)``: may return new steps to replace the rest of the schedule (a certificate
    on the current Gram matrix)."""
    steps = list(steps)
    k = 0
    while k < len(steps):
        st = steps[k]
        if st.kind == "quintic":
            G = G0 if (k == 0 and G0 is not None) else gram(A)
            if replan is not None:
                new = replan(st, G)
                if new:
                    steps[k:] = new
                    st = steps[k]
            if cd:
                top = st.hi * (1.0 + st.margin)
                C, D = cd_step(A, B, C, D, 1.0 / top ** 2)
            A, B, _ = poly.apply_right_factor(A, B, st.poly, gram=G)
        else:
            A, B, C, D = eagle_update(A, B, C, D, eta=1.0 / 3.0, gamma=1.0, rho=1.0, scale=1.5,
                                      filter_order=1)
        on_step(st.kind, A, B, C, D)
        k += 1
    return A, B, C, D, steps


# ------------------------------------------------------------------------------------------------
# Variants
# ------------------------------------------------------------------------------------------------
@dataclass
class Trace:
    variant: str
    policy: str
    rows: List[Dict] = field(default_factory=list)
    info: Dict = field(default_factory=dict)


def _unit(problem: Problem) -> float:
    n, d = problem.A.shape
    return 2.0 * n * d * min(n, d)


def run_variant(case: Case, variant: str, policy: str, *, switch: float, frozen: int,
                check_invariant: bool) -> Trace:
    p = case.problem
    ref, den = p.reference, p.error_denominator
    unit = _unit(p)
    tr = Trace(variant, policy)
    cnt = Counter()

    def err_of(D: torch.Tensor) -> float:
        return float(np.linalg.norm(D.numpy() - ref) / den)

    def record(phase, A, B, C, D, readout=False):
        cnt.paused = True
        Dv = (B @ A.T) @ C if readout else D
        row = {"step": len(tr.rows) + 1, "phase": phase, "gemm": cnt.sym / unit,
               "gemm_plain": cnt.plain / unit, "error": err_of(Dv)}
        if check_invariant:
            An, Bn, Cn, Dn = (x.numpy() for x in (A, B, C, D))
            pinv = np.linalg.pinv(An, rtol=case.pinv_rtol) if case.pinv_rtol else np.linalg.pinv(An)
            inv = Dn + (Bn @ pinv) @ Cn
            row["invariant"] = float(np.linalg.norm(inv - ref) / den)
        tr.rows.append(row)
        cnt.paused = False

    with cnt:
        A, B, C, D = normalised(p)
        tr.info["normalise_matvec_gemm"] = cnt.matvec / unit
        G0 = None
        ell = case.ell_known if policy == "known" else RCOND
        sw = None if variant == "quintic+cd" else (switch or poly.DEFAULT_SWITCH)
        if policy == "certified":
            G0 = gram(A)
            ell, tests = poly.certified_lower_bound(G0, hi=1.0, floor=RCOND, switch=sw)
            tr.info["cholesky_tests"] = tests
        tr.info["ell"] = ell

        def plan_from(lo, hi=1.0):
            # the cheapest plan valid for σ ≥ lo (plan_for: a breakpoint at or below lo)
            if variant in ("quintic", "quintic+cd"):
                return poly.lift_schedule(lo, hi, delta=1e-12)
            if variant == "hybrid":
                return list(poly.plan_for(lo, hi, switch=switch, delta=1e-12).steps)
            return list(poly.plan_for(lo, hi, switch=sw, delta=1e-12).quintic)  # lift+frozen

        steps = plan_from(ell)
        replan = None
        if policy == "certified" and ell <= RCOND:
            # nothing certified on the first Gram matrix (κ beyond ~2e5, or rank deficient): try
            # once more when the schedule's own lower end is large enough to be certified
            state = {"done": False}
            bound = poly.cholesky_error_bound(min(p.A.shape))

            def replan(st, G):
                top = st.hi * (1.0 + st.margin)
                if state["done"] or st.lo < 2.0 * bound * top:
                    return None
                state["done"] = True
                l2, t2 = poly.certified_lower_bound(G, hi=top, floor=st.lo, switch=sw)
                tr.info["cholesky_tests"] = tr.info.get("cholesky_tests", 0) + t2
                if l2 <= st.lo:
                    return None
                tr.info["recertified"] = l2
                return plan_from(l2, st.hi)
        if variant == "quintic":
            A, B, C, D, steps = lift(A, B, C, D, steps, cd=False, G0=G0,
                              on_step=lambda ph, A_, B_, C_, D_: record(ph, A_, B_, C_, D_, True))
            for _ in range(frozen):                 # more osculating steps: the floor's growth
                st = poly.quintic_step(1.0 - 1e-12, 1.0 + 1e-12)
                A, B, _ = poly.apply_right_factor(A, B, st.poly)
                record("extra", A, B, C, D, readout=True)
            cnt.plain += 2.0 * p.n_query * p.d * p.n + 2.0 * p.n_query * p.n * p.d_query
            cnt.sym += 2.0 * p.n_query * p.d * p.n + 2.0 * p.n_query * p.n * p.d_query
        else:
            A, B, C, D, steps = lift(A, B, C, D, steps, cd=True, G0=G0, replan=replan,
                                     on_step=lambda ph, A_, B_, C_, D_: record(ph, A_, B_, C_, D_))
            rho = 1.0 / steps[-1].hi_next ** 2 if variant != "hybrid" else 1.0
            order = 1 if variant == "lift+frozen" else 2
            for _ in range(frozen):
                C, D = cd_step(A, B, C, D, rho, order=order)
                record("frozen", A, B, C, D)
    tr.info["total_gemm"] = cnt.sym / unit
    tr.info["quintic_steps"] = sum(s.kind == "quintic" for s in steps)
    tr.info["cubic_steps"] = sum(s.kind == "cubic" for s in steps)
    tr.info["amplification"] = float(np.prod([s.amplification for s in steps]))
    return tr


def run_eagle(case: Case, *, max_iter: int) -> Trace:
    """(a): the solver itself, counted the same way; the error and flops of every iteration."""
    p = case.problem
    unit = _unit(p)
    tr = Trace("eagle", "-")
    cnt = Counter()
    flops = []

    def cb(it, info):
        flops.append((cnt.sym, cnt.plain))
        return False

    with cnt:
        res = solve(p, "eagle", max_iter=max_iter, callback=cb, record_error=True)
    flops.append((cnt.sym, cnt.plain))                       # the stopping iteration
    errs = [r["error"] for r in res.history.rows()]
    for k, e in enumerate(errs):
        s, pl = flops[min(k, len(flops) - 1)]
        tr.rows.append({"step": k + 1, "phase": "eagle", "gemm": s / unit, "gemm_plain": pl / unit,
                        "error": e})
    tr.info.update(status=res.status.value, iterations=res.iterations, final_error=res.error,
                   normalise_matvec_gemm=cnt.matvec / unit, total_gemm=cnt.sym / unit,
                   lift_cap=res.info.get("lift_cap"))
    return tr


def summarise(case: Case, tr: Trace) -> Dict:
    first = next((r for r in tr.rows if r["error"] <= TARGET), None)
    inv = [r["invariant"] for r in tr.rows if "invariant" in r]
    out = {"case": case.name, "variant": tr.variant, "policy": tr.policy,
           "gemm_to_1e-10": first["gemm"] if first else float("nan"),
           "gemm_plain_to_1e-10": first["gemm_plain"] if first else float("nan"),
           "steps_to_1e-10": first["step"] if first else -1,
           "final_error": tr.rows[-1]["error"] if tr.rows else float("nan"),
           "min_error": min(r["error"] for r in tr.rows) if tr.rows else float("nan"),
           "total_gemm": tr.info.get("total_gemm", float("nan")),
           "invariant_max_dev": max(inv) if inv else float("nan")}
    for k in ("ell", "recertified", "quintic_steps", "cubic_steps", "amplification",
              "cholesky_tests", "normalise_matvec_gemm", "status", "iterations"):
        if k in tr.info:
            out[k] = tr.info[k]
    return out


# ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench/polynomials")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--kappas", default="1e2,1e4,1e6,1e8")
    ap.add_argument("--switch", type=float, default=poly.DEFAULT_SWITCH,
                    help="hybrid: lift until the interval is within 1 ± switch")
    ap.add_argument("--frozen", type=int, default=20, help="C/D-only steps after the lift")
    ap.add_argument("--smoke", action="store_true", help="n = 60, one seed, κ 1e2 and 1e4")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    if args.smoke:
        args.n, args.seeds, args.kappas = 60, 1, "1e2,1e4"
    kappas = [float(k) for k in args.kappas.split(",")]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    cases = make_cases(kappas, list(range(args.seeds)), args.n)
    summary, traces = [], []
    plan = {"known": ("quintic", "quintic+cd", "hybrid", "lift+frozen"),
            "certified": ("quintic+cd", "hybrid", "lift+frozen"),
            "rcond": ("quintic+cd", "hybrid", "lift+frozen")}
    for i, case in enumerate(cases):
        log.info("[%d/%d] %s seed %s", i + 1, len(cases), case.name, case.problem.meta.get("seed"))
        trs = [run_eagle(case, max_iter=80)]
        for policy, variants in plan.items():
            for variant in variants:
                trs.append(run_variant(case, variant, policy, switch=args.switch,
                                       frozen=args.frozen if variant != "lift+frozen" else 120,
                                       check_invariant=variant == "hybrid" and policy == "known"))
        _collect(case, trs, summary, traces)
    # the switch-over point: hybrid (known ℓ) at κ = 1e4 for several switch bands
    sweep = []
    for case in [c for c in cases if c.name == "kappa=10000"]:
        for sw in (0.5, 0.3, 0.15, 0.1, 0.03, 0.01, None):
            for variant in ("hybrid", "lift+frozen"):
                if variant == "lift+frozen" and sw is None:
                    continue
                tr = run_variant(case, variant, "known", switch=sw, frozen=args.frozen if
                                 variant == "hybrid" else 120, check_invariant=False)
                row = summarise(case, tr)
                row.update(seed=case.problem.meta.get("seed"), switch="auto" if sw is None else sw)
                sweep.append(row)
    _write_csv(os.path.join(args.out, "runs.csv"), summary)
    _write_csv(os.path.join(args.out, "traces.csv"), traces)
    _write_csv(os.path.join(args.out, "switch.csv"), sweep)
    meta = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "machine": platform.platform(), "processor": platform.processor(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "seconds": round(time.time() - t0, 1),
            "n": args.n, "seeds": args.seeds, "switch": args.switch}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    report(args.out)
    log.info("done in %.0f s", time.time() - t0)
    return 0


# ------------------------------------------------------------------------------------------------
# Plots and summary
# ------------------------------------------------------------------------------------------------
def _read(path: str) -> List[Dict]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            try:
                r[k] = float(v)
            except (TypeError, ValueError):
                pass
    return rows


def _sel(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def _med(rows, key) -> str:
    v = [r[key] for r in rows if isinstance(r.get(key), float) and r[key] == r[key]]
    if not v:
        return "not reached"
    m = float(np.median(v))
    return f"{m:.1f}" if min(v) == max(v) else f"{m:.1f} ({min(v):.1f}–{max(v):.1f})"


def _maxe(rows, key="final_error") -> str:
    v = [r[key] for r in rows if isinstance(r.get(key), float)]
    return f"{max(v):.1e}" if v else "–"


VARIANTS = [("(a) EAGLE", "eagle", "-"), ("(b) quintic + read-out", "quintic", "known"),
            ("(b2) quintic + C/D", "quintic+cd", "known"),
            ("(c) hybrid, ℓ known", "hybrid", "known"),
            ("(c) hybrid, ℓ certified", "hybrid", "certified"),
            ("(c) hybrid, ℓ = √eps", "hybrid", "rcond"),
            ("(d) lift + frozen C/D, ℓ certified", "lift+frozen", "certified")]


def report(out: str) -> None:
    runs = _read(os.path.join(out, "runs.csv"))
    traces = _read(os.path.join(out, "traces.csv"))
    sweep = _read(os.path.join(out, "switch.csv"))
    with open(os.path.join(out, "meta.json")) as f:
        meta = json.load(f)
    cases = list(dict.fromkeys(r["case"] for r in runs))

    def end_of_schedule(case, seed_rows):
        # (b): the read-out error when its schedule ends (before the extra steps)
        vals = []
        for r in seed_rows:
            tr = [t for t in _sel(traces, case=case, seed=r["seed"], variant="quintic",
                                  policy="known") if t["phase"] == "quintic"]
            if tr:
                vals.append(tr[-1]["error"])
        return f"{max(vals):.1e}" if vals else "–"

    lines = ["# Faster polynomials with the accuracy kept (issue 16, item 2)", "",
             "Command: `OMP_NUM_THREADS=1 python benchmarks/polynomial_study.py --out "
             f"{out}` ({meta['seconds']:.0f} s; machine: {meta['machine']}, torch "
             f"{meta['torch']}, {meta['threads']} thread, load average "
             f"{', '.join(f'{x:.1f}' for x in meta['load_average'])} — a shared, loaded machine; "
             "every number below is a count or an error, not a time).", "",
             f"Problems: `controlled(n, n, kappa, seed)` with n = d = {meta['n']}, n′ = d′ = 2, "
             f"float64, seeds 0..{meta['seeds'] - 1} (exact geometric spectrum 1 … 1/κ, consistent "
             "data); **rank-deficient**: rank 2n/3, κ = 1e4 on the nonzero part, B and C with "
             "1e-3 relative noise (B has a component in A's null space); **noisy-lstsq**: w A = b "
             "with A n/2 x n (wide, κ = 1e3), b = w*A + 1e-2 relative noise (the residual lies "
             "outside A's row space), C = two random query points (D = w C). Error = "
             "`Problem.error` (relative to the float64 `pinv` reference). GEMM-equivalents are "
             "counted by intercepting every matrix product (symmetric products `XᵀX`, `G·G` at "
             "half: SYRK; unit = one n x d x min(n, d) product); the shared power iteration "
             "(`spectral_norm_sq`, ≤ 1 GEMM-eq of mat-vecs) is excluded for every variant. "
             "Medians over seeds (range in brackets); final errors are the worst seed.", ""]
    lines += ["## GEMM-equivalents to relative error 1e-10, and the final error", "",
              "| case | " + " | ".join(v[0] for v in VARIANTS) + " |",
              "|---|" + "---|" * len(VARIANTS)]
    for case in cases:
        cells = []
        for label, variant, policy in VARIANTS:
            rows = _sel(runs, case=case, variant=variant, policy=policy)
            if not rows:
                cells.append("–")
                continue
            extra = ""
            if variant == "quintic":
                extra = f"; at schedule end {end_of_schedule(case, rows)}"
            cells.append(f"{_med(rows, 'gemm_to_1e-10')} / {_maxe(rows)}{extra}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    refs = [(r["case"], r["reference_vs_exact"]) for r in runs if r["variant"] == "eagle"
            and isinstance(r.get("reference_vs_exact"), float)
            and not math.isnan(r["reference_vs_exact"])]
    if refs:
        lines += ["", "Resolution of the reference (consistent problems): relative distance between "
                  "the float64 `pinv` reference and the exact completion `D_true` of the unrounded "
                  "data — " + ", ".join(f"{c}: {max(v for cc, v in refs if cc == c):.1e}"
                                          for c in dict.fromkeys(c for c, _ in refs)) +
                  ". Errors against the reference below these levels are not resolved (at κ = 1e8 no "
                  "method can show 1e-10)."]
    lines += ["", "Cells: GEMM-equivalents to 1e-10 / final error (EAGLE: at its own stop, "
              "`tol = 1e-10`; (b): after 20 more osculating steps, and when its schedule ends; "
              "(c): after the plan and 20 frozen C/D steps; (d): after 120 thin C/D steps).", ""]
    # ℓ, amplification
    lines += ["## What the schedules did", "",
              "| case | policy | ℓ used (median) | quintic steps | cubic steps | Π a_k (B's outside "
              "component) | Cholesky tests |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        for policy in ("known", "certified", "rcond"):
            rows = _sel(runs, case=case, variant="hybrid", policy=policy)
            if not rows:
                continue
            ells = [r.get("recertified") if isinstance(r.get("recertified"), float) else r["ell"]
                    for r in rows]
            tests = [r.get("cholesky_tests") for r in rows if isinstance(r.get("cholesky_tests"), float)]
            amp = np.median([r["amplification"] for r in rows])
            lines.append(f"| {case} | {policy} | {np.median(ells):.2g} | {_med(rows, 'quintic_steps')}"
                         f" | {_med(rows, 'cubic_steps')} | {amp:.2g}"
                         f" | {np.median(tests) if tests else '–'} |")
    lines += ["", "(certified: `polynomials.certified_lower_bound` on the first Gram matrix; where "
              "that certifies nothing, once more when the schedule's own lower end exceeds twice "
              "`cholesky_error_bound` — the ℓ shown is then the re-certified one.)", ""]
    inv = [(r["case"], r["invariant_max_dev"]) for r in runs if r["variant"] == "hybrid"
           and r["policy"] == "known"]
    lines += ["## The invariant", "",
              "`D + B A⁺ C` after every step of (c), against the reference (numpy `pinv`; "
              "rank-deficient: `pinv(A, rtol=1e-6)`, which separates the nonzero spectrum from "
              "the lifted rounding noise), largest relative deviation over all steps and seeds:", "",
              "| case | max deviation |", "|---|---|"]
    for case in cases:
        v = [x for c, x in inv if c == case]
        lines.append(f"| {case} | {max(v):.1e} |")
    if sweep:
        lines += ["", "## Switch-over point (κ = 1e4, ℓ known)", "",
                  "| switch: lift until 1 ± | (c) hybrid: GEMM to 1e-10 | quintic + cubic steps | "
                  "final | (d) lift + frozen: GEMM to 1e-10 | final |", "|---|---|---|---|---|---|"]
        for sw in dict.fromkeys(r["switch"] for r in sweep):
            h = _sel(sweep, switch=sw, variant="hybrid")
            f_ = _sel(sweep, switch=sw, variant="lift+frozen")
            lines.append(f"| {sw} | {_med(h, 'gemm_to_1e-10')} | {_med(h, 'quintic_steps')} + "
                         f"{_med(h, 'cubic_steps')} | {_maxe(h)} | "
                         f"{_med(f_, 'gemm_to_1e-10') if f_ else '–'} | {_maxe(f_) if f_ else '–'} |")
    lines += ["", "Plots: `error_vs_gemm.png` (κ = 1e4, seed 0), `gemm_vs_kappa.png`, "
              "`floor.png` (rank-deficient and noisy-lstsq, seed 0). Data: `runs.csv` (one row per "
              "problem x variant x policy), `traces.csv` (every step), `switch.csv`.", ""]
    lines += [ANALYSIS]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plots(out, runs, traces)


def _plots(out, runs, traces) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles = [("eagle", "-", "(a) EAGLE"), ("quintic", "known", "(b) quintic + read-out"),
              ("quintic+cd", "known", "(b2) quintic + C/D"), ("hybrid", "known", "(c) hybrid, ℓ known"),
              ("hybrid", "certified", "(c) hybrid, ℓ certified"),
              ("hybrid", "rcond", "(c) hybrid, ℓ = √eps"),
              ("lift+frozen", "certified", "(d) lift + frozen C/D")]

    def curve(ax, case, seed, variant, policy, label):
        t = _sel(traces, case=case, seed=seed, variant=variant, policy=policy)
        if t:
            ax.semilogy([r["gemm"] for r in t], [max(r["error"], 1e-17) for r in t], ".-",
                        label=label, ms=3)

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for v, pol, lab in styles:
        curve(ax, "kappa=10000", 0.0, v, pol, lab)
    ax.axhline(1e-10, color="k", lw=0.6, ls=":")
    ax.axvline(24, color="r", lw=0.6, ls=":")
    ax.set(xlabel="GEMM-equivalents (symmetric products at half)", ylabel="relative error",
           title="κ = 1e4, n = d = 300, seed 0", xlim=(0, 60), ylim=(1e-16, 1e1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "error_vs_gemm.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    kap = sorted({float(c.split("=")[1]) for c in (r["case"] for r in runs) if c.startswith("kappa=")})
    for v, pol, lab in styles:
        ys = []
        for k in kap:
            rows = _sel(runs, case=f"kappa={k:g}", variant=v, policy=pol)
            g = [r["gemm_to_1e-10"] for r in rows if r["gemm_to_1e-10"] == r["gemm_to_1e-10"]]
            ys.append(np.median(g) if len(g) == len(rows) and g else np.nan)
        ax.plot(kap, ys, "o-", label=lab, ms=4)
    ax.set_xscale("log")
    ax.axhline(24, color="r", lw=0.6, ls=":")
    ax.set(xlabel="κ(A)", ylabel="GEMM-equivalents to 1e-10 (median)", title="n = d = 300")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gemm_vs_kappa.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, case in zip(axes, ("rank-deficient", "noisy-lstsq")):
        for v, pol, lab in styles:
            curve(ax, case, 0.0, v, pol, lab)
        ax.axhline(1e-10, color="k", lw=0.6, ls=":")
        ax.set(xlabel="GEMM-equivalents", ylabel="relative error", title=f"{case}, seed 0",
               ylim=(1e-16, 1e1))
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "floor.png"), dpi=110)
    plt.close(fig)


ANALYSIS = """## Analysis (numbers from the run above; counts and errors are deterministic given the seeds)

**The target.** At κ = 1e4 EAGLE needs 41.2 GEMM-equivalents to 1e-10 (27 iterations x 1.5 plus
thin products: the audit's 42). The hybrid (c) needs 19.3 with ℓ = 1/κ known and **20.0 with ℓ
certified from the data** (the 4 Cholesky tests, 0.67, included), and every variant ends at
5.3e-13 — which is the resolution of the reference itself at κ = 1e4 (`pinv` against the exact
completion of the unrounded data: 5.3e-13). So "≤ 24 GEMM-equivalents to 1e-10 with final error
≤ 1e-12" holds, both at once, in the audit's unit (symmetric products at half, SYRK). In plain
GEMMs (every product 2mkn: torch below n = 400, GPUs without SYRK) the same runs count 54.7 for
EAGLE and 29.0 for (c) certified (25.0 for (d)): the quintic step is 3 plain GEMMs (G, G², A P)
against 2 for the cubic, so the ratio drops from 2.1x to 1.9x and 24 is missed in that unit.

**ℓ decides the cost.** The cubic is ℓ-free (it lifts every small σ by 1.5 per step); the greedy
schedule is designed for its assumed ℓ and costs about log(1/ℓ)/log(4.1) + 3 steps (after the
first step the cushioned quintic lifts the bottom by ~4.1 relative to the top, 0.71 nats per
GEMM-eq against 0.27 for the cubic). With ℓ = √eps (no knowledge) the plan costs 31.5 at every
κ ≤ 1e6 — still 1.3x-1.8x below EAGLE at κ ≥ 1e4, but above 24. `certified_lower_bound` turns ℓ
into a property of the data: Cholesky of G − (ℓ² + e)I on the first Gram matrix (which the first
step forms anyway) proves σ_min ≥ ℓ; the candidates are the breakpoints where the plan gets
cheaper, so 4-5 factorisations (0.7-0.8 GEMM-eq) find the cheapest certified plan. The rounding
bound e limits it to σ_min ≥ 3.2e-6 at k = 300 (κ ≲ 3e5); beyond, one more attempt once the
schedule's own lower end passes 2·sqrt(e) certifies after ~4 steps (κ = 1e6: 26.9 against 31.5,
EAGLE 58.0). It cannot certify a rank-deficient A (λ_min(G) = 0): there the √eps plan runs (32.9
with 8 wasted tests). A fixed "lift until 1 ± 0.1" is not monotone in ℓ (ℓ = 1e-4 costs 20,
6.8e-5 costs 19): `plan_for` takes the cheapest valid plan.

**The rounding floor, and why the hybrid does not have it.** Write B = B_∥ + B_⊥ with B_⊥ outside
A's row space (the residual of a noisy least-squares problem; B's part in A's null space). The
right factor is P = V (p(Σ)/Σ) Vᵀ + a (I − VVᵀ), so every step multiplies B_⊥ by a = p'(0) exactly
(cubic 1.5; cushioned quintic ~8 then ~4; the osculating quintic near convergence 15/8), and a
numerically null singular value of A (≈ u) grows by the same factor. In exact arithmetic B_⊥
never reaches D (B_⊥A⁺ = 0). In floating point every product with B_k leaks about u·‖B_k‖ into
A's row space, so what matters is how much mass is still to be moved when Π a_k is large.
The read-out (b) moves all of it at the end: error ≈ u·Π a_k·‖B_⊥‖‖C‖/‖D̂‖, and with A rank
deficient, where the null singular values are lifted as well, ≈ u·(Π a_k)²·…. Measured: at the
end of its schedule 9.5e-14 (noisy-lstsq) and 9.3e-13 (rank-deficient), then each further
osculating step multiplies the error by 1.84-1.88 (= 15/8) and 3.52 (= (15/8)²) respectively —
2.8e-9 and 7.1e-3 after 20 steps — and by 1.00 on consistent data (B_⊥ = 0). So the floor belongs
to the read-out; the polynomial's aggressiveness only sets how fast it grows. The hybrid avoids it
by (1) the C/D step at every lift step: a direction of singular value σ is transferred into D as
soon as it is lifted, when Π a_k ≈ 1/σ — as with EAGLE's cubic, whose leak is the problem's own
u·κ·‖B_⊥‖ — and afterwards further amplification only multiplies the remaining C, which
contracts by |1 − ρ²σ⁴| per step; (b2) runs exactly the steps of (b) with the C/D step and ends at
1.0e-13 / 6.2e-13, EAGLE's values; (2) a finish that never reads out (cubic and/or C/D-only
steps); (3) an ℓ close to the truth, so the amplification does not run ahead of the lift. Where it
does — ℓ = √eps when σ_min = 1e-3 — Π a_k = 3.3e8 against the 9.2e3 needed, the true spectrum
waits in the cushioned band [~0.1, 1] for ~9 steps where the C/D step moves mass slowly, and B_⊥
grows ~4x per step meanwhile: noisy-lstsq ends at 1.2e-11 (certified ℓ: 9.7e-14), the
rank-deficient case at 1.5e-12 (EAGLE 6.2e-13). The latter is the one case left above 1e-12: no
Cholesky certificate exists for a rank-deficient A (an inertia count by LDLᵀ could certify the
gap between the null cluster and the nonzero spectrum; not done here).

**The invariant.** D + B A⁺ C against numpy's pinv after every step of (c) deviates by at most the
reference's own resolution (5.5e-13 at κ = 1e4, 1.1e-13 noisy-lstsq, 6.2e-13 rank-deficient with a
1e-6 pinv cut-off); `tests/test_polynomials.py` checks it to 1e-10 on tall, square and wide A.

**Switch-over.** Every finish reaches the same final error, so the cubic phase is not needed for
accuracy: the cost-optimal plan (`switch=None`: all quintic, 9 steps at κ = 1e4) with the C/D step
reaches 1e-10 at 18.3, and (d) — lift to 1 ± 0.05…0.15, then freeze A and B and run the C/D step
alone (thin products when d′ ≪ n) — at 15.3 (ℓ known) / 17.0 (certified). The cubic's value is
robustness: it is self-correcting on (0, √3), so singular values left below an over-estimated ℓ are
still lifted (as are they by the quintic steps, monotonically). Recommended rule: lift with
`plan_for(ℓ_cert, switch=0.1)` and the C/D step (ρ = 1/top²) at every step; then, when the C/D
step is thin, certify A (kernels.well_conditioned, one Gram) and freeze; otherwise (C = I, where
each C/D step costs ~3 GEMMs) run the plan's cubic steps in EAGLE's stable form.

**Not measured here:** wall-clock (the machine is shared and loaded); n ≠ 300 (the counts are
scale-free for square A, but the thin products' share grows like d′/n); float32 (the certificate
needs G in float64 there).
"""


def _collect(case: Case, trs: List[Trace], summary: List[Dict], traces: List[Dict]) -> None:
    seed = case.problem.meta.get("seed")
    # consistent problems: how far the float64 pinv reference is from the exact completion of the
    # unrounded data (D_true) — errors below this are not resolved
    ref_err = case.problem.error(case.problem.D_true) if case.name.startswith("kappa") else float("nan")
    for tr in trs:
        row = summarise(case, tr)
        row["seed"] = seed
        row["reference_vs_exact"] = ref_err
        summary.append(row)
        for r in tr.rows:
            traces.append({"case": case.name, "seed": seed, "variant": tr.variant,
                           "policy": tr.policy, **r})


def _write_csv(path: str, rows: List[Dict]) -> None:
    rows = [{k: (float(f"{v:.5g}") if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows]                            # 5 significant digits: files stay small
    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
