"""A trained distributed-regime transformer as the per-worker kernel of the distributed runtime.

Worker μ holds machine μ's column shard (A^μ, B^μ) and the replicated (C, D). Round ℓ runs head μ
of learned layer ℓ on its own block ``Z^μ = [[A^μ, C], [B^μ, D_TF]]`` — exactly the computation
machine μ does inside the transformer — and:

* updates (A^μ, B^μ) with the head's output into its own A columns;
* returns ``C + M·Δ_μ`` (and the same for D), where Δ_μ is what head μ writes into the C/D
  columns, averaged over the M copies; the runtime's all-reduced mean then gives
  ``C + Σ_μ Δ_μ``, the transformer's update of C when its copies agree. The message is the
  paper's, (n + n')·d' numbers per round.

Two things of the transformer are not sent: what head μ writes into *other* machines' A/B columns
(the learned structure makes it ≈ 0) and the differences between the copies of
C, D. :func:`kernel_check` measures the effect: per-round error against the transformer's own
layer readouts, against distributed EAGLE with the same shards, and against ``B A⁺ C``.

The runtime's D is EAGLE's sign; the transformer's D block is its negative (the readout
``−D_L``), so the kernel negates D on the way in and out.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .config import TrainConfig, train_config_from_dict
from .safeguard import Safeguard, eagle_fallback, flag, spectral_norm
from .transformer import LinearTransformer, block_width


class LearnedKernel:
    """Picklable (state dict + config); ``bind(rank)`` gives worker μ its own instance.

    ``safeguard``: a :class:`~eagle_dist.model.safeguard.Safeguard` makes every round check, with
    what worker μ holds, that its learned step contracts like an EAGLE step —
    ``‖A^μ_{ℓ+1}‖₂ ≤ (1+g)‖A^μ_ℓ‖₂`` (not in the last round: nothing reads A_L) and
    ``‖C'_μ‖_F ≤ (1+g)‖C‖_F`` for its own message C'_μ — and otherwise take the local EAGLE step
    with the theory constants (η = 1/3, γ = 1, ρ_μ = 1/‖A^μ‖₂²; the paper's distributed mode).
    If every message satisfies the C check, so does their mean (the triangle inequality): the
    all-reduced C never grows. ``fallbacks`` counts this worker's fallback rounds."""

    scale_invariant = False      # the model was trained on the data's own scale: no rescaling
    fixed_shape = True           # no probe column: the blocks must have the trained shapes
    eta = None

    def __init__(self, state: Dict[str, torch.Tensor], config: dict, rank: Optional[int] = None,
                 safeguard: Optional[Safeguard] = None):
        if safeguard is not None and not isinstance(safeguard, Safeguard):
            raise TypeError(f"safeguard={safeguard!r}: pass an eagle_dist.model.safeguard."
                            "Safeguard or None")
        self.state = {k: v.detach().cpu() for k, v in state.items()}
        self.config = config
        self.rank = rank
        self.safeguard = safeguard
        self.layer = 0
        self.fallbacks: List[int] = []           # rounds (0-based) where this worker fell back
        self._model: Optional[LinearTransformer] = None
        self._cfg: Optional[TrainConfig] = None

    @classmethod
    def from_checkpoint(cls, path: str, safeguard: Optional[Safeguard] = None) -> "LearnedKernel":
        from .train import load_checkpoint
        model, cfg, _ = load_checkpoint(path)
        return cls.from_model(model, cfg, safeguard)

    @classmethod
    def from_model(cls, model: LinearTransformer, cfg: TrainConfig,
                   safeguard: Optional[Safeguard] = None) -> "LearnedKernel":
        if cfg.model.regime != "distributed":
            raise ValueError(f"a {cfg.model.regime}-regime model has no per-machine structure; "
                             "the learned kernel needs a model trained with model.regime="
                             "distributed")
        return cls(model.state_dict(), cfg.to_dict(), safeguard=safeguard)

    def bind(self, rank: int) -> "LearnedKernel":
        k = LearnedKernel(self.state, self.config, rank, self.safeguard)
        return k

    @property
    def cfg(self) -> TrainConfig:
        if self._cfg is None:              # parsed once, not on every round
            self._cfg = train_config_from_dict(self.config)
        return self._cfg

    def _get_model(self, dtype, device) -> LinearTransformer:
        if self._model is None:
            c = self.cfg
            m = LinearTransformer(c.model, seed=c.optim.seed).to(device=device, dtype=dtype)
            m.load_state_dict(self.state)              # copied into the solve's dtype
            self._model = m
        return self._model

    @property
    def layers(self) -> int:
        return int(self.cfg.model.layers)

    def __call__(self, A, B, C, D):
        if self.rank is None:
            raise RuntimeError("LearnedKernel must be bound to a worker (bind(rank)) before use")
        c = self.cfg.model
        M, dl = c.machines, c.d // c.machines
        if A.shape != (c.n, dl) or B.shape != (c.n_query, dl) or C.shape != (c.n, c.d_query):
            raise ValueError(f"the learned kernel was trained on blocks A^μ {c.n}x{dl}, B^μ "
                             f"{c.n_query}x{dl}, C {c.n}x{c.d_query} (d = {c.d} over {M} machines);"
                             f" got {tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}")
        if self.layer >= c.layers:
            raise RuntimeError(f"the learned kernel has {c.layers} layers; run at most that many "
                               "rounds (max_iter = layers)")
        model = self._get_model(A.dtype, A.device)
        head = model.layers[self.layer].heads[self.rank]
        last = self.layer == c.layers - 1
        blocks = tuple(t.unsqueeze(0) for t in (A, B, C, D))     # a batch of one prompt
        with torch.no_grad():
            out, bad, _ = local_step(head, self.rank, c, *blocks, safeguard=self.safeguard,
                                     last=last)
        if bool(bad[0]):
            self.fallbacks.append(self.layer)
        self.layer += 1
        return tuple(t[0] for t in out)


def learned_local_step(head, mu: int, mc, A, B, C, D):
    """Worker μ's learned step on a batch: A (k, n, d/M), B (k, n', d/M), C (k, n, d'), D (k, n',
    d') in EAGLE's sign. Runs head μ on ``Z^μ = [[A^μ, C], [B^μ, −D]]`` (machine μ's computation
    inside the transformer), keeps what the head writes into its own A/B columns and returns the
    message ``C + M·Δ_μ``, ``D − M·Δ_μ^D`` (Δ_μ: what head μ writes into the C/D columns, averaged
    over the M copies; the mean over workers is then ``C + Σ_μ Δ_μ``)."""
    M, w, dl = mc.machines, block_width(mc), mc.d // mc.machines
    n = mc.n
    Z = torch.cat([torch.cat([A, C], 2), torch.cat([B, -D], 2)], 1)          # (k, n+n', w)
    out = head.attend(Z, n, local=True) @ head.wp.T                           # (k, n+n', M·w)
    own = out[..., mu * w:(mu + 1) * w]
    cd = torch.stack([out[..., nu * w + dl:(nu + 1) * w] for nu in range(M)]).mean(0)
    return A + own[:, :n, :dl], B + own[:, n:, :dl], C + M * cd[:, :n], D - M * cd[:, n:]


@torch.no_grad()
def local_step(head, mu: int, mc, A, B, C, D, *, safeguard: Optional[Safeguard] = None,
               last: bool = False, sig: Optional[torch.Tensor] = None):
    """:func:`learned_local_step`, safeguarded when ``safeguard`` is given (see
    :class:`LearnedKernel`): returns ``((A', B', C', D'), fallback (k,) bool, ‖A'‖₂ or None)``.
    Uses only worker μ's own blocks (its shard and the replicated C, D). ``sig``: ‖A^μ‖₂ when
    known (the previous round's ‖A'‖₂); after the ``last`` round ‖A'‖₂ is not computed (nothing
    reads A_L)."""
    out = learned_local_step(head, mu, mc, A, B, C, D)
    bad = torch.zeros(A.shape[0], dtype=torch.bool)
    if safeguard is None:
        return out, bad, None
    sig = spectral_norm(A) if sig is None else sig
    sig2 = None if last else spectral_norm(out[0])
    cn = torch.linalg.vector_norm(C.double(), dim=(1, 2))
    cn2 = torch.linalg.vector_norm(out[2].double(), dim=(1, 2))
    bad = flag(sig, sig2, cn, cn2, safeguard, check_a=not last)
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        fb = eagle_fallback(A[idx], B[idx], C[idx], D[idx], norms=sig[idx])
        out = tuple(t.clone() for t in out)
        for t, f in zip(out, fb):
            t[idx] = f.to(t.dtype)
        if sig2 is not None:
            sig2 = sig2.clone()
            sig2[idx] = spectral_norm(out[0][idx])
    return out, bad, sig2


@torch.no_grad()
def kernel_rounds(model: LinearTransformer, X: torch.Tensor,
                  safeguard: Optional[Safeguard] = None):
    """The distributed learned kernel on a batch of prompts, in one process: for every round the
    M workers' :func:`local_step` on their contiguous column shards, then the mean of their
    messages — what :func:`eagle_dist.solve_distributed` with :class:`LearnedKernel` computes
    prompt by prompt (a test checks it). X: (k, n+n', d+d') full matrices (D is not read).
    Returns ``(A_L, B_L, C_L, D_L, fallback)``: the final state (A_L, B_L the shards side by
    side; D_L in EAGLE's sign, the prediction) and ``fallback`` (k, L, M) bool."""
    c = model.cfg
    if c.regime != "distributed":
        raise ValueError("the learned kernel needs a model.regime=distributed model")
    M, dl, n, d = c.machines, c.d // c.machines, c.n, c.d
    A = [X[:, :n, mu * dl:(mu + 1) * dl] for mu in range(M)]
    B = [X[:, n:, mu * dl:(mu + 1) * dl] for mu in range(M)]
    C = X[:, :n, d:]
    D = torch.zeros_like(X[:, n:, d:])
    L = len(model.layers)
    fallback = torch.zeros(X.shape[0], L, M, dtype=torch.bool)
    sigs: List[Optional[torch.Tensor]] = [None] * M
    for l, layer in enumerate(model.layers):
        Cs, Ds = [], []
        for mu in range(M):
            (A[mu], B[mu], Cm, Dm), bad, sigs[mu] = local_step(
                layer.heads[mu], mu, c, A[mu], B[mu], C, D, safeguard=safeguard,
                last=l == L - 1, sig=sigs[mu])
            fallback[:, l, mu] = bad
            Cs.append(Cm)
            Ds.append(Dm)
        C, D = torch.stack(Cs).mean(0), torch.stack(Ds).mean(0)        # the all-reduce
    return torch.cat(A, 2), torch.cat(B, 2), C, D, fallback


def kernel_forward(model: LinearTransformer, X: torch.Tensor,
                   safeguard: Optional[Safeguard] = None):
    """:func:`kernel_rounds`' prediction and fallbacks: ``(D_L (k, n', d'), fallback (k, L, M))``."""
    *_, D, fallback = kernel_rounds(model, X, safeguard)
    return D, fallback


def kernel_check(checkpoint: str, prompts: int = 20, backend: str = "inprocess",
                 seed: Optional[int] = None) -> Dict[str, Any]:
    """Run the trained model as the distributed kernel on ``prompts`` test prompts and report,
    per round (= layer): relative error against the transformer's own readout, against
    distributed EAGLE (paper's mode, same shards, same number of rounds) and against B A⁺ C;
    plus rounds and bytes per worker per round."""
    from ..control import SolverOptions
    from ..distributed.runtime import solve_distributed
    from .data import as_numpy_problem, fixed_test_set
    from .train import load_checkpoint
    model, cfg, _ = load_checkpoint(checkpoint)
    kernel = LearnedKernel.from_model(model, cfg)
    c = cfg.model
    L, M, dl = c.layers, c.machines, c.d // c.machines
    test = fixed_test_set(c, cfg.data, prompts, cfg.eval.test_seed if seed is None else seed,
                    dtype=torch.float64)
    model = model.double()
    shards = [list(range(mu * dl, (mu + 1) * dl)) for mu in range(M)]
    rows: List[Dict[str, Any]] = []
    with torch.no_grad():
        traj = model.trajectory(test.X)
    for i in range(prompts):
        prob = as_numpy_problem(test, i, c)
        ref = prob.reference
        den = max(np.linalg.norm(ref), 1e-300)
        tf_l = [model.readout(Z[i:i + 1])[0].numpy() for Z in traj[1:]]
        per: Dict[str, List[float]] = {"kernel_vs_transformer": [], "kernel_vs_pinv": [],
                                       "transformer_vs_pinv": []}
        eo = SolverOptions(max_iter=L, tol=1e-300, record_error=True, progress=False)
        re_ = solve_distributed(prob, eo, workers=M, backend=backend, shards=shards, mode="paper",
                                verify=False)
        per["eagle_vs_pinv"] = [float(e) for e in re_.history.error[:L]]
        for l in range(1, L + 1):
            opts = SolverOptions(max_iter=l, tol=1e-300, record_error=False, progress=False)
            rk = solve_distributed(prob, opts, workers=M, backend=backend, shards=shards,
                                   kernel=kernel, verify=False, normalization="none")
            per["kernel_vs_transformer"].append(float(np.linalg.norm(rk.D - tf_l[l - 1]) /
                                                      max(np.linalg.norm(tf_l[l - 1]), 1e-300)))
            per["kernel_vs_pinv"].append(float(np.linalg.norm(rk.D - ref) / den))
            per["transformer_vs_pinv"].append(float(np.linalg.norm(tf_l[l - 1] - ref) / den))
            if l == L:
                bytes_round = rk.bytes_per_worker_per_round
                status = rk.status.value
        rows.append(per)
    summary = {k: [float(np.median([r[k][l] for r in rows])) for l in range(L)] for k in rows[0]}
    eagle_rounds = None
    if backend == "inprocess":
        # rounds distributed EAGLE (paper's mode, same shards) needs to reach the kernel's
        # final accuracy — the communication the trained model saves
        target = summary["kernel_vs_pinv"][-1]
        need = []
        for i in range(prompts):
            prob = as_numpy_problem(test, i, c)
            r = solve_distributed(prob, SolverOptions(max_iter=2000, tol=1e-300, target_error=target,
                                                      progress=False),
                                  workers=M, shards=shards, mode="paper", verify=False)
            need.append(r.iterations if r.error <= target else float("inf"))
        eagle_rounds = float(np.median(need))
    return dict(per_layer_median=summary, rounds=L, bytes_per_worker_per_round=bytes_round,
                status=status, prompts=prompts, backend=backend, workers=M,
                eagle_rounds_to_match=eagle_rounds)


def kernel_report(kc: Dict[str, Any]) -> List[str]:
    """Markdown lines for the extraction report."""
    s = kc["per_layer_median"]
    L = ["## The trained model as the distributed kernel", "",
         f"{kc['workers']} workers ({kc['backend']} backend), one per machine block; round ℓ runs "
         f"learned layer ℓ; {kc['bytes_per_worker_per_round']} bytes per worker per round (the "
         f"paper's (n + n')·d' message); status after {kc['rounds']} rounds: {kc['status']} (a "
         f"fixed number of learned layers makes no convergence claim). Median over "
         f"{kc['prompts']} test prompts of the relative error:", "",
         "| round | kernel vs transformer readout | kernel vs B A⁺ C | transformer vs B A⁺ C | "
         "distributed EAGLE (paper's mode) vs B A⁺ C |", "|---|---|---|---|---|"]
    for l in range(kc["rounds"]):
        L.append(f"| {l + 1} | {s['kernel_vs_transformer'][l]:.2e} | {s['kernel_vs_pinv'][l]:.3f} |"
                 f" {s['transformer_vs_pinv'][l]:.3f} | {s['eagle_vs_pinv'][l]:.3f} |")
    if kc.get("eagle_rounds_to_match") is not None:
        L += ["", f"Distributed EAGLE with the theory constants needs a median of "
              f"{kc['eagle_rounds_to_match']:g} rounds to reach the kernel's {kc['rounds']}-round "
              "accuracy on these prompts."]
    L += ["", "'kernel vs transformer' measures what the kernel does not send: each head's "
          "writes into other machines' A/B columns and the differences between the machines' "
          "copies of C and D.", ""]
    return L


__all__ = ["LearnedKernel", "kernel_check", "kernel_report", "kernel_forward", "kernel_rounds",
           "local_step",
           "learned_local_step"]
