"""``eagle-dist bench train``: training throughput (steps/s) per regime and execution layout.

Layouts: one process with 1 or 2 torch threads, and data-parallel DDP over 2 gloo ranks with one
thread each (the same batches; each rank computes half). Every cell trains ``--steps`` steps of
the paper's recipe (batch 1024) after ``--warmup`` untimed steps; the machine's load average is
recorded with the numbers, since on a shared machine it decides them.
"""
from __future__ import annotations

import csv
import os
import time

from .report import machine_description


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="training throughput per regime (steps/s)")
    p.add_argument("--regimes", default="unconstrained,compute_limited,distributed")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--layouts", default="1thread,2threads,ddp2",
                   help="comma list of 1thread, 2threads, ddp2")
    p.add_argument("--out", default="runs/bench/train")
    p.set_defaults(fn=run)


def _measure(regime: str, layout: str, steps: int, out: str) -> float:
    from ..model.config import load_train_config
    from ..model.train import train
    over = [f"model.regime={regime}", f"optim.steps={steps}", "eval.test_size=64",
            f"eval.every={10 ** 6}", f"run.dir={os.path.join(out, 'scratch', regime + layout)}",
            f"run.checkpoint_every={10 ** 6}"]
    if layout == "ddp2":
        over += ["parallel.mode=data", "parallel.workers=2", "run.threads=1"]
    else:
        over.append(f"run.threads={1 if layout == '1thread' else 2}")
    res = train(load_train_config(regime, over))
    return res.steps_per_s


def run(args) -> int:
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for regime in args.regimes.split(","):
        for layout in args.layouts.split(","):
            if layout not in ("1thread", "2threads", "ddp2"):
                raise ValueError(f"--layouts: unknown layout {layout!r}")
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            sps = _measure(regime, layout, args.steps, args.out)
            rows.append(dict(regime=regime, layout=layout, steps=args.steps,
                             steps_per_s=round(sps, 2),
                             minutes_for_20000=round(20000 / sps / 60, 1) if sps else "",
                             load_before=round(load0, 2), wall_s=round(time.perf_counter() - t0, 1)))
            print(rows[-1], flush=True)
    with open(os.path.join(args.out, "throughput.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Training throughput", "", f"Command: `eagle-dist bench train --steps {args.steps}`;"
             f" {machine_description()}; batch 1024, the paper's recipe.", "",
             "steps/s excludes process start-up and the test-set generation but includes every "
             "step's batch sampling, forward, backward, clipping and Adam; DDP's figure includes "
             "its gradient all-reduce. `load_before` is the 1-minute load average when the cell "
             "started (other work on the machine).", "",
             "| regime | layout | steps/s | minutes for 20,000 steps | load before |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['regime']} | {r['layout']} | {r['steps_per_s']} | "
                     f"{r['minutes_for_20000']} | {r['load_before']} |")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/summary.md")
    return 0
