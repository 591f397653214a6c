"""Algorithm extraction from a trained checkpoint (the paper's "Algorithm extraction" and its
appendix), automated.

Pipeline (``extract(checkpoint)``; ``eagle-dist extract --checkpoint …``):

1. **Prune heads** (H > 1; not in the distributed regime, where head μ is machine μ): rank each
   layer's heads by the test-MSE increase when one is removed, keep the top 8/4/2/1 per layer and
   track the MSE at every size.
2. **Products** ``W_QK = W_Q W_Kᵀ`` and ``W_VP = W_V W_Pᵀ`` per layer (and machine).
3. **Sparsify** (|w| ≤ τ = 1.5 · mean |w| → 0, per matrix) and **quantise** (1-D k-means on the
   surviving entries: 1 level + 0 for W_QK, 2 levels + 0 for W_VP); test MSE of each model.
4. **Structure tests**: energy on the expected diagonal / blocks, the QK block of the query
   columns, numerical rank and spectrum against ``S Sᵀ`` of a Haar S (compute-limited), the
   communication pattern across machines (distributed).
5. **Per-layer scalars** ``α₁`` (QK on A), ``α₂`` (VP on A), ``α₃`` (VP on C), sign-aligned so
   ``α₁ > 0``, and the **scaling law** of ``α₁α₂``, ``α₁α₃`` against the batch-maximum ``‖A_ℓ‖₂``
   of the transformer's own activations: ``η̂ = −α₁α₂·max‖A_ℓ‖²``, ``γ̂ = −α₁α₃·max‖A_ℓ‖²`` and
   the fitted exponent p of ``|α₁α₂| ∝ max‖A_ℓ‖^{−p}`` (paper: η̂ ≈ 1, γ̂ ≈ 1.9, p = 2).
6. **Replay** of the extracted iteration through the project's kernel
   (:func:`eagle_dist.kernels.eagle_update`, ``ηρ = −α₁α₂``, ``γρ = −α₁α₃``, the fixed learned
   sketch S_ℓ in the compute-limited regime, the paper's local-update-and-mean rounds in the
   distributed regime) and the **fidelity table** (paper Table 1): mean over prompts and entries
   of ``(Z_ℓ^TF − Z_ℓ^alg)²`` per layer. The transformer's D block is −(EAGLE's D), the sign the
   readout undoes.

A model without EAGLE structure (too briefly trained, random) is reported as such: the scalars
are printed but marked as not meaningful, and the verdict says so.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..kernels import eagle_update
from .config import TrainConfig
from .data import Batch, fixed_test_set, norm_guard
from .transformer import LinearTransformer, block_width

TAU_FACTOR = 1.5
#: paper Table 1 maxima (per-entry mean squared difference), by regime
PAPER_TABLE1 = {"unconstrained": 5.27e-4, "distributed": 1.40e-4, "compute_limited": 1.4e-5}
PAPER_TABLE1_ROWS = {"unconstrained": [0, 2.36e-4, 5.27e-4, 3.70e-4, 2.16e-4],
                     "distributed": [0, 0.62e-4, 1.40e-4, 1.28e-4, 1.32e-4],
                     "compute_limited": [0, 0.01e-4, 0.02e-4, 0.13e-4, 0.14e-4]}
#: structure thresholds: share of a block's energy on its expected pattern
STRUCTURE_MIN = 0.5


# ---------------------------------------------------------------------------------------------
# the product-form forward (any products, any head subset): the transformer's own function


def product_trajectory(Z0: torch.Tensor, n: int, layers: Sequence[Sequence[Tuple[int, int, torch.Tensor, torch.Tensor]]]):
    """[Z₀ … Z_L] with layer ℓ = Σ over its heads ``(lo, hi, W_QK, W_VP)`` of
    ``Z_h W_QK (Z_{c,h}ᵀ Z_{c,h}) W_VP`` (Z_h = features lo:hi)."""
    Z = Z0
    out = [Z]
    for heads in layers:
        upd = torch.zeros_like(Z)
        for lo, hi, QK, VP in heads:
            Zi = Z[..., lo:hi]
            Zc = Zi[:, :n]
            upd = upd + ((Zi @ QK) @ (Zc.transpose(1, 2) @ Zc)) @ VP
        Z = Z + upd
        out.append(Z)
    return out


def model_products(model: LinearTransformer, keep: Optional[List[List[int]]] = None):
    """Per layer: [(lo, hi, W_QK, W_VP)] for the kept heads (all by default), float64."""
    out = []
    for l, layer in enumerate(model.layers):
        hs = range(len(layer.heads)) if keep is None else keep[l]
        row = []
        for h in hs:
            head = layer.heads[h]
            QK, VP = head.products()
            row.append((head.lo, head.hi, QK.double(), VP.double()))
        out.append(row)
    return out


def _mse(model: LinearTransformer, test: Batch, prods) -> float:
    Z = product_trajectory(model.embed(test.X), model.cfg.n, prods)[-1]
    return float((model.readout(Z) - test.target).pow(2).mean())


# ---------------------------------------------------------------------------------------------
# sparsification and quantisation


def sparsify(W: torch.Tensor, factor: float = TAU_FACTOR) -> torch.Tensor:
    tau = factor * float(W.abs().mean())
    return torch.where(W.abs() > tau, W, torch.zeros_like(W))


def kmeans_1d(values: np.ndarray, k: int, iters: int = 100) -> np.ndarray:
    """Centres of a 1-D k-means (quantile initialisation, deterministic)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return np.zeros(0)
    k = min(k, np.unique(v).size)
    c = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        lab = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)
        new = np.array([v[lab == j].mean() if np.any(lab == j) else c[j] for j in range(k)])
        if np.allclose(new, c, rtol=0, atol=1e-15):
            break
        c = new
    return c


def quantize(W: torch.Tensor, levels: int) -> Tuple[torch.Tensor, np.ndarray]:
    """Sparsify, then replace every surviving entry by the nearest of ``levels`` k-means
    centres (zero stays zero): ``levels + 1`` distinct values in all."""
    S = sparsify(W)
    nz = S[S != 0].cpu().numpy()
    if nz.size == 0:
        return S, np.zeros(0)
    c = kmeans_1d(nz, levels)
    idx = np.argmin(np.abs(S.cpu().numpy()[..., None] - c), axis=-1)
    Q = torch.tensor(c[idx], dtype=W.dtype) * (S != 0)
    return Q, c


# ---------------------------------------------------------------------------------------------
# structure


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


#: a pruned single head "keeps" the model when its test MSE is within this factor of the full one
PRUNE_KEEP = 1.5


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


# ---------------------------------------------------------------------------------------------
# replay through the kernel


def _rule_from(structs: List[LayerStructure]):
    """Per layer (per machine): ηρ = −α₁α₂ and γρ = −α₁α₃ (kernel form), and the sketch."""
    rule = []
    for s in structs:
        rule.append(dict(etarho=[-a * b for a, b in zip(s.alpha1, s.alpha2)],
                         gammarho=[-a * b for a, b in zip(s.alpha1, s.alpha3)],
                         sketch=s.sketch))
    return rule


def _pattern_products(model: LinearTransformer, a: Sequence[float], c: Sequence[float]):
    """One layer's products with EAGLE's exact pattern: head μ reads its A columns (W_QK =
    diag(I, 0)), writes a_μ·I into its own A columns and c_μ·I into every C/D block (W_VP)."""
    cfg = model.cfg
    if cfg.regime != "distributed":
        F, d = cfg.d + cfg.d_query, cfg.d
        QK = torch.zeros(F, F, dtype=torch.float64)
        QK[:d, :d] = torch.eye(d)
        VP = torch.diag(torch.tensor([a[0]] * d + [c[0]] * cfg.d_query, dtype=torch.float64))
        return [(0, F, QK, VP)]
    w, dl, M = block_width(cfg), cfg.d // cfg.machines, cfg.machines
    row = []
    for mu in range(M):
        QK = torch.zeros(w, w, dtype=torch.float64)
        QK[:dl, :dl] = torch.eye(dl)
        VP = torch.zeros(w, M * w, dtype=torch.float64)
        VP[:dl, mu * w:mu * w + dl] = a[mu] * torch.eye(dl)
        for nu in range(M):
            VP[dl:, nu * w + dl:(nu + 1) * w] = c[mu] * torch.eye(cfg.d_query)
        row.append((mu * w, (mu + 1) * w, QK, VP))
    return row


def least_squares_rule(model: LinearTransformer, traj: List[torch.Tensor]):
    """Per layer (per machine) the scalars (a_μ, c_μ) of EAGLE's exact pattern that best match
    the transformer's own layer update, teacher-forced (input Z_ℓ of the transformer, target
    Z_{ℓ+1} − Z_ℓ, least squares over every prompt and entry); as a rule for :func:`replay`.

    The paper's extraction (and ``_rule_from``) reads the scalars off the products' diagonals;
    this fit asks how close *any* one-scalar-per-block EAGLE rule can come, which separates the
    fit's share of the Table 1 gap from the model's own off-pattern weights."""
    cfg = model.cfg
    K = cfg.machines if cfg.regime == "distributed" else 1
    rule = []
    for l in range(len(traj) - 1):
        Z, target = traj[l], (traj[l + 1] - traj[l]).reshape(-1)
        cols = []
        for k in range(2 * K):                     # unit basis: a_0..a_{K-1}, c_0..c_{K-1}
            e = [0.0] * (2 * K)
            e[k] = 1.0
            row = _pattern_products(model, e[:K], e[K:])
            cols.append((product_trajectory(Z, cfg.n, [row])[1] - Z).reshape(-1))
        Bm = torch.stack(cols, 1)
        coef = torch.linalg.lstsq(Bm, target.unsqueeze(1)).solution[:, 0].tolist()
        rule.append(dict(etarho=[-x for x in coef[:K]], gammarho=[-x for x in coef[K:]],
                         sketch=None))
    return rule


def replay(X: torch.Tensor, model: LinearTransformer, rule) -> List[torch.Tensor]:
    """The extracted iteration on every prompt through :func:`eagle_update` (float64), laid out
    like the transformer's Z_ℓ (D block negated back to the transformer's sign)."""
    c = model.cfg
    n, d = c.n, c.d
    Xd = X.double()
    out: List[List[torch.Tensor]] = [[] for _ in range(len(rule) + 1)]
    M = c.machines if c.regime == "distributed" else 1
    dl = d // M
    for b in range(Xd.shape[0]):
        A, B, C = Xd[b, :n, :d], Xd[b, n:, :d], Xd[b, :n, d:]
        D = torch.zeros(B.shape[0], C.shape[1], dtype=torch.float64)
        shards = [(A[:, mu * dl:(mu + 1) * dl], B[:, mu * dl:(mu + 1) * dl]) for mu in range(M)]
        out[0].append(_assemble(shards, C, D))
        for l, r in enumerate(rule):
            newC, newD, new_sh = [], [], []
            for mu, (Am, Bm) in enumerate(shards):
                # the paper's distributed round: local update with γ·M, then the mean of (C, D)
                A2, B2, C2, D2 = eagle_update(Am, Bm, C, D, eta=r["etarho"][mu],
                                              gamma=r["gammarho"][mu] * M, rho=1.0,
                                              sketch=r["sketch"])
                new_sh.append((A2, B2))
                newC.append(C2)
                newD.append(D2)
            shards = new_sh
            C, D = sum(newC) / M, sum(newD) / M
            out[l + 1].append(_assemble(shards, C, D))
    return [model.layout(torch.stack(z)) for z in out]


def _assemble(shards, C, D) -> torch.Tensor:
    A = torch.cat([s[0] for s in shards], 1)
    B = torch.cat([s[1] for s in shards], 1)
    return torch.cat([torch.cat([A, C], 1), torch.cat([B, -D], 1)], 0)


def fidelity(tf: List[torch.Tensor], alg: List[torch.Tensor]) -> List[float]:
    """Table 1: mean over prompts and entries of (Z_ℓ^TF − Z_ℓ^alg)², per layer."""
    return [float((a.double() - b.double()).pow(2).mean()) for a, b in zip(tf, alg)]


def _readout_mse(Z: torch.Tensor, model: LinearTransformer, target: torch.Tensor) -> float:
    return float((model.readout(Z) - target.double()).pow(2).mean())


def reference_iterations(X: torch.Tensor, target: torch.Tensor, model: LinearTransformer
                         ) -> Dict[str, float]:
    """4-layer test MSE of reference rules on the same prompts: EAGLE with the theory constants
    (η = 1/3, γ = 1, per-sample ρ = 1/‖A_ℓ‖²), EAGLE with the paper's trained constants
    (η = 1, γ = 1.9, ρ = 1/batch-max ‖A_ℓ‖²) and a GD-like rule (η = 0, γ = 1.9, same ρ)."""
    c = model.cfg
    n, d, L = c.n, c.d, c.layers
    Xd = X.double()
    A, B, C = Xd[:, :n, :d], Xd[:, n:, :d], Xd[:, :n, d:]
    out = {}
    for name, eta, gamma, batch_max in (("EAGLE theory (eta 1/3, gamma 1, per-sample rho)", 1 / 3, 1.0, False),
                                        ("EAGLE trained constants (eta 1, gamma 1.9, batch-max rho)", 1.0, 1.9, True),
                                        ("GD-like (eta 0, gamma 1.9, batch-max rho)", 0.0, 1.9, True)):
        Al, Bl, Cl = A.clone(), B.clone(), C.clone()
        Dl = torch.zeros_like(target, dtype=torch.float64)
        for _ in range(L):
            norms = torch.linalg.matrix_norm(Al, 2)
            rho = (1.0 / norms.max() ** 2) if batch_max else (1.0 / norms ** 2)[:, None, None]
            G = Al.transpose(1, 2) @ Cl
            Cn, Dn = Cl - gamma * rho * (Al @ G), Dl + gamma * rho * (Bl @ G)
            if eta:
                K = Al.transpose(1, 2) @ Al
                Al, Bl = Al - eta * rho * (Al @ K), Bl - eta * rho * (Bl @ K)
            Cl, Dl = Cn, Dn
        out[name] = float((Dl - target.double()).pow(2).mean())
    return out


# ---------------------------------------------------------------------------------------------
# the pipeline


@dataclass
class Extraction:
    regime: str
    checkpoint: str
    prompts: int
    mse: Dict[str, float]
    pruning: List[Tuple[int, float]]
    sparsify_mse: Dict[str, float]
    levels: List[Dict[str, List[float]]]
    structures: List[LayerStructure]
    batch_max_norm: List[float]
    eta_hat: List[float]
    gamma_hat: List[float]
    exponent: float
    ratio: float
    table1: List[float]
    replay_mse: float
    has_structure: bool
    reasons: List[str]
    haar: Dict[str, float] = field(default_factory=dict)
    table1_lsq: List[float] = field(default_factory=list)   # least-squares scalars' replay
    noise_var: float = 0.0                                   # of the prompts (training data)
    merged_heads: bool = False          # scalars summed over all heads (pruning lost the model)


def extract(checkpoint: str, prompts: int = 2000, seed: Optional[int] = None,
            model: Optional[LinearTransformer] = None, cfg: Optional[TrainConfig] = None,
            threads: Optional[int] = 1) -> Extraction:
    """Run the pipeline on a checkpoint (or on ``model``/``cfg`` directly) on ``threads`` torch
    threads (default 1: the matrices are 20 x 20; a second thread only adds contention)."""
    from ..control import thread_budget
    with thread_budget(0, threads):
        return _extract(checkpoint, prompts, seed, model, cfg)


def _extract(checkpoint, prompts, seed, model, cfg) -> Extraction:
    if model is None:
        from .train import load_checkpoint
        model, cfg, _ = load_checkpoint(checkpoint)
    model = model.double().eval()
    c = model.cfg
    test = fixed_test_set(c, cfg.data, prompts, cfg.eval.test_seed if seed is None else seed,
                    dtype=torch.float64)
    with torch.no_grad():
        zero = float(test.target.pow(2).mean())
        full = model_products(model)
        mse_tf = _mse(model, test, full)

        # 1. head pruning
        H = len(model.layers[0].heads)
        keep = [list(range(H)) for _ in model.layers]
        pruning = [(H, mse_tf)]
        if H > 1 and c.regime != "distributed":
            order = []
            for l in range(len(model.layers)):
                deltas = []
                for h in range(H):
                    k2 = [list(range(H)) for _ in model.layers]
                    k2[l] = [x for x in range(H) if x != h]
                    deltas.append(_mse(model, test, model_products(model, k2)) - mse_tf)
                order.append(list(np.argsort(deltas)[::-1]))      # most important first
            for size in sorted({s for s in (8, 4, 2, 1) if s < H}, reverse=True):
                keep = [sorted(int(h) for h in o[:size]) for o in order]
                pruning.append((size, _mse(model, test, model_products(model, keep))))
            keep = [[int(o[0])] for o in order]
        prods = model_products(model, keep)
        mse_pruned = _mse(model, test, prods)

        # 3. sparsification and quantisation
        sp = [[(lo, hi, sparsify(QK), sparsify(VP)) for lo, hi, QK, VP in row] for row in prods]
        qz, levels = [], []
        for row in prods:
            r2, lv = [], {"qk": [], "vp": []}
            for lo, hi, QK, VP in row:
                Qq, cq = quantize(QK, 1)
                Vq, cv = quantize(VP, 2)
                r2.append((lo, hi, Qq, Vq))
                lv["qk"] += [float(x) for x in cq]
                lv["vp"] += [float(x) for x in cv]
            qz.append(r2)
            levels.append(lv)
        sparsify_mse = {"trained": mse_tf, "pruned": mse_pruned,
                        "sparsified": _mse(model, test, sp), "quantised": _mse(model, test, qz)}

        # 4-5. structure, scalars, scaling law
        structs = [layer_structure(model, row, l) for l, row in enumerate(prods)]
        merged = H > 1 and c.regime == "unconstrained" and not mse_pruned <= PRUNE_KEEP * mse_tf
        if merged:
            # the heads share the update (one kept head loses the model): every head reads the
            # same features, so EAGLE-pattern heads add up to one EAGLE layer whose scalars are
            # the sums of the heads' α₁α₂ and α₁α₃ — extract that merged head instead
            structs = [merge_heads([layer_structure(model, [h], l) for h in row], l)
                       for l, row in enumerate(full)]
            prods = full
        traj = product_trajectory(model.embed(test.X), c.n, prods)
        bmax = [float(torch.linalg.matrix_norm(model.a_blocks(Z), 2).max()) for Z in traj[:-1]]
        a12 = [float(np.mean([a * b for a, b in zip(s.alpha1, s.alpha2)])) for s in structs]
        a13 = [float(np.mean([a * b for a, b in zip(s.alpha1, s.alpha3)])) for s in structs]
        M = c.machines if c.regime == "distributed" else 1
        eta_hat = [-x * m ** 2 for x, m in zip(a12, bmax)]
        gamma_hat = [-x * m ** 2 * M for x, m in zip(a13, bmax)]
        # the last layer's A update never reaches the readout (D_L depends on A_{L-1} only),
        # so its α₁α₂ is not identified by training: the fit uses layers 1 … L-1
        fit = slice(0, max(1, len(bmax) - 1))
        xs, ys = np.log(bmax[fit]), np.log(np.abs(a12[fit]) + 1e-300)
        exponent = float(-np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 and np.ptp(xs) > 1e-9 else float("nan")
        pairs = [(g, e) for g, e in list(zip(gamma_hat, eta_hat))[fit] if e != 0]
        ratio = float(np.median([g / e for g, e in pairs])) if pairs else float("nan")

        # 6. replay and fidelity
        rule = _rule_from(structs)
        tf_traj = [z for z in traj]
        alg = replay(test.X, model, rule)
        table1 = fidelity(tf_traj, alg)
        # the best one-scalar-per-block rule (teacher-forced least squares), for comparison
        table1_lsq = (fidelity(tf_traj, replay(test.X, model, least_squares_rule(model, traj)))
                      if c.regime != "compute_limited" else [])
        replay_mse = _readout_mse(alg[-1], model, test.target)
        refs = reference_iterations(test.X, test.target, model)

        guard = norm_guard(c, cfg.data, cfg.optim.seed)
        mse_guarded = float((model.guarded(test.X, guard) - test.target).pow(2).mean())
    mse = {"transformer": mse_tf,
           f"transformer, norm-guarded (‖A‖₂ scaled down to {guard:.3g} where above)": mse_guarded,
           "extracted rule (replay)": replay_mse, **refs, "zero predictor": zero}
    reasons = []
    if not mse_tf < 0.5 * zero:
        reasons.append(f"the transformer is barely better than the zero predictor "
                       f"({mse_tf:.3g} vs {zero:.3g}): not trained to a useful algorithm")
    qk_pat = float(np.mean([s.qk_pattern for s in structs]))
    vp_pat = float(np.mean([s.vp_pattern for s in structs]))
    if qk_pat < STRUCTURE_MIN or vp_pat < STRUCTURE_MIN:
        reasons.append(f"the products do not have EAGLE's pattern (energy share on it: W_QK "
                       f"{qk_pat:.2f}, W_VP {vp_pat:.2f}; needs >= {STRUCTURE_MIN})")
    if not (replay_mse < 2.0 * mse_tf + 1e-12 or replay_mse < 0.5 * zero):
        reasons.append(f"the extracted rule does not reproduce the model (test MSE {replay_mse:.3g}"
                       f" vs the transformer's {mse_tf:.3g})")
    # signs: α₁α₂ < 0 in layers 1 … L-1 (the last layer's A update is never read), α₁α₃ < 0
    if any(x >= 0 for x in a12[:max(1, len(a12) - 1)] + a13) and not reasons:
        reasons.append("the per-layer products α₁α₂ (layers 1 … L-1), α₁α₃ are not all negative "
                       "(EAGLE's signs)")
    haar = haar_sketch_stats(c.d, c.r) if c.regime == "compute_limited" else {}
    return Extraction(regime=c.regime, checkpoint=checkpoint, prompts=prompts, mse=mse,
                      pruning=pruning, sparsify_mse=sparsify_mse, levels=levels,
                      structures=structs, batch_max_norm=bmax, eta_hat=eta_hat,
                      gamma_hat=gamma_hat, exponent=exponent, ratio=ratio, table1=table1,
                      replay_mse=replay_mse, has_structure=not reasons, reasons=reasons, haar=haar,
                      table1_lsq=table1_lsq, noise_var=cfg.data.noise_var,
                      merged_heads=merged)


# ---------------------------------------------------------------------------------------------
# report


def write_report(ex: Extraction, model: LinearTransformer, out: str) -> str:
    """report.md, table1.csv, scalars.csv and per-layer heatmaps (PNG) in ``out``."""
    os.makedirs(out, exist_ok=True)
    c = model.cfg
    L = []
    L += [f"# Algorithm extraction: {ex.regime}", "",
          f"Checkpoint `{ex.checkpoint}`; {ex.prompts} test prompts (float64).", ""]
    if ex.has_structure:
        L += ["**Verdict: EAGLE structure found.** The products collapse to the expected pattern "
              "and the extracted iteration, replayed through the project's kernel, reproduces the "
              "transformer layer by layer (table below).", ""]
    else:
        L += ["**Verdict: no EAGLE structure.** " + " ".join(ex.reasons) +
              " The scalars below are what the fit returns; they do not describe an algorithm "
              "this model implements.", ""]
    L += ["## Test MSE (4 layers)", "", "| predictor | test MSE | vs zero |", "|---|---|---|"]
    zero = ex.mse["zero predictor"]
    for k, v in ex.mse.items():
        L.append(f"| {k} | {v:.4g} | {zero / v if v > 0 else float('inf'):.1f}x |")
    if ex.noise_var > 0:
        L += ["", f"Noisy prompts (variance {ex.noise_var:g} on all of X, D included): the "
              f"noiseless calibration does not apply and no predictor gets below ≈ "
              f"{ex.noise_var:g}; the reference rules above ran on the same noisy prompts.", ""]
    else:
        L += ["", "Calibration (4-layer reference iterations on 1,024 noiseless prompts of this "
              "distribution, numpy): EAGLE-like ≈ 6.4e-3 (14.5x), best constants ≈ 1.8e-3, "
              "GD-like 0.017-0.026.", ""]
    L += ["## Fidelity (paper Table 1): mean (Z_ℓ^TF − Z_ℓ^alg)² per entry", "",
          "| layer | this model | least-squares scalars | paper |", "|---|---|---|---|"]
    paper = PAPER_TABLE1_ROWS.get(ex.regime, [])
    for l, v in enumerate(ex.table1):
        p = f"{paper[l]:.2e}" if l < len(paper) else ""
        q = f"{ex.table1_lsq[l]:.3e}" if l < len(ex.table1_lsq) else "—"
        L.append(f"| {l} | {v:.3e} | {q} | {p} |")
    mx = max(ex.table1)
    L += ["", f"Maximum {mx:.3e} against the paper's {PAPER_TABLE1[ex.regime]:.2e} "
          f"({'within' if mx <= PAPER_TABLE1[ex.regime] else 'ABOVE'} the paper's bound). "
          "'this model': the scalars read off the products' diagonals (the paper's method); "
          "'least-squares scalars': the one-scalar-per-block EAGLE rule fitted to the "
          "transformer's own layer updates (teacher-forced least squares) — if it is no closer, "
          "the gap lies in the model's off-pattern weights, not in how the scalars are read.", ""]
    L += ["## Per-layer scalars and the scaling law", "",
          "α₁ from W_QK's A block, α₂ from W_VP's A block, α₃ from W_VP's C block (sign-aligned: "
          "α₁ > 0); max‖A_ℓ‖₂ over the test batch from the transformer's own activations; "
          "η̂ = −α₁α₂·max‖A_ℓ‖², γ̂ = −α₁α₃·max‖A_ℓ‖²" +
          (" · M (the heads' sum absorbs the mean's 1/M)" if ex.regime == "distributed" else "") +
          ".", "",
          "| layer | α₁ | α₂ | α₃ | α₁α₂ | α₁α₃ | max‖A_ℓ‖₂ | η̂ | γ̂ | γ̂/η̂ |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for s, m, e, g in zip(ex.structures, ex.batch_max_norm, ex.eta_hat, ex.gamma_hat):
        a1, a2, a3 = np.mean(s.alpha1), np.mean(s.alpha2), np.mean(s.alpha3)
        L.append(f"| {s.layer + 1} | {a1:.4g} | {a2:.4g} | {a3:.4g} | "
                 f"{np.mean([x * y for x, y in zip(s.alpha1, s.alpha2)]):.4g} | "
                 f"{np.mean([x * y for x, y in zip(s.alpha1, s.alpha3)]):.4g} | {m:.3g} | {e:.3g} | "
                 f"{g:.3g} | {g / e if e else float('nan'):.3g} |")
    k = max(1, len(ex.eta_hat) - 1)
    L += ["", f"Fitted exponent p in |α₁α₂| ∝ max‖A_ℓ‖^(−p) over layers 1-{k}: **{ex.exponent:.2f}** "
          f"(EAGLE: 2). Median γ̂/η̂ over layers 1-{k}: **{ex.ratio:.2f}** (paper ≈ 1.92). Mean η̂ "
          f"{np.mean(ex.eta_hat[:k]):.3g}, mean γ̂ {np.mean(ex.gamma_hat[:k]):.3g} over layers 1-{k} "
          "(paper ≈ 1 and ≈ 1.9). The last layer is left out: its A update never reaches the "
          "readout (D_L depends on A_{L-1}), so training does not determine its α₁α₂.", ""]
    L += ["## Structure", "", "| layer | W_QK on pattern | W_VP on pattern | W_QK on C/D features |"
          + (" rank QK / VP (A block) | sketch gap QK vs VP | VP asymmetry | QK-VP subspace cos |"
             if ex.regime == "compute_limited" else "")
          + (" VP to other machines' A | C-channel cross/self |" if ex.regime == "distributed" else ""),
          "|---|---|---|---|" + {"compute_limited": "---|---|---|---|",
                                  "distributed": "---|---|"}.get(ex.regime, "")]
    for s in ex.structures:
        row = f"| {s.layer + 1} | {s.qk_pattern:.3f} | {s.vp_pattern:.3f} | {s.qk_query_share:.3f} |"
        if ex.regime == "compute_limited":
            row += (f" {s.rank_qk} / {s.rank_vp} | {s.sketch_gap:.2f} | {s.vp_asymmetry:.2f} |"
                    f" {s.subspace_cos:.2f} |")
        if ex.regime == "distributed":
            row += f" {s.cross_a_share:.3f} | {s.cross_c_share:.3f} |"
        L.append(row)
    if ex.regime == "compute_limited":
        L += ["", f"Sketch test: numerical rank of the A blocks (singular values > 0.1·max) against "
              f"r = {c.r}; the paper reports rank r and a QK-vs-VP gap of 0.28. Sketched EAGLE "
              "needs W_VP's A block to be the same projection as W_QK's: symmetric (VP asymmetry "
              "‖VA − VAᵀ‖/‖VA‖ = 0) on the same subspace (smallest principal cosine between W_QK's "
              f"sketch and W_VP's top-{c.r} column space = 1). S Sᵀ of a Haar "
              f"S ({c.d}x{c.r}), spectral norm 1: diagonal mean {ex.haar['diag_mean']:.3f} ± "
              f"{ex.haar['diag_std']:.3f}, off-diagonal std {ex.haar['off_std']:.3f}; the learned "
              "blocks' normalised spectra are in scalars.csv.", ""]
        L += _cl_entry_stats(ex, model)
        L += _cl_spectrum_table(ex, model)
    if ex.regime == "distributed":
        L += ["", "Communication pattern: 'VP to other machines' A' is the share of head μ's "
              "W_VP energy written into other machines' A columns (EAGLE: 0); 'C-channel "
              "cross/self' compares the C/D block a head writes to another machine with the one "
              "it writes to itself (EAGLE: 1, the same c everywhere).", ""]
    L += ["", "## Pruning, sparsification, quantisation", "",
          "| model | test MSE |", "|---|---|"]
    for size, v in ex.pruning:
        L.append(f"| {size} head(s) per layer | {v:.4g} |")
    if ex.merged_heads:
        L.append(f"| merged: one EAGLE head with the heads' summed scalars (replay) | "
                 f"{ex.replay_mse:.4g} |")
    for k, v in ex.sparsify_mse.items():
        L.append(f"| {k} ({'all heads' if k == 'trained' else '1 head'}) | {v:.4g} |")
    if ex.merged_heads:
        L += ["", f"Pruning to the single most important head per layer (by ΔMSE) loses the model "
              f"(test MSE {ex.sparsify_mse['pruned']:.3g} vs {ex.mse['transformer']:.3g} with all "
              f"{ex.pruning[0][0]} heads): the heads share the update. Every head reads the same "
              "features, so heads with EAGLE's pattern add up to one EAGLE layer whose scalars are "
              "the sums of the heads' α₁α₂ and α₁α₃; the scalars, the scaling law, Table 1 and the "
              "replay above use that merged head (α₁ := 1, α₂ = Σ α₁α₂, α₃ = Σ α₁α₃), and the "
              "pattern shares are the heads' weighted means. The sparsified and quantised rows "
              "are the pruned single head's."]
    L += ["", f"τ = {TAU_FACTOR} × mean |w| per matrix; k-means levels (excluding 0) per layer: " +
          "; ".join(f"L{l + 1} QK {np.round(lv['qk'], 4).tolist()} VP {np.round(lv['vp'], 4).tolist()}"
                    for l, lv in enumerate(ex.levels)), ""]
    L += ["Heatmaps: `weights_layer<ℓ>.png` (W_QK and W_VP of the kept head / every machine)" +
          ("; the sketch-spectrum plot: `sketch_spectrum.png`." if ex.regime == "compute_limited"
           else "."), ""]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(out, "table1.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "mean_sq_diff", "mean_sq_diff_lsq", "paper"])
        for l, v in enumerate(ex.table1):
            w.writerow([l, v, ex.table1_lsq[l] if l < len(ex.table1_lsq) else "",
                        paper[l] if l < len(paper) else ""])
    with open(os.path.join(out, "scalars.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "head", "alpha1", "alpha2", "alpha3", "batch_max_normA", "eta_hat",
                    "gamma_hat", "qk_pattern", "vp_pattern", "spectrum_qk"])
        for s, m, e, g in zip(ex.structures, ex.batch_max_norm, ex.eta_hat, ex.gamma_hat):
            for h in range(len(s.alpha1)):
                w.writerow([s.layer + 1, h, s.alpha1[h], s.alpha2[h], s.alpha3[h], m, e, g,
                            s.qk_pattern, s.vp_pattern, " ".join(f"{x:.4f}" for x in s.spectrum_qk)])
    _heatmaps(model, out)
    if ex.regime == "compute_limited":
        _sketch_spectrum_plot(model, out)
    return path


def _a_blocks_normalised(model: LinearTransformer, l: int):
    """Layer l's W_QK and W_VP A blocks, each scaled to spectral norm 1 and sign-aligned."""
    d = model.cfg.d
    QK, VP = model.layers[l].heads[0].products()
    out = []
    for W in (QK[:d, :d].double(), VP[:d, :d].double()):
        W = W / torch.linalg.matrix_norm(W, 2)
        out.append(W if float(W.diagonal().mean()) >= 0 else -W)
    return out


def _cl_spectrum_table(ex: Extraction, model: LinearTransformer) -> List[str]:
    """The sketch-spectrum test in numbers: a Haar sketch's S Sᵀ is a rank-r projection, so its
    normalised spectrum is r ones then zeros."""
    r = model.cfg.r
    rows = ["| layer | QK: σ_r/σ₁ | QK: energy beyond r | VP: σ_r/σ₁ | VP: energy beyond r |",
            "|---|---|---|---|---|"]
    for l in range(len(model.layers)):
        cells = []
        for W in _a_blocks_normalised(model, l):
            sv = torch.linalg.svdvals(W)
            cells += [f"{float(sv[r - 1] / sv[0]):.3f}",
                      f"{float(sv[r:].pow(2).sum() / sv.pow(2).sum()):.3f}"]
        rows.append(f"| {l + 1} | " + " | ".join(cells) + " |")
    rows.append("| Haar S Sᵀ | 1.000 | 0.000 | 1.000 | 0.000 |")
    return ["", "Sketch spectrum (plot: `sketch_spectrum.png`): singular values of the A blocks "
            f"normalised by the largest; S Sᵀ of a Haar S is a rank-{r} projection (σ₁ = … = σ_r "
            "= 1, nothing beyond r).", ""] + rows + [""]


def _sketch_spectrum_plot(model: LinearTransformer, out: str, draws: int = 200) -> None:
    """sketch_spectrum.png: the A blocks' normalised spectra per layer against a Haar sketch's
    projection, and their entry distributions against S Sᵀ's (diagonal / off-diagonal)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    c = model.cfg
    hd, ho = haar_projection_entries(c.d, c.r, draws)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    idx = np.arange(1, c.d + 1)
    ax[0].step(idx, [1.0] * c.r + [0.0] * (c.d - c.r), "k--", where="mid", label="Haar S Sᵀ")
    ld, lo = [], []
    for l in range(len(model.layers)):
        QA, VA = _a_blocks_normalised(model, l)
        ax[0].plot(idx, torch.linalg.svdvals(QA).numpy(), "o-", ms=3, label=f"W_QK layer {l + 1}")
        ax[0].plot(idx, torch.linalg.svdvals(VA).numpy(), "x:", ms=3, label=f"W_VP layer {l + 1}")
        ld += QA.diagonal().tolist()
        lo += QA[~torch.eye(c.d, dtype=torch.bool)].tolist()
    ax[0].set(xlabel="index", ylabel="σ_i / σ_1", title=f"A-block spectra (r = {c.r})")
    ax[0].legend(fontsize=6, ncol=2)
    for a, learned, haar, name in ((ax[1], ld, hd, "diagonal"), (ax[2], lo, ho, "off-diagonal")):
        bins = np.linspace(min(min(learned), min(haar)), max(max(learned), max(haar)), 40)
        a.hist(haar, bins=bins, density=True, alpha=0.5, label="Haar S Sᵀ")
        a.hist(learned, bins=bins, density=True, alpha=0.5, label="W_QK A blocks (all layers)")
        a.set(title=f"{name} entries (spectral norm 1)", xlabel="value")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sketch_spectrum.png"), dpi=90)
    plt.close(fig)


def _cl_entry_stats(ex: Extraction, model: LinearTransformer) -> List[str]:
    rows = ["| layer | diag mean (normalised) | diag std | off-diag std |", "|---|---|---|---|"]
    for l in range(len(model.layers)):
        QA, _ = _a_blocks_normalised(model, l)
        off = QA[~torch.eye(QA.shape[0], dtype=torch.bool)]
        rows.append(f"| {l + 1} | {float(QA.diagonal().mean()):.3f} | {float(QA.diagonal().std()):.3f}"
                    f" | {float(off.std()):.3f} |")
    rows.append(f"| Haar S Sᵀ | {ex.haar['diag_mean']:.3f} | {ex.haar['diag_std']:.3f} | "
                f"{ex.haar['off_std']:.3f} |")
    return ["", "Entry statistics of the W_QK A block (normalised to spectral norm 1, sign-aligned) "
            "against S Sᵀ of a Haar S (Fig. 4):", ""] + rows + [""]


def _heatmaps(model: LinearTransformer, out: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    for l, layer in enumerate(model.layers):
        H = len(layer.heads)
        fig, axes = plt.subplots(H, 2, figsize=(8, 3.6 * H), squeeze=False)
        for h, head in enumerate(layer.heads):
            QK, VP = head.products()
            for ax, W, name in ((axes[h, 0], QK, "W_QK"), (axes[h, 1], VP, "W_VP")):
                v = float(W.abs().max()) or 1.0
                im = ax.imshow(W.numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
                ax.set_title(f"layer {l + 1} head {h}: {name}", fontsize=9)
                fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"weights_layer{l + 1}.png"), dpi=90)
        plt.close(fig)


def planted_model(cfg: TrainConfig, a12: Sequence[float], a13: Sequence[float],
                  seed: int = 0) -> LinearTransformer:
    """A transformer whose factors encode the EAGLE iteration exactly (per layer ℓ:
    W_QK = diag(I, 0) on A, W_VP = diag(a12_ℓ I, a13_ℓ I); compute-limited: a fixed Haar sketch
    S_ℓ, W_QK = S_ℓS_ℓᵀ, W_VP = diag(a12_ℓ S_ℓS_ℓᵀ, a13_ℓ I); distributed: machine μ's self
    block diag(a12 I, a13/M I) and cross blocks diag(0, a13/M I)). For validating the pipeline:
    extraction must recover a12, a13 and replay it exactly."""
    c = cfg.model
    model = LinearTransformer(c, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    d, dq = c.d, c.d_query
    with torch.no_grad():
        for l, layer in enumerate(model.layers):
            if getattr(layer, "shared", None) is not None:      # distributed, shared heads
                M, w, sw = c.machines, block_width(c), layer.shared
                dl = d // M
                eye = lambda k: torch.eye(k, dtype=torch.float64)  # noqa: E731
                for p in sw.parameters():
                    p.zero_()
                sw.wq[:dl, :dl], sw.wk[:dl, :dl], sw.wv[:] = eye(dl), eye(dl), eye(w)
                sw.p_self[:dl, :dl] = a12[l] * eye(dl)
                sw.p_self[dl:, dl:] = a13[l] / M * eye(dq)
                sw.p_cross[dl:, dl:] = a13[l] / M * eye(dq)
                continue
            for h, head in enumerate(layer.heads):
                for p in head.parameters():
                    p.zero_()
                if c.regime == "distributed":
                    M, w = c.machines, block_width(c)
                    dl = d // M
                    head.wq[:dl, :dl] = torch.eye(dl, dtype=torch.float64)
                    head.wk[:dl, :dl] = torch.eye(dl, dtype=torch.float64)
                    head.wv[:] = torch.eye(w, dtype=torch.float64)
                    for nu in range(M):
                        if nu == h:
                            head.wp[nu * w:nu * w + dl, :dl] = a12[l] * torch.eye(dl, dtype=torch.float64)
                        head.wp[nu * w + dl:(nu + 1) * w, dl:] = a13[l] / M * torch.eye(dq, dtype=torch.float64)
                elif c.regime == "compute_limited":
                    S, _ = torch.linalg.qr(torch.randn(d, c.r, generator=g, dtype=torch.float64))
                    head.wq[:d] = S
                    head.wk[:d] = S
                    head.wv[:d, :c.r] = S
                    head.wv[d:, c.r:] = torch.eye(dq, dtype=torch.float64)
                    head.wp[:d, :c.r] = a12[l] * S
                    head.wp[d:, c.r:] = a13[l] * torch.eye(dq, dtype=torch.float64)
                else:
                    if h > 0:
                        continue                      # one planted head; the others stay zero
                    head.wq[:d, :d] = torch.eye(d, dtype=torch.float64)
                    head.wk[:d, :d] = torch.eye(d, dtype=torch.float64)
                    head.wv[:] = torch.eye(d + dq, dtype=torch.float64)
                    head.wp[:d, :d] = a12[l] * torch.eye(d, dtype=torch.float64)
                    head.wp[d:, d:] = a13[l] * torch.eye(dq, dtype=torch.float64)
    return model


__all__ = ["planted_model", "extract", "write_report", "Extraction", "replay", "fidelity", "sparsify", "quantize",
           "kmeans_1d", "product_trajectory", "model_products", "reference_iterations"]
