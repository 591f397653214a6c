"""Batched training prompts, generated in torch on the training device (the paper's "Data
generation" paragraph).

``X = R₁ R₂ᵀ / √s`` with the rows of R₁ ∈ R^{(n+n')×s}, R₂ ∈ R^{(d+d')×s} i.i.d. N(0, Σ),
Σ = diag(aniso^i), i = 1..s — the batched twin of :func:`eagle_dist.data.paper_training`
(same construction; a test checks the moments). Optional noise is a *variance* on all of X.

One seed scheme everywhere: the batch of step ``t`` is a function of ``(seed, t)`` only, never of
the number of ranks, so single-process, data-parallel and machine-parallel training see the same
prompts and a resumed run continues with exactly the batches it would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import DataConfig, ModelConfig


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream), independent of world size."""
    lo, hi = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2).tolist()
    return (lo | (hi << 32)) & ((1 << 63) - 1)


@dataclass
class Batch:
    X: torch.Tensor        # (B, n+n', d+d') the full matrix
    target: torch.Tensor   # (B, n', d') what the model must predict (D, or B A⁺ C)

    def blocks(self, n: int, d: int):
        X = self.X
        return X[:, :n, :d], X[:, n:, :d], X[:, :n, d:], X[:, n:, d:]


def sample_batch(size: int, mc: ModelConfig, dc: DataConfig, *, seed: int,
                 device="cpu", dtype=torch.float32) -> Batch:
    """``size`` prompts from the paper's training distribution, drawn on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    s = dc.rank
    T, F = mc.n + mc.n_query, mc.d + mc.d_query
    scale = torch.tensor([dc.aniso ** (i + 1) for i in range(s)], dtype=torch.float64).sqrt()
    scale = scale.to(device=device, dtype=dtype)
    R1 = torch.randn(size, T, s, generator=g, device=device, dtype=dtype) * scale
    R2 = torch.randn(size, F, s, generator=g, device=device, dtype=dtype) * scale
    X = R1 @ R2.transpose(1, 2) / s ** 0.5
    clean = X
    if dc.noise_var > 0:
        X = X + dc.noise_var ** 0.5 * torch.randn(X.shape, generator=g, device=device, dtype=dtype)
    if dc.target == "nystrom":
        target = nystrom(X, mc.n, mc.d).to(dtype)
    else:
        target = X[:, mc.n:, mc.d:].clone()
    del clean
    return Batch(X=X, target=target)


def nystrom(X: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """B A⁺ C of every prompt in X (float64)."""
    A, B, C = X[:, :n, :d].double(), X[:, n:, :d].double(), X[:, :n, d:].double()
    return B @ torch.linalg.pinv(A) @ C


def step_batch(step: int, mc: ModelConfig, dc: DataConfig, *, seed: int, size: int,
               device="cpu", dtype=torch.float32) -> Batch:
    """The training batch of ``step`` (the same on every rank; data-parallel ranks slice it)."""
    return sample_batch(size, mc, dc, seed=step_seed(seed, step), device=device, dtype=dtype)


def fixed_test_set(mc: ModelConfig, dc: DataConfig, size: int, seed: int, device="cpu",
             dtype=torch.float32, chunk: int = 4096) -> Batch:
    """The fixed, seeded test set (generated in chunks of ``chunk`` prompts)."""
    parts = [sample_batch(min(chunk, size - i), mc, dc, seed=step_seed(seed, i, stream=1),
                          device=device, dtype=dtype) for i in range(0, size, chunk)]
    return Batch(X=torch.cat([p.X for p in parts]), target=torch.cat([p.target for p in parts]))


def prompt(X: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Z₀ = [[A, C], [B, 0]]: the matrix with its D block zeroed."""
    Z = X.clone()
    Z[:, n:, d:] = 0
    return Z


def zero_mse(batch: Batch) -> float:
    """MSE of the zero predictor on this batch (paper calibration ≈ 0.093-0.097)."""
    return float(batch.target.double().pow(2).mean())


def batch_max_norm(A: torch.Tensor) -> float:
    """max over the batch of ‖A^(b)‖₂ (the scale the trained α's track)."""
    return float(torch.linalg.matrix_norm(A.double(), ord=2).max())


#: the quantile of ‖A‖₂ over training prompts that norm-guarded prediction scales down to
GUARD_QUANTILE = 0.95


def norm_guard(mc: ModelConfig, dc: DataConfig, seed: int, q: float = GUARD_QUANTILE,
               size: int = 8192) -> float:
    """The ``q``-quantile of ‖A‖₂ over ``size`` prompts of the training distribution (a stream of
    its own, seeded by ``seed``): the ``max_norm`` of :meth:`LinearTransformer.guarded`."""
    b = sample_batch(size, mc, dc, seed=step_seed(seed, 0, stream=2), dtype=torch.float64)
    return float(torch.quantile(torch.linalg.matrix_norm(b.X[:, :mc.n, :mc.d], ord=2), q))


def as_numpy_problem(batch: Batch, i: int, mc: ModelConfig):
    """Prompt ``i`` as a :class:`eagle_dist.problem.Problem` (for the solver side)."""
    from ..problem import Problem
    A, B, C, _ = batch.blocks(mc.n, mc.d)
    return Problem.from_arrays(A[i].double().cpu().numpy(), B[i].double().cpu().numpy(),
                               C[i].double().cpu().numpy())


__all__ = ["Batch", "sample_batch", "step_batch", "fixed_test_set", "prompt", "zero_mse", "step_seed",
           "batch_max_norm", "as_numpy_problem", "norm_guard", "GUARD_QUANTILE"]
