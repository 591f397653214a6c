"""Shared output helpers for every benchmark sweep: CSV, PNG plots, markdown summaries, statistics
and a description of the machine the numbers were measured on.

Each sweep writes into its own directory::

    <out>/<name>.csv            one row per (configuration, method, run) — the raw measurements
    <out>/<name>_summary.csv    one row per (configuration, method): mean, spread, counts
    <out>/*.png                 plots (matplotlib, Agg backend: no display needed)
    <out>/summary.md            title, the exact command, the machine, the table, notes

Example:
    >>> import tempfile, os
    >>> from eagle_dist.bench.report import write_csv, markdown_table
    >>> rows = [{"method": "eagle", "iterations": 16}, {"method": "cg", "iterations": 670}]
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv"); write_csv(rows, path)
    >>> print(markdown_table(rows, ["method", "iterations"]))
    | method | iterations |
    |---|---|
    | eagle | 16 |
    | cg | 670 |
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import shlex
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

Row = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
def ensure_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def write_csv(rows: Sequence[Row], path: str, columns: Optional[Sequence[str]] = None) -> str:
    """Write dict rows to ``path``. Columns: ``columns`` or the union of keys in first-seen order.
    Floats are written with full precision (``repr``); missing entries are left empty."""
    if columns is None:
        seen: Dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(k, None)
        columns = list(seen)
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k, "")) for k in columns})
    return path


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _csv_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def fmt(x: Any, digits: int = 3) -> str:
    """Compact human formatting for tables: ``3`` significant digits, ``—`` for NaN/None."""
    if x is None:
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "—"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x != 0 and (abs(x) >= 1e7 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        if abs(x) >= 10 ** digits:
            return f"{x:.0f}"                          # 15480, not 1.55e+04
        return f"{x:.{digits}g}"
    return str(x)


Column = Union[str, Callable[[Row], str]]


def markdown_table(rows: Sequence[Row], columns: Union[Sequence[Column], Mapping[str, Column]],
                   headers: Optional[Sequence[str]] = None,
                   formatters: Optional[Mapping[str, Callable[[Any], str]]] = None) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns``.

    A column is a key of the rows (its cell is ``formatters[key](value)``, by default
    :func:`fmt`) or a function of the whole row that returns the cell. ``columns`` may also be a
    mapping ``header -> column`` (then ``headers`` is not given); otherwise the headers default to
    the column keys.

        >>> rows = [{"a": 1, "b": 2}]
        >>> print(markdown_table(rows, {"a": "a", "a + b": lambda r: str(r["a"] + r["b"])}))
        | a | a + b |
        |---|---|
        | 1 | 3 |
    """
    if isinstance(columns, Mapping):
        if headers is not None:
            raise ValueError("give the headers either as the keys of columns or as headers")
        headers, columns = list(columns), list(columns.values())
    headers = list(headers) if headers is not None else list(columns)
    formatters = dict(formatters or {})
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        cells = [c(r) if callable(c) else formatters.get(c, fmt)(r.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: str, title: str, command: str, table: str,
                   notes: Iterable[str] | str = (), *, machine: Optional[str] = None,
                   sections: Optional[Mapping[str, str]] = None, files: Sequence[str] = ()) -> str:
    """``summary.md``: title, the exact command, the machine, headline ``sections``, the table,
    the output files and notes (a string or bullet lines)."""
    machine = machine if machine is not None else machine_description()
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# {title}", "", "Command:", "", "```", command, "```", "",
           f"Machine: {machine}", "", f"Written: {when}", ""]
    for head, body in (sections or {}).items():
        out += [f"## {head}", "", body.rstrip(), ""]
    out += ["## Results", "", table.rstrip(), ""]
    if files:
        out += ["## Files", ""] + [f"- `{os.path.basename(f)}`" for f in files] + [""]
    if isinstance(notes, str):
        notes = [notes] if notes else []
    notes = list(notes)
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    with open(path, "w") as f:
        f.write("\n".join(out))
    return path


def command_line(prog: str, params: Mapping[str, Any], flags: Sequence[str] = ()) -> str:
    """The shell command that reproduces a run: ``prog --key value ... --flag``.

    Lists and tuples are joined with commas, floats written so they round-trip (``1e-10``)."""
    parts = []
    for k, v in params.items():
        if v is None:
            continue
        parts.append("--" + k.replace("_", "-"))
        if isinstance(v, (list, tuple)):
            parts.append(",".join(_cli_value(x) for x in v))
        else:
            parts.append(_cli_value(v))
    parts += ["--" + f.replace("_", "-") for f in flags]
    return " ".join([prog] + [p if p.startswith("--") else shlex.quote(p) for p in parts])


def _cli_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and math.isfinite(v):
            m, e = f"{v:.15e}".split("e")
            m = m.rstrip("0").rstrip(".")
            if abs(int(e)) >= 2 and float(f"{m}e{int(e)}") == v:
                return f"{m}e{int(e)}"                     # 1e2, 1e-10, 2.4e2
        return repr(v)
    return str(v)


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------
def stats(values: Iterable[float]) -> Dict[str, float]:
    """mean, std (population, 0 for one value), median, min, max over the finite values; ``count``
    is the number of finite values (NaN everywhere when none)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "median": nan, "min": nan, "max": nan, "count": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max()), "count": int(v.size)}


def log_subsample(length: int, points: int = 200) -> np.ndarray:
    """About ``points`` indices into ``range(length)``, log-spaced (dense at the start, where
    fast methods live) and always including the first and last index."""
    if length <= points:
        return np.arange(length)
    idx = np.unique(np.round(np.geomspace(1, length, points)).astype(int) - 1)
    return np.union1d(idx, [0, length - 1])


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> Dict[str, Any]:
    """CPU model, cores, torch threads, versions, BLAS, GPU and the load average (a benchmark on a
    busy machine is slower; the load tells a reader whether that happened)."""
    import scipy
    import torch

    info: Dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "torch_blas": "MKL" if torch.backends.mkl.is_available() else "non-MKL",
        "gpu": (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
    }
    info["loadavg_1min"] = load_average()
    return info


def load_average() -> float:
    """1-minute load average (NaN where the OS does not report one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return float("nan")


def load_notes(load_start: float, load_end: float) -> List[str]:
    """Notes on machine load during a sweep; warns when other processes competed for the cores
    (torch's OpenMP threads then wait on descheduled peers and small operations slow down by
    orders of magnitude)."""
    cores = os.cpu_count() or 1
    notes = [f"1-minute load average at start / end of the sweep: {load_start} / {load_end} on "
             f"{cores} cores."]
    worst = max(x for x in (load_start, load_end, 0.0) if x == x)
    if worst > 0.75 * cores:
        notes.append("WARNING: the machine was busy with other processes during this sweep; "
                     "wall-clock times are inflated and noisy (iteration counts are unaffected).")
    return notes


def machine_description(info: Optional[Mapping[str, Any]] = None) -> str:
    """One line, e.g. ``AMD EPYC, 2 cores, torch 2.13.0+cpu (MKL) with 2 threads, ...``."""
    i = dict(info or machine_info())
    return (f"{i['cpu']}, {i['cores']} cores, torch {i['torch']} ({i['torch_blas']}) with "
            f"{i['torch_threads']} thread(s), numpy {i['numpy']}, scipy {i['scipy']}, "
            f"Python {i['python']}, GPU: {i['gpu']}, 1-min load average at start "
            f"{i['loadavg_1min']}")


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
_COLORS = {
    "eagle": "#d62728", "cg": "#1f77b4", "gd": "#2ca02c", "sgd": "#2ca02c", "lsmr": "#9467bd",
    "lsqr": "#8c564b", "lstsq": "#7f7f7f", "lstsq-gelsd": "#7f7f7f", "lstsq-gelsy": "#bcbd22",
    "pinv": "#17becf",
}


def color_for(label: str, fallback_index: int = 0) -> str:
    """A stable colour per method (the method is the label's first word)."""
    key = label.split()[0].split("/")[0].lower()
    if key in _COLORS:
        return _COLORS[key]
    cycle = ["#e377c2", "#ff7f0e", "#17becf", "#bcbd22", "#8c564b", "#7f7f7f"]
    return cycle[fallback_index % len(cycle)]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")          # files only; never needs a display
    import matplotlib.pyplot as plt
    return plt


def plot_panels(path: str, panels: Sequence[Mapping[str, Any]], *, title: Optional[str] = None,
                ncols: Optional[int] = None, panel_size=(4.6, 3.6), legend: str = "figure") -> str:
    """Draw ``panels`` (a grid of axes) and save a PNG.

    Each panel is a mapping with ``title``, ``xlabel``, ``ylabel``, optional ``logx``/``logy``
    (bool), ``hlines`` (list of ``(y, label)``), and ``series``: a list of mappings with ``x``,
    ``y``, ``label`` and optional ``color``, ``marker``, ``linestyle``, ``filled`` (False draws
    hollow markers — used for "did not reach the target"), ``kind`` (``"line"`` or ``"bar"``),
    ``width`` (bar width), ``annotate`` (list of strings, one per point).
    ``legend="figure"`` draws one shared legend below the grid; ``"axes"`` one per panel.
    """
    plt = _pyplot()
    k = len(panels)
    ncols = ncols or min(3, k)
    nrows = int(math.ceil(k / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             squeeze=False)
    handles: Dict[str, Any] = {}
    for ax, panel in zip(axes.flat, panels):
        for j, s in enumerate(panel.get("series", [])):
            x = np.asarray(s["x"], dtype=float)
            y = np.asarray(s["y"], dtype=float)
            label = s.get("label", "")
            color = s.get("color") or color_for(label, j)
            if s.get("kind") == "bar":
                h = ax.bar(x, y, width=s.get("width", 0.8), color=color, label=label,
                           edgecolor="black", linewidth=0.5)
            else:
                filled = s.get("filled", True)
                h, = ax.plot(x, y, color=color, label=label, marker=s.get("marker"),
                             linestyle=s.get("linestyle", "-"), linewidth=s.get("linewidth", 1.5),
                             markersize=s.get("markersize", 6),
                             markerfacecolor=color if filled else "none")
            for xi, yi, txt in zip(x, y, s.get("annotate", []) or []):
                if txt:
                    ax.annotate(txt, (xi, yi), textcoords="offset points", xytext=(0, 5),
                                ha="center", fontsize=7)
            if label and label not in handles:
                handles[label] = h
        for y, lab in panel.get("hlines", []):
            h = ax.axhline(y, color="black", linestyle=":", linewidth=1)
            if lab and lab not in handles:
                handles[lab] = h
        if panel.get("logx"):
            ax.set_xscale("log")
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("xticks") is not None:
            ax.set_xticks(panel["xticks"])
            ax.set_xticklabels(panel.get("xticklabels", [str(t) for t in panel["xticks"]]))
            ax.minorticks_off()
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.grid(True, which="major", alpha=0.3)
        if legend == "axes" and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    if legend == "figure" and handles:
        ncol = min(5, len(handles))
        leg_rows = int(math.ceil(len(handles) / ncol))
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
                   ncol=ncol, fontsize=8, frameon=False)
        height = panel_size[1] * nrows                   # inches; ~0.22 in per legend row
        fig.tight_layout(rect=(0, min(0.4, (0.22 * leg_rows + 0.12) / height), 1,
                               0.95 if title else 1))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.95 if title else 1))
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
