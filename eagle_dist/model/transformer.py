"""The attention-only linear transformer of the paper, in its three regimes.

Tokens are the rows of the prompt ``Z₀ = [[A, C], [B, 0]]`` (n complete tokens, n' query tokens);
there is no embedding, normalisation, MLP, bias or softmax. Layer ℓ::

    Z_{ℓ+1} = Z_ℓ + Σ_h ((Z_ℓ W_Q)(Z_ℓ W_K)ᵀ ⊙ M) Z_ℓ W_V W_Pᵀ

with the key mask M letting every token attend to the n complete tokens only. Computed by
associativity (linear attention): ``(Z W_Q) · [(Z_c W_K)ᵀ (Z_c W_V)] · W_Pᵀ`` with Z_c the complete
tokens — the same numbers, and no (n+n')×n score matrix.

The regimes differ only in widths and in which input features a head reads (``Head.lo:hi``):
all of them (unconstrained, compute-limited) or its machine's block (distributed: head μ reads
block μ = [A^μ, C^μ]; its projection W_P writes every block and is the only cross-machine channel).

The prediction is ``-D_L`` (``readout: neg``): one layer preserves ``D − B A⁺ C``, so a contracting C
drives D_L towards ``−B A⁺ C`` (the convention of von Oswald et al. and Ahn et al.). In the
distributed regime the D copies of the M blocks are averaged.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from .config import ModelConfig


class Head(nn.Module):
    """One attention head: factors W_Q, W_K (F_in × k), W_V (F_in × kv), W_P (F × kv)."""

    def __init__(self, lo: int, hi: int, features: int, k: int, kv: int, std: float,
                 generator: torch.Generator):
        super().__init__()
        self.lo, self.hi = lo, hi
        f_in = hi - lo

        def p(*shape):
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)
        self.wq, self.wk, self.wv, self.wp = p(f_in, k), p(f_in, k), p(f_in, kv), p(features, kv)

    def _input(self, Z: torch.Tensor, local: bool = False) -> torch.Tensor:
        Zi = Z if local else Z[..., self.lo:self.hi]
        # contiguous, so that (B, T, F) @ (F, k) folds into one GEMM (a strided slice made torch
        # broadcast the weight into a batched GEMM: 3-5x slower, measured)
        return Zi if Zi.is_contiguous() else Zi.contiguous()

    def attend(self, Z: torch.Tensor, n: int, local: bool = False) -> torch.Tensor:
        """The head's output before projection, (B, T, kv), from its own input features
        (``local``: Z holds only those features — a machine's own block)."""
        k = self.wq.shape[1]
        Y = self._input(Z, local) @ torch.cat([self.wq, self.wk, self.wv], 1)   # one GEMM, all rows
        kv = Y[:, :n, k:2 * k].transpose(1, 2) @ Y[:, :n, 2 * k:]         # (B, k, kv)
        return Y[..., :k] @ kv

    def forward(self, Z: torch.Tensor, n: int) -> torch.Tensor:
        """The head's contribution to every feature, (B, T, F).

        Wide heads (k ≥ F_in / 2: unconstrained, distributed) are computed through the products,
        ``Z W_QK (Z_cᵀ Z_c) W_VP`` — the same function with fewer flops on small F; narrow heads
        (compute-limited) through the factors, which is cheaper there."""
        f_in, k = self.wq.shape
        if 2 * k < f_in:
            return self.attend(Z, n) @ self.wp.T
        Zi = self._input(Z)
        Zc = Zi[:, :n]
        G = Zc.transpose(1, 2) @ Zc                                   # (B, F_in, F_in)
        return ((Zi @ (self.wq @ self.wk.T)) @ G) @ (self.wv @ self.wp.T)

    def products(self):
        """``(W_QK, W_VP)`` = (W_Q W_Kᵀ, W_V W_Pᵀ): F_in × F_in and F_in × F."""
        return (self.wq @ self.wk.T).detach(), (self.wv @ self.wp.T).detach()


class MachineWeights(nn.Module):
    """The one set of head weights that every machine's head shares (distributed regime,
    ``model.shared_heads``; paper B.4: "a single set of transformations is shared across all
    attention heads"): local W_Q, W_K, W_V (w × k) and the projection's self block and cross
    block (w × kv each) — head μ writes its self block into machine μ's features and the same
    cross block into every other machine's."""

    def __init__(self, w: int, k: int, kv: int, std: float, generator: torch.Generator):
        super().__init__()

        def p(*shape):
            return nn.Parameter(torch.randn(*shape, generator=generator) * std)
        self.wq, self.wk, self.wv = p(w, k), p(w, k), p(w, kv)
        self.p_self, self.p_cross = p(w, kv), p(w, kv)


class SharedHead(Head):
    """Machine μ's head in a shared-weights layer: no parameters of its own; W_P is assembled
    from the shared self and cross blocks (so every function of :class:`Head` works as is)."""

    def __init__(self, lo: int, hi: int, mu: int, machines: int, shared: MachineWeights):
        nn.Module.__init__(self)
        self.lo, self.hi, self.mu, self.machines = lo, hi, mu, machines
        object.__setattr__(self, "_w", shared)   # not a submodule: the Layer owns it once

    wq = property(lambda self: self._w.wq)
    wk = property(lambda self: self._w.wk)
    wv = property(lambda self: self._w.wv)

    @property
    def wp(self) -> torch.Tensor:
        w = self._w
        return torch.cat([w.p_self if nu == self.mu else w.p_cross
                          for nu in range(self.machines)], 0)          # (M·w, kv)


class Layer(nn.Module):
    def __init__(self, heads: Sequence[Head], shared: Optional[MachineWeights] = None):
        super().__init__()
        if shared is not None:
            self.shared = shared
        self.heads = nn.ModuleList(heads)
        blocks = sorted((h.lo, h.hi) for h in heads)
        wide = all(2 * h.wq.shape[1] >= h.hi - h.lo for h in heads)
        disjoint = all(b[1] <= c[0] for b, c in zip(blocks, blocks[1:]))
        # one head, or heads on disjoint feature blocks (distributed): all heads at once
        self._fused = wide and disjoint
        # several wide heads reading the same features (unconstrained, heads > 1): stacked
        self._stacked = wide and len(heads) > 1 and len(set(blocks)) == 1
        if self._fused:
            F = heads[0].wp.shape[0]
            mask = torch.zeros(F, F)
            for lo, hi in blocks:
                mask[lo:hi, lo:hi] = 1
            self.register_buffer("_gram_mask", mask, persistent=False)

    def forward(self, Z: torch.Tensor, n: int, active: Optional[Sequence[int]] = None) -> torch.Tensor:
        if active is None and self._fused:
            # Σ_μ Z_μ W_QK^μ (Z_cμᵀ Z_cμ) W_VP^μ = (Z · blockdiag W_QK) (G ⊙ blockdiag 1) (stacked
            # W_VP), G = Z_cᵀ Z_c: three GEMMs for all heads (the same function; 2.4x faster
            # than a loop over the three heads of the distributed regime, measured)
            F = Z.shape[-1]
            QK = Z.new_zeros(F, F)
            VP = Z.new_zeros(F, F)
            for h in self.heads:
                QK = QK.index_put((torch.arange(h.lo, h.hi).unsqueeze(1),
                                   torch.arange(h.lo, h.hi).unsqueeze(0)), h.wq @ h.wk.T)
                VP = VP.index_put((torch.arange(h.lo, h.hi),), h.wv @ h.wp.T)
            Zc = Z[:, :n]
            G = (Zc.transpose(1, 2) @ Zc) * self._gram_mask.to(Z.dtype)
            return Z + ((Z @ QK) @ G) @ VP
        if active is None and self._stacked:
            # Σ_h (Z W_QK^h) G W_VP^h with G = Z_cᵀ Z_c shared by the heads: [Z W_QK^1 | … |
            # Z W_QK^H] as H·T rows of one batched GEMM against G, then one GEMM against the
            # stacked W_VP^h (the same function; 3 GEMMs instead of 4 per head)
            h0 = self.heads[0]
            Bsz, T = Z.shape[0], Z.shape[1]
            H, Fi = len(self.heads), h0.hi - h0.lo
            Zi = h0._input(Z)
            QK = torch.cat([h.wq @ h.wk.T for h in self.heads], 1)              # (F_in, H·F_in)
            VP = torch.cat([h.wv @ h.wp.T for h in self.heads], 0)              # (H·F_in, F)
            Zc = Zi[:, :n]
            G = Zc.transpose(1, 2) @ Zc
            Y = (Zi @ QK).view(Bsz, T, H, Fi).transpose(1, 2).reshape(Bsz, H * T, Fi) @ G
            return Z + Y.view(Bsz, H, T, Fi).transpose(1, 2).reshape(Bsz, T, H * Fi) @ VP
        hs = range(len(self.heads)) if active is None else active
        out = Z
        for h in hs:
            out = out + self.heads[h](Z, n)
        return out


def block_width(mc: ModelConfig) -> int:
    """Features per machine block in the distributed regime: d/M columns of A plus C's d'."""
    return mc.d // mc.machines + mc.d_query


def features(mc: ModelConfig) -> int:
    return mc.machines * block_width(mc) if mc.regime == "distributed" else mc.d + mc.d_query


def widths(mc: ModelConfig):
    """(heads, Q/K width k, V/P width kv) of the regime; V/P keeps a d'-wide channel for the query columns."""
    if mc.regime == "compute_limited":
        return mc.heads, mc.r, mc.r + mc.d_query
    if mc.regime == "distributed":
        w = block_width(mc)
        return mc.machines, w, w
    F = mc.d + mc.d_query
    return mc.heads, F, F


class LinearTransformer(nn.Module):
    """``cfg.layers`` untied layers; see the module docstring."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(int(seed))
        H, k, kv = widths(cfg)
        F = features(cfg)
        layers = []
        for _ in range(1 if cfg.tied else cfg.layers):
            if cfg.regime == "distributed" and cfg.shared_heads:
                w = block_width(cfg)
                shared = MachineWeights(w, k, kv, cfg.init_std, g)
                layers.append(Layer([SharedHead(mu * w, (mu + 1) * w, mu, H, shared)
                                     for mu in range(H)], shared))
                continue
            heads = []
            for h in range(H):
                lo, hi = (h * block_width(cfg), (h + 1) * block_width(cfg)) \
                    if cfg.regime == "distributed" else (0, F)
                heads.append(Head(lo, hi, F, k, kv, cfg.init_std, g))
            layers.append(Layer(heads))
        # tied (an ablation): the same Layer object at every depth, so one set
        # of constants must serve every ‖A_ℓ‖ — which EAGLE's per-layer step sizes do not allow
        self.layers = nn.ModuleList(layers * cfg.layers if cfg.tied else layers)

    # -- layout -----------------------------------------------------------------------------
    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """Z₀ from the full matrices X (B, n+n', d+d'): D zeroed, in the regime's layout."""
        c = self.cfg
        Z = X.clone()
        Z[:, c.n:, c.d:] = 0
        return self.layout(Z)

    def layout(self, X: torch.Tensor) -> torch.Tensor:
        """Full matrices in the regime's feature layout: as they are, or (distributed)
        ``[X¹ | … | X^M]`` with ``X^μ = [[A^μ, C], [B^μ, D]]`` (C, D copied to every machine)."""
        c = self.cfg
        if c.regime != "distributed":
            return X
        dl = c.d // c.machines
        blocks = []
        for mu in range(c.machines):
            blocks += [X[..., mu * dl:(mu + 1) * dl], X[..., c.d:]]
        return torch.cat(blocks, dim=-1)

    def d_blocks(self, Z: torch.Tensor) -> torch.Tensor:
        """The D block(s) of Z: (B, n', d') or, distributed, (B, M, n', d') — one per machine."""
        c = self.cfg
        if c.regime != "distributed":
            return Z[:, c.n:, c.d:]
        w, dl = block_width(c), c.d // c.machines
        return torch.stack([Z[:, c.n:, mu * w + dl:(mu + 1) * w] for mu in range(c.machines)], 1)

    def readout(self, Z: torch.Tensor) -> torch.Tensor:
        Dl = self.d_blocks(Z)
        if self.cfg.regime == "distributed":
            Dl = Dl.mean(1)
        return -Dl if self.cfg.readout == "neg" else Dl

    def a_blocks(self, Z: torch.Tensor) -> torch.Tensor:
        """A_ℓ (B, n, d) from Z (distributed: the machines' column blocks side by side)."""
        c = self.cfg
        if c.regime != "distributed":
            return Z[:, :c.n, :c.d]
        w, dl = block_width(c), c.d // c.machines
        return torch.cat([Z[:, :c.n, mu * w:mu * w + dl] for mu in range(c.machines)], -1)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, X: torch.Tensor, heads: Optional[List[Sequence[int]]] = None) -> torch.Tensor:
        """Prediction of D (B, n', d') from the full matrices X (D itself is masked)."""
        Z = self.embed(X)
        for l, layer in enumerate(self.layers):
            Z = layer(Z, self.cfg.n, None if heads is None else heads[l])
        return self.readout(Z)

    def guarded(self, X: torch.Tensor, max_norm: float,
                norms: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Norm-guarded prediction: a prompt whose ‖A‖₂ exceeds ``max_norm`` is scaled by
        ``1/s`` (s = ‖A‖₂ / max_norm) before the model and its prediction by ``s`` after
        (``norms``: the prompts' ‖A‖₂ when the caller has them already).

        Exact for the target: scaling all of X by 1/s scales D and B A⁺ C by 1/s. It keeps every
        prompt inside the ‖A‖ range the fixed per-layer constants were trained on — beyond it a
        learned cubic step σ(1 + α₁α₂σ²) can overshoot and blow up (EAGLE itself normalises by
        ‖A‖₂ for this reason). Prompts below ``max_norm`` are untouched.

        It does not remove every blow-up: on fresh prompts some fail *inside* the trained range
        (an early layer contracts A too little and a later, larger step overshoots; see
        ``benchmarks/results/train/evaluation.md``). :mod:`eagle_dist.model.safeguard` checks
        every layer's step instead."""
        c = self.cfg
        if norms is None:
            norms = torch.linalg.matrix_norm(X[:, :c.n, :c.d].double(), ord=2)
        s = torch.clamp(norms / max_norm, min=1.0).to(X.dtype)[:, None, None]
        return self(X / s) * s

    def trajectory(self, X: torch.Tensor, heads: Optional[List[Sequence[int]]] = None) -> List[torch.Tensor]:
        """[Z₀, Z₁, …, Z_L] (for per-layer metrics and the replay)."""
        Z = self.embed(X)
        out = [Z]
        for l, layer in enumerate(self.layers):
            Z = layer(Z, self.cfg.n, None if heads is None else heads[l])
            out.append(Z)
        return out

    # -- machine-parallel -------------------------------------------------------------------
    def machine_forward(self, X: torch.Tensor, mu: int,
                        all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Machine μ's part of the distributed regime: it holds only its block of Z (its columns
        of A and B, its copies of C, D) and its own head; each layer the heads' projected outputs
        are summed over machines by ``all_reduce`` (a differentiable collective) — the only
        cross-machine channel. Returns machine μ's copy of the prediction, (B, n', d')."""
        c = self.cfg
        if c.regime != "distributed":
            raise ValueError("machine_forward is for model.regime=distributed")
        w, dl = block_width(c), c.d // c.machines
        Zm = self.embed(X)[..., mu * w:(mu + 1) * w]
        for layer in self.layers:
            head = layer.heads[mu]
            local = head.attend(Zm, c.n, local=True) @ head.wp.T   # head μ reads only block μ
            Zm = Zm + all_reduce(local)[..., mu * w:(mu + 1) * w]
        Dm = Zm[:, c.n:, dl:]
        return -Dm if c.readout == "neg" else Dm

    def head_parameters(self, mu: int):
        """Parameters of head ``mu`` in every layer (machine μ's own weights; with shared heads
        the one set every machine uses — each rank then holds a replica)."""
        out, seen = [], set()
        for layer in self.layers:            # a tied model repeats the same layer: once each
            owner = layer.shared if getattr(layer, "shared", None) is not None else layer.heads[mu]
            for p in owner.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out


def build_model(cfg: ModelConfig, seed: int = 0) -> LinearTransformer:
    return LinearTransformer(cfg, seed)


__all__ = ["LinearTransformer", "Head", "SharedHead", "MachineWeights", "Layer", "build_model", "features", "widths", "block_width"]
