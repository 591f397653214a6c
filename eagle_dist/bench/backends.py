"""Backends sweep (``eagle-dist bench backends``): :func:`backends_sweep`.

- *per-round wall-clock* of the in-process, torch (gloo, M processes) and Ray (M actors)
  backends at ``n = d_μ = 2000, n' = d' = 1, M = 4`` (compute-bound) and ``n = d_μ = 100``
  (latency-bound), for EAGLE and GD. Per-round time = ``info["rounds_time_s"] / rounds`` (the
  round loop only); start-up (``time_s − rounds_time_s``: processes / actors, process group,
  data transfer, normalisation) is reported separately. Issue target: ≤ 1.5× in-process at
  n = 2000. The in-process backend is timed with one and with the default number of torch threads
  and the faster is the baseline.
- *accelerated variant*: rounds and wall-clock, ``accelerate=True`` vs ``False``.
- *local vs global normalisation* on shards of unequal norm (‖A^μ‖ from 1 down to 0.1), on
  consistent and on noisy data.
- *noisy-data gap*: one noisy problem (σ = 0.01 on every block) split into M ∈ {1, 2, 4, 8}
  shards; distributed EAGLE's final error against the Nyström estimate ``B A⁺ C`` (the gap,
  the paper's caveat) and against the noiseless truth, next to centralized EAGLE.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..api import solve
from ..data import controlled, distribution
from ..distributed.shards import alpha_problem, diversity_index, make_shards
from ..kernels import lift_cap
from ..problem import Problem
from . import report
from .common import ERR_FLOOR as _ERR_FLOOR, NO_TOL as _NO_TOL, RESULTS_ROOT
from .common import check_positive_int as _check_positive_int, ints as _ints
from .common import print_headline as _print_headline, progress as _progress
from .common import resolve as _resolve, strs as _strs, threads as _threads
from .dist_common import SweepResult, add_distributed_args
from .dist_common import distributed_solve as _distributed_solve, yes as _yes

log = logging.getLogger(__name__)


BACKENDS_FULL = dict(n_large=2000, n_small=100, workers=4, backends=("inprocess", "torch", "ray"),
                     methods=("eagle", "gd"), rounds_large=5, rounds_small=200, gd_rounds_large=100,
                     repeats=2, repeats_small=3, accel_n=800, accel_workers=4,
                     accel_alphas=(1.0, 0.35),
                     accel_cap=2000, norm_n=300, norm_workers=4, noise_n=200, noise_d=1600,
                     noise_workers=(1, 2, 4, 8), noise_cap=3000)
BACKENDS_SMOKE = dict(n_large=24, n_small=8, workers=2, backends=("inprocess", "torch"),
                      methods=("eagle",), rounds_large=3, rounds_small=10, gd_rounds_large=10,
                      repeats=1, repeats_small=1, accel_n=16, accel_workers=2,
                      accel_alphas=(1.0, 0.35),
                      accel_cap=400, norm_n=16, norm_workers=2, noise_n=12, noise_d=48,
                      noise_workers=(1, 2, 4), noise_cap=400)


def _timing_problem(n: int, workers: int, seed: int):
    """``n x (M·n)`` with κ = 1e3, ``n' = d' = 1``; shard μ is the contiguous ``n x n`` block."""
    prob = controlled(n, workers * n, 1, 1, kappa=1e3, seed=seed)
    return prob, make_shards(prob.d, workers, "contiguous")


def _timing_configs(cfg) -> List[Tuple[int, str, int, int, int]]:
    """``(n, method, rounds, workers, repeats)`` of every timing configuration. When M exceeds the
    cores, a latency check at ``n_small`` with M = cores separates gloo's own latency from the
    cost of oversubscribing the cores."""
    M, out = cfg["workers"], []
    for n in (cfg["n_large"], cfg["n_small"]):
        for m in cfg["methods"]:
            if n == cfg["n_large"]:
                R = cfg["rounds_large"] if m == "eagle" else cfg["gd_rounds_large"]
                out.append((n, m, R, M, cfg["repeats"]))
            else:
                out.append((n, m, cfg["rounds_small"], M, cfg["repeats_small"]))
    cores = os.cpu_count() or 1
    if M > cores >= 2 and "gd" in cfg["methods"]:
        out.append((cfg["n_small"], "gd", cfg["rounds_small"], cores, cfg["repeats_small"]))
    return out


def _per_round_rows(cfg, seed, threads, progress) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    from ..distributed.runtime import shutdown_ray
    rows: List[Dict[str, Any]] = []
    cold: Dict[str, float] = {}
    backends = list(cfg["backends"])
    configs = _timing_configs(cfg)
    variants = []
    for b in backends:
        if b == "inprocess":
            default_threads = threads if threads is not None else torch.get_num_threads()
            variants += [("inprocess", 1)] + ([("inprocess", default_threads)]
                                              if default_threads != 1 else [])
        else:
            variants.append((b, None))
    total = sum(c[4] for c in configs) * len(variants) + ("ray" in backends)
    bar = _progress(total, "backends", progress)
    try:
        if "ray" in backends:
            # Ray's own start (ray.init) is a one-off per driver: measure it apart, on a tiny solve
            p, sh = _timing_problem(8, cfg["workers"], seed)
            t0 = time.perf_counter()
            _distributed_solve(p, sh, "eagle", max_iter=2, tol=_NO_TOL, record_error=False,
                               backend="ray")
            cold["ray_first_solve_s (ray.init + actors)"] = time.perf_counter() - t0
            bar.update(1)
        for n, m, R, M, repeats in configs:
            prob, shards = _timing_problem(n, M, seed)
            ref_D = None
            for rep in range(repeats):
                for b, th in variants:
                    with _threads(th):
                        t0 = time.perf_counter()
                        # verify=False: time the paper's bare (n + n')·d' message
                        res = _distributed_solve(prob, shards, m, max_iter=R, tol=_NO_TOL,
                                                 record_error=False, backend=b, verify=False)
                        wall = time.perf_counter() - t0
                    rt = float(res.info["rounds_time_s"])
                    if b == "inprocess" and ref_D is None:
                        ref_D = res.D
                    dev = float(np.linalg.norm(res.D - ref_D) / max(np.linalg.norm(ref_D), 1e-300))
                    name = b if b != "inprocess" else f"inprocess ({th} thread{'s' if th > 1 else ''})"
                    rows.append({
                        "n": n, "d_per_worker": n, "workers": M, "method": m, "backend": name,
                        "backend_resolved": res.backend, "repeat": rep, "rounds": res.iterations,
                        "rounds_time_s": rt, "per_round_ms": 1e3 * rt / max(res.iterations, 1),
                        "startup_s": res.time_s - rt, "wall_s": wall,
                        "bytes_per_worker_per_round": res.bytes_per_worker_per_round,
                        "D_rel_diff_vs_inprocess": dev,
                    })
                    log.info("n=%d M=%d %s %s: %d rounds, %.3f ms/round, start-up %.2f s", n, M, m,
                             name, res.iterations, rows[-1]["per_round_ms"], rows[-1]["startup_s"])
                    bar.update(1)
    finally:
        bar.close()
        if "ray" in backends:
            shutdown_ray()
    return rows, cold


def _per_round_summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["n"], r["workers"], r["method"], r["backend"]), []).append(r)
    out = []
    for (n, M, m, b), rs in groups.items():
        pr = report.stats(r["per_round_ms"] for r in rs)
        su = report.stats(r["startup_s"] for r in rs)
        out.append({"n": n, "workers": M, "method": m, "backend": b, "runs": len(rs),
                    "rounds": rs[0]["rounds"], "per_round_ms": pr["median"],
                    "per_round_ms_min": pr["min"], "per_round_ms_max": pr["max"],
                    "startup_s": su["median"],
                    "bytes_per_worker_per_round": rs[0]["bytes_per_worker_per_round"],
                    "D_rel_diff_vs_inprocess": max(r["D_rel_diff_vs_inprocess"] for r in rs)})
    for s in out:
        base = [t["per_round_ms"] for t in out if (t["n"], t["workers"], t["method"]) ==
                (s["n"], s["workers"], s["method"]) and t["backend"].startswith("inprocess")]
        s["inprocess_best_ms"] = min(base) if base else math.nan
        s["ratio_vs_inprocess_best"] = s["per_round_ms"] / s["inprocess_best_ms"] if base else math.nan
    return out


def _accel_rows(cfg, seed, progress) -> List[Dict[str, Any]]:
    rows = []
    bar = _progress(2 * len(cfg["accel_alphas"]), "accelerated", progress)
    for a in cfg["accel_alphas"]:
        prob, shards = alpha_problem(cfg["accel_n"], cfg["accel_n"], cfg["accel_workers"], alpha=a,
                                     kappa_max=1e3, n_query=2, d_query=1, seed=seed)
        _ = prob.reference, prob.error_denominator
        pair = {}
        for m in ("eagle", "eagle-accel"):
            t0 = time.perf_counter()
            res = _distributed_solve(prob, shards, m, target_error=1e-8, max_iter=cfg["accel_cap"])
            wall = time.perf_counter() - t0
            pair[m] = res
            rows.append({"alpha_target": a, "alpha": prob.meta["alpha"], "n": cfg["accel_n"],
                         "workers": len(shards), "variant": "accelerated" if m == "eagle-accel"
                         else "plain", "status": res.status.value,
                         "reached": bool(res.status.ok and res.error <= 1e-8),
                         "rounds": res.iterations, "final_error": res.error,
                         "rounds_time_s": res.info["rounds_time_s"], "wall_s": wall,
                         "ab_frozen_at": res.info.get("ab_frozen_at_max", "")})
            bar.update(1)
        p, q = pair["eagle"], pair["eagle-accel"]
        for r in rows[-2:]:
            r["speedup_plain_over_accel"] = p.info["rounds_time_s"] / q.info["rounds_time_s"]
            r["rounds_equal"] = p.iterations == q.iterations
        log.info("accelerated α=%g: rounds %d vs %d, time %.2f s vs %.2f s", a, p.iterations,
                 q.iterations, p.info["rounds_time_s"], q.info["rounds_time_s"])
    bar.close()
    return rows


def _scaled_shards_problem(n: int, workers: int, noise: float, seed: int):
    """``alpha_problem(n, n, M, α = 1)`` with shard μ's columns of A and B scaled by
    ``s_μ = 10^(−μ/(M−1))`` (‖A^μ‖ from 1 to 0.1), then i.i.d. ``N(0, noise²)`` on every block.
    Scaling A^μ and B^μ together keeps consistent data consistent (``B = W A``)."""
    clean, shards = alpha_problem(n, n, workers, alpha=1.0, kappa_max=1e3, n_query=2, d_query=1,
                                  seed=seed)
    A, B = clean.A.copy(), clean.B.copy()
    scales = np.logspace(0.0, -1.0, workers) if workers > 1 else np.ones(1)
    for s, f in zip(shards, scales):
        A[:, s] *= f
        B[:, s] *= f
    C, D = clean.C.copy(), clean.D_true.copy() if clean.D_true is not None else None
    if noise > 0:
        rng = np.random.default_rng(seed + 1)
        A, B, C = (x + noise * rng.standard_normal(x.shape) for x in (A, B, C))
    prob = Problem.from_arrays(A, B, C, D, name=f"scaled-shards(M={workers},noise={noise:g})",
                               meta=dict(shard_scales=scales.tolist(), noise=noise))
    return prob, shards


def _norm_rows(cfg, seed, progress) -> List[Dict[str, Any]]:
    rows = []
    bar = _progress(4, "normalisation", progress)
    for noise in (0.0, 0.01):
        prob, shards = _scaled_shards_problem(cfg["norm_n"], cfg["norm_workers"], noise, seed)
        for norm in ("local", "global"):
            kw = dict(target_error=1e-8) if noise == 0 else dict(tol=1e-10)
            res = _distributed_solve(prob, shards, "eagle", normalization=norm,
                                     max_iter=cfg["accel_cap"], **kw)
            truth = prob.D_true                     # noiseless W A Z (D gets no noise)
            rows.append({"data": "consistent" if noise == 0 else f"noisy σ={noise:g}",
                         "normalization": norm, "n": cfg["norm_n"], "workers": len(shards),
                         "shard_norms": "1 … 0.1 (log-spaced)", "status": res.status.value,
                         "rounds": res.iterations, "error_vs_nystrom": res.error,
                         "nystrom_error_vs_clean_truth":
                             float(np.linalg.norm(prob.reference - truth) / np.linalg.norm(truth)),
                         "error_vs_clean_truth":
                             float(np.linalg.norm(res.D - truth) / np.linalg.norm(truth)),
                         "rounds_time_s": res.info["rounds_time_s"]})
            bar.update(1)
    bar.close()
    return rows


NOISY_DATA = {
    # name -> generator(n, d, noise, seed); the same seed with noise = 0 is the noiseless twin
    "controlled κ=1e3": lambda n, d, noise, seed: controlled(n, d, 2, 1, kappa=1e3, noise=noise,
                                                            seed=seed),
    "gaussian": lambda n, d, noise, seed: distribution("gaussian", n, d, 2, 1, noise=noise,
                                                       seed=seed),
}


def _noise_rows(cfg, seed, noise, progress) -> List[Dict[str, Any]]:
    """One noisy problem per data set split into M shards; distributed vs centralized EAGLE vs
    the Nyström estimate, each also against the noiseless truth."""
    n, d = cfg["noise_n"], cfg["noise_d"]
    Ms = [m for m in cfg["noise_workers"] if 1 <= m <= d]
    rows: List[Dict[str, Any]] = []
    bar = _progress(len(NOISY_DATA) * (2 * len(Ms) + 1), "noisy gap", progress)
    for data, make in NOISY_DATA.items():
        noisy = make(n, d, noise, seed)
        truth = make(n, d, 0.0, seed).reference          # same draws, no noise: consistent, = D
        den_t = float(np.linalg.norm(truth))
        signal = float(np.sqrt(np.mean(make(n, d, 0.0, seed).A ** 2)))

        def row(M, alpha, method, norm, res=None, D=None):
            D = res.D if res is not None else D
            return {"data": data, "n": n, "d": d, "noise": noise, "rms_entry_of_A": signal,
                    "workers": M, "alpha": alpha, "method": method, "normalization": norm,
                    "status": res.status.value if res is not None else "",
                    "rounds": res.iterations if res is not None else "",
                    "gap_to_nystrom": noisy.error(D),
                    "error_vs_clean_truth": float(np.linalg.norm(D - truth) / den_t)}

        central = solve(noisy, "eagle", tol=1e-10, max_iter=cfg["noise_cap"])
        rows.append(row(1, math.nan, "centralized EAGLE", "—", central))
        rows.append(row(1, math.nan, "Nyström B A⁺ C (pinv)", "—", D=noisy.reference))
        bar.update(1)
        for M in Ms:
            shards = make_shards(d, M, "contiguous")
            alpha = diversity_index(noisy.A, shards)
            for norm in ("local", "global"):
                res = _distributed_solve(noisy, shards, "eagle", normalization=norm, tol=1e-10,
                                         max_iter=cfg["noise_cap"])
                rows.append(row(M, alpha, "distributed EAGLE", norm, res))
                bar.update(1)
            log.info("noisy gap (%s) M=%d: %.3g (local), %.3g (global)", data, M,
                     rows[-2]["gap_to_nystrom"], rows[-1]["gap_to_nystrom"])
    bar.close()
    return rows


def backends_sweep(out: Optional[str] = None, *, n_large: Optional[int] = None,
                   n_small: Optional[int] = None, workers: Optional[int] = None,
                   backends: Optional[Sequence[str]] = None, methods: Optional[Sequence[str]] = None,
                   rounds_large: Optional[int] = None, rounds_small: Optional[int] = None,
                   gd_rounds_large: Optional[int] = None, repeats: Optional[int] = None,
                   repeats_small: Optional[int] = None,
                   accel_n: Optional[int] = None, norm_n: Optional[int] = None,
                   noise_n: Optional[int] = None, noise_d: Optional[int] = None,
                   noise_workers: Optional[Sequence[int]] = None, noise: float = 0.01,
                   seed: int = 0, threads: Optional[int] = None, smoke: bool = False,
                   progress: bool = True) -> SweepResult:
    """Per-round wall-clock by backend, the accelerated variant, local vs global normalisation
    and the noisy-data gap (module docstring).

    Timing runs use ``controlled(n, M·n, 1, 1, κ = 1e3)`` split into ``n x n`` shards and run a
    fixed number of rounds (``rounds_large`` EAGLE / ``gd_rounds_large`` GD rounds at
    ``n_large``, ``rounds_small`` at ``n_small``; EAGLE stops earlier once D stops changing
    exactly, identically on every backend). ``smoke=True`` shrinks everything and uses only the
    in-process and torch backends.
    """
    if smoke and threads is None:
        threads = 1     # see rounds_sweep
    cfg = _resolve(smoke, BACKENDS_FULL, BACKENDS_SMOKE, dict(
        n_large=n_large, n_small=n_small, workers=workers, backends=backends, methods=methods,
        rounds_large=rounds_large, rounds_small=rounds_small, gd_rounds_large=gd_rounds_large,
        repeats=repeats, repeats_small=repeats_small, accel_n=accel_n, norm_n=norm_n,
        noise_n=noise_n, noise_d=noise_d,
        noise_workers=noise_workers))
    for k in ("n_large", "n_small", "workers", "rounds_large", "rounds_small", "gd_rounds_large",
              "repeats", "repeats_small", "accel_n", "norm_n", "noise_n", "noise_d"):
        _check_positive_int(k, cfg[k])
    unknown = [b for b in cfg["backends"] if b not in ("inprocess", "torch", "ray")]
    if unknown:
        raise ValueError(f"backends {unknown} are unknown; use inprocess, torch, ray")
    if "inprocess" not in cfg["backends"]:
        raise ValueError("backends must include 'inprocess' (it is the baseline of every ratio)")
    bad_m = [m for m in cfg["methods"] if m not in ("eagle", "gd")]
    if bad_m:
        raise ValueError(f"methods {bad_m}: use eagle, gd")
    if not (noise > 0):
        raise ValueError(f"noise={noise!r} must be > 0 (the noisy-gap experiment needs noise)")
    out = out or os.path.join(RESULTS_ROOT, "backends")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench backends", dict(
        out=out, n_large=cfg["n_large"], n_small=cfg["n_small"], workers=cfg["workers"],
        backends=list(cfg["backends"]), methods=list(cfg["methods"]),
        rounds_large=cfg["rounds_large"], rounds_small=cfg["rounds_small"],
        gd_rounds_large=cfg["gd_rounds_large"], repeats=cfg["repeats"],
        repeats_small=cfg["repeats_small"], accel_n=cfg["accel_n"],
        norm_n=cfg["norm_n"], noise_n=cfg["noise_n"], noise_d=cfg["noise_d"],
        noise_workers=list(cfg["noise_workers"]), noise=noise, seed=seed, threads=threads),
        ["smoke"] if smoke else [])
    t_start = time.perf_counter()
    with _threads(threads):
        machine = report.machine_description()
        load_start = report.load_average()
        log.info("backends sweep: %s", command)
        timing, cold = _per_round_rows(cfg, seed, threads, progress)
        timing_summary = _per_round_summary(timing)
        accel = _accel_rows(cfg, seed, progress)
        norm = _norm_rows(cfg, seed, progress)
        gap = _noise_rows(cfg, seed, noise, progress)
        load_end = report.load_average()
    elapsed = time.perf_counter() - t_start
    headline = _backends_headline(timing_summary, accel, norm, gap, cfg)
    files = [report.write_csv(timing, os.path.join(out, "per_round.csv")),
             report.write_csv(timing_summary, os.path.join(out, "per_round_summary.csv")),
             report.write_csv(accel, os.path.join(out, "accelerate.csv")),
             report.write_csv(norm, os.path.join(out, "normalization.csv")),
             report.write_csv(gap, os.path.join(out, "noisy_gap.csv"))]
    files += _backends_plots(out, timing_summary, gap, cfg)
    files.append(_backends_markdown(out, command, machine, timing_summary, accel, norm, gap,
                                    headline, cold, cfg, noise, elapsed, load_start, load_end,
                                    threads, smoke, files))
    log.info("backends sweep written to %s (%.0f s)", out, elapsed)
    return SweepResult("backends", out, {"per_round": timing, "per_round_summary": timing_summary,
                                         "accelerate": accel, "normalization": norm,
                                         "noisy_gap": gap}, headline, files, command)


def _backends_headline(summary, accel, norm, gap, cfg) -> Dict[str, Any]:
    h: Dict[str, Any] = {}
    for s in summary:
        if not s["backend"].startswith("inprocess"):
            h[f"ratio_{s['backend']}_n{s['n']}_M{s['workers']}_{s['method']}"] = \
                s["ratio_vs_inprocess_best"]
    for m in cfg["methods"]:
        big = [s for s in summary if s["n"] == cfg["n_large"] and s["method"] == m
               and not s["backend"].startswith("inprocess")]
        if big:
            h[f"worst_ratio_at_n_large_{m}"] = max(s["ratio_vs_inprocess_best"] for s in big)
            h[f"target_le_1.5x_at_n_large_met_{m}"] = bool(h[f"worst_ratio_at_n_large_{m}"] <= 1.5)
    h["max_D_rel_diff_between_backends"] = max((s["D_rel_diff_vs_inprocess"] for s in summary),
                                               default=math.nan)
    for r in accel:
        if r["variant"] == "accelerated":
            h[f"accel_speedup_alpha{r['alpha_target']:g}"] = r["speedup_plain_over_accel"]
            h[f"accel_rounds_equal_alpha{r['alpha_target']:g}"] = r["rounds_equal"]
    for data in NOISY_DATA:
        dist = [r for r in gap if r["data"] == data and r["method"] == "distributed EAGLE"
                and r["normalization"] == "local"]
        if dist:
            h[f"noisy_gap_by_M_local ({data})"] = ", ".join(
                f"M={r['workers']}: {r['gap_to_nystrom']:.2e}" for r in dist)
    return h


def _backends_plots(out, summary, gap, cfg) -> List[str]:
    files = []
    panels = []
    configs = []
    for s in summary:
        if (s["n"], s["workers"], s["method"]) not in configs:
            configs.append((s["n"], s["workers"], s["method"]))
    palette = ["#7f7f7f", "#bcbd22", "#1f77b4", "#ff7f0e", "#9467bd"]
    backend_names = []
    for s in summary:
        if s["backend"] not in backend_names:
            backend_names.append(s["backend"])
    for n, M, m in configs:
        ss = [s for s in summary if (s["n"], s["workers"], s["method"]) == (n, M, m)]
        series = []
        labels = [b.replace(" (", "\n(") for b in backend_names]
        for i, b in enumerate(backend_names):
            s = next((t for t in ss if t["backend"] == b), None)
            if s is None:
                continue
            series.append(dict(x=[i], y=[s["per_round_ms"]], label=b, kind="bar", width=0.7,
                               color=palette[i % len(palette)]))
            labels[i] = (f"{b.replace(' (', chr(10) + '(')}\n{s['per_round_ms']:.3g} ms\n"
                         f"×{s['ratio_vs_inprocess_best']:.2f}")
        panels.append(dict(title=f"{m.upper()}, n = d_μ = {n}, M = {M} ({ss[0]['rounds']} rounds)",
                           xlabel="", ylabel="ms per round (round loop only)", series=series,
                           xticks=list(range(len(backend_names))),
                           xticklabels=labels))
    files.append(report.plot_panels(os.path.join(out, "per_round_time.png"), panels,
                                    ncols=min(3, len(panels)), panel_size=(4.6, 4.6),
                                    title="per-round wall-clock by backend (×: ratio to the faster "
                                          "in-process run); start-up excluded", legend="none"))
    panels = []
    for data in NOISY_DATA:
        g = [r for r in gap if r["data"] == data]
        dist = sorted({r["workers"] for r in g if r["method"] == "distributed EAGLE"})
        if not dist:
            continue
        series_gap, series_err = [], []
        for norm, col, mk in (("local", "#d62728", "o"), ("global", "#1f77b4", "s")):
            rs = [r for r in g if r["method"] == "distributed EAGLE" and r["normalization"] == norm]
            series_gap.append(dict(x=[r["workers"] for r in rs],
                                   y=[max(r["gap_to_nystrom"], _ERR_FLOOR) for r in rs],
                                   label=f"distributed EAGLE ({norm})", color=col, marker=mk))
            series_err.append(dict(x=[r["workers"] for r in rs],
                                   y=[r["error_vs_clean_truth"] for r in rs],
                                   label=f"distributed EAGLE ({norm})", color=col, marker=mk))
        c = next(r for r in g if r["method"] == "centralized EAGLE")
        ny = next(r for r in g if r["method"].startswith("Nyström"))
        series_gap.append(dict(x=dist, y=[max(c["gap_to_nystrom"], _ERR_FLOOR)] * len(dist),
                               label=f"centralized EAGLE ({c['gap_to_nystrom']:.1e})",
                               color="black", linestyle="--"))
        series_err.append(dict(x=dist, y=[c["error_vs_clean_truth"]] * len(dist),
                               label="centralized EAGLE", color="black", linestyle="--"))
        series_err.append(dict(x=dist, y=[ny["error_vs_clean_truth"]] * len(dist),
                               label="Nyström B A⁺ C (pinv) = centralized EAGLE",
                               color="#7f7f7f", linestyle=":", linewidth=3.0))
        n, d = g[0]["n"], g[0]["d"]
        panels += [dict(title=f"{data}, σ = {g[0]['noise']:g}: gap to Nyström (n = {n}, d = {d})",
                        xlabel="workers M (d/M columns each)", ylabel="‖D − B A⁺ C‖ / ‖B A⁺ C‖",
                        logy=True, series=series_gap, xticks=dist),
                   dict(title=f"{data}: error against the noiseless truth", xlabel="workers M",
                        ylabel="‖D − D_clean‖ / ‖D_clean‖", series=series_err, xticks=dist)]
    if panels:
        files.append(report.plot_panels(os.path.join(out, "noisy_gap.png"), panels, ncols=2,
                                        panel_size=(5.8, 4.2), legend="axes"))
    return files


def _backends_markdown(out, command, machine, summary, accel, norm, gap, h, cold, cfg, noise,
                       elapsed, load_start, load_end, threads, smoke, files) -> str:
    head = ["| target / question | measured | verdict |", "|---|---|---|"]
    for m in cfg["methods"]:
        if f"worst_ratio_at_n_large_{m}" not in h:
            continue
        big = [s for s in summary if s["n"] == cfg["n_large"] and s["method"] == m
               and not s["backend"].startswith("inprocess")]
        detail = ", ".join(f"{s['backend']} ×{s['ratio_vs_inprocess_best']:.2f} "
                           f"({s['per_round_ms']:.3g} vs {s['inprocess_best_ms']:.3g} ms)"
                           for s in big)
        head.append(f"| {m.upper()}: per-round time ≤ 1.5× in-process at n = {cfg['n_large']}, "
                    f"M = {cfg['workers']} | {detail} | "
                    f"{_yes(h[f'target_le_1.5x_at_n_large_met_{m}'])} |")
    small = [s for s in summary if s["n"] == cfg["n_small"] and not s["backend"].startswith("inprocess")]
    if small:
        head.append(f"| latency-bound n = {cfg['n_small']} (no target) | " + ", ".join(
            f"{s['backend']} {s['method']} M={s['workers']}: {s['per_round_ms']:.3g} ms "
            f"(×{s['ratio_vs_inprocess_best']:.3g})" for s in small) + " | — |")
    head.append(f"| same iterates on every backend | max ‖D − D_inprocess‖/‖D‖ = "
                f"{report.fmt(h['max_D_rel_diff_between_backends'])} | — |")
    for r in accel:
        if r["variant"] == "accelerated":
            head.append(f"| accelerated variant, α = {r['alpha_target']:g}: wall-clock gain, rounds "
                        f"equal? | ×{r['speedup_plain_over_accel']:.2f}; rounds equal: "
                        f"{'yes' if r['rounds_equal'] else 'no'} | — |")
    t_cols = ["n", "workers", "method", "backend", "runs", "rounds", "per_round_ms", "per_round_ms_min",
              "per_round_ms_max", "ratio_vs_inprocess_best", "startup_s",
              "bytes_per_worker_per_round", "D_rel_diff_vs_inprocess"]
    sections = {
        "Headline": "\n".join(head),
        "Accelerated variant (in-process)": report.markdown_table(accel, [
            "alpha", "n", "workers", "variant", "status", "rounds", "final_error", "rounds_time_s",
            "ab_frozen_at", "speedup_plain_over_accel", "rounds_equal"]),
        "Local vs global normalisation (shard norms 1 … 0.1)": report.markdown_table(norm, [
            "data", "normalization", "n", "workers", "status", "rounds", "error_vs_nystrom",
            "error_vs_clean_truth", "nystrom_error_vs_clean_truth"]),
        f"Noisy data (σ = {noise:g}): gap to the Nyström estimate": report.markdown_table(gap, [
            "data", "rms_entry_of_A", "workers", "alpha", "method", "normalization", "status",
            "rounds", "gap_to_nystrom", "error_vs_clean_truth"]),
    }
    notes = [
        f"Timing problems: `controlled(n, M·n, n'=1, d'=1, κ=1e3)` split into M = {cfg['workers']} "
        f"contiguous n x n shards; a fixed number of rounds (EAGLE {cfg['rounds_large']}, GD "
        f"{cfg['gd_rounds_large']} at n = {cfg['n_large']}; {cfg['rounds_small']} at n = "
        f"{cfg['n_small']}; EAGLE at small n stops earlier, identically on every backend, once D "
        f"stops changing). Repeats: {cfg['repeats']} at n = {cfg['n_large']}, "
        f"{cfg['repeats_small']} at n = {cfg['n_small']}; the table shows the median (min, max "
        "beside it).",
        "Per-round time = `info['rounds_time_s'] / rounds` (the round loop on rank 0: local "
        "update + all-reduce + stopping checks). Start-up = `time_s − rounds_time_s`: spawning "
        "processes / creating actors, shipping the shards, forming the gloo process group and the "
        "one-off normalisation.",
        "The in-process backend runs the M workers one after another in one process; torch and "
        f"Ray run M processes with 1 torch thread each on {os.cpu_count()} cores, so at large n "
        "they overlap compute across cores, and at small n they pay gloo's TCP round-trip. The "
        "in-process baseline is the faster of its 1-thread and default-thread runs.",
        "Accelerated variant: A^μ, B^μ are frozen (no more GEMMs) once ‖A_new − A‖²/‖A‖² < 1e-10 "
        "on that worker; rounds then cost two mat-vecs. 'plain' is EAGLE as shipped, which also "
        f"freezes A^μ, B^μ, but only after {lift_cap(torch.float64)} "
        "rounds (the numerical-rank guard `kernels.lift_cap`), so the gain is bounded for long "
        "runs. Problems: alpha_problem(n, n, M, α, κ_max = 1e3), target 1e-8.",
        "Normalisation: 'local' scales each shard to ‖A^μ‖₂ = 1 (the paper's ρ_μ); 'global' "
        "divides every shard by the largest ‖A^μ‖₂ (one scalar all-reduce at start-up). On "
        "consistent data both converge to D̂ exactly; on noisy data neither is exact (see the "
        "gap table).",
        f"Noisy gap: two data sets, each with its noiseless twin (same seed): "
        f"`controlled(n, d, n'=2, d'=1, κ=1e3, noise={noise:g})` (entries of A ~0.007 rms, so the "
        "noise swamps A's small singular directions) and `distribution('gaussian', n, d, 2, 1, "
        f"noise={noise:g})` (entries ~1 rms: signal-to-noise ~100). Each matrix is split into M "
        "contiguous shards of d/M columns. "
        "Distributed and centralized EAGLE stop on the relative D-step 1e-10. `gap_to_nystrom` "
        "is the solver's error metric against B A⁺ C of the noisy data; `error_vs_clean_truth` "
        "compares with the noiseless W A Z.",
    ]
    if cold:
        notes.append("Cold start, not in any per-round number: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in cold.items()))
    notes.append(f"Wall time of the whole sweep: {elapsed:.0f} s.")
    notes += report.load_notes(load_start, load_end)
    if smoke:
        notes.insert(0, "SMOKE RUN: tiny sizes, numbers are not meaningful.")
    return report.write_markdown(os.path.join(out, "summary.md"),
                                 "Distributed backends: per-round time, accelerated variant, "
                                 "normalisation, noisy gap", command,
                                 report.markdown_table(summary, t_cols), notes, machine=machine,
                                 sections=sections, files=files)


def _cmd_backends(args) -> int:
    return _print_headline(backends_sweep(
        args.out, n_large=args.n_large, n_small=args.n_small, workers=args.workers,
        backends=args.backends, methods=args.methods, rounds_large=args.rounds_large,
        rounds_small=args.rounds_small, gd_rounds_large=args.gd_rounds_large,
        repeats=args.repeats, repeats_small=args.repeats_small, accel_n=args.accel_n,
        norm_n=args.norm_n, noise_n=args.noise_n,
        noise_d=args.noise_d, noise_workers=args.noise_workers, noise=args.noise,
        seed=args.seed, threads=args.threads, smoke=args.smoke, progress=not args.no_progress))


def add_parser(bsub) -> None:
    """Register ``backends`` under ``eagle-dist bench``."""
    f = BACKENDS_FULL
    p = bsub.add_parser("backends", help="per-round time by backend, accelerated variant, "
                                         "normalisation, noisy gap",
                        description=backends_sweep.__doc__.split("\n")[0])
    add_distributed_args(p, "backends")
    p.add_argument("--n-large", type=int, default=None, help=f"compute-bound n = d_μ (default {f['n_large']})")
    p.add_argument("--n-small", type=int, default=None, help=f"latency-bound n = d_μ (default {f['n_small']})")
    p.add_argument("--workers", type=int, default=None, help=f"M for the timing runs (default {f['workers']})")
    p.add_argument("--backends", type=_strs, default=None,
                   help="subset of inprocess,torch,ray (default all; smoke: inprocess,torch)")
    p.add_argument("--methods", type=_strs, default=None, help="eagle,gd (default both)")
    p.add_argument("--rounds-large", type=int, default=None,
                   help=f"EAGLE rounds at n-large (default {f['rounds_large']})")
    p.add_argument("--gd-rounds-large", type=int, default=None,
                   help=f"GD rounds at n-large (default {f['gd_rounds_large']})")
    p.add_argument("--rounds-small", type=int, default=None,
                   help=f"rounds at n-small (default {f['rounds_small']})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timing repetitions at n-large (default {f['repeats']})")
    p.add_argument("--repeats-small", type=int, default=None,
                   help=f"timing repetitions at n-small (default {f['repeats_small']})")
    p.add_argument("--accel-n", type=int, default=None,
                   help=f"n of the accelerated-variant problems (default {f['accel_n']})")
    p.add_argument("--norm-n", type=int, default=None,
                   help=f"n of the normalisation problems (default {f['norm_n']})")
    p.add_argument("--noise-n", type=int, default=None, help=f"noisy-gap n (default {f['noise_n']})")
    p.add_argument("--noise-d", type=int, default=None, help=f"noisy-gap d (default {f['noise_d']})")
    p.add_argument("--noise-workers", type=_ints, default=None, help="noisy-gap M values (default 1,2,4,8)")
    p.add_argument("--noise", type=float, default=0.01, help="noise σ on every block (default 0.01)")
    p.set_defaults(fn=_cmd_backends)
