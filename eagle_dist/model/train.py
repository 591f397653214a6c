"""Training: single-process, data-parallel (DDP) and machine-parallel, one loop.

* The batch of step t is drawn from ``(optim.seed, t)`` on the training device (model/data.py),
  the same on every rank; data-parallel ranks take equal slices of it, so the averaged gradient
  is the full-batch gradient and the run matches single-process training to rounding.
* Machine-parallel (distributed regime): rank μ holds machine μ's columns of every prompt and
  only its own head in every layer; the heads' projected outputs are summed across ranks by a
  differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``), the only channel.
  Every rank evaluates the same loss L, so each backpropagates L/M (the all-reduce's backward sums
  the ranks' gradients); the global gradient-norm clip all-reduces one number; Adam is elementwise,
  so per-rank Adam on the own head equals Adam on the whole model.
* Blow-ups: a non-finite loss or gradient skips the update and is counted; a loss above
  ``SPIKE_FACTOR`` × the running median is counted as a spike (the paper saw spikes from batches
  with a large ‖A‖₂, which is unbounded under its sampler). Both are reported, never hidden.

A run directory holds ``config.yaml`` (resolved), ``metrics.csv`` (every ``log_every`` steps),
``test.csv`` (per-layer test MSE every ``eval.every`` steps), ``checkpoints/step_*.pt`` (model,
optimiser, step and the config), ``final.pt``, ``loss.png`` and ``summary.md``. ``resume=True``
continues from the last checkpoint, bit for bit on CPU.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..control import Progress, resolve_device
from .checkpoint import init_from, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import COMPILE_MIN_STEPS, TrainConfig, save_train_config, train_config_from_dict
from .data import GUARD_QUANTILE, Batch, step_batch, fixed_test_set, norm_guard, zero_mse
from .transformer import LinearTransformer

log = logging.getLogger("eagle_dist.train")

SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 200
#: consecutive non-finite steps after which training stops (the run is lost, say so)
MAX_BAD_STEPS = 50
METRIC_FIELDS = ["step", "loss", "grad_norm", "clipped", "batch_max_normA", "spike", "skipped",
                 "time_s"]


def default_run_dir(cfg: TrainConfig) -> str:
    return cfg.run.dir or os.path.join("runs", "train", f"{cfg.model.regime}-seed{cfg.optim.seed}")


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model: LinearTransformer, test: Batch, chunk: int = 2048,
             heads: Optional[list] = None, guard: Optional[float] = None) -> Dict[str, Any]:
    """Test MSE after every layer (the readout of Z_ℓ), mean and median over prompts; with
    ``guard`` also the norm-guarded prediction's (:meth:`LinearTransformer.guarded`)."""
    per_layer: List[List[torch.Tensor]] = [[] for _ in range(model.cfg.layers + 1)]
    for i in range(0, test.X.shape[0], chunk):
        X, T = test.X[i:i + chunk], test.target[i:i + chunk]
        for l, Z in enumerate(model.trajectory(X, heads)):
            per_layer[l].append((model.readout(Z) - T).double().pow(2).mean(dim=(1, 2)))
    errs = [torch.cat(p) for p in per_layer]
    mean = [float(e.mean()) for e in errs]
    out = dict(mse=mean[-1], median=float(errs[-1].median()), per_layer=mean,
               per_layer_median=[float(e.median()) for e in errs], zero=zero_mse(test),
               finite=bool(all(math.isfinite(m) for m in mean)))
    if guard is not None and heads is None:
        g = torch.cat([(model.guarded(test.X[i:i + chunk], guard) - test.target[i:i + chunk])
                       .double().pow(2).mean(dim=(1, 2)) for i in range(0, test.X.shape[0], chunk)])
        nA = torch.linalg.matrix_norm(test.X[:, :model.cfg.n, :model.cfg.d].double(), ord=2)
        out.update(guard=guard, guarded_mse=float(g.mean()), guarded_median=float(g.median()),
                   guarded_prompts=int((nA > guard).sum()))
    return out


def lr_at(o, step: int) -> float:
    """The learning rate of ``step`` (0-based) under ``optim.schedule``."""
    if o.schedule == "cosine":
        return 0.5 * o.lr * (1.0 + math.cos(math.pi * step / o.steps))
    return o.lr


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    run_dir: Optional[str]
    steps: int
    final_loss: float
    test: Dict[str, Any]
    losses: List[float] = field(default_factory=list)
    spikes: int = 0
    skipped: int = 0
    seconds: float = 0.0
    steps_per_s: float = 0.0
    clipped_fraction: float = 0.0
    world: int = 1
    mode: str = "none"
    compiled: bool = False              # torch.compile'd step (its first step includes compiling)


class _Comm:
    """The collectives a rank needs (identity in a single process)."""

    def __init__(self, world: int = 1):
        self.world = world

    def sum_scalar(self, x: float) -> float:
        if self.world == 1:
            return x
        import torch.distributed as dist
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0])

    def sum_grads(self, params) -> None:
        """Sum the gradients of replicated parameters over the ranks (one flat all-reduce)."""
        import torch.distributed as dist
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        i = 0
        for p in params:
            k = p.numel()
            p.grad = flat[i:i + k].view_as(p).clone()
            i += k


def _loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).mean()


def use_compile(cfg: TrainConfig, mode: str) -> bool:
    """Whether the training step is compiled (``run.compile``; auto: long runs, not machine mode)."""
    c = cfg.run.compile
    if mode == "machine":       # the differentiable all-reduce breaks the graph (the config
        return False            # refuses run.compile=true there)
    return (cfg.optim.steps >= COMPILE_MIN_STEPS and hasattr(torch, "compile")) if c == "auto" \
        else bool(c)


def train_loop(cfg: TrainConfig, **kw) -> TrainResult:
    """Train ``cfg`` (see the module docstring) on ``run.threads`` torch threads (restored
    afterwards); keyword arguments as :func:`_train_loop`."""
    old = torch.get_num_threads()
    if cfg.run.threads and cfg.run.threads != old:
        torch.set_num_threads(cfg.run.threads)
    try:
        return _train_loop(cfg, **kw)
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _train_loop(cfg: TrainConfig, *, rank: int = 0, world: int = 1, mode: str = "none",
                device: Optional[torch.device] = None, resume: bool = False,
                progress: bool = False, write: Optional[bool] = None,
                on_step: Optional[Callable[[int], None]] = None,
                stop_at: Optional[int] = None) -> TrainResult:
    """``mode``/``rank``/``world`` describe this rank when called inside a process group.
    ``stop_at`` ends early at that step (an interrupted run, for tests of resume). Only rank 0
    writes the run directory (``write=False``: nothing written at all)."""
    o, mc = cfg.optim, cfg.model
    dev = device or resolve_device(None if cfg.run.device == "auto" else cfg.run.device)
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
    write = (rank == 0) if write is None else (write and rank == 0)
    run_dir = default_run_dir(cfg) if write else None
    if write:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        save_train_config(cfg, os.path.join(run_dir, "config.yaml"))
    comm = _Comm(world)

    model = LinearTransformer(mc, seed=o.seed).to(dev, dtype)
    # machine-parallel with shared heads: every rank holds a replica of the one set of weights
    replicated = mode == "machine" and mc.shared_heads
    if mode == "machine":
        params = model.head_parameters(rank)
    else:
        params = list(model.parameters())
    if cfg.run.init_from is not None and not resume:
        init_from(model, cfg, cfg.run.init_from)
    opt = torch.optim.Adam(params, lr=o.lr)
    net: Any = model
    if mode == "data":
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    start = 0
    losses: List[float] = []
    spikes = skipped = clipped = 0
    if resume:
        ck = latest_checkpoint(run_dir or default_run_dir(cfg))
        if ck is None:
            raise ValueError(f"resume: no checkpoint in {default_run_dir(cfg)}/checkpoints; start "
                             "the run without --resume")
        _, ck_cfg, payload = load_checkpoint(ck, map_location=dev)
        co = ck_cfg.optim
        same_optim = (co.lr, co.batch, co.clip, co.schedule) == (o.lr, o.batch, o.clip, o.schedule) \
            and (o.schedule == "constant" or co.steps == o.steps)    # cosine: lr depends on steps
        if ck_cfg.model != mc or co.seed != o.seed or ck_cfg.data != cfg.data or not same_optim:
            raise ValueError(f"resume: {ck} was written with a different model/data/seed/optim "
                             "config; use a new run.dir for a different run")
        model.load_state_dict(payload["model"])
        opt_state = payload["optim"]
        if mode == "machine":
            opt_state = opt_state[rank]
        opt.load_state_dict(opt_state)
        start = int(payload["step"])
        named = int(os.path.basename(ck)[5:-3])
        ex = payload.get("extra", {})
        if start != named or not isinstance(ex, dict) or len(ex.get("losses", [])) != start:
            raise ValueError(f"resume: {ck} says step {start} but its name says {named} and it "
                             f"holds {len(ex.get('losses', [])) if isinstance(ex, dict) else '?'}"
                             " losses; the checkpoint was edited or damaged — remove it to resume "
                             "from the one before")
        losses = list(ex.get("losses", []))[:start]
        spikes, skipped, clipped = ex.get("spikes", 0), ex.get("skipped", 0), ex.get("clipped", 0)
        log.info("resuming %s from step %d (%s)", default_run_dir(cfg), start, ck)
    test = fixed_test_set(mc, cfg.data, cfg.eval.test_size, cfg.eval.test_seed, device=dev,
                    dtype=dtype) if rank == 0 else None
    guard = norm_guard(mc, cfg.data, o.seed) if rank == 0 else None

    metrics_f = test_f = None
    if write:
        metrics_f = _open_csv(os.path.join(run_dir, "metrics.csv"), METRIC_FIELDS, start)
        test_f = _open_csv(os.path.join(run_dir, "test.csv"), _test_fields(mc.layers), start)

    if mode == "data":
        lo, hi = rank * o.batch // world, (rank + 1) * o.batch // world
    else:
        lo, hi = 0, o.batch
    if mode == "machine":
        from torch.distributed.nn.functional import all_reduce as _ar

        def all_reduce(x):
            # the public differentiable collective; torch 2.13 marks it deprecated in favour of
            # the private torch.distributed._functional_collectives, so its warning is silenced
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _ar(x)
    def eager_loss(X, T):
        return _loss_fn(net(X), T)
    step_loss = eager_loss
    compiled = use_compile(cfg, mode)
    if compiled:
        # the same function, fused by inductor (fewer passes over the activations); decided
        # from the config alone, so a resumed run compiles exactly when the original did
        step_loss = torch.compile(eager_loss, dynamic=False)
    end = o.steps if stop_at is None else min(o.steps, stop_at)
    bar = Progress(f"train {mc.regime}", o.steps, "step", progress and rank == 0)
    bar.update(start)
    t0 = time.perf_counter()
    bad_run = 0
    last_test: Dict[str, Any] = {}
    for step in range(start, end):
        if o.schedule != "constant":         # a function of the step: resumes exactly
            for g in opt.param_groups:
                g["lr"] = lr_at(o, step)
        batch = step_batch(step, mc, cfg.data, seed=o.seed, size=o.batch, device=dev, dtype=dtype)
        X, T = batch.X[lo:hi], batch.target[lo:hi]
        if mode == "machine":
            pred = all_reduce(model.machine_forward(X, rank, all_reduce)) / world
            loss = _loss_fn(pred, T)
            (loss / world).backward()
        elif compiled and step == start:
            try:
                loss = step_loss(X, T)
                loss.backward()
            except Exception as e:       # no C++ compiler, unsupported device, ...
                if cfg.run.compile is True:
                    raise RuntimeError(f"run.compile=true: torch.compile failed ({e!r}); set "
                                       "run.compile=false") from e
                log.warning("torch.compile failed (%s: %s); training eagerly",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                opt.zero_grad(set_to_none=True)
                step_loss, compiled = eager_loss, False
                loss = step_loss(X, T)
                loss.backward()
        else:
            loss = step_loss(X, T)
            loss.backward()
        loss_v = float(loss.detach())
        if mode == "data":
            loss_v = comm.sum_scalar(loss_v) / world
        if replicated:
            # shared heads: rank μ's gradient covers machine μ's use of the shared weights; their
            # sum is the whole gradient, the same on every rank (so are the Adam steps)
            comm.sum_grads(params)
        gnorm, skip, was_clipped = optimizer_step(
            opt, params, loss_v, o.clip,
            sum_sq=comm.sum_scalar if (mode == "machine" and not replicated) else None)
        skipped += skip
        clipped += was_clipped
        bad_run = bad_run + 1 if skip else 0
        if bad_run >= MAX_BAD_STEPS:
            raise FloatingPointError(
                f"training diverged: {bad_run} consecutive steps with a non-finite loss or "
                f"gradient (step {step}); lower optim.lr or optim.clip")
        recent = [v for v in losses[-SPIKE_WINDOW:] if math.isfinite(v)]
        spike = bool(len(recent) >= 20 and loss_v > SPIKE_FACTOR * float(np.median(recent)))
        spikes += spike
        losses.append(loss_v)
        s1 = step + 1
        if on_step is not None:
            on_step(s1)
        bar.update(s1, f"loss {loss_v:.3e}", loss=f"{loss_v:.3e}")
        if metrics_f is not None and (s1 % cfg.run.log_every == 0 or spike or skip or s1 == o.steps):
            normA = float(torch.linalg.matrix_norm(batch.X[:, :mc.n, :mc.d].double(), ord=2).max())
            metrics_f[1].writerow(dict(step=s1, loss=loss_v, grad_norm=gnorm,
                                       clipped=int(was_clipped), batch_max_normA=normA,
                                       spike=int(spike), skipped=int(skip),
                                       time_s=round(time.perf_counter() - t0, 3)))
            metrics_f[0].flush()
        if s1 % cfg.eval.every == 0 or s1 == o.steps:
            if mode == "machine":
                _sync_heads(model, world)          # rank 0 evaluates the whole model
        if rank == 0 and (s1 % cfg.eval.every == 0 or s1 == o.steps):
            # the final evaluation also gives the norm-guarded figures
            last_test = evaluate(model, test, guard=guard if s1 == end else None)
            if test_f is not None:
                row = dict(step=s1, mse=last_test["mse"], median=last_test["median"],
                           zero=last_test["zero"])
                row.update({f"layer{l}": v for l, v in enumerate(last_test["per_layer"])})
                test_f[1].writerow(row)
                test_f[0].flush()
        if s1 % cfg.run.checkpoint_every == 0 or s1 == end:
            _checkpoint(model, opt, s1, cfg, run_dir, mode, rank, world,
                        dict(losses=losses, spikes=spikes, skipped=skipped, clipped=clipped))
    bar.close()
    seconds = time.perf_counter() - t0
    if mode == "machine":
        _sync_heads(model, world)
    if rank == 0 and "guarded_mse" not in last_test:      # no evaluation at the last step
        last_test = evaluate(model, test, guard=guard)
    for f in (metrics_f, test_f):
        if f is not None:
            f[0].close()
    done = end - start
    res = TrainResult(run_dir=run_dir, steps=end, final_loss=losses[-1] if losses else float("nan"),
                      test=last_test, losses=losses, spikes=spikes, skipped=skipped,
                      seconds=seconds, steps_per_s=done / seconds if seconds > 0 else 0.0,
                      clipped_fraction=clipped / max(1, len(losses)), world=world, mode=mode,
                      compiled=compiled)
    if write:
        if end == o.steps:
            save_checkpoint(os.path.join(run_dir, "final.pt"), model, None, end, cfg,
                            dict(spikes=spikes, skipped=skipped))
        write_run_report(res, cfg, model)
    return res


def optimizer_step(opt, params, loss_v: float, clip: float, sum_sq=None):
    """One update from the gradients already in ``params``: the global gradient norm (summed
    over ranks by ``sum_sq`` in machine-parallel training), a skipped update when the loss or
    the norm is not finite, the global-norm clip, Adam. Returns ``(norm, skipped, clipped)``."""
    sq = sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None)
    if sum_sq is not None:
        sq = sum_sq(sq)
    gnorm = math.sqrt(sq) if math.isfinite(sq) else float("inf")
    if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
        opt.zero_grad(set_to_none=True)
        return gnorm, True, False
    was_clipped = clip > 0 and gnorm > clip
    if was_clipped:
        f = clip / (gnorm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(f)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return gnorm, False, was_clipped


def _test_fields(layers: int) -> List[str]:
    return ["step", "mse", "median", "zero"] + [f"layer{l}" for l in range(layers + 1)]


def _open_csv(path: str, fields: List[str], start: int):
    """Open for appending; on resume drop rows past the checkpoint (they will be redone)."""
    rows = []
    if start > 0 and os.path.exists(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= start]
    f = open(path, "w", newline="")
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return f, w


def _sync_heads(model: LinearTransformer, world: int) -> None:
    """Machine-parallel: every rank receives every machine's head (rank μ owns head μ)."""
    import torch.distributed as dist
    for mu in range(world):
        for p in model.head_parameters(mu):
            dist.broadcast(p.data, src=mu)


def _checkpoint(model, opt, step, cfg, run_dir, mode, rank, world, extra) -> None:
    if mode == "machine":
        import torch.distributed as dist
        _sync_heads(model, world)
        states: List[Any] = [None] * world
        dist.all_gather_object(states, opt.state_dict())
        opt_state = states
    else:
        opt_state = opt.state_dict()
    if run_dir is not None:
        save_checkpoint(os.path.join(run_dir, "checkpoints", f"step_{step:06d}.pt"), model,
                        opt_state, step, cfg, extra)


# ---------------------------------------------------------------------------------------------
# report


def write_run_report(res: TrainResult, cfg: TrainConfig, model: LinearTransformer) -> None:
    """summary.md (with :func:`verdict`) and loss.png of a run directory."""
    d = res.run_dir
    t = res.test or {}
    zero = t.get("zero", float("nan"))
    mse = t.get("mse", float("nan"))
    lines = [f"# Training run: {cfg.model.regime}, seed {cfg.optim.seed}", "",
             f"- steps {res.steps} of {cfg.optim.steps}; batch {cfg.optim.batch}; lr {cfg.optim.lr};"
             f" clip {cfg.optim.clip}; parallel {res.mode} x {res.world}",
             f"- {res.steps_per_s:.1f} steps/s over the steps run in this session "
             f"({res.seconds:.1f} s, compile time included); threads {torch.get_num_threads()}; "
             f"torch.compile {'on' if res.compiled else 'off'}",
             f"- test set: {cfg.eval.test_size} prompts (seed {cfg.eval.test_seed})",
             f"- test MSE {mse:.4g} (median {t.get('median', float('nan')):.4g}); zero predictor "
             f"{zero:.4g}; reduction {zero / mse if mse > 0 else float('nan'):.1f}x",
             "- per layer: " + ", ".join(f"{v:.4g}" for v in t.get("per_layer", [])),
             *([f"- norm-guarded prediction (the {t['guarded_prompts']} test prompts with "
                f"‖A‖₂ > {t['guard']:.3g}, the training distribution's {GUARD_QUANTILE:.0%} "
                f"quantile, scaled down to it and the prediction scaled back; exact for the "
                f"target): test MSE {t['guarded_mse']:.4g} (median {t['guarded_median']:.4g}); "
                f"reduction {zero / t['guarded_mse'] if t['guarded_mse'] > 0 else float('nan'):.1f}x"]
               if "guarded_mse" in t else []),
             f"- loss spikes (> {SPIKE_FACTOR:g}x running median): {res.spikes}; skipped "
             f"non-finite steps: {res.skipped}; clipped steps: {100 * res.clipped_fraction:.1f}%",
             "", verdict(model, cfg, t).text if "median" in t else "**Verdict: not evaluated.**",
             ""]
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogy(np.arange(1, len(res.losses) + 1), res.losses, lw=0.6)
        ax.axhline(zero, color="k", ls=":", label="zero predictor (test)")
        ax.set_xlabel("step")
        ax.set_ylabel("training MSE")
        ax.set_title(f"{cfg.model.regime}, seed {cfg.optim.seed}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(d, "loss.png"), dpi=110)
        plt.close(fig)
    except ImportError:
        log.warning("matplotlib not installed: no loss.png")


#: structure tests of the training summary's verdict on this many test prompts (at most)
VERDICT_PROMPTS = 1000


def verdict(model: LinearTransformer, cfg: TrainConfig, test: Dict[str, Any]):
    """The one verdict on a trained model (:mod:`eagle_dist.model.verdict`, the rule
    ``eagle-dist extract`` uses): the extraction's structure tests (on the first
    ``min(VERDICT_PROMPTS, eval.test_size)`` prompts of the extraction's test set) and the error
    level of this run's test evaluation ``test`` (median per-prompt MSE) against the reference
    rules on the same ``eval.test_size`` test prompts. Returns a
    :class:`~eagle_dist.model.verdict.Verdict`."""
    import copy
    from .extract import extract
    from .verdict import reference_errors, verdict_for
    reasons: Optional[List[str]] = None
    if math.isfinite(test["median"]):
        try:
            cpu = copy.deepcopy(model).to("cpu", torch.float64)
            reasons = extract("<training run>", model=cpu, cfg=cfg, sweep=False,
                              prompts=max(10, min(VERDICT_PROMPTS, cfg.eval.test_size))).reasons
        except (RuntimeError, ValueError) as exc:        # e.g. non-finite weights: say so
            reasons = [f"the extraction failed ({type(exc).__name__}: {str(exc)[:200]})"]
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32    # as evaluated
    batch = fixed_test_set(cfg.model, cfg.data, cfg.eval.test_size, cfg.eval.test_seed,
                           dtype=dtype)
    refs = reference_errors(batch.X, batch.target, cfg.model)
    return verdict_for(cfg.model, refs, median=test["median"], mean=test["mse"],
                       zero=test["zero"], structure_reasons=reasons,
                       noise_var=cfg.data.noise_var, guarded_mean=test.get("guarded_mse"))


# ---------------------------------------------------------------------------------------------
# launching


def train_rank(cfg: dict, mode: str, resume: bool = False, progress: bool = False,
               stop_at: Optional[int] = None,
               on_round: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """One rank of a data- or machine-parallel run (torchrun, spawned processes, Ray actors)."""
    import torch.distributed as dist
    from ..distributed.runtime import init_group
    tc = train_config_from_dict(cfg)
    if tc.run.threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(tc.run.threads))
        torch.set_num_threads(tc.run.threads)
    rank, world, dev, backend = init_group(tc.run.device, tc.parallel.timeout, None, on_round)
    if tc.run.device == "cpu":
        dev = torch.device("cpu")
    try:
        res = train_loop(tc, rank=rank, world=world, mode=mode, device=dev, resume=resume,
                         progress=progress, on_step=on_round, stop_at=stop_at)
        out = res.__dict__.copy()
        out.update(backend=backend, device=str(dev))
        return out
    finally:
        dist.destroy_process_group()


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = False,
          stop_at: Optional[int] = None) -> TrainResult:
    """Train as ``cfg.parallel`` says: in this process, or on ``parallel.workers`` ranks
    (``torch``: local processes with a gloo/NCCL group; ``ray``: actors)."""
    if cfg.parallel.mode == "none":
        return train_loop(cfg, resume=resume, progress=progress, stop_at=stop_at)
    from ..distributed.runtime import run_ranks
    p = cfg.parallel
    payload = dict(entry="eagle_dist.model.train:train_rank", cfg=cfg.to_dict(), mode=p.mode,
                   resume=resume, progress=False, stop_at=stop_at)
    outs = run_ranks([payload] * p.workers, p.backend, timeout=p.timeout, address=p.address)
    o = outs[0]
    o.pop("backend", None), o.pop("device", None)
    return TrainResult(**o)


__all__ = ["train", "train_loop", "evaluate", "load_checkpoint", "save_checkpoint", "TrainResult",
           "optimizer_step", "init_from", "latest_checkpoint",
           "verdict", "default_run_dir"]
