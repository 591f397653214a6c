"""YAML run configs validated into dataclasses (unknown keys are errors).

A config has three sections; ``inherit: other.yaml`` (relative to the file) merges a base first::

    problem:   {source: controlled, n: 200, d: 800, kappa: 1e3, seed: 0}
    solve:     {method: eagle, workers: 4, backend: torch, target_error: 1e-8}
    output:    {dir: runs/distributed}

``problem.source``: ``controlled`` | ``alpha`` (α-controlled shards, :func:`alpha_problem`) |
``mtx`` (``path``: file or shipped SuiteSparse name) | one of the paper's evaluation distributions.
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


#: YAML guards: a config is a few dozen keys; refuse expanded node counts and nesting far beyond
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 50
MAX_CONFIG_BYTES = 1 << 20


def shipped_configs_dir() -> str:
    """The folder holding the shipped YAML configs (``configs/`` of the repository, installed as
    the package ``eagle_dist.configs``)."""
    try:
        from importlib import resources
        return str(resources.files("eagle_dist.configs"))
    except (ModuleNotFoundError, TypeError):
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def resolve_config(path: str) -> str:
    """``path`` itself when it exists; else a shipped config by name (``distributed``,
    ``distributed.yaml``, ``configs/distributed.yaml``)."""
    if os.path.exists(path):
        if os.path.isdir(path):
            raise ValueError(f"config {path!r} is a directory; pass a YAML file such as "
                             f"{os.path.join(path, 'distributed.yaml')}")
        return path
    base = os.path.basename(path)
    root = shipped_configs_dir()
    for cand in (base, base + ".yaml"):
        full = os.path.join(root, cand)
        if os.path.isfile(full):
            return full
    names = sorted(f[:-5] for f in os.listdir(root) if f.endswith(".yaml")) if os.path.isdir(root) else []
    raise ValueError(f"config file {path!r} does not exist; pass a YAML path or a shipped config "
                     f"name ({', '.join(names)})")


def _measure(node, depth: int = 0, memo=None) -> int:
    """Expanded node count of a composed YAML graph (aliases counted each time they are used,
    without expanding them), refusing excessive nesting."""
    if memo is None:
        memo = {}
    if depth > MAX_YAML_DEPTH:
        raise ValueError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels; a config is a flat "
                         "mapping of sections")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1          # a cycle through an alias counts as too large
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_measure(k, depth + 1, memo) + _measure(v, depth + 1, memo)
                        for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_measure(v, depth + 1, memo) for v in node.value)
    else:
        total = 1
    memo[key] = total
    if total > MAX_YAML_NODES:
        raise ValueError(f"YAML expands to more than {MAX_YAML_NODES} nodes (aliases used as a "
                         "'billion laughs' bomb?); refusing to load it")
    return total


def _read(path: str, _chain: tuple = ()) -> dict:
    path = resolve_config(path)
    real = os.path.realpath(path)
    if real in _chain:
        chain = " -> ".join(list(_chain) + [real])
        raise ValueError(f"inherit: cycle in configs ({chain}); remove one of the inherit: lines")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes is not a config (limit "
                         f"{MAX_CONFIG_BYTES}); pass the YAML run config")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the config ({exc})") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _measure(node)
        raw = yaml.safe_load(text) or {}
    except RecursionError:
        raise ValueError(f"{path}: YAML nested too deeply to parse; a config is a flat mapping of "
                         "sections") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping with sections {list(_SECTIONS)}")
    parent = raw.pop("inherit", None)
    if parent:
        if not isinstance(parent, str):
            raise ValueError(f"{path}: inherit: must be one file name, got {parent!r}")
        ppath = os.path.join(os.path.dirname(os.path.abspath(path)), parent)
        if not os.path.exists(ppath):
            raise ValueError(f"{path}: inherit: {parent!r} does not exist (looked for {ppath})")
        raw = _merge(_read(ppath, _chain + (real,)), raw)
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
    cfg = RunConfig(**parts)
    _validate(cfg, source)
    return cfg


def _validate(cfg: RunConfig, source: str) -> None:
    """Values that would fail deep inside a run are refused here, naming the key."""
    def bad(key, value, why):
        raise ValueError(f"{source}: {key}={value!r} {why}")
    sc, pc = cfg.solve, cfg.problem
    for key, v in (("solve.workers", sc.workers), ("solve.max_iter", sc.max_iter),
                   ("problem.n", pc.n), ("problem.d", pc.d), ("problem.n_query", pc.n_query),
                   ("problem.d_query", pc.d_query)):
        if v is None or v < 1:
            bad(key, v, "must be a positive integer")
    for key, v in (("solve.tol", sc.tol), ("solve.timeout", sc.timeout)):
        if v is None or not (v > 0 and v != float("inf")):
            bad(key, v, "must be a positive, finite number")
    if sc.target_error is not None and not (0 < sc.target_error < float("inf")):
        bad("solve.target_error", sc.target_error, "must be a positive, finite number or null")
    if sc.mode not in ("auto", "paper", "gram"):
        bad("solve.mode", sc.mode, "must be auto, paper or gram")
    if sc.backend not in ("inprocess", "torch", "ray"):
        bad("solve.backend", sc.backend, "must be inprocess, torch or ray")
    if sc.device is not None and not __import__("re").fullmatch(r"auto|cpu|cuda(:\d+)?", sc.device):
        bad("solve.device", sc.device, "must be auto, cpu or cuda[:k]")


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
