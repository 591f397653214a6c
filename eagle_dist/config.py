"""YAML run configs validated into dataclasses (unknown keys are errors).

A config has three sections; ``inherit: other.yaml`` (relative to the file) merges a base first::

    problem:   {source: controlled, n: 200, d: 800, kappa: 1e3, seed: 0}
    solve:     {method: eagle, workers: 4, backend: torch, target_error: 1e-8}
    output:    {dir: runs/distributed}

``problem.source``: ``controlled`` | ``alpha`` (α-controlled shards, :func:`alpha_problem`) |
``mtx`` (``path``: file or shipped SuiteSparse name) | one of the §5 distributions.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Union

import yaml


@dataclass
class ProblemConfig:
    source: str = "controlled"          # controlled | alpha | mtx | gaussian | student_t | ...
    n: int = 200                        # rows of A
    d: int = 800                        # columns of A (alpha: per worker)
    n_query: int = 2                    # n'
    d_query: int = 1                    # d' (1 = scalar regression-like message)
    kappa: float = 1e3                  # κ(A), or κ_max of every shard for source=alpha
    rank: Optional[int] = None
    noise: float = 0.0
    alpha: float = 1.0                  # source=alpha: target diversity index
    path: Optional[str] = None          # source=mtx
    c_block: str = "rest"               # source=mtx
    seed: int = 0


@dataclass
class SolveConfig:
    method: str = "eagle"               # eagle | gd (distributed); any method when workers = 1
    workers: int = 4
    backend: str = "inprocess"          # inprocess | torch | ray (ignored under torchrun)
    shards: Union[str, List[List[int]]] = "contiguous"   # alpha source uses its own shards
    tol: float = 1e-10
    target_error: Optional[float] = None
    max_iter: int = 1000
    time_budget: Optional[float] = None
    eta: Optional[float] = None
    gamma: Optional[float] = None
    normalization: str = "local"
    mode: str = "auto"                  # distributed EAGLE: auto | paper | gram
    verify: bool = True                 # paper mode: the probe column that checks the answer
    rcond: Optional[float] = None       # EAGLE: numerical-rank cut-off (default sqrt(eps))
    accelerate: bool = False
    timeout: float = 60.0               # seconds before a silent worker fails the run
    address: Optional[str] = None       # Ray cluster address; None starts Ray locally
    dtype: Optional[str] = None
    device: Optional[str] = None
    seed: int = 0


@dataclass
class OutputConfig:
    dir: Optional[str] = "runs/run"


@dataclass
class RunConfig:
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    solve: SolveConfig = field(default_factory=SolveConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"problem": ProblemConfig, "solve": SolveConfig, "output": OutputConfig}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: str) -> dict:
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping with sections {list(_SECTIONS)}")
    parent = raw.pop("inherit", None)
    if parent:
        raw = _merge(_read(os.path.join(os.path.dirname(os.path.abspath(path)), parent)), raw)
    return raw


def _coerce(cls, name: str, value: Any, section: str):
    """Light type coercion (YAML reads ``1e-8`` as a string) with a clear error."""
    f = {f.name: f for f in fields(cls)}[name]
    t = str(f.type)
    if value is None:
        return None
    try:
        if t.startswith("float") or t == "Optional[float]":
            return float(value)
        if t.startswith("int") or t == "Optional[int]":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if t == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ValueError(f"config {section}.{name}={value!r} must be of type {t}") from None
    return value


def config_from_dict(raw: dict, source: str = "<dict>") -> RunConfig:
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; allowed: {list(_SECTIONS)}")
    parts = {}
    for sec, cls in _SECTIONS.items():
        body = raw.get(sec) or {}
        if not isinstance(body, dict):
            raise ValueError(f"{source}: section {sec!r} must be a mapping")
        allowed = {f.name for f in fields(cls)}
        bad = set(body) - allowed
        if bad:
            raise ValueError(f"{source}: unknown key(s) {sorted(bad)} in section {sec!r}; allowed: "
                             f"{sorted(allowed)}")
        parts[sec] = cls(**{k: _coerce(cls, k, v, sec) for k, v in body.items()})
    return RunConfig(**parts)


def load_config(path: str, overrides: Optional[dict] = None) -> RunConfig:
    """Read, inherit, override (``{"solve": {"workers": 8}}``) and validate a YAML config."""
    raw = _read(path)
    if overrides:
        raw = _merge(raw, overrides)
    return config_from_dict(raw, path)


def save_config(cfg: RunConfig, path: str) -> None:
    """Write the resolved config next to a run's results."""
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
