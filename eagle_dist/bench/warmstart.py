"""``eagle-dist bench warmstart``: the learned distributed kernel as a warm start for certified
distributed EAGLE (:mod:`eagle_dist.model.warmstart`), against EAGLE alone.

Prompts: ``--prompts`` fresh draws of the training distribution (M = 3 machines, 18 x 18 A of rank
10 split 6/6/6 by columns, noiseless; stream 4 of ``step_seed``). Per prompt, rounds to relative
error ``--target`` (1e-8) against D̂ = B A⁺ C and rounds until EAGLE's own certificate, in the
paper's mode and in Gram mode:

* EAGLE alone (distributed, theory constants, local normalisation);
* warm start: the L learned rounds (safeguarded kernel, W_Q projected off the C/D features so the
  EAGLE invariant holds), then EAGLE on (A_L, B_L, C_L), D = D_L + its completion;
* the unprojected kernel as a warm start: its invariant drift, and where Gram mode's certified
  answer ends (the drift is a floor no EAGLE round removes).

Writes ``warmstart.csv`` (one row per model, prompt and variant) and ``summary.md``.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import Any, Dict, List

import numpy as np

from .report import machine_description, markdown_table, write_csv

log = logging.getLogger("eagle_dist.bench.warmstart")

WARM_STREAM = 4


def add_parser(sub) -> None:
    p = sub.add_parser("warmstart", help="learned distributed rounds as a warm start for "
                       "certified distributed EAGLE")
    p.add_argument("--checkpoint", action="append", default=[], metavar="RUN/final.pt",
                   help="a distributed-regime checkpoint (repeatable)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="every noiseless distributed DIR/<run>/final.pt")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--target", type=float, default=1e-8, help="relative error against B A⁺ C")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rounds", type=int, default=20_000)
    p.add_argument("--out", default="runs/bench/warmstart")
    p.set_defaults(fn=run)


def _paths(args) -> List[str]:
    from ..model.train import load_checkpoint
    paths = list(args.checkpoint)
    if args.runs is not None:
        if not os.path.isdir(args.runs):
            raise ValueError(f"--runs {args.runs!r} is not a directory")
        for p in sorted(glob.glob(os.path.join(args.runs, "*", "final.pt"))):
            _, cfg, _ = load_checkpoint(p)
            if cfg.model.regime == "distributed" and cfg.data.noise_var == 0:
                paths.append(p)
    if not paths:
        raise ValueError("no distributed checkpoint: pass --checkpoint or --runs")
    return paths


def run(args) -> int:
    import torch
    from ..model.data import sample_batch, step_seed
    from ..model.evaluate import KERNEL_SAFEGUARD
    from ..model.train import load_checkpoint
    from ..model.warmstart import eagle_alone, project_queries, warm_start
    from .common import check_positive_int
    from .evaluate import run_name
    check_positive_int("--prompts", args.prompts)
    if not (0 < args.target < 1):
        raise ValueError(f"--target {args.target}: pass a relative error in (0, 1)")
    paths = _paths(args)
    os.makedirs(args.out, exist_ok=True)
    _, cfg0, _ = load_checkpoint(paths[0])
    mc, dc = cfg0.model, cfg0.data
    X = sample_batch(args.prompts, mc, dc, seed=step_seed(args.seed, 0, WARM_STREAM),
                     dtype=torch.float64).X
    rows: List[Dict[str, Any]] = []
    T, R = args.target, args.max_rounds
    for i in range(args.prompts):
        for mode in ("paper", "gram"):
            a = eagle_alone(X[i], mc.machines, mc.n, mc.d, mode=mode, target_error=T, max_iter=R)
            b = eagle_alone(X[i], mc.machines, mc.n, mc.d, mode=mode, max_iter=R)
            rows.append(dict(model="EAGLE alone", prompt=i, mode=mode, rounds_to_target=a["rounds"],
                             reached=a["error"] <= T * 1.0001, certified_rounds=b["rounds"],
                             certified_status=b["status"], certified_error=b["error"]))
        log.info("prompt %d: EAGLE alone done", i)
    for path in paths:
        name = run_name(path)
        model, cfg, _ = load_checkpoint(path)
        if (cfg.model.n, cfg.model.d, cfg.model.machines) != (mc.n, mc.d, mc.machines):
            raise ValueError(f"{path}: a different shape from {paths[0]}; one shape per run")
        proj = project_queries(model)
        for i in range(args.prompts):
            for mode in ("paper", "gram"):
                a = warm_start(proj, X[i], mode=mode, target_error=T, safeguard=KERNEL_SAFEGUARD,
                               max_iter=R)
                b = warm_start(proj, X[i], mode=mode, safeguard=KERNEL_SAFEGUARD, max_iter=R)
                rows.append(dict(model=name, variant="projected", prompt=i, mode=mode,
                                 rounds_to_target=a["rounds"], reached=a["error"] <= T * 1.0001,
                                 certified_rounds=b["rounds"], certified_status=b["status"],
                                 certified_error=b["error"], drift=b["drift"],
                                 learned_error=b["learned_error"], fallbacks=b["fallbacks"]))
            u = warm_start(model, X[i], mode="gram", safeguard=KERNEL_SAFEGUARD, max_iter=R)
            rows.append(dict(model=name, variant="unprojected", prompt=i, mode="gram",
                             certified_rounds=u["rounds"], certified_status=u["status"],
                             certified_error=u["error"], drift=u["drift"],
                             learned_error=u["learned_error"], fallbacks=u["fallbacks"]))
            log.info("%s prompt %d done", name, i)
    write_csv(rows, os.path.join(args.out, "warmstart.csv"))
    _summary(rows, args, paths)
    print(f"wrote {os.path.join(args.out, 'summary.md')}")
    return 0


def _med(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.median(v)) if v else float("nan")


def _summary(rows, args, paths) -> None:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("variant", "—"), r["mode"]), []).append(r)
    table = []
    for (model, variant, mode), rs in groups.items():
        reach = [r for r in rs if r.get("reached") is not None]
        table.append(dict(
            model=model, variant=variant, mode=mode, prompts=len(rs),
            to_target=(f"{_med(rs, 'rounds_to_target'):g} ({min(r['rounds_to_target'] for r in rs)}"
                       f"-{max(r['rounds_to_target'] for r in rs)})") if reach else "—",
            reached=f"{sum(bool(r['reached']) for r in reach)}/{len(reach)}" if reach else "—",
            certified=f"{_med(rs, 'certified_rounds'):g}",
            status=", ".join(f"{s} {sum(r['certified_status'] == s for r in rs)}"
                             for s in sorted({r["certified_status"] for r in rs})),
            error=f"{_med(rs, 'certified_error'):.2g} (max {max(r['certified_error'] for r in rs):.2g})",
            drift=f"{_med(rs, 'drift'):.2g}" if any(r.get("drift") is not None for r in rs) else "—",
            learned=f"{_med(rs, 'learned_error'):.3f}" if any(r.get("learned_error") is not None
                                                             for r in rs) else "—"))
    cmd = ("eagle-dist bench warmstart " + " ".join(f"--checkpoint {p}" for p in paths)
           + f" --prompts {args.prompts} --target {args.target:g} --seed {args.seed} "
           f"--out {args.out}")
    L = ["# Learned distributed rounds as a warm start for certified distributed EAGLE", "",
         f"Command: `{cmd}`", "", f"Machine: {machine_description()} (counts are load-free).", "",
         f"{args.prompts} fresh prompts of the training distribution (M = 3 machines, A 18 x 18 of "
         "rank 10 split 6/6/6 by columns, noiseless, stream 4). Rounds to relative error "
         f"{args.target:g} against D̂ = B A⁺ C (warm start: the learned rounds included), and "
         "rounds until EAGLE's own stopping rule/certificate with its status and final error "
         "against D̂. Medians (min-max). Code: `eagle_dist/model/warmstart.py` (the algebra of "
         "when D_L + completion(A_L, B_L, C_L) is D̂ is in its docstring).", "",
         markdown_table(table, {
             "start": "model", "learned rounds": "variant", "mode": "mode",
             "prompts": "prompts", f"rounds to {args.target:g}": "to_target",
             "reached": "reached", "rounds to certificate": "certified",
             "status": "status", "certified error vs D̂": "error",
             "invariant drift": "drift", "learned rounds' error": "learned"}), ""]
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(L))
