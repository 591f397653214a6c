"""Streamed large evaluation of a trained model on fresh prompts.

A fixed 10,000-prompt test set says little about rare failures: a model that blows up on one prompt
in 20,000 looks clean on it. :func:`evaluate_checkpoint` draws ``prompts`` FRESH prompts of the
model's training distribution in chunks — chunk i from ``step_seed(seed, i, stream=EVAL_STREAM)``,
a seed stream of its own, disjoint from the training batches (stream 0), the fixed test set
(stream 1) and the norm guard's prompts (stream 2) — and keeps only per-prompt numbers (float32
MSEs and ‖A‖₂, 4 bytes each per prompt and column) plus the worst prompts, so memory stays bounded
by the chunk and the per-prompt columns. Per prompt it records the MSE of

* ``raw``: the model (:meth:`LinearTransformer.forward`);
* ``guarded``: the norm-guarded model (:meth:`LinearTransformer.guarded`, the training
  distribution's 95 % quantile of ‖A‖₂, as in training);
* ``safeguarded``: the per-layer safeguard (:mod:`eagle_dist.model.safeguard`; for a distributed
  model the learned *kernel* with its local checks, :func:`~eagle_dist.model.kernel.kernel_forward`);
* ``kernel`` (distributed only): the learned kernel without the safeguard;
* ``zero``: the zero predictor (the prompt's own mean square of the target).

A *blow-up* is a prompt whose MSE exceeds 1 (the zero predictor's mean is ≈ 0.095).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..control import Progress
from .data import norm_guard, sample_batch, step_seed
from .kernel import kernel_forward
from .safeguard import Safeguard, safeguarded_forward
from .transformer import block_width

log = logging.getLogger("eagle_dist.evaluate")

#: the seed stream of evaluation prompts (0: training batches, 1: test set, 2: norm guard)
EVAL_STREAM = 3
DEFAULT_SEED = 2_000_003
BLOW_UP = 1.0
#: blow-up prompts traced layer by layer per model (they are rare; the cap bounds memory)
MAX_TRACED = 200
#: the safeguard used for centralized models (EAGLE's guarantee, no slack) and for the
#: distributed learned kernel (local checks; its C check allows each worker's message up to 2‖C‖,
#: so the all-reduced C at most doubles per round — the no-slack local check falls back on a third
#: of the prompts, see evaluation.md)
CENTRAL_SAFEGUARD = Safeguard(growth=0.0, c_growth=0.0)
KERNEL_SAFEGUARD = Safeguard(growth=0.0, c_growth=1.0)


def default_safeguard(regime: str) -> Safeguard:
    return KERNEL_SAFEGUARD if regime == "distributed" else CENTRAL_SAFEGUARD


def _stats(e: np.ndarray) -> Dict[str, float]:
    e64 = e.astype(np.float64)
    finite = np.isfinite(e64)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(e64.mean()) if finite.all() else float("inf")
    return dict(mean=mean, median=float(np.median(e64)),
                p99=float(np.quantile(e64, 0.99)), max=float(np.max(e64)) if finite.all()
                else float("inf"), blowups=int(np.sum(~(e64 <= BLOW_UP))),
                nonfinite=int(np.sum(~finite)))


@torch.no_grad()
def trace(model, X: torch.Tensor) -> List[Dict[str, List[float]]]:
    """Per prompt of X and per layer ℓ = 0..L: σ₁(A_ℓ) (exact), ‖C_ℓ‖_F (distributed: the mean of
    the machines' copies) and the readout's norm ‖D_ℓ‖_F, along the transformer (float64)."""
    c = model.cfg
    out = [dict(sigma=[], c_norm=[], d_norm=[]) for _ in range(X.shape[0])]
    X = X.double()
    m = copy.deepcopy(model).double()
    for Z in m.trajectory(X):
        sig = torch.linalg.matrix_norm(m.a_blocks(Z), ord=2)
        if c.regime == "distributed":
            w, dl = block_width(c), c.d // c.machines
            Cb = torch.stack([Z[:, :c.n, mu * w + dl:(mu + 1) * w]
                              for mu in range(c.machines)], 1).mean(1)
        else:
            Cb = Z[:, :c.n, c.d:]
        cn = torch.linalg.vector_norm(Cb, dim=(1, 2))
        dn = torch.linalg.vector_norm(m.readout(Z), dim=(1, 2))
        for i in range(X.shape[0]):
            out[i]["sigma"].append(float(sig[i]))
            out[i]["c_norm"].append(float(cn[i]))
            out[i]["d_norm"].append(float(dn[i]))
    return out


def mechanism(sigma: List[float], c_norm: List[float]) -> str:
    """How a traced prompt fails: the first layer ℓ (1-based) whose step grows σ₁(A) — "A grows
    in layer ℓ" (an overshooting A step; not counted after the last layer, which nothing reads)
    — else the first whose step grows ‖C‖_F ("C grows in layer ℓ": a C/D step too large for the
    A it meets), else "no growth"."""
    L = len(sigma) - 1
    for l in range(L - 1):
        if not sigma[l + 1] <= sigma[l]:
            return f"A grows in layer {l + 1}"
    for l in range(L):
        if not c_norm[l + 1] <= c_norm[l]:
            return f"C grows in layer {l + 1}"
    return "no growth"


def evaluate_checkpoint(path: str, prompts: int = 100_000, chunk: int = 4096,
                        seed: int = DEFAULT_SEED, safeguard: Optional[Safeguard] = None,
                        worst: int = 5, progress: bool = False) -> Dict[str, Any]:
    """Evaluate the checkpoint at ``path`` on ``prompts`` fresh prompts (module docstring).

    Returns a JSON-able dict: per predictor the mean, median, 99th percentile, max and blow-ups
    (MSE > 1) with blow-ups per 100,000; the safeguard's fallback rates (any layer, per layer; for
    the kernel per worker-round too) and its median change against the raw model; the worst
    ``worst`` prompts by raw and by guarded MSE with their ‖A‖₂ percentile among all evaluated
    prompts and a layer-by-layer trace (σ₁(A_ℓ), ‖C_ℓ‖_F)."""
    from .train import load_checkpoint
    for name, v, lo in (("prompts", prompts, 1), ("chunk", chunk, 1), ("worst", worst, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name}={v!r}: pass an int >= {lo}")
    model, cfg, _ = load_checkpoint(path)
    mc, dc = cfg.model, cfg.data
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
    model = model.to(dtype).eval()
    sg = default_safeguard(mc.regime) if safeguard is None else safeguard
    guard = norm_guard(mc, dc, cfg.optim.seed)
    dist = mc.regime == "distributed"
    cols = ["raw", "guarded", "safeguarded", "zero", "normA"] + (["kernel"] if dist else [])
    per = {k: np.empty(prompts, dtype=np.float32) for k in cols}
    L = mc.layers
    fb_layer = np.zeros(L, dtype=np.int64)          # prompts with a fallback in layer ℓ
    fb_any = 0
    fb_cells = 0                                    # (worker, round) fallbacks, kernel only
    keep: Dict[str, List] = {"raw": [], "guarded": []}      # (mse, index, X) candidates
    blown: List = []                 # (index, X) of every raw or guarded blow-up (up to MAX_TRACED)
    bar = Progress("evaluate", prompts, "prompt", progress)
    t0 = time.perf_counter()
    chunks = math.ceil(prompts / chunk)
    for ci in range(chunks):
        lo = ci * chunk
        size = min(chunk, prompts - lo)
        b = sample_batch(size, mc, dc, seed=step_seed(seed, ci, EVAL_STREAM), dtype=dtype)
        X, T = b.X, b.target

        def mse(p):
            return (p.double() - T.double()).pow(2).mean(dim=(1, 2))
        nA = torch.linalg.matrix_norm(X[:, :mc.n, :mc.d].double(), ord=2)
        with torch.no_grad():
            e_raw = mse(model(X))
            # the guard leaves prompts with ‖A‖₂ ≤ guard as they are: run it on the others only
            e_g = e_raw.clone()
            big = (nA > guard).nonzero().flatten()
            if big.numel():
                e_g[big] = (model.guarded(X[big], guard, norms=nA[big]).double()
                            - T[big].double()).pow(2).mean(dim=(1, 2))
        if dist:
            kp, _ = kernel_forward(model, X)
            per["kernel"][lo:lo + size] = mse(kp).numpy()
            sp, fb = kernel_forward(model, X, sg)
            fb_cells += int(fb.sum())
            fb = fb.any(2)
        else:
            o = safeguarded_forward(model, X, sg, norms=nA)
            sp, fb = o.prediction, o.fallback
        per["raw"][lo:lo + size] = e_raw.numpy()
        per["guarded"][lo:lo + size] = e_g.numpy()
        per["safeguarded"][lo:lo + size] = mse(sp).numpy()
        per["zero"][lo:lo + size] = T.double().pow(2).mean(dim=(1, 2)).numpy()
        per["normA"][lo:lo + size] = nA.numpy()
        fb_layer += fb.sum(0).numpy().astype(np.int64)
        fb_any += int(fb.any(1).sum())
        hit = (~(e_raw <= BLOW_UP) | ~(e_g <= BLOW_UP)).nonzero().flatten()
        for i in hit[:max(0, MAX_TRACED - len(blown))]:
            blown.append((lo + int(i), X[int(i)].clone()))
        for key, e in (("raw", e_raw), ("guarded", e_g)):
            e = torch.nan_to_num(e, nan=float("inf"))
            top = torch.topk(e, min(worst, size)).indices if worst else []
            keep[key] += [(float(e[i]), lo + int(i), X[int(i)].clone()) for i in top]
            keep[key] = sorted(keep[key], key=lambda t: -t[0])[:worst]
        bar.update(lo + size)
    bar.close()
    seconds = time.perf_counter() - t0
    norms = per["normA"].astype(np.float64)
    sorted_norms = np.sort(norms)

    def pct(x: float) -> float:
        return float(np.searchsorted(sorted_norms, x, side="right") / len(sorted_norms) * 100)
    worst_rows: Dict[str, List[Dict[str, Any]]] = {}
    for key, cands in keep.items():
        if not cands:
            worst_rows[key] = []
            continue
        Xw = torch.stack([t[2] for t in cands])
        tr = trace(model, Xw)
        rows = []
        for (e, idx, _), t in zip(cands, tr):
            rows.append(dict(index=idx, chunk=idx // chunk, position=idx % chunk,
                             normA=float(norms[idx]), normA_percentile=pct(float(norms[idx])),
                             raw=float(per["raw"][idx]), guarded=float(per["guarded"][idx]),
                             safeguarded=float(per["safeguarded"][idx]),
                             zero=float(per["zero"][idx]),
                             kernel=float(per["kernel"][idx]) if dist else None, **t))
        worst_rows[key] = rows
    blow_rows = []
    if blown:
        tr = trace(model, torch.stack([x for _, x in blown]))
        for (idx, _), t in zip(blown, tr):
            blow_rows.append(dict(index=idx, normA=float(norms[idx]),
                                  normA_percentile=pct(float(norms[idx])),
                                  raw=float(per["raw"][idx]), guarded=float(per["guarded"][idx]),
                                  safeguarded=float(per["safeguarded"][idx]),
                                  mechanism=mechanism(t["sigma"], t["c_norm"]), **t))
    out: Dict[str, Any] = dict(
        checkpoint=path, regime=mc.regime, heads=mc.heads, tied=mc.tied,
        noise_var=dc.noise_var, shared_heads=mc.shared_heads, seed=seed, prompts=prompts,
        chunk=chunk, stream=EVAL_STREAM, dtype=str(dtype).replace("torch.", ""), guard=guard,
        safeguard=dataclasses.asdict(sg), seconds=seconds,
        threads=torch.get_num_threads(), normA_p50=float(np.median(norms)),
        normA_p99=float(np.quantile(norms, 0.99)), normA_max=float(norms.max()),
        fallback_any=fb_any / prompts, fallback_per_layer=(fb_layer / prompts).tolist(),
        fallback_cells=(fb_cells / (prompts * L * mc.machines)) if dist else None,
        worst=worst_rows, blowups=blow_rows)
    for k in cols:
        if k == "normA":
            continue
        s = _stats(per[k])
        s["blowups_per_100k"] = s["blowups"] / prompts * 1e5
        out[k] = s
    base = out["kernel"]["median"] if dist else out["raw"]["median"]
    out["safeguarded"]["median_change"] = out["safeguarded"]["median"] / base - 1.0
    out["safeguarded"]["median_change_vs_raw"] = (out["safeguarded"]["median"]
                                                  / out["raw"]["median"] - 1.0)
    return out


__all__ = ["evaluate_checkpoint", "trace", "mechanism", "EVAL_STREAM", "DEFAULT_SEED", "CENTRAL_SAFEGUARD",
           "KERNEL_SAFEGUARD", "default_safeguard"]
