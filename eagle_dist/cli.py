"""``eagle-dist`` command line: solve | bench | info | demo.

Examples::

    eagle-dist solve --n 240 --d 240 --kappa 1e4 --methods eagle,cg,lstsq
    eagle-dist solve --mtx HB/dwt_1007 --methods eagle,cg,lsmr,lstsq --out runs/dwt
    eagle-dist solve --kappa 1e3 --sketch-size 60 --methods eagle,sgd --target-error 1e-2
    eagle-dist solve --distribution alpha --alpha 1 --n 200 --d 200 --workers 4 --backend ray \
        --methods eagle,gd --kappa 1e3 --max-iter 20000
    eagle-dist info
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
from typing import List, Optional

log = logging.getLogger("eagle_dist")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be a positive integer (>= 1)")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text} must be a positive, finite number")
    return v


def _device(text: str) -> str:
    import re
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device for this solver; use auto, cpu "
                                         "or cuda[:k]")
    return text


RESULT_FILES = ("summary.md", "result.json", "config.yaml")


def prepare_out_dir(path: Optional[str], overwrite: bool = False,
                    label: str = "--out") -> Optional[str]:
    """Check an output folder BEFORE any work: it must be creatable and writable, not a file,
    and not already hold results (unless ``overwrite``) — so no run is lost or silently
    overwritten by another (``eagle-dist run`` and torchrun write the same names).
    ``label`` names the setting in the messages (``--out`` or the config's ``output.dir``)."""
    if not path:
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{label} {path!r} is an existing file; pass a folder path")
    try:
        if os.path.isdir(path) and not overwrite:
            taken = [f for f in os.listdir(path) if f in RESULT_FILES or f.endswith(".json")]
            if taken:
                raise ValueError(f"{label} {path!r} already holds results "
                                 f"({', '.join(sorted(taken)[:3])}); pass another --out, or "
                                 "--overwrite to replace them")
        os.makedirs(path, exist_ok=True)
        # a unique probe name: torchrun ranks (or two runs) may check the same folder at once
        fd, probe = tempfile.mkstemp(prefix=".eagle_dist_write_test", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"{label} {path!r} is not writable ({exc.strerror or exc}); pass a folder "
                         "you can write to") from None
    return path


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("problem (synthetic unless --mtx)")
    g.add_argument("--mtx", help="Matrix Market file (.mtx/.mtx.gz) or shipped SuiteSparse name, "
                                 "e.g. HB/dwt_1007 (the paper's real-data protocol)")
    g.add_argument("--store", help="a column-store folder (`eagle-dist shard`): distributed "
                                   "workers each read only their own columns; the driver never "
                                   "reads A")
    g.add_argument("--c-block", default="rest", choices=["rest", "identity"],
                   help="with --mtx: C = remaining columns, or I (solve w A = B)")
    g.add_argument("--rank", type=int, default=None, help="rank of A (synthetic) / of the matrix (--mtx)")
    g.add_argument("--distribution", default="controlled",
                   help="controlled | alpha (sharded, diversity index --alpha) | paper_training | "
                        "svd | student_t | gaussian | correlated | sparse_rademacher | clustered")
    g.add_argument("--alpha", type=float, default=1.0,
                   help="--distribution alpha: target diversity index (1, or at most (M-1)/M)")
    g.add_argument("--n", type=int, default=240)
    g.add_argument("--d", type=int, default=240, help="columns of A (--distribution alpha: per worker)")
    g.add_argument("--nq", type=int, default=2, help="n' (rows of B)")
    g.add_argument("--dq", type=int, default=2, help="d' (columns of C)")
    g.add_argument("--kappa", type=float, default=1e2, help="condition number of A (controlled)")
    g.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std on every block")
    g.add_argument("--seed", type=int, default=0)


def _cli_type(annotation: str):
    base = annotation.replace("Optional[", "").rstrip("]")
    return {"float": float, "int": int}.get(base, str)


def add_solve_option_flags(p: argparse.ArgumentParser, skip=("seed",)) -> None:
    """One flag per field of :class:`eagle_dist.options.SolveOptions` (``--max-iter`` for
    ``max_iter``; booleans as ``--x/--no-x``), grouped as the fields are, with the fields' help
    and defaults — generated, so the CLI can never spell or default an option differently from
    Python and YAML. Flags left out keep the dataclass default (``argparse.SUPPRESS``), so only
    what the user typed reaches the options; values are checked by ``SolveOptions.validate``."""
    from .options import SolveOptions, cli_fields
    default = SolveOptions()
    groups = {}
    for f in cli_fields():
        if f.name in skip:
            continue
        g = groups.get(f.metadata["group"])
        if g is None:
            g = groups[f.metadata["group"]] = p.add_argument_group(
                f"solve options ({f.metadata['group']})")
        flag = "--" + f.name.replace("_", "-")
        dflt = getattr(default, f.name)
        helptext = f"{f.metadata['help']} (default {dflt})".replace("%", "%%")
        if f.type == "bool":
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=helptext)
            continue
        choices = f.metadata.get("choices")
        if f.name == "shards":
            choices = ("contiguous", "random")
        g.add_argument(flag, dest=f.name, type=_cli_type(str(f.type)), choices=choices,
                       default=argparse.SUPPRESS, help=helptext)


def _add_solver_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("methods")
    g.add_argument("--methods", default="eagle",
                   help="comma list: eagle,gd,sgd,cg,lsmr,lsqr,lstsq,lstsq-gelsy,pinv")
    add_solve_option_flags(p)
    p.add_argument("overrides", nargs="*", metavar="solve.key=value",
                   help="any solve option as in a YAML config, e.g. solve.target_residual=0.0316")


def solve_options_from_args(args):
    """The :class:`SolveOptions` the user asked for: the flags typed, then ``solve.key=value``
    overrides (YAML values), ``--seed`` shared with the problem generator."""
    from .options import SolveOptions, cli_fields
    kw = {f.name: getattr(args, f.name) for f in cli_fields() if hasattr(args, f.name)}
    kw["seed"] = args.seed
    from .config import parse_overrides
    over = parse_overrides(getattr(args, "overrides", []) or [], ["solve"]).get("solve", {})
    bad = sorted(set(over) - {f.name for f in cli_fields()})
    if bad:
        raise ValueError(f"override(s) solve.{', solve.'.join(bad)}: not solve options; see "
                         "eagle-dist solve --help")
    kw.update(over)
    return SolveOptions.from_kwargs(kw)


def build_problem(args):
    """``(problem, shards or None)``; ``--distribution alpha`` brings its own column shards."""
    from .api import problem_from_config
    from .config import ProblemConfig
    if getattr(args, "store", None):
        if args.mtx:
            raise ValueError("--store and --mtx are two problem sources; pass one")
        pc = ProblemConfig(source="store", path=args.store)
    elif args.mtx:
        pc = ProblemConfig(source="mtx", path=args.mtx, rank=args.rank, c_block=args.c_block)
    else:
        pc = ProblemConfig(source=args.distribution, n=args.n, d=args.d, n_query=args.nq,
                           d_query=args.dq, kappa=args.kappa, rank=args.rank, noise=args.noise,
                           seed=args.seed, alpha=args.alpha)
    return problem_from_config(pc, workers=args.workers)


ALPHA_CHECK_MAX_N = 3000        # α needs an SVD per shard and an n x n eigendecomposition
SMALL_ALPHA = 1e-2


def report_diversity(problem, shards, workers: int) -> None:
    """Log the diversity index α of the sharding and warn when it is small: in the paper's mode
    convergence is linear at a rate ~(1 − α), so a small α means many rounds."""
    from .distributed import diversity_index, make_shards
    if problem.n > ALPHA_CHECK_MAX_N:
        log.info("diversity index α not computed (n = %d > %d)", problem.n, ALPHA_CHECK_MAX_N)
        return
    alpha = diversity_index(problem.A, make_shards(problem.d, workers, shards))
    log.info("diversity index α = %.3g for %d shards of %s", alpha, workers,
             shards if isinstance(shards, str) else "explicit columns")
    if alpha < SMALL_ALPHA:
        log.warning("α = %.2g is small: once the shards are conditioned, distributed EAGLE "
                    "converges linearly at rate ~(1 − α), about ln(10)/α = %.0f rounds per decade "
                    "of accuracy. It is fast when every shard's columns span (most of) the range "
                    "of A (d/M >= n, α near 1): use fewer workers, or see --distribution alpha "
                    "for well-sharded data", alpha, math.log(10.0) / max(alpha, 1e-300))


def _options_for(opts, method: str, methods: List[str]):
    """Several methods share one command line: an option typed for some of them (``--eta`` for
    eagle in ``--methods eagle,cg``) goes to the methods it applies to; one typed for none of
    them reaches every method, and ``SolveOptions.validate`` names it."""
    from .options import APPLIES_TO, SolveOptions
    out = opts
    for name in opts.given():
        rule = APPLIES_TO.get(name)
        if rule and rule[0] is not None and method not in rule[0] \
                and any(x in rule[0] for x in methods):
            out = dataclasses.replace(out, **{name: getattr(SolveOptions(), name)})
    return out


def cmd_solve(args) -> int:
    from .api import solve
    from .result import results_table
    from .solvers import METHODS
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ValueError(f"--methods {args.methods!r} names no method; e.g. --methods eagle,cg "
                         f"(choose from {', '.join(sorted(METHODS))})")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(sorted(METHODS))}")
    opts = solve_options_from_args(args)
    per_method = {m: _options_for(opts, m, methods) for m in methods}
    for m, o in per_method.items():                   # every check before any work
        o.validate(m, store=bool(getattr(args, "store", None)))
    args.workers = opts.workers
    prepare_out_dir(args.out, args.overwrite)
    problem, gen_shards = build_problem(args)
    from .data.store import ColumnStore
    sharded = isinstance(problem, ColumnStore)
    distributed = opts.is_distributed(sharded)
    if gen_shards is not None:
        opts = dataclasses.replace(opts, shards=gen_shards)
    log.info("problem: %s", problem)
    if sharded:
        log.info("column store: %.3g GB of A and B stay on disk; each of %d workers reads its "
                 "%.3g GB; %s", problem.dense_bytes / 1e9, opts.workers,
                 problem.dense_bytes / opts.workers / 1e9,
                 "errors against the store's D_true" if opts.record_error else
                 "status from the residual certificate (--record-error: errors against D_true)")
    if distributed and not sharded and any(m in ("eagle", "gd") for m in methods):
        from .distributed.runtime import choose_mode
        paper = "gd" in methods or choose_mode(opts.mode, problem.n, problem.n_query,
                                               problem.d_query) == "paper"
        if paper:                     # α only sets the rounds of the paper's mode
            report_diversity(problem, opts.shards, opts.workers)
    results = []
    for m in methods:
        keep = _options_for(opts, m, methods)
        keep = dataclasses.replace(keep, progress=sys.stderr.isatty(), shards=opts.shards)
        res = solve(problem, m, options=keep)
        results.append(res)
        log.info("%s: %s after %d iterations, %.3f s", m, res.status.value, res.iterations,
                 res.time_s)
    table = results_table(results)
    print(f"\n{problem!r}\n")
    print(table)
    if not opts.record_error and opts.target_error is None:
        print("\n(error column: pass --record-error to measure against the float64 reference "
              "B pinv(A) C — an SVD of A)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(f"# eagle-dist solve\n\n`{' '.join(sys.argv)}`\n\n{problem!r}\n\n{table}\n")
        for r in results:
            tag = r.method.replace("/", "_")
            r.to_json(os.path.join(args.out, f"{tag}.json"))
            r.history_to_csv(os.path.join(args.out, f"{tag}_history.csv"))
        print(f"\nwrote {args.out}/summary.md and per-method JSON/CSV")
    return 0 if all(r.converged for r in results) else 3


def cmd_run(args) -> int:
    """Run a YAML config (problem + solve + output); writes the resolved config with the results."""
    from .api import run_config
    from .config import load_config, save_config
    from .result import results_table
    from .config import parse_overrides
    cfg = load_config(args.config, parse_overrides(args.overrides))
    if args.out:
        cfg.output.dir = args.out
    prepare_out_dir(cfg.output.dir, args.overwrite,
                    "--out" if args.out else f"output.dir of {args.config}")
    problem, res = run_config(cfg, progress=sys.stderr.isatty())
    table = results_table([res])
    print(f"\n{problem!r}\n\n{table}")
    if cfg.output.dir:
        os.makedirs(cfg.output.dir, exist_ok=True)
        save_config(cfg, os.path.join(cfg.output.dir, "config.yaml"))
        res.to_json(os.path.join(cfg.output.dir, "result.json"))
        res.history_to_csv(os.path.join(cfg.output.dir, "history.csv"))
        with open(os.path.join(cfg.output.dir, "summary.md"), "w") as f:
            f.write(f"# eagle-dist run\n\n`{' '.join(sys.argv)}`\n\n{problem!r}\n\n{table}\n")
        print(f"\nwrote {cfg.output.dir}/ (config.yaml, result.json, history.csv, summary.md)")
    return 0 if res.converged else 3


def cmd_shard(args) -> int:
    """Write a column-partitioned store from a Matrix Market file / shipped name or a .npz."""
    import numpy as np
    from .data import store as st
    src = args.input
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise ValueError(f"--noise {args.noise!r} must be a finite standard deviation >= 0")
    if src.endswith(".npz"):
        if args.layout != "lstsq" or args.rank is not None or args.noise:
            log.info("a .npz holds the blocks already: --layout/--rank/--noise are not used")
        import zipfile
        try:
            z = np.load(src, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{src}: not a readable .npz archive ({type(exc).__name__}); write "
                             "it with numpy.savez(path, A=..., B=...) — no pickled objects") from None
        with z:
            missing = [k for k in ("A", "B") if k not in z.files]
            if missing:
                raise ValueError(f"{src} lacks array(s) {missing}; a .npz input needs A (n x d) "
                                 "and B (n' x d), optionally C (n x d') and D_true (n' x d')")
            try:
                arrays = {k: z[k] for k in ("A", "B", "C", "D_true") if k in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{src}: an array in the archive cannot be read "
                                 f"({type(exc).__name__}); the file is damaged or holds pickled "
                                 "objects") from None
            out = st.write_store(args.out, arrays["A"], arrays["B"], arrays.get("C"),
                                 arrays.get("D_true"), part_columns=args.part_columns,
                                 overwrite=args.overwrite, meta=dict(source=os.path.abspath(src)))
    else:
        out = st.write_store_from_mtx(src, args.out, layout=args.layout, seed=args.seed,
                                      noise=args.noise, part_columns=args.part_columns,
                                      rank=args.rank, overwrite=args.overwrite)
    print(out)
    print(f"A: {out.n} x {out.d} in {len(out.parts)} parts ({out.dense_bytes / 1e6:.3g} MB of A "
          f"and B, float64); D_true {'stored' if out.has_d_true else 'not known'}")
    print(f"solve it with: eagle-dist solve --store {args.out} --workers 4 --backend ray")
    return 0


def cmd_info(args) -> int:
    import numpy as np
    import scipy
    import torch
    info = {
        "eagle_dist": __import__("eagle_dist").__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "gloo": torch.distributed.is_available() and torch.distributed.is_gloo_available(),
        "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(),
    }
    for mod in ("ray", "cupy", "matplotlib"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report any import failure
            info[mod] = f"not available ({type(exc).__name__})"
    print(json.dumps(info, indent=2))
    return 0


DEMO_LEGEND = """\
How to read these tables:
- `error` = ‖D − D̂‖_F / ‖D̂‖_F against the independent float64 reference D̂ = B pinv(A) C (numpy).
- `status` converged means each method's own check passed: EAGLE — relative D-step ≤ tol twice,
  after every singular value above sqrt(eps)·σ_max was lifted (or A was certified well
  conditioned); CG / LSMR — LSQR's residual tests on the true residual B − W A; lstsq / pinv —
  direct (LAPACK). Distributed EAGLE in the paper's mode is verified with a probe column (exact
  only on consistent data); the Gram mode is the centralized iteration; distributed GD stops at
  the target error 1e-8 here.
- `iterations` are iterations (centralized) or communication rounds (distributed).
- `bytes_per_worker_per_round` is what each worker sends per all-reduce; centralized rows send
  nothing (0). The Gram mode sends (n + n')·n numbers while A moves and nothing afterwards.
- `time_s` of a distributed row is the whole wall clock; the start-up (Ray actors, process group)
  and the rounds are listed apart below the table."""


#: distributed GD rounds the demo runs (its rounds to 1e-8 are extrapolated; see cmd_demo)
GD_DEMO_ROUNDS = 200


def cmd_demo(args) -> int:
    """The README's main job, on the embedded default (a local, in-machine cluster):

    1. centralized: the shipped SuiteSparse matrix HB/dwt_1007 as the linear system w A = B
       (the paper's real-data protocol with C = I, so D = w), EAGLE vs CG / LSMR / LAPACK / pinv;
    2. distributed: an α = 1 sharded problem (M workers x 200 columns, n = 200, κ_max = 1e3,
       d' = 1) on M Ray actors of a local Ray instance (torch.distributed/gloo between them):
       distributed EAGLE in the paper's mode and in the Gram mode, against distributed GD with
       the paper's messages (in-process, 200 rounds run, the rounds it needs to 1e-8 from its
       exact recurrence).
    """
    from .api import solve
    from .data import load_suitesparse
    from .distributed import alpha_problem, shutdown_ray
    from .result import results_table
    out = prepare_out_dir(args.out, overwrite=True)      # re-running the demo replaces its run
    lines = ["# eagle-dist demo", "", f"`{' '.join(sys.argv)}`", ""]
    prob = load_suitesparse("HB/dwt_1007", c_block="identity")
    log.info("1/2 centralized: %r (w A = B), κ(A) = %.3g", prob, prob.condition_number)
    cen = []
    methods = ("eagle", "cg", "lsmr", "lstsq", "pinv")
    for i, m in enumerate(methods, 1):
        log.info("  [%d/%d] %s ...", i, len(methods), m)
        cen.append(solve(prob, m, tol=1e-10, max_iter=20000, progress=sys.stderr.isatty(),
                         record_error=True))
        log.info("  [%d/%d] %s: %s, %d iterations, error %.2g, %.2f s", i, len(methods), m,
                 cen[-1].status.value, cen[-1].iterations, cen[-1].error, cen[-1].time_s)
    t1 = results_table(cen)
    head = f"{prob!r}: the linear system w A = B (C = I), κ(A) = {prob.condition_number:.3g}"
    print(f"\n1. Centralized — {head}\n\n{t1}")
    lines += ["## 1. Centralized", "", head, "", t1, ""]
    dprob, shards = alpha_problem(200, 200, args.workers, alpha=1.0, kappa_max=1e3, d_query=1, seed=0)
    log.info("2/2 distributed: %r, α = %.3f, κ_max = %.3g, %d Ray actors", dprob,
             dprob.meta["alpha"], dprob.meta["kappa_max"], args.workers)
    dist = []
    try:
        for mode in ("paper", "gram"):
            log.info("  EAGLE (%s mode) on %d Ray actors: starting Ray and the actors ...", mode,
                     args.workers)
            dist.append(solve(dprob, "eagle", workers=args.workers, shards=shards, backend="ray",
                              mode=mode, tol=1e-10, max_iter=2000, timeout=60,
                              record_error=True))
            r = dist[-1]
            log.info("  EAGLE (%s): %s, %d rounds, error %.2g", mode, r.status.value, r.rounds,
                     r.error)
        # distributed GD's outcome here is known in advance: its exact recurrence gives the
        # rounds it needs (bench rounds checks that recurrence against measured runs), so it is
        # run for GD_DEMO_ROUNDS rounds only and the rest is extrapolated — and said so
        log.info("  distributed GD (in-process, %d rounds; the rounds to 1e-8 from its exact "
                 "recurrence) ...", GD_DEMO_ROUNDS)
        dist.append(solve(dprob, "gd", workers=args.workers, shards=shards, backend="inprocess",
                          target_error=1e-8, max_iter=GD_DEMO_ROUNDS,
                          progress=sys.stderr.isatty()))
        from .bench.gd_model import gd_prediction
        gd_needed = gd_prediction(dprob, shards).rounds_to(1e-8)
    finally:
        shutdown_ray()
    t2 = results_table(dist)
    timing = "\n".join(
        f"- {r.method} ({r.info.get('mode', '')}, {r.backend}): start-up "
        f"{r.info['wall_time_s'] - r.info['rounds_time_s']:.2f} s, rounds "
        f"{r.info['rounds_time_s']:.3f} s ({1e3 * r.info['rounds_time_s'] / max(r.rounds, 1):.2f} ms/round)"
        for r in dist)
    eag, gd = dist[0], dist[-1]
    ratio = (f"Distributed GD was run for {gd.rounds} rounds only (error {gd.error:.2g}); its "
             f"exact recurrence (bench rounds validates it against measured runs) needs "
             f"{gd_needed:,.0f} rounds to 1e-8 — {gd_needed / eag.rounds:,.0f}x the paper-mode "
             f"EAGLE rounds ({eag.rounds})." if not gd.converged
             else f"GD reached 1e-8 in {gd.rounds} rounds = {gd.rounds / eag.rounds:.0f}x EAGLE's")
    dhead = f"{dprob!r}, α = {dprob.meta['alpha']:.3f}, M = {args.workers}"
    print(f"\n2. Distributed — {dhead}\n\n{t2}\n\n{timing}\n\n{ratio}\n\n{DEMO_LEGEND}")
    lines += ["## 2. Distributed", "", dhead, "", t2, "", timing, "", ratio, "",
              "## Legend", "", DEMO_LEGEND, ""]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    for r in cen + dist:
        tag = f"{r.regime}_{r.method}" + (f"_{r.info['mode']}" if "mode" in r.info else "")
        r.to_json(os.path.join(out, f"{tag}.json"))
        r.history_to_csv(os.path.join(out, f"{tag}_history.csv"))
    print(f"\nwrote {out}/summary.md and per-run JSON / history CSV")
    return 0 if all(r.converged for r in cen) and all(r.converged for r in dist[:2]) else 3


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="eagle-dist", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("solve", help="solve a synthetic or Matrix Market problem")
    _add_problem_args(ps)
    _add_solver_args(ps)
    ps.add_argument("--out", default=None, help="directory for summary.md, JSON and history CSV")
    ps.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    ps.set_defaults(fn=cmd_solve)
    pr = sub.add_parser("run", help="run a YAML config (configs/*.yaml)")
    pr.add_argument("--config", required=True,
                    help="a YAML file, or a shipped config by name (distributed, distributed_gd, "
                         "suitesparse_sharded)")
    pr.add_argument("--out", default=None, help="override output.dir")
    pr.add_argument("--overwrite", action="store_true", help="replace results already there")
    pr.add_argument("overrides", nargs="*", metavar="section.key=value",
                    help="override any config key, e.g. solve.tol=1e-8 problem.n=300")
    pr.set_defaults(fn=cmd_run)
    pk = sub.add_parser("shard", help="write a column-partitioned store (each distributed "
                                      "worker then reads only its own columns)")
    pk.add_argument("input", help="a .mtx/.mtx.gz file, a shipped SuiteSparse name, or a .npz "
                                  "with arrays A, B (and optionally C, D_true)")
    pk.add_argument("--out", required=True, help="the store folder to create")
    pk.add_argument("--layout", default="lstsq", choices=list(("lstsq", "protocol")),
                    help="lstsq: an m x k matrix as m samples of k features, A = Mᵀ, samples "
                         "sharded, consistent B in M's row space (D_true known); protocol: the "
                         "paper's r x r SuiteSparse block (C = I, B = the held-out row or a "
                         "random consistent one where that row is zero)")
    pk.add_argument("--part-columns", type=_positive_int, default=None,
                    help="columns per part file (default: ~8 MiB of A per part)")
    pk.add_argument("--rank", type=int, default=None, help="protocol layout: rank override")
    pk.add_argument("--noise", type=float, default=0.0,
                    help="lstsq layout: N(0, noise²) added to B (D_true then unknown)")
    pk.add_argument("--seed", type=int, default=0, help="seed of the right-hand side")
    pk.add_argument("--overwrite", action="store_true", help="replace a store already at --out")
    pk.set_defaults(fn=cmd_shard)
    pi = sub.add_parser("info", help="devices, backends, versions")
    pi.set_defaults(fn=cmd_info)
    pd = sub.add_parser("demo", help="the main job: a shipped SuiteSparse matrix, EAGLE vs baselines")
    pd.add_argument("--out", default="runs/demo")
    pd.add_argument("--workers", type=_positive_int, default=4,
                    help="Ray actors for the distributed part")
    pd.set_defaults(fn=cmd_demo)
    from .bench.cli import add_bench_parser
    add_bench_parser(sub)
    from .model.cli import add_model_parsers
    add_model_parsers(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"eagle-dist: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "eagle-dist: interrupted\n")
    except MemoryError:
        parser.exit(2, "eagle-dist: error: out of memory; use smaller sizes\n")
    except RecursionError:                      # (a RuntimeError: handled before it)
        parser.exit(2, "eagle-dist: error: input nested too deeply to process\n")
    except RuntimeError as exc:
        from .distributed import WorkerFailure
        if isinstance(exc, WorkerFailure):
            # a worker died or hung: the runtime already stopped the others and its message
            # names the rank, its node and the cause — print it, no traceback
            parser.exit(4, f"eagle-dist: distributed run failed: {exc}\n")
        # torch reports a failed allocation as RuntimeError ("DefaultCPUAllocator: can't
        # allocate …", "CUDA out of memory"): say what it is, not a traceback
        text = str(exc)
        if "out of memory" in text.lower() or "can't allocate" in text or "not enough memory" in text:
            parser.exit(2, "eagle-dist: error: out of memory ("
                        f"{text.strip().splitlines()[0][:200]}); use smaller sizes "
                        "(optim.batch, model.n, --prompts)\n")
        raise
    except OSError as exc:            # e.g. the disk filled up while writing the results
        parser.exit(2, f"eagle-dist: error: {exc}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
