"""The contracts between the parts of the distributed runtime.

* :class:`LocalKernel` — what a worker runs on its column shard each round. Any object with the
  declared attributes and methods qualifies (a trained transformer layer from ``eagle_dist.model``
  does, without this package importing it); a plain function ``(A, B, C, D) -> blocks`` is wrapped
  by :func:`as_local_kernel`, the one place that decides what a kernel is.
* :class:`CertifiedKernel` — a local kernel whose convergence the rounds can certify (the EAGLE
  update, :class:`eagle_dist.distributed.worker.EagleKernel`).
* :class:`RankTask` / :class:`RankResult` — the typed messages a rank receives and returns, the
  same on every launcher (in-process, spawned processes, Ray actors, torchrun).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .worker import RoundConfig, RoundsOutput

Blocks = Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]


@runtime_checkable
class LocalKernel(Protocol):
    """The per-worker update: ``kernel(A^μ, B^μ, C, D) -> (A^μ', B^μ', C'_μ, D'_μ)``; the runtime
    all-reduces the mean of ``(C'_μ, D'_μ)``.

    Declared attributes (read by the runtime, never guessed):

    * ``scale_invariant`` — True when the update commutes with scaling, so the runtime may divide
      the blocks by powers of two and normalise each ``‖A^μ‖₂`` to 1 (EAGLE). False: the kernel
      sees the data as it is (a layer trained on the data's own scale).
    * ``fixed_shape`` — True when the blocks must keep the shapes the kernel was built for, so no
      verification probe column can ride along in C (a trained layer).
    * ``bind(rank)`` — the instance worker ``rank`` runs (a stateful kernel returns a copy that
      knows its machine; a stateless one returns itself).
    """

    scale_invariant: bool
    fixed_shape: bool

    def bind(self, rank: int) -> "LocalKernel": ...

    def __call__(self, A, B, C, D) -> Blocks: ...


@runtime_checkable
class CertifiedKernel(LocalKernel, Protocol):
    """A :class:`LocalKernel` whose rounds can be certified: it takes the ``update_ab`` / ``gram``
    / ``cross`` keywords of :func:`eagle_dist.kernels.eagle_update`, tells the rounds how many A/B
    updates to run before the numerical-rank freeze (``cap``) and from which round on a tol-based
    stop may be certified (``certify_from``). ``eta == 0`` is distributed gradient descent."""

    eta: float
    gamma: float

    def __call__(self, A, B, C, D, *, update_ab: bool = True, gram=None, cross=None) -> Blocks: ...

    def cap(self, dtype) -> Optional[int]: ...

    def certify_from(self, dtype) -> int: ...


class FunctionKernel:
    """A plain function ``(A, B, C, D) -> blocks`` as a :class:`LocalKernel`: scale-invariant, any
    shape, no freeze and no certificate (its runs end ``unverified``). Picklable when the
    function is (a module-level function)."""

    scale_invariant = True
    fixed_shape = False

    def __init__(self, fn):
        self.fn = fn

    def bind(self, rank: int) -> "FunctionKernel":
        return self

    def __call__(self, A, B, C, D) -> Blocks:
        return self.fn(A, B, C, D)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


def as_local_kernel(kernel) -> LocalKernel:
    """``kernel`` as a :class:`LocalKernel`: itself when it declares the protocol, a
    :class:`FunctionKernel` around a plain callable; anything else is refused."""
    if isinstance(kernel, LocalKernel):
        return kernel
    if callable(kernel):
        return FunctionKernel(kernel)
    raise TypeError(f"kernel={kernel!r} must be callable as kernel(A, B, C, D) -> (A, B, C, D) "
                    "(or declare eagle_dist.distributed.protocol.LocalKernel)")


def is_certified(kernel) -> bool:
    return isinstance(kernel, CertifiedKernel)


def kernel_name(kernel) -> str:
    return getattr(kernel, "name", None) or type(kernel).__name__


@dataclass
class RankTask:
    """What one rank receives: its column shard (arrays, or a ``ShardRef`` it reads itself from a
    column store), the replicated C, the reference (for the error history), the kernel and the
    round configuration. Blocks are already divided by their powers of two (exact)."""

    A: Any                                  # (n, d_μ) array, or eagle_dist.data.store.ShardRef
    B: Optional[np.ndarray]                 # (n', d_μ); None when A is a ShardRef
    C: np.ndarray                           # (n, d'), replicated
    kernel: LocalKernel
    cfg: "RoundConfig"
    reference: Optional[np.ndarray] = None  # (n', d') at the blocks' scale, or None
    denominator: Optional[float] = None     # of the relative error, at the blocks' scale
    dtype: str = "float64"
    device: str = "auto"
    timeout: float = 60.0                   # the collective timeout, seconds


@dataclass
class RankResult:
    """What one rank returns: its rounds (:class:`eagle_dist.distributed.worker.RoundsOutput`,
    identical on every rank but for ``frozen_at``) and where and how it ran."""

    rounds: "RoundsOutput"
    rank: int
    backend: str                    # "gloo" | "nccl" | "inprocess"
    device: str
    rendezvous: str                 # "file" | "tcp" | "env" (torchrun) | "inprocess"
    shard_bytes: int
    peak_rss_bytes: int
    loaded_by_worker: bool          # the rank read its shard from a column store itself
    local_rank: int = 0
    node_rank: int = 0
    host: str = ""
    placement: Optional[list] = None   # every rank's {rank, local_rank, node_rank, host, device}


__all__ = ["LocalKernel", "CertifiedKernel", "FunctionKernel", "as_local_kernel", "is_certified",
           "kernel_name", "RankTask", "RankResult"]
