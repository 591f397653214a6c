"""``eagle-dist train`` and ``eagle-dist extract``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List

log = logging.getLogger("eagle_dist")


def _seeds(text: str) -> List[int]:
    """``3`` or ``0-9`` or ``0,2,5``."""
    out: List[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: use 3, 0-9 or 0,2,5") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: non-negative seeds, e.g. 0-9")
    return out


def add_model_parsers(sub) -> None:
    pt = sub.add_parser(
        "train", help="train a linear transformer on masked-block completion",
        description="Train in one of the paper's regimes (configs/train/*.yaml). Any field can be "
                    "overridden as section.key=value, e.g. optim.steps=500 model.layers=2.")
    pt.add_argument("--config", default="unconstrained",
                    help="a YAML file or a shipped name: unconstrained, compute_limited, "
                         "distributed, unconstrained_8heads (default unconstrained)")
    pt.add_argument("overrides", nargs="*", metavar="section.key=value")
    pt.add_argument("--out", default=None, help="run directory (default runs/train/<regime>-seed<k>)")
    pt.add_argument("--seeds", type=_seeds, default=None,
                    help="train one model per seed (0-9 = ten runs), each in <out>/seed<k>")
    pt.add_argument("--parallel", choices=["none", "data", "machine"], default=None,
                    help="data: DDP over --workers ranks; machine: one rank per machine block "
                         "(distributed regime)")
    pt.add_argument("--workers", type=int, default=None, help="ranks for --parallel")
    pt.add_argument("--backend", choices=["torch", "ray"], default=None,
                    help="local processes (torch) or Ray actors")
    pt.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    pt.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    pt.set_defaults(fn=cmd_train)
    pe = sub.add_parser(
        "extract", help="extract the algorithm a trained checkpoint implements",
        description="Head pruning, products, sparsification/quantisation, structure tests, "
                    "per-layer scalars and scaling law, and a layer-by-layer replay through the "
                    "project's EAGLE kernel (paper Table 1), and the verdict (structure and "
                    "error level; exit code 4 unless it is EAGLE). Writes report.md, table1.csv, "
                    "scalars.csv, sparsity_sweep.csv/png (paper Fig. 10) and weight heatmaps.")
    pe.add_argument("--checkpoint", required=True, nargs="+",
                    help="one or more .pt files (a run's final.pt) or run directories")
    pe.add_argument("--out", default=None,
                    help="report folder (default <run dir>/extraction; one subfolder per "
                         "checkpoint when several are given)")
    pe.add_argument("--prompts", type=int, default=2000, help="test prompts (default 2000)")
    pe.add_argument("--kernel-prompts", type=int, default=5,
                    help="distributed regime: prompts for the learned-kernel check in the "
                         "distributed runtime (0: skip; default 5)")
    pe.set_defaults(fn=cmd_extract)


def _config_for(args, seed=None, out=None):
    from .config import load_train_config
    ov = list(args.overrides)
    if args.parallel is not None:
        ov.append(f"parallel.mode={args.parallel}")
    if args.workers is not None:
        ov.append(f"parallel.workers={args.workers}")
    if args.backend is not None:
        ov.append(f"parallel.backend={args.backend}")
    if seed is not None:
        ov.append(f"optim.seed={seed}")
    if out is not None:
        ov.append(f"run.dir={out}")
    return load_train_config(args.config, ov)


def _check_run_dir(path: str, resume: bool, overwrite: bool) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"run directory {path!r} is a file; pass a folder with --out")
    taken = os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("final.pt", "metrics.csv", "checkpoints"))
    if taken and not (resume or overwrite):
        raise ValueError(f"run directory {path!r} already holds a run; pass --resume to continue "
                         "it, --overwrite to start over, or another --out")
    if overwrite and taken and not resume:
        import shutil
        for f in ("final.pt", "metrics.csv", "test.csv", "summary.md", "loss.png"):
            if os.path.exists(os.path.join(path, f)):
                os.remove(os.path.join(path, f))
        shutil.rmtree(os.path.join(path, "checkpoints"), ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise ValueError(f"run directory {path!r} is not writable; pass another --out")


def cmd_train(args) -> int:
    from .train import default_run_dir, train
    seeds = args.seeds if args.seeds is not None else [None]
    rc = 0
    for seed in seeds:
        out = args.out
        if args.seeds is not None and args.out:
            out = os.path.join(args.out, f"seed{seed}")
        cfg = _config_for(args, seed, out)
        run_dir = default_run_dir(cfg)
        cfg.run.dir = run_dir
        _check_run_dir(run_dir, args.resume, args.overwrite)
        log.info("training %s (seed %d, %d steps, batch %d) -> %s", cfg.model.regime,
                 cfg.optim.seed, cfg.optim.steps, cfg.optim.batch, run_dir)
        res = train(cfg, resume=args.resume, progress=sys.stderr.isatty())
        t = res.test or {}
        print(f"{cfg.model.regime} seed {cfg.optim.seed}: {res.steps} steps, "
              f"{res.steps_per_s:.1f} steps/s; test MSE {t.get('mse', float('nan')):.4g} "
              f"(zero predictor {t.get('zero', float('nan')):.4g}); spikes {res.spikes}, "
              f"skipped {res.skipped}\n  {run_dir}/summary.md")
        mse, zero = t.get("mse", float("nan")), t.get("zero", float("nan"))
        if not t.get("finite", False):
            log.error("%s: the final test MSE is not finite: the run blew up", run_dir)
            rc = 3
        elif mse > FAIL_ABOVE_ZERO * zero:
            # a run that ends far above the zero predictor has failed (e.g. optim.lr=10 ended at
            # a test MSE of 5.9e55 and used to exit 0)
            log.error("%s: the final test MSE %.3g is %.3g x the zero predictor's %.3g — the "
                      "run failed (lower optim.lr, check the config)", run_dir, mse, mse / zero,
                      zero)
            rc = 3
    return rc


#: a run whose final test MSE exceeds this multiple of the zero predictor's has failed (exit 3)
FAIL_ABOVE_ZERO = 10.0


def _checkpoint_path(p: str) -> str:
    if os.path.isdir(p):
        cand = os.path.join(p, "final.pt")
        if os.path.exists(cand):
            return cand
        from .train import latest_checkpoint
        last = latest_checkpoint(p)
        if last is None:
            raise ValueError(f"--checkpoint {p!r}: a folder without final.pt or checkpoints/; "
                             "pass a .pt file written by eagle-dist train")
        return last
    return p


def cmd_extract(args) -> int:
    from .extract import extract, write_report
    from .train import load_checkpoint
    if args.prompts < 10:
        raise ValueError(f"--prompts {args.prompts}: use at least 10 test prompts")
    rc = 0
    for i, p in enumerate(args.checkpoint):
        ck = _checkpoint_path(p)
        model, cfg, _ = load_checkpoint(ck)
        out = args.out
        if out is None:
            out = os.path.join(os.path.dirname(os.path.abspath(ck)), "extraction")
        elif len(args.checkpoint) > 1:
            out = os.path.join(out, f"{i}_{os.path.basename(os.path.dirname(os.path.abspath(ck)))}")
        ex = extract(ck, prompts=args.prompts, model=model, cfg=cfg)
        path = write_report(ex, model, out)
        if cfg.model.regime == "distributed" and args.kernel_prompts > 0:
            from .kernel import kernel_check, kernel_report
            kc = kernel_check(ck, prompts=args.kernel_prompts)
            with open(path, "a") as f:
                f.write("\n".join(kernel_report(kc)))
            print(f"  learned kernel: {kc['rounds']} rounds, {kc['bytes_per_worker_per_round']} "
                  f"bytes/worker/round, error vs B A+ C "
                  f"{kc['per_layer_median']['kernel_vs_pinv'][-1]:.3f}, vs transformer "
                  f"{kc['per_layer_median']['kernel_vs_transformer'][-1]:.1e}")
        verdict = ex.verdict.text.replace("**", "")
        print(f"{ck}: {verdict}\n  test MSE transformer {ex.mse['transformer']:.4g}, extracted "
              f"rule {ex.replay_mse:.4g}, zero {ex.mse['zero predictor']:.4g}; Table 1 max "
              f"{max(ex.table1):.3e}; eta_hat per layer {[round(x, 3) for x in ex.eta_hat]}, gamma_hat "
              f"{[round(x, 3) for x in ex.gamma_hat]}; gamma/eta {ex.ratio:.2f}, exponent "
              f"{ex.exponent:.2f}\n  {path}")
        rc = rc or (0 if ex.verdict.eagle else 4)          # the one verdict (model.verdict)
    return rc
