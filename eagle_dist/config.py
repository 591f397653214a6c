"""YAML run configs validated into dataclasses (unknown keys are errors).

A config has three sections; ``inherit: other.yaml`` (relative to the file) merges a base first::

    problem:   {source: controlled, n: 200, d: 800, kappa: 1e3, seed: 0}
    solve:     {method: eagle, workers: 4, backend: torch, target_error: 1e-8}
    output:    {dir: runs/distributed}

``problem.source``: ``controlled`` | ``alpha`` (α-controlled shards, :func:`alpha_problem`) |
``mtx`` (``path``: file or shipped SuiteSparse name) | ``store`` (``path``: a column-store folder,
each worker reads only its own columns; :mod:`eagle_dist.data.store`) | one of the paper's
evaluation distributions.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

import numpy as np
import yaml


#: problem.source values (data.generators.DISTRIBUTIONS included; a test keeps them in step —
#: config is floor 1 and does not import the data package)
PROBLEM_SOURCES = ("controlled", "alpha", "mtx", "store", "paper_training") + ('svd', 'student_t', 'gaussian', 'correlated', 'sparse_rademacher', 'clustered')


@dataclass
class ProblemConfig:
    source: str = "controlled"          # controlled | alpha | mtx | store | gaussian | ...
    n: int = 200                        # rows of A
    d: int = 800                        # columns of A (alpha: per worker)
    n_query: int = 2                    # n'
    d_query: int = 1                    # d' (1 = scalar regression-like message)
    kappa: float = 1e3                  # κ(A), or κ_max of every shard for source=alpha
    rank: Optional[int] = None
    noise: float = 0.0
    alpha: float = 1.0                  # source=alpha: target diversity index
    path: Optional[str] = None          # source=mtx (file) or store (column-store folder)
    c_block: str = "rest"               # source=mtx
    seed: int = 0


def _solve_config_class():
    """``SolveConfig``: ``method`` plus every option of :class:`eagle_dist.options.SolveOptions`
    the command line and YAML can set (same names, same defaults — generated, not repeated)."""
    from .options import cli_fields
    spec = [("method", "str", field(default="eagle"))]
    spec += [(f.name, f.type, field(default=f.default)) for f in cli_fields()]
    cls = dataclasses.make_dataclass("SolveConfig", spec)
    cls.__module__ = __name__

    def solve_options(self, **extra):
        """The :class:`SolveOptions` of this section (``extra``: Python-only fields)."""
        from .options import SolveOptions
        return SolveOptions(**{k: v for k, v in dataclasses.asdict(self).items()
                               if k != "method"}, **extra)
    cls.solve_options = solve_options
    cls.__doc__ = ("The ``solve:`` section of a run config: ``method`` and every field of "
                   "eagle_dist.SolveOptions the CLI and YAML can set.")
    return cls


SolveConfig = _solve_config_class()


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


def merge_dicts(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


#: YAML guards: a config is a few dozen keys; refuse expanded node counts and nesting far beyond
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 50
MAX_CONFIG_BYTES = 1 << 20


def shipped_configs_dir() -> str:
    """The folder holding the shipped YAML configs: the repository's top-level ``configs/``.

    A wheel installs it as ``eagle_dist/configs/`` (``[tool.setuptools.package-dir]`` maps it);
    a source checkout or an editable install keeps it next to the package. Both are looked up
    by path (no import: a folder without ``__init__.py`` is not importable under an editable
    install)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "configs"), os.path.join(os.path.dirname(here), "configs")):
        if os.path.isdir(cand):
            return cand
    return os.path.join(here, "configs")


def resolve_config(path) -> str:
    """``path`` itself when it exists; else a shipped config by name (``distributed``,
    ``distributed.yaml``, ``configs/distributed.yaml``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"config={path!r} must be a file path or a shipped config name")
    path = os.fspath(path)
    if not path:
        raise ValueError("config path is empty; pass a YAML file or a shipped config name")
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


def read_yaml(path: str, _chain: tuple = ()) -> dict:
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
            text = f.read(MAX_CONFIG_BYTES + 1)     # bounded: /dev/zero or a pipe never ends
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the config ({exc})") from exc
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: more than {MAX_CONFIG_BYTES} characters is not a config; pass "
                         "the YAML run config")
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
        raise ValueError(f"{path}: the top level must be a mapping of sections (run configs: "
                         f"{', '.join(_SECTIONS)}; training configs: model, data, optim, eval, "
                         "run, parallel)")
    parent = raw.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str) or not parent.strip():
            raise ValueError(f"{path}: inherit: must be one file name (relative to this file), "
                             f"got {parent!r}")
        ppath = os.path.join(os.path.dirname(os.path.abspath(path)), parent)
        if not os.path.exists(ppath):
            raise ValueError(f"{path}: inherit: {parent!r} does not exist (looked for {ppath})")
        raw = merge_dicts(read_yaml(ppath, _chain + (real,)), raw)
    return raw


def _as_int(value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):                  # "8", or "1e3" (YAML 1.1 reads 1e3 as a string)
        try:
            return int(value.strip())
        except ValueError:
            value = float(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)                       # 8.0 is 8; 2.5, nan and inf are refused
    raise ValueError


def _as_float(value) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError
    if isinstance(value, (int, float, np.integer, np.floating, str)):
        return float(value)                     # "1e-8": YAML 1.1 reads it as a string
    raise ValueError


def _as_shards(value):
    """``contiguous`` / ``random``, or explicit shards as lists of Python ints (so the resolved
    config can be written back as YAML). Float indices are refused, never truncated."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError("must be 'contiguous', 'random' or a list of column-index lists")
    out = []
    for i, shard in enumerate(value):
        if isinstance(shard, (str, bytes, dict)) or not hasattr(shard, "__iter__"):
            raise ValueError(f"shard {i} is {shard!r}, not a list of column indices")
        cols = []
        for c in shard:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                raise ValueError(f"shard {i} holds {c!r}; column indices must be integers")
            cols.append(int(c))
        out.append(cols)
    return out


def _coerce(cls, name: str, value: Any, section: str):
    """Type coercion with a clear error: NumPy scalars become Python ones (np.int64 is an int),
    YAML 1.1 strings such as ``1e-8`` become numbers; bools are not numbers, non-integral
    floats are not ints, and ``null`` is only allowed where the default is ``null``."""
    f = {f.name: f for f in fields(cls)}[name]
    t = str(f.type)
    if value is None:
        if t.startswith("Optional["):
            return None
        raise ValueError(f"config {section}.{name} is null; give {_TYPE_WORDS.get(t, t)}, or "
                         "remove the key to use the default")
    try:
        if t in ("float", "Optional[float]"):
            return _as_float(value)
        if t in ("int", "Optional[int]"):
            return _as_int(value)
        if t == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError
            return bool(value)
        if t in ("str", "Optional[str]"):
            if not isinstance(value, str):
                raise ValueError
            return str(value)
        if name == "shards":
            return _as_shards(value)
    except (TypeError, ValueError, OverflowError) as exc:
        why = f" ({exc})" if str(exc) and name == "shards" else ""
        raise ValueError(f"config {section}.{name}={value!r} must be "
                         f"{_TYPE_WORDS.get(t, 'of type ' + t)}{why}") from None
    return value


_TYPE_WORDS = {"int": "an integer", "Optional[int]": "an integer or null",
               "float": "a number", "Optional[float]": "a number or null",
               "bool": "true or false", "str": "a string", "Optional[str]": "a string or null",
               "Union[str, List[List[int]]]": "'contiguous', 'random' or a list of integer "
                                              "column-index lists"}


def sections_from_dict(raw: dict, sections: Dict[str, type], source: str) -> Dict[str, Any]:
    """``{section: dataclass instance}`` from a mapping of mappings: unknown sections and keys are
    errors naming the allowed ones, values are coerced (:func:`_coerce`). Shared by the run
    configs and the training configs (``eagle_dist.model.config``)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the top level must be a mapping with sections {list(sections)}")
    unknown = set(raw) - set(sections)
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {sorted(map(str, unknown))}; allowed: "
                         f"{list(sections)}")
    parts = {}
    for sec, cls in sections.items():
        body = raw.get(sec)
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ValueError(f"{source}: section {sec!r} must be a mapping")
        allowed = {f.name for f in fields(cls)}
        bad = set(body) - allowed
        if bad:
            raise ValueError(f"{source}: unknown key(s) {sorted(map(str, bad))} in section "
                             f"{sec!r}; allowed: {sorted(allowed)}")
        parts[sec] = cls(**{k: _coerce(cls, k, v, sec) for k, v in body.items()})
    return parts


def config_from_dict(raw: dict, source: str = "<dict>") -> RunConfig:
    cfg = RunConfig(**sections_from_dict(raw, _SECTIONS, source))
    _validate(cfg, source)
    return cfg


def _validate(cfg: RunConfig, source: str) -> None:
    """Values that would fail deep inside a run are refused here, naming the key."""
    def bad(key, value, why):
        raise ValueError(f"{source}: {key}={value!r} {why}")
    sc, pc = cfg.solve, cfg.problem
    for key, v in (("problem.n", pc.n), ("problem.d", pc.d), ("problem.n_query", pc.n_query),
                   ("problem.d_query", pc.d_query)):
        if v is None or v < 1:
            bad(key, v, "must be a positive integer")
    if sc.device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", sc.device):
        bad("solve.device", sc.device, "must be auto, cpu or cuda[:k]")
    if isinstance(sc.shards, str) and sc.shards not in ("contiguous", "random"):
        bad("solve.shards", sc.shards, "must be contiguous, random or a list of column-index lists")
    # the one validation of every solve option (eagle_dist.options), naming the config key
    try:
        sc.solve_options().validate(sc.method, store=pc.source == "store")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: solve.{exc}") from None
    for key, v in (("problem.seed", pc.seed), ("solve.seed", sc.seed)):
        if v < 0:
            bad(key, v, "must be a non-negative integer")
    if pc.source not in PROBLEM_SOURCES:
        bad("problem.source", pc.source, f"is unknown; use one of {', '.join(PROBLEM_SOURCES)}")
    if pc.rank is not None and pc.rank < 1:
        bad("problem.rank", pc.rank, "must be a positive integer or null (full rank)")
    if not (pc.kappa >= 1 and pc.kappa < float("inf")):
        bad("problem.kappa", pc.kappa, "must be a finite number >= 1 (a condition number)")
    if not (pc.noise >= 0 and pc.noise < float("inf")):
        bad("problem.noise", pc.noise, "must be a finite number >= 0")
    if not (0 < pc.alpha <= 1):
        bad("problem.alpha", pc.alpha, "must lie in (0, 1] (a diversity index)")
    if pc.c_block not in ("rest", "identity"):
        bad("problem.c_block", pc.c_block, "must be rest or identity")
    if pc.source == "mtx" and not pc.path:
        bad("problem.path", pc.path, "is needed with source: mtx (a .mtx file or a shipped "
            "SuiteSparse name such as HB/dwt_1007)")
    if pc.source == "store" and not pc.path:
        bad("problem.path", pc.path, "is needed with source: store (a column-store folder "
            "written by `eagle-dist shard`; each worker reads only its own columns)")


def parse_overrides(items: List[str], sections=None) -> dict:
    """``["solve.tol=1e-8", "problem.n=300"]`` -> nested dict; values are parsed as YAML. The
    one parser of ``section.key=value`` overrides (run configs, training configs, the CLI)."""
    sections = list(sections if sections is not None else _SECTIONS)
    out: dict = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value "
                             f"(e.g. {sections[0]}.{'steps' if 'optim' in sections else 'n'}=500)")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"override {item!r}: the key must be section.key, one of the "
                             f"sections {sections}")
        if parts[0] not in sections:
            raise ValueError(f"override {item!r}: unknown section {parts[0]!r}; use one of "
                             f"{sections}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: cannot read the value ({exc})") from None
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def load_config(path: str, overrides: Optional[dict] = None) -> RunConfig:
    """Read, inherit, override (``{"solve": {"workers": 8}}``) and validate a YAML config."""
    raw = read_yaml(path)
    if overrides:
        raw = merge_dicts(raw, overrides)
    return config_from_dict(raw, path)


def save_config(cfg: RunConfig, path: str) -> None:
    """Write the resolved config next to a run's results."""
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
