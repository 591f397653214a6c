"""Structure tests on a trained model's products (the paper's "Algorithm extraction", section 4 and appendix C.3):
how much of ``W_QK`` / ``W_VP`` lies on EAGLE's pattern, the per-layer scalars α₁ (QK on A), α₂
(VP on A), α₃ (VP on C), the sketch tests of the compute-limited regime (numerical rank, the
QK-vs-VP gap, W_VP's symmetry and subspace against a Haar ``S Sᵀ``) and the communication pattern
of the distributed regime. Products come per layer as ``[(lo, hi, W_QK, W_VP), …]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .transformer import LinearTransformer, block_width

#: structure threshold: share of a block's energy on its expected pattern
STRUCTURE_MIN = 0.5


def _energy(W: torch.Tensor) -> float:
    return float(W.double().pow(2).sum())


def _share(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


@dataclass
class LayerStructure:
    layer: int
    alpha1: List[float]                 # per head/machine
    alpha2: List[float]
    alpha3: List[float]
    qk_pattern: float                   # energy share on the expected pattern
    vp_pattern: float
    qk_query_share: float               # QK energy touching the query (C/D) features
    rank_qk: int = 0                    # compute-limited: numerical rank of the A block
    rank_vp: int = 0
    sketch_gap: float = float("nan")    # relative difference of normalised QK, VP A blocks
    spectrum_qk: List[float] = field(default_factory=list)
    vp_asymmetry: float = float("nan")  # compute-limited: ‖VA − VAᵀ‖/‖VA‖ (sketched EAGLE: 0)
    subspace_cos: float = float("nan")  # … smallest principal cosine, rank-r spaces of QA and VA
    cross_a_share: float = float("nan")  # distributed: VP energy sent to other machines' A cols
    cross_c_share: float = float("nan")  # … and to their C/D cols, relative to the C self block
    sketch: Optional[torch.Tensor] = None


def _numerical_rank(W: torch.Tensor, rel: float = 0.1) -> Tuple[int, List[float]]:
    s = torch.linalg.svdvals(W.double())
    s = s / s[0] if float(s[0]) > 0 else s
    return int((s > rel).sum()), [float(x) for x in s]


def layer_structure(model: LinearTransformer, prods_l, l: int) -> LayerStructure:
    c = model.cfg
    if c.regime == "distributed":
        w, dl = block_width(c), c.d // c.machines
        a1, a2, a3, qk_pat, vp_pat, q_share, cross_a, cross_c = [], [], [], [], [], [], [], []
        for mu, (lo, hi, QK, VP) in enumerate(prods_l):
            a1.append(float(QK[:dl, :dl].diagonal().mean()))
            self_blk = VP[:, mu * w:(mu + 1) * w]
            a2.append(float(self_blk[:dl, :dl].diagonal().mean()))
            a3.append(float(np.mean([float(VP[dl:, nu * w + dl:(nu + 1) * w].diagonal().mean())
                                     for nu in range(c.machines)])))
            qk_pat.append(_share(_energy(QK[:dl, :dl].diagonal()), _energy(QK)))
            diag_e = _energy(self_blk[:dl, :dl].diagonal()) + sum(
                _energy(VP[dl:, nu * w + dl:(nu + 1) * w].diagonal()) for nu in range(c.machines))
            vp_pat.append(_share(diag_e, _energy(VP)))
            q_share.append(_share(_energy(QK) - _energy(QK[:dl, :dl]), _energy(QK)))
            others = [nu for nu in range(c.machines) if nu != mu]
            ea = sum(_energy(VP[:, nu * w:nu * w + dl]) for nu in others)
            ec = sum(_energy(VP[:, nu * w + dl:(nu + 1) * w]) for nu in others)
            cross_a.append(_share(ea, _energy(VP)))
            cross_c.append(_share(ec / len(others), _energy(self_blk[:, dl:])))
        sign = [1.0 if x >= 0 else -1.0 for x in a1]
        return LayerStructure(l, [s * x for s, x in zip(sign, a1)], [s * x for s, x in zip(sign, a2)],
                              [s * x for s, x in zip(sign, a3)], float(np.mean(qk_pat)),
                              float(np.mean(vp_pat)), float(np.mean(q_share)),
                              cross_a_share=float(np.mean(cross_a)),
                              cross_c_share=float(np.mean(cross_c)))
    # unconstrained / compute-limited: one (kept) head
    lo, hi, QK, VP = prods_l[0]
    d = c.d
    QA, VA = QK[:d, :d], VP[:d, :d]
    a3 = float(VP[d:, d:].diagonal().mean())
    q_share = _share(_energy(QK) - _energy(QA), _energy(QK))
    if c.regime == "compute_limited":
        r = c.r
        sym = (QA + QA.T) / 2
        evals, evecs = torch.linalg.eigh(sym)
        order = torch.argsort(evals.abs(), descending=True)
        S = evecs[:, order[:r]]                                  # (d, r) orthonormal
        a1 = float(evals[order[:r]].mean())
        a2 = float((S.T @ VA @ S).diagonal().mean())
        P = S @ S.T
        qk_pat = _share(_energy(P @ QA @ P), _energy(QK))
        vp_pat = _share(_energy(P @ VA @ P) + _energy(VP[d:, d:].diagonal()), _energy(VP))
        rq, spec = _numerical_rank(QA)
        rv, _ = _numerical_rank(VA)
        nq, nv = QA / torch.linalg.matrix_norm(QA, 2), VA / torch.linalg.matrix_norm(VA, 2)
        gap = min(float(torch.linalg.matrix_norm(nq - s * nv) / torch.linalg.matrix_norm(nq))
                  for s in (1.0, -1.0))
        sign = 1.0 if a1 >= 0 else -1.0
        # sketched EAGLE needs W_VP's A block ∝ the same projection S Sᵀ as W_QK's: symmetric,
        # on the same rank-r subspace (column space of VA against S)
        Uv = torch.linalg.svd(VA)[0][:, :r]
        cos = float(torch.linalg.svdvals(S.T @ Uv).min())
        asym = float(torch.linalg.matrix_norm(VA - VA.T) / torch.linalg.matrix_norm(VA))
        return LayerStructure(l, [sign * a1], [sign * a2], [sign * a3], qk_pat, vp_pat, q_share,
                              rank_qk=rq, rank_vp=rv, sketch_gap=gap, spectrum_qk=spec, sketch=S,
                              vp_asymmetry=asym, subspace_cos=cos)
    a1 = float(QA.diagonal().mean())
    a2 = float(VA.diagonal().mean())
    qk_pat = _share(_energy(QA.diagonal()), _energy(QK))
    vp_pat = _share(_energy(VA.diagonal()) + _energy(VP[d:, d:].diagonal()), _energy(VP))
    sign = 1.0 if a1 >= 0 else -1.0
    return LayerStructure(l, [sign * a1], [sign * a2], [sign * a3], qk_pat, vp_pat, q_share)


def merge_heads(heads: List[LayerStructure], l: int) -> LayerStructure:
    """One EAGLE layer from heads that read the same features: α₁α₂ and α₁α₃ summed over the
    heads (α₁ := 1), pattern shares weighted by each head's scalars' size."""
    a12 = sum(s.alpha1[0] * s.alpha2[0] for s in heads)
    a13 = sum(s.alpha1[0] * s.alpha3[0] for s in heads)
    w = np.array([abs(s.alpha1[0] * s.alpha2[0]) + abs(s.alpha1[0] * s.alpha3[0]) for s in heads])
    w = w / w.sum() if w.sum() > 0 else np.full(len(heads), 1.0 / len(heads))
    avg = lambda f: float(sum(wi * getattr(s, f) for wi, s in zip(w, heads)))  # noqa: E731
    return LayerStructure(l, [1.0], [a12], [a13], avg("qk_pattern"), avg("vp_pattern"),
                          avg("qk_query_share"))


def haar_projection_entries(d: int, r: int, draws: int = 200, seed: int = 0):
    """Diagonal and off-diagonal entries of S Sᵀ over ``draws`` Haar sketches S (d × r)."""
    g = np.random.default_rng(seed)
    diag, off = [], []
    for _ in range(draws):
        Q, _ = np.linalg.qr(g.standard_normal((d, r)))
        P = Q @ Q.T
        diag += list(np.diag(P))
        off += list(P[~np.eye(d, dtype=bool)])
    return diag, off


def haar_sketch_stats(d: int, r: int, draws: int = 200, seed: int = 0) -> Dict[str, float]:
    """Entry statistics of S Sᵀ (S: d × r Haar orthonormal), normalised to spectral norm 1:
    diagonal mean/std and off-diagonal std (Fig. 4's comparison)."""
    diag, off = haar_projection_entries(d, r, draws, seed)
    return dict(diag_mean=float(np.mean(diag)), diag_std=float(np.std(diag)),
                off_std=float(np.std(off)))


__all__ = ["STRUCTURE_MIN", "LayerStructure", "layer_structure", "merge_heads",
           "haar_projection_entries", "haar_sketch_stats"]
