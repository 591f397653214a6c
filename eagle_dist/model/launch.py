"""torchrun entry for data- or machine-parallel training::

    torchrun --nproc_per_node=2 -m eagle_dist.model.launch --config unconstrained --parallel data
    torchrun --nproc_per_node=3 -m eagle_dist.model.launch --config distributed --parallel machine

Every rank joins the process group from torchrun's environment (gloo on CPU, NCCL on GPU) and
runs the same loop as ``eagle-dist train``; rank 0 writes the run directory.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eagle_dist.model.launch")
    p.add_argument("--config", default="unconstrained")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    p.add_argument("--parallel", choices=["data", "machine"], default="data")
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        p.exit(2, "run this module under torchrun (RANK/WORLD_SIZE are not set); without torchrun "
                  "use: eagle-dist train --parallel data --workers N\n")
    from .config import load_train_config
    from .train import train_rank
    world = int(os.environ["WORLD_SIZE"])
    ov = list(args.overrides) + [f"parallel.mode={args.parallel}", f"parallel.workers={world}"]
    if args.out:
        ov.append(f"run.dir={args.out}")
    try:
        cfg = load_train_config(args.config, ov)
    except (ValueError, TypeError) as exc:
        p.exit(2, f"error: {exc}\n")
    res = train_rank(cfg.to_dict(), args.parallel, resume=args.resume,
                     progress=sys.stderr.isatty() and os.environ["RANK"] == "0")
    if os.environ["RANK"] == "0":
        t = res.get("test") or {}
        print(f"{cfg.model.regime}: {res['steps']} steps on {world} ranks, "
              f"{res['steps_per_s']:.1f} steps/s; test MSE {t.get('mse', float('nan')):.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
