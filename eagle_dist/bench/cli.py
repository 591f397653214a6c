"""``eagle-dist bench <sweep>``: each sweep module registers its own sub-command."""
from __future__ import annotations

import importlib

# module name (in eagle_dist.bench) -> registered by its ``add_parser``
SWEEPS = ("kappa", "sketch", "gemm", "rounds", "network", "backends", "train", "suitesparse", "scale",
          "sharded", "noise", "rankdef", "distributions", "stepsize", "seedavg", "evaluate",
          "noisy", "warmstart", "fastpath", "estimation")


#: benches whose own parser has no --smoke: the settings it stands for (one flag for every bench)
SMOKE_ARGS = {
    "scale": dict(workers=2, n=16, d="4000,8000", backends="inprocess"),
    "sharded": dict(matrices="HB/abb313", orientations="protocol", workers=2,
                    backend="inprocess", methods="eagle,cg"),
    "noise": dict(prompts=200),
    "train": dict(regimes="unconstrained", steps=12, warmup=2, layouts="1thread"),
    "evaluate": dict(prompts=2000, chunk=1000, worst=1),
    "warmstart": dict(prompts=2, max_rounds=2000),
    "seedavg": dict(),
}


def add_bench_parser(sub) -> None:
    pb = sub.add_parser("bench", help="benchmark sweeps -> CSV / PNG / markdown")
    bsub = pb.add_subparsers(dest="sweep", required=True)
    for name in SWEEPS:
        before = set(bsub.choices)
        importlib.import_module(f"eagle_dist.bench.{name}").add_parser(bsub)
        for added in set(bsub.choices) - before:
            p = bsub.choices[added]
            if "--smoke" not in p._option_string_actions:
                p.add_argument("--smoke", action="store_true",
                               help="tiny settings: a seconds-to-a-minute check of the pipeline "
                                    "(its numbers say nothing about the targets)")
                p.set_defaults(fn=_smoked(p.get_default("fn"), SMOKE_ARGS.get(added, {})))


def _smoked(fn, values):
    def run(args):
        if getattr(args, "smoke", False):
            for k, v in values.items():
                setattr(args, k, v)
        return fn(args)
    return run
