"""``eagle-dist bench evaluate``: trained models on many fresh prompts (blow-ups, guard, safeguard).

For each checkpoint (``--checkpoint``, repeatable, or every ``<run>/final.pt`` under ``--runs``)
:func:`eagle_dist.model.evaluate.evaluate_checkpoint` streams ``--prompts`` fresh prompts of the
model's training distribution (a seed stream of their own) and records, per prompt, the MSE of the
raw model, the norm-guarded model, the safeguarded model (per-layer EAGLE fallback; for distributed
models the learned kernel with its local checks), the unguarded kernel (distributed) and the zero
predictor. A blow-up is a prompt with MSE > 1.

Writes ``<out>/evaluation/<run>.json`` (one per model, reused when the settings match unless
``--force``: new runs can be added later), ``<out>/evaluation.csv`` and ``<out>/evaluation.md``
(every JSON in ``<out>/evaluation/``).
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
from typing import Any, Dict, List

from .report import machine_description, markdown_table, write_csv

log = logging.getLogger("eagle_dist.bench.evaluate")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="trained models on many fresh prompts: blow-ups, "
                       "norm guard, per-layer safeguard")
    p.add_argument("--checkpoint", action="append", default=[], metavar="RUN/final.pt",
                   help="a trained checkpoint (repeatable)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="evaluate every DIR/<run>/final.pt (e.g. benchmarks/results/train)")
    p.add_argument("--prompts", type=int, default=100_000, help="fresh prompts per model")
    p.add_argument("--chunk", type=int, default=4096, help="prompts per streamed chunk")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default 2000003)")
    p.add_argument("--worst", type=int, default=5, help="worst prompts traced per model")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--force", action="store_true", help="re-evaluate models with a result")
    p.add_argument("--out", default="runs/bench/evaluate")
    p.set_defaults(fn=run)


def run_name(path: str) -> str:
    """``benchmarks/results/train/unconstrained-seed0/final.pt`` -> ``unconstrained-seed0``."""
    base = os.path.basename(path)
    return os.path.basename(os.path.dirname(os.path.abspath(path))) if base == "final.pt" \
        else os.path.splitext(base)[0]


def _checkpoints(args) -> List[str]:
    paths = list(args.checkpoint)
    if args.runs is not None:
        if not os.path.isdir(args.runs):
            raise ValueError(f"--runs {args.runs!r} is not a directory; pass the folder that holds "
                             "<run>/final.pt (e.g. benchmarks/results/train)")
        paths += sorted(glob.glob(os.path.join(args.runs, "*", "final.pt")))
    if not paths:
        raise ValueError("nothing to evaluate: pass --checkpoint RUN/final.pt or --runs DIR")
    return paths


def _same(old: Dict[str, Any], prompts: int, chunk: int, seed: int) -> bool:
    return (old.get("prompts"), old.get("chunk"), old.get("seed")) == (prompts, chunk, seed)


def run(args) -> int:
    import torch
    from ..model.evaluate import DEFAULT_SEED, evaluate_checkpoint
    from .common import check_positive_int
    for name in ("prompts", "chunk", "threads"):
        check_positive_int(f"--{name}", getattr(args, name))
    if args.worst < 0:
        raise ValueError(f"--worst {args.worst}: pass 0 or more")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    paths = _checkpoints(args)
    jdir = os.path.join(args.out, "evaluation")
    os.makedirs(jdir, exist_ok=True)
    torch.set_num_threads(args.threads)
    for path in paths:
        name = run_name(path)
        jpath = os.path.join(jdir, f"{name}.json")
        if os.path.exists(jpath) and not args.force:
            with open(jpath) as f:
                old = json.load(f)
            if _same(old, args.prompts, args.chunk, seed):
                log.info("%s: evaluated already (%s); --force to redo", name, jpath)
                continue
        log.info("%s: %d prompts", name, args.prompts)
        res = evaluate_checkpoint(path, args.prompts, args.chunk, seed, worst=args.worst,
                                  progress=True)
        res["name"] = name
        tmp = jpath + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1, default=float)
        os.replace(tmp, jpath)
        print(f"{name}: raw blow-ups {res['raw']['blowups']} / {args.prompts}, safeguarded "
              f"{res['safeguarded']['blowups']}, {res['seconds']:.0f} s", flush=True)
    results = []
    for jpath in sorted(glob.glob(os.path.join(jdir, "*.json"))):
        with open(jpath) as f:
            results.append(json.load(f))
    write_report(results, args.out, seed)
    print(f"wrote {os.path.join(args.out, 'evaluation.md')}")
    return 0


def g(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "inf" if x > 0 else str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _row(r: Dict[str, Any]) -> Dict[str, Any]:
    N = r["prompts"]
    dist = r["regime"] == "distributed"
    w = r["worst"].get("raw") or [{}]
    return dict(
        model=r["name"], regime=r["regime"], prompts=N,
        raw_blowups=r["raw"]["blowups"], raw_per_100k=r["raw"]["blowups_per_100k"],
        raw_mean=r["raw"]["mean"], raw_median=r["raw"]["median"],
        guarded_blowups=r["guarded"]["blowups"], guarded_per_100k=r["guarded"]["blowups_per_100k"],
        guarded_mean=r["guarded"]["mean"], guarded_median=r["guarded"]["median"],
        kernel_blowups=r["kernel"]["blowups"] if dist else None,
        kernel_mean=r["kernel"]["mean"] if dist else None,
        kernel_median=r["kernel"]["median"] if dist else None,
        safe_blowups=r["safeguarded"]["blowups"], safe_mean=r["safeguarded"]["mean"],
        safe_median=r["safeguarded"]["median"],
        safe_median_change=r["safeguarded"]["median_change"],
        safe_max=r["safeguarded"]["max"], fallback_any=r["fallback_any"],
        fallback_per_layer=" / ".join(f"{x:.2%}" for x in r["fallback_per_layer"]),
        fallback_cells=r.get("fallback_cells"),
        zero_mean=r["zero"]["mean"], zero_over_1=r["zero"]["blowups"],
        worst_raw=w[0].get("raw"), worst_normA_percentile=w[0].get("normA_percentile"),
        seconds=r["seconds"], seed=r["seed"], safeguard=json.dumps(r["safeguard"]))


def _mech_row(r: Dict[str, Any]) -> Dict[str, Any]:
    bl = r["blowups"]
    raw = [b for b in bl if not b["raw"] <= 1.0]
    gd = [b for b in bl if not b["guarded"] <= 1.0]
    counts: Dict[str, int] = {}
    for b in raw:
        counts[b["mechanism"]] = counts.get(b["mechanism"], 0) + 1

    def pr(rows):
        if not rows:
            return "—"
        p = sorted(b["normA_percentile"] for b in rows)
        return f"{p[0]:.1f} / {p[len(p) // 2]:.1f} / {p[-1]:.2f}"
    return dict(model=r["name"], n_raw=len(raw), n_guarded=len(gd),
                mech="; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "—",
                pct_raw=pr(raw), pct_guarded=pr(gd),
                safe_max=g(max(b["safeguarded"] for b in bl)))


def write_report(results: List[Dict[str, Any]], out: str, seed: int) -> None:
    rows = [_row(r) for r in results]
    write_csv(rows, os.path.join(out, "evaluation.csv"))
    counts: Dict[int, List[str]] = {}
    for r in results:
        counts.setdefault(int(r["prompts"]), []).append(r.get("name", "?"))
    common = max(counts, key=lambda k: len(counts[k])) if counts else 0
    cmd = (f"eagle-dist bench evaluate --runs benchmarks/results/train --prompts {common} "
           f"--seed {seed} --out {out}")
    others = "; ".join(f"--prompts {k} for {', '.join(sorted(v))}" for k, v in sorted(counts.items())
                       if k != common)
    also = f", with `{others}`" if others else ""
    L = ["# Published models on fresh prompts: blow-ups, norm guard, per-layer safeguard", "",
         f"Command: `{cmd}`{also} (per model `--checkpoint RUN/final.pt`; each model's full result, "
         "with its worst prompts traced, in `evaluation/<run>.json`).", "",
         f"Machine: {machine_description()}; one torch thread, niced, sharing the cores with "
         "training runs: the seconds are loaded-machine times; counts and MSEs are load-free.", "",
         "Prompts: fresh draws of each model's training distribution (18x18 A, rank 10, "
         "Σ = diag(0.7^i); noisy models with their noise), chunk i from `step_seed(seed, i, "
         "stream=3)` — disjoint from the training batches (stream 0), the fixed test set "
         "(stream 1) and the norm guard's prompts (stream 2); float32 as trained. **Blow-up**: "
         "per-prompt MSE > 1 (the zero predictor's mean is ≈ 0.095). Guarded: the norm guard "
         "(‖A‖₂ above the training distribution's 95 % quantile scaled down to it). "
         "Safeguarded: every layer's learned step is kept only if it does not grow ‖A_ℓ‖₂ "
         "(power iteration) or ‖C_ℓ‖_F, else that prompt takes the EAGLE step with η = 1/3, "
         "γ = 1, ρ = 1/‖A_ℓ‖₂² (`eagle_dist.model.safeguard`); for distributed models it is the "
         "learned *kernel* (what `LearnedKernel` runs on the workers) with local checks (its "
         "shard's ‖A^μ‖₂, its own message ‖C'_μ‖ ≤ 2‖C‖), and its median change is against the "
         "unguarded kernel.", "",
         "## All models", "",
         markdown_table(rows, {
             "model": "model", "prompts": lambda r: f"{r['prompts']:,}",
             "raw blow-ups (per 100k)": lambda r: f"{r['raw_blowups']} ({r['raw_per_100k']:.2g})",
             "raw mean": lambda r: g(r["raw_mean"]),
             "guarded blow-ups (per 100k)":
                 lambda r: f"{r['guarded_blowups']} ({r['guarded_per_100k']:.2g})",
             "guarded mean": lambda r: g(r["guarded_mean"]),
             "median": lambda r: g(r["raw_median"]),
             "safeguarded blow-ups": lambda r: f"{r['safe_blowups']}",
             "safeguarded mean / max": lambda r: f"{g(r['safe_mean'])} / {g(r['safe_max'])}",
             "safeguarded median change": lambda r: f"{100 * r['safe_median_change']:+.2f} %",
             "fallback rate (prompts)": lambda r: f"{100 * r['fallback_any']:.2f} %",
             "worst raw prompt: MSE, ‖A‖₂ percentile":
                 lambda r: f"{g(r['worst_raw'])}, {g(r['worst_normA_percentile'], 4)}"}),
         "", "Distributed models, the learned kernel without the safeguard (its median is the "
         "reference of the safeguarded change above):", "",
         markdown_table([r for r in rows if r["regime"] == "distributed"], {
             "model": "model", "kernel blow-ups": lambda r: g(r["kernel_blowups"]),
             "kernel mean": lambda r: g(r["kernel_mean"]),
             "kernel median": lambda r: g(r["kernel_median"]),
             "transformer median": lambda r: g(r["raw_median"]),
             "safeguarded fallback per round (any worker)": "fallback_per_layer",
             "per worker-round": lambda r: f"{100 * (r['fallback_cells'] or 0):.3f} %"}),
         "", "Fallback rate per layer (centralized models):", "",
         markdown_table([r for r in rows if r["regime"] != "distributed"], {
             "model": "model", "layers 1 / 2 / 3 / 4": "fallback_per_layer"}),
         "", "## Why they blow up", "",
         "Every prompt with a raw or norm-guarded MSE above 1 (up to 200 per model), traced "
         "along the transformer in float64: the mechanism is the first layer whose step grows "
         "σ₁(A_ℓ) (an A step that overshoots: |1 + α₁α₂σ²| > 1), else the first whose step grows "
         "‖C_ℓ‖_F (a C/D step too large for the A it meets). ‖A‖₂ percentiles are among all the "
         "model's evaluated prompts.", "",
         markdown_table([_mech_row(r) for r in results if r.get("blowups")], {
             "model": "model", "raw blow-ups traced": "n_raw",
             "mechanisms (raw)": "mech", "‖A‖₂ percentile, raw (min / median / max)": "pct_raw",
             "guarded blow-ups traced": "n_guarded",
             "‖A‖₂ percentile, guarded (min / median / max)": "pct_guarded",
             "their safeguarded MSE (max)": "safe_max"}),
         "", "## The worst prompts, traced", "",
         "Per model the prompts with the largest raw MSE and the largest norm-guarded MSE; "
         "σ₁(A_ℓ) (exact) and ‖C_ℓ‖_F along the transformer, layers 0 … L.", ""]
    for r in results:
        for key in ("raw", "guarded"):
            ws = r["worst"].get(key) or []
            if not ws:
                continue
            L += [f"**{r['name']}**, worst by {key} MSE:", "",
                  markdown_table(ws, {
                      "prompt": "index",
                      "raw / guarded / safeguarded MSE": lambda w: f"{g(w['raw'])} / "
                      f"{g(w['guarded'])} / {g(w['safeguarded'])}",
                      "‖A‖₂ (percentile)": lambda w: f"{w['normA']:.2f} "
                      f"({w['normA_percentile']:.1f})",
                      "σ₁(A_ℓ), ℓ = 0…L": lambda w: ", ".join(f"{x:.3g}" for x in w["sigma"]),
                      "‖C_ℓ‖_F": lambda w: ", ".join(f"{x:.3g}" for x in w["c_norm"])}), ""]
    with open(os.path.join(out, "evaluation.md"), "w") as f:
        f.write("\n".join(L))
