"""Machinery every sweep shares: torch thread scoping, smoke/full defaults, argument checks and
parsers, progress bars and the headline printout."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from . import report


@contextlib.contextmanager
def threads(n: Optional[int]):
    """Temporarily set torch's intra-op threads (``None``: leave as is)."""
    if n is None:
        yield
        return
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"threads={n!r} must be a positive integer (or None for torch's default)")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve(smoke: bool, full: Dict[str, Any], small: Dict[str, Any], given: Dict[str, Any]):
    """Explicit arguments win; otherwise the full-size or the smoke default."""
    base = small if smoke else full
    return {k: (given[k] if given.get(k) is not None else base[k]) for k in base}


def check_positive_int(name: str, v: Any) -> None:
    if not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive integer")


def progress(total: int, desc: str, enabled: bool, unit: str = "run"):
    """A progress bar on a terminal only (redrawn at most twice a second); when stderr is a file
    or a pipe the sweeps log one line per run instead of bar redraws."""
    import sys
    from tqdm.auto import tqdm
    tty = sys.stderr is not None and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and tty), leave=False,
                mininterval=0.5)


def floats(s: str) -> List[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{s!r} is not a comma-separated list of numbers, e.g. 1e2,1e4 or "
                         "1,0.6,0.35") from None


def ints(s: str) -> List[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{s!r} is not a comma-separated list of integers, e.g. 500,2000") \
            from None


def strs(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def print_headline(res) -> int:
    """Print a sweep's files and headline numbers (``res`` has name, out, files, headline)."""
    print(f"\n{res.name}: wrote {len(res.files)} files to {res.out}")
    for k, v in res.headline.items():
        print(f"  {k}: {v if isinstance(v, (bool, str)) else report.fmt(v)}")
    return 0
