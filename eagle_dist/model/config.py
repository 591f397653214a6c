"""Training configs: YAML into dataclasses (unknown keys are errors), validated before anything
runs. ``configs/train/<regime>.yaml`` ship the paper's recipe; any field can be overridden on the
command line as ``section.key=value`` (``eagle-dist train --config unconstrained optim.steps=500``).

The three regimes differ only in widths, head structure and feature masks:

* ``unconstrained``: Q/K/V/P width ``d + d'`` (20), ``heads`` heads (1; 8 for the pruning study).
* ``compute_limited``: Q/K width ``r`` (5), V/P width ``r + d'`` (7), one head.
* ``distributed``: ``machines`` (3) column blocks of ``d/M + d'`` features (A's columns of one
  machine and its copy of C); head μ reads only block μ; its projection writes every block and is
  the only cross-machine channel.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

from ..config import merge_dicts, read_yaml, sections_from_dict

REGIMES = ("unconstrained", "compute_limited", "distributed")


@dataclass
class ModelConfig:
    regime: str = "unconstrained"
    n: int = 18                         # complete tokens (rows of A, C)
    d: int = 18                         # columns of A, B
    n_query: int = 2                    # n': query tokens (rows of B, D)
    d_query: int = 2                    # d': columns of C, D
    layers: int = 4
    heads: int = 1                      # unconstrained / compute_limited (distributed: = machines)
    r: int = 5                          # compute_limited: Q/K width (the sketch size)
    machines: int = 3                   # distributed: M
    init_std: float = 0.02              # N(0, init_std²) for every factor (bilinear: no zero init)
    readout: str = "neg"                # prediction = -D_L (neg, the paper's sign) or +D_L (pos)
    tied: bool = False                  # one layer's weights shared by every layer (ablation)
    # distributed: one set of head weights for every machine (paper B.4; the local Q/K/V and the
    # projection's self and cross blocks tied across machines); false = untied heads (ablation)
    shared_heads: bool = False


@dataclass
class DataConfig:
    rank: int = 10                      # s: X = R1 R2ᵀ / √s
    aniso: float = 0.7                  # Σ = diag(aniso^i), i = 1..s
    noise_var: float = 0.0              # variance of the Gaussian noise on X (paper: 0 or 0.01)
    target: str = "D"                   # D (the hidden block, paper) | nystrom (B A⁺ C)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    batch: int = 1024
    steps: int = 20_000
    clip: float = 0.1                   # global gradient-norm clip (0: off)
    seed: int = 0                       # initialisation and the per-step batch seeds
    # learning-rate schedule: constant (the paper's) or cosine (lr -> 0 at the last step)
    schedule: str = "constant"


@dataclass
class EvalConfig:
    test_size: int = 10_000             # fixed seeded test set
    test_seed: int = 1_000_003
    every: int = 1_000                  # steps between test evaluations


@dataclass
class TrainRunConfig:
    dir: Optional[str] = None           # default runs/train/<regime>-seed<k>
    checkpoint_every: int = 5_000
    log_every: int = 50                 # metrics CSV rows
    threads: Optional[int] = None       # torch intra-op threads (default: all cores / ranks)
    device: str = "auto"                # auto | cpu | cuda[:k]
    dtype: str = "float32"
    # torch.compile the training step: auto = on for runs of >= COMPILE_MIN_STEPS steps
    # (1.1-1.9x steps/s measured on 2 CPU cores; ~10-25 s to compile), off for short runs
    compile: Any = "auto"               # auto | true | false
    # start from this checkpoint's weights (a fresh optimiser; the model config must match) —
    # e.g. a planted algorithm, to test whether training stays there; null: random init_std
    init_from: Optional[str] = None


#: runs at least this long are compiled under run.compile=auto (the compile time pays back)
COMPILE_MIN_STEPS = 2_000


@dataclass
class ParallelConfig:
    mode: str = "none"                  # none | data (DDP) | machine (distributed regime)
    backend: str = "torch"              # torch (local processes, gloo/NCCL) | ray
    workers: int = 2                    # data: ranks; machine: must equal model.machines
    timeout: float = 300.0              # collective timeout (s)
    address: Optional[str] = None       # Ray cluster address (None: local)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: TrainRunConfig = field(default_factory=TrainRunConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "eval": EvalConfig,
             "run": TrainRunConfig, "parallel": ParallelConfig}


def train_config_from_dict(raw: dict, source: str = "<dict>") -> TrainConfig:
    cfg = TrainConfig(**sections_from_dict(raw, _SECTIONS, source))
    validate_train_config(cfg, source)
    return cfg


def validate_train_config(cfg: TrainConfig, source: str = "<config>") -> None:
    """Everything that would fail (or silently mean something else) deep inside a run."""
    def bad(key, value, why):
        raise ValueError(f"{source}: {key}={value!r} {why}")
    m, dc, o, e, r, p = cfg.model, cfg.data, cfg.optim, cfg.eval, cfg.run, cfg.parallel
    if m.regime not in REGIMES:
        bad("model.regime", m.regime, f"is unknown; use one of {', '.join(REGIMES)}")
    for key, v in (("model.n", m.n), ("model.d", m.d), ("model.n_query", m.n_query),
                   ("model.d_query", m.d_query), ("model.layers", m.layers),
                   ("model.heads", m.heads), ("data.rank", dc.rank), ("optim.batch", o.batch),
                   ("optim.steps", o.steps), ("eval.test_size", e.test_size),
                   ("eval.every", e.every), ("run.checkpoint_every", r.checkpoint_every),
                   ("run.log_every", r.log_every), ("parallel.workers", p.workers)):
        if v < 1:
            bad(key, v, "must be a positive integer")
    if m.regime == "compute_limited" and not (1 <= m.r < m.d):
        bad("model.r", m.r, f"must satisfy 1 <= r < d = {m.d} (the sketch is narrower than A)")
    if m.regime == "distributed":
        if m.machines < 2:
            bad("model.machines", m.machines, "must be at least 2 in the distributed regime")
        if m.d % m.machines:
            bad("model.machines", m.machines, f"must divide model.d = {m.d} (each machine holds "
                "d/M columns of A)")
    for key, v in (("optim.lr", o.lr), ("model.init_std", m.init_std), ("data.aniso", dc.aniso),
                   ("parallel.timeout", p.timeout)):
        if not (0 < v < float("inf")):
            bad(key, v, "must be a positive, finite number")
    if o.schedule not in ("constant", "cosine"):
        bad("optim.schedule", o.schedule, "must be constant (the paper's) or cosine")
    if r.init_from is not None and not (isinstance(r.init_from, str) and r.init_from):
        bad("run.init_from", r.init_from, "must be the path of a checkpoint (.pt) or null")
    if not (0 <= o.clip < float("inf")):
        bad("optim.clip", o.clip, "must be >= 0 (0 turns clipping off)")
    if not (0 <= dc.noise_var < float("inf")):
        bad("data.noise_var", dc.noise_var, "must be a finite variance >= 0")
    if dc.target not in ("D", "nystrom"):
        bad("data.target", dc.target, "must be D (the hidden block) or nystrom (B A⁺ C)")
    if not isinstance(m.tied, bool):
        bad("model.tied", m.tied, "must be true or false")
    if not isinstance(m.shared_heads, bool):
        bad("model.shared_heads", m.shared_heads, "must be true or false")
    if m.shared_heads and m.regime != "distributed":
        bad("model.shared_heads", m.shared_heads, "is for model.regime=distributed (one set of "
            "head weights shared by the machines); the other regimes have no machine heads")
    if m.readout not in ("neg", "pos"):
        bad("model.readout", m.readout, "must be neg (prediction -D_L) or pos (+D_L)")
    if o.seed < 0 or e.test_seed < 0:
        bad("optim.seed / eval.test_seed", (o.seed, e.test_seed), "must be non-negative")
    if r.dtype not in ("float32", "float64"):
        bad("run.dtype", r.dtype, "must be float32 or float64")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", r.device):
        bad("run.device", r.device, "must be auto, cpu or cuda[:k]")
    if r.compile not in ("auto", True, False):
        bad("run.compile", r.compile, "must be auto, true or false")
    if r.compile is True and p.mode == "machine":
        bad("run.compile", r.compile, "is not supported with parallel.mode=machine (the "
            "differentiable all-reduce breaks the graph); use run.compile=auto or false")
    if r.threads is not None and r.threads < 1:
        bad("run.threads", r.threads, "must be a positive integer or null")
    if p.mode not in ("none", "data", "machine"):
        bad("parallel.mode", p.mode, "must be none, data (DDP) or machine (one process per "
            "machine block, distributed regime)")
    if p.backend not in ("torch", "ray"):
        bad("parallel.backend", p.backend, "must be torch (local processes) or ray (actors)")
    if p.mode == "machine":
        if m.regime != "distributed":
            bad("parallel.mode", p.mode, "is for model.regime=distributed (one process per machine "
                "block); use parallel.mode=data for the other regimes")
        if p.workers != m.machines:
            bad("parallel.workers", p.workers, f"must equal model.machines = {m.machines} in "
                "machine-parallel training (one process per machine)")
    if p.mode == "data" and o.batch % p.workers:
        bad("optim.batch", o.batch, f"must be divisible by parallel.workers = {p.workers} "
            "(each rank takes an equal slice of every batch)")


def parse_overrides(items: List[str]) -> dict:
    """``["optim.steps=500", "model.layers=2"]`` -> nested dict; values are parsed as YAML."""
    from ..config import parse_overrides as _parse
    return _parse(items, _SECTIONS)


def shipped_train_dir() -> str:
    from ..config import shipped_configs_dir
    return os.path.join(shipped_configs_dir(), "train")


def resolve_train_config(path: str) -> str:
    """A file path, or a shipped name (``unconstrained``, ``train/distributed.yaml``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"config={path!r} must be a file path or a shipped config name")
    path = os.fspath(path)
    if os.path.exists(path):
        if os.path.isdir(path):
            raise ValueError(f"config {path!r} is a directory; pass a YAML file")
        return path
    name = os.path.basename(path)
    name = name if name.endswith((".yaml", ".yml")) else name + ".yaml"
    cand = os.path.join(shipped_train_dir(), name)
    if os.path.exists(cand):
        return cand
    shipped = sorted(f[:-5] for f in os.listdir(shipped_train_dir()) if f.endswith(".yaml")) \
        if os.path.isdir(shipped_train_dir()) else []
    raise ValueError(f"training config {path!r} not found; pass a YAML file or a shipped name "
                     f"({', '.join(shipped)})")


def load_train_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> TrainConfig:
    """Read (``inherit:`` supported), apply ``section.key=value`` overrides, validate."""
    raw: dict = {}
    source = "<defaults>"
    if path is not None:
        source = resolve_train_config(path)
        raw = read_yaml(source)
    if overrides:
        raw = merge_dicts(raw, parse_overrides(overrides))
    return train_config_from_dict(raw, source)


def save_train_config(cfg: TrainConfig, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
