"""``eagle-dist bench train``: training throughput (steps/s) per regime and execution layout.

Layouts: one process with 1 or 2 torch threads, and data-parallel DDP over 2 gloo ranks with one
thread each (the same batches; each rank computes half); ``+compile`` adds ``run.compile=true``
(torch.compile of the step). Every cell trains ``--steps`` steps of the paper's recipe (batch
1024); the rate is measured from the metrics' clock between step ``--warmup`` and the last step,
so it excludes the first steps (and the compilation, reported separately as ``first_s``). The
machine's load average is recorded with the numbers, since on a shared machine it decides them.
"""
from __future__ import annotations

import csv
import math
import os
import time

from .report import machine_description


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="training throughput per regime (steps/s)")
    p.add_argument("--regimes", default="unconstrained,compute_limited,distributed")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10,
                   help="steps before the timed window (compilation, caches)")
    p.add_argument("--layouts", default="1thread,2threads,ddp2,1thread+compile,2threads+compile",
                   help="comma list of 1thread, 2threads, ddp2, each optionally +compile")
    p.add_argument("--out", default="runs/bench/train")
    p.set_defaults(fn=run)


LAYOUTS = ("1thread", "2threads", "ddp2")


def _measure(regime: str, layout: str, steps: int, warmup: int, out: str):
    """(steady steps/s between step ``warmup`` and the last, seconds to reach step ``warmup``)."""
    from ..model.config import load_train_config
    from ..model.train import train
    base, _, compile_ = layout.partition("+")
    run_dir = os.path.join(out, "scratch", regime + layout)
    over = [f"model.regime={regime}", f"optim.steps={steps}", "eval.test_size=64",
            f"eval.every={10 ** 6}", f"run.dir={run_dir}", f"run.checkpoint_every={10 ** 6}",
            # the clock is read from metrics rows; a row costs an SVD of the batch (its max
            # ‖A‖₂), so log only at the steps the rate needs: every gcd(warmup, steps)
            f"run.log_every={math.gcd(warmup, steps)}",
            f"run.compile={'true' if compile_ else 'false'}"]
    if base == "ddp2":
        over += ["parallel.mode=data", "parallel.workers=2", "run.threads=1"]
    else:
        over.append(f"run.threads={1 if base == '1thread' else 2}")
    train(load_train_config(regime, over))
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        clock = {int(r["step"]): float(r["time_s"]) for r in csv.DictReader(f)}
    t_w, t_end = clock[warmup], clock[steps]
    return (steps - warmup) / (t_end - t_w), t_w


def run(args) -> int:
    layouts = args.layouts.split(",")
    for layout in layouts:                       # every argument checked before any cell runs
        base, _, extra = layout.partition("+")
        if base not in LAYOUTS or extra not in ("", "compile"):
            raise ValueError(f"--layouts: unknown layout {layout!r}; use "
                             f"{', '.join(LAYOUTS)}, each optionally with +compile")
    if not 0 < args.warmup < args.steps:
        raise ValueError(f"--warmup={args.warmup} must be between 1 and --steps - 1")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for regime in args.regimes.split(","):
        for layout in layouts:
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            sps, first = _measure(regime, layout, args.steps, args.warmup, args.out)
            rows.append(dict(regime=regime, layout=layout, steps=args.steps,
                             steps_per_s=round(sps, 2),
                             minutes_for_20000=round(20000 / sps / 60, 1) if sps else "",
                             first_s=round(first, 1), load_before=round(load0, 2),
                             wall_s=round(time.perf_counter() - t0, 1)))
            r = rows[-1]
            print(f"{regime:16s} {layout:18s} {r['steps_per_s']:7.2f} steps/s "
                  f"({r['minutes_for_20000']} min for 20,000 steps; first {r['first_s']} s; "
                  f"load {r['load_before']})", flush=True)
    with open(os.path.join(args.out, "throughput.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Training throughput", "",
             f"Command: `eagle-dist bench train --steps {args.steps} --warmup {args.warmup}`;"
             f" {machine_description()}; batch 1024, the paper's recipe.", "",
             f"steps/s is the rate between step {args.warmup} and step {args.steps} (the run's own "
             "clock): every step's batch sampling, forward, backward, clipping and Adam; DDP's "
             "figure includes its gradient all-reduce. `first s` is the time to reach step "
             f"{args.warmup} (with +compile: the compilation). `load before` is the 1-minute load "
             "average when the cell started (other work on the machine).", "",
             "| regime | layout | steps/s | minutes for 20,000 steps | first s | load before |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['regime']} | {r['layout']} | {r['steps_per_s']} | "
                     f"{r['minutes_for_20000']} | {r['first_s']} | {r['load_before']} |")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/summary.md")
    return 0
