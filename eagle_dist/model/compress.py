"""Sparsification and quantisation of a trained model's products (paper section 4 and appendix B.5, Fig. 10).

* :func:`sparsify`: entries with ``|w| <= τ = factor · mean|w|`` (per matrix) set to 0.
* :func:`quantize`: sparsify, then 1-D k-means over **all** entries of the sparsified matrix,
  zeros included, with one centre pinned at 0 — ``levels`` free levels plus 0 (EAGLE's pattern:
  ``{0, α₁}`` for ``W_QK``, ``{0, α₂, α₃}`` for ``W_VP``). Every entry takes its nearest level, so
  small entries that survived the threshold fall back to 0 rather than dragging a level towards
  zero. (Clustering only the surviving entries, as before, let such noise entries take a level of
  their own — ``VP [-0.132, 0.0]`` where ``α₂ = −0.120, α₃ = −0.238`` — and the model blew up.)
* :func:`kmeans_1d`: exact 1-D k-means (dynamic programming over the sorted values; the optimal
  clusters of a 1-D k-means are contiguous), optionally with a centre fixed at 0. Deterministic and
  globally optimal, so no initialisation can miss a small cluster.
* :func:`threshold_sweep`: the Fig. 10 sweep — test MSE of the sparsified and of the sparsified +
  quantised model against the threshold factor.

Products come as the pipeline's rows: per layer ``[(lo, hi, W_QK, W_VP), …]`` (one per head).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

#: the threshold factor of the extraction's sparsified and quantised rows (τ = 1.5 · mean|w|)
TAU_FACTOR = 1.5
#: the Fig. 10 sweep: τ = factor · mean|w| for these factors
SWEEP_FACTORS = tuple(float(x) for x in np.round(np.arange(0.0, 4.0001, 0.25), 2))
#: free k-means levels (besides 0) of W_QK (α₁) and W_VP (α₂, α₃)
QK_LEVELS, VP_LEVELS = 1, 2


def sparsify(W: torch.Tensor, factor: float = TAU_FACTOR) -> torch.Tensor:
    """``W`` with every entry ``|w| <= factor · mean|w|`` set to 0 (``factor`` >= 0)."""
    if not factor >= 0:
        raise ValueError(f"factor={factor!r}: the threshold factor must be >= 0")
    tau = factor * float(W.abs().mean())
    return torch.where(W.abs() > tau, W, torch.zeros_like(W))


def kmeans_1d(values, k: int, *, zero: bool = False) -> np.ndarray:
    """Sorted centres of the optimal 1-D k-means of ``values`` (least squares, exact).

    ``zero=True`` pins one of the ``k`` centres at 0 (the others free). ``k`` is reduced to the
    number of distinct values when there are fewer. Dynamic programming over the sorted distinct
    values u₁ < … < u_n with their counts (the optimal clusters of a 1-D k-means are contiguous):
    ``F[m][j]`` = least cost of u₁ … u_j in m clusters around their means, ``G[m][j]`` = the same
    plus one (possibly empty) cluster around 0; each of the k steps is one (n+1)² array operation
    (n <= 600 here)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: the number of centres must be a positive integer")
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("values: k-means needs finite values (found NaN or Inf)")
    u, cnt = np.unique(v, return_counts=True)
    free = min(int(k) - (1 if zero else 0), u.size)
    if u.size == 0 or free <= 0:
        return np.zeros(1 if zero else 0)
    n = u.size
    W = np.concatenate([[0.0], np.cumsum(cnt)])
    S1 = np.concatenate([[0.0], np.cumsum(cnt * u)])
    S2 = np.concatenate([[0.0], np.cumsum(cnt * u * u)])
    i, j = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        seg = np.where(i < j, (S2[j] - S2[i]) - (S1[j] - S1[i]) ** 2 / (W[j] - W[i]), np.inf)
    seg = np.maximum(seg, 0.0)                              # [i, j) around its mean
    seg0 = np.where(i <= j, S2[j] - S2[i], np.inf)          # [i, j) around 0 (may be empty)
    F = np.full((free + 1, n + 1), np.inf)
    F[0, 0] = 0.0
    argF = np.zeros((free + 1, n + 1), dtype=np.int64)
    G = np.full((free + 1, n + 1), np.inf)
    argG = np.zeros((free + 1, n + 1), dtype=np.int64)
    zlast = np.zeros((free + 1, n + 1), dtype=bool)          # G's last cluster is the zero one
    if zero:
        G[0], zlast[0] = S2, True
    for m in range(1, free + 1):
        T = F[m - 1][:, None] + seg
        argF[m], F[m] = T.argmin(0), T.min(0)
        if zero:
            T1 = G[m - 1][:, None] + seg                    # a free cluster last
            T0 = F[m][:, None] + seg0                       # the zero cluster last
            a1, a0 = T1.argmin(0), T0.argmin(0)
            c1, c0 = T1.min(0), T0.min(0)
            zlast[m] = c0 <= c1
            G[m] = np.where(zlast[m], c0, c1)
            argG[m] = np.where(zlast[m], a0, a1)
    centres: List[float] = [0.0] if zero else []
    j, m, in_g = n, free, zero
    while j > 0:
        if in_g:
            i0 = int(argG[m, j])
            if zlast[m, j]:                                 # [i0, j) is the zero cluster
                in_g, j = False, i0
                continue
        else:
            i0 = int(argF[m, j])
        centres.append(float((S1[j] - S1[i0]) / (W[j] - W[i0])))
        j, m = i0, m - 1
    return np.sort(np.array(centres))


def quantize(W: torch.Tensor, levels: int, factor: float = TAU_FACTOR
             ) -> Tuple[torch.Tensor, np.ndarray]:
    """Sparsify at ``τ = factor · mean|w|``, then replace every entry by the nearest of 0 and
    ``levels`` k-means centres (k-means over all entries, zeros included, one centre pinned at 0).
    Returns the quantised matrix and its nonzero levels (sorted)."""
    S = sparsify(W, factor)
    s = S.detach().cpu().double().numpy()
    c = kmeans_1d(s, levels + 1, zero=True)
    idx = np.argmin(np.abs(s[..., None] - c), axis=-1)
    Q = torch.tensor(c[idx], dtype=W.dtype)
    return Q, c[c != 0]


def compress_products(prods, factor: float = TAU_FACTOR, quantise: bool = False):
    """Every head's ``(W_QK, W_VP)`` sparsified (and with ``quantise`` quantised: QK_LEVELS and
    VP_LEVELS levels besides 0); returns the products and, per layer, the nonzero levels
    ``{"qk": […], "vp": […]}`` (empty lists without ``quantise``)."""
    out, levels = [], []
    for row in prods:
        r2, lv = [], {"qk": [], "vp": []}
        for lo, hi, QK, VP in row:
            if quantise:
                Qq, cq = quantize(QK, QK_LEVELS, factor)
                Vq, cv = quantize(VP, VP_LEVELS, factor)
                lv["qk"] += [float(x) for x in cq]
                lv["vp"] += [float(x) for x in cv]
            else:
                Qq, Vq = sparsify(QK, factor), sparsify(VP, factor)
            r2.append((lo, hi, Qq, Vq))
        out.append(r2)
        levels.append(lv)
    return out, levels


def kept_fraction(prods, factor: float) -> float:
    """Share of the products' entries that survive the threshold ``factor · mean|w|``."""
    kept = total = 0
    for row in prods:
        for _, _, QK, VP in row:
            for W in (QK, VP):
                kept += int((sparsify(W, factor) != 0).sum())
                total += W.numel()
    return kept / total if total else 0.0


def threshold_sweep(prods, mse: Callable[[list], float],
                    factors: Sequence[float] = SWEEP_FACTORS) -> List[Dict[str, float]]:
    """Fig. 10: for each threshold factor, the share of entries kept and the test MSE
    (``mse(products)``) of the sparsified and of the sparsified + quantised model."""
    rows = []
    for f in factors:
        sp, _ = compress_products(prods, f)
        qz, _ = compress_products(prods, f, quantise=True)
        rows.append(dict(factor=float(f), kept=kept_fraction(prods, f), sparsified=mse(sp),
                         quantised=mse(qz)))
    return rows


__all__ = ["TAU_FACTOR", "SWEEP_FACTORS", "sparsify", "kmeans_1d", "quantize",
           "compress_products", "kept_fraction", "threshold_sweep"]
