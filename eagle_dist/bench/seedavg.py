"""Seed-averaged, sign-aligned weights (paper Fig. 12) and the median training loss over seeds
(Fig. 9): ``eagle-dist bench seedavg``.

For every regime folder group ``<root>/<group>-seed<K>/final.pt`` (the published runs under
``benchmarks/results/train/``): the per-layer products ``W_QK = W_Q W_Kᵀ`` and
``W_VP = W_V W_Pᵀ`` of every seed (:func:`eagle_dist.model.extract.model_products`), assembled to
the full feature space (distributed: machine μ's 8 x 8 ``W_QK`` on the diagonal block μ, its 8 x 24
``W_VP`` as rows μ), **sign-aligned** and averaged over seeds.

Sign alignment (paper B.5): ``(W_QK, W_VP) → (−W_QK, −W_VP)`` leaves a head's map unchanged, so
per seed, layer and head the sign is chosen that makes the large ``W_QK`` entries positive (the
sum of the entries above τ = 1.5·mean|w|, the extraction's sparsification threshold; the trace
when that sum is 0). The paper says the large ``W_VP`` entries then come out negative; the
summary reports the share that does. What alignment cannot remove: the scale gauge
``(c·W_QK, W_VP/c)``, also a symmetry; the summary reports the spread of α₁ (QK's A diagonal)
across seeds next to the spread of the gauge-free α₁α₂, so a reader sees how much the raw average
mixes scales.

Checks in ``summary.md``: energy share on EAGLE's pattern (QK: A diagonal; VP: A diagonal plus the
C/D channel, across machines in the distributed regime) of the averaged matrices and of the
seeds; for the compute-limited regime the share of the A block's energy on its diagonal, against
the same average of as many independent Haar ``S Sᵀ`` (d x r) — the paper's C.3 says the averaged
sketch is close to the identity.

Writes ``seedavg_<group>.png`` (rows: layers; columns: W_QK, W_VP), ``seedavg.csv`` (the averaged
matrices, long format), ``seedavg_checks.csv``, ``seedavg_loss.png`` / ``.csv`` (median, min and
max training loss over the group's seeds at the logged steps, paper Fig. 9) and ``summary.md``. Read-only on the checkpoints.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import report
from .common import SweepResult, print_headline, strs

log = logging.getLogger(__name__)

DEFAULT_ROOT = os.path.join("benchmarks", "results", "train")
DEFAULT_GROUPS = ("unconstrained", "distributed", "compute_limited", "distributed_shared")
TAU = 1.5
_SEED_DIR = re.compile(r"^(?P<group>.+)-seed(?P<seed>\d+)$")


def discover(root: str) -> Dict[str, List[Tuple[int, str]]]:
    """``{group: [(seed, checkpoint), …]}`` for every ``<group>-seed<K>/final.pt`` under root."""
    if not os.path.isdir(root):
        raise ValueError(f"root={root!r} is not a directory; pass the folder holding "
                         "<regime>-seed<K>/final.pt (default benchmarks/results/train)")
    found: Dict[str, List[Tuple[int, str]]] = {}
    for name in sorted(os.listdir(root)):
        m = _SEED_DIR.match(name)
        ck = os.path.join(root, name, "final.pt")
        if m and os.path.isfile(ck):
            found.setdefault(m["group"], []).append((int(m["seed"]), ck))
    for v in found.values():
        v.sort()
    return found


def full_products(model) -> List[Tuple[np.ndarray, np.ndarray, List[Tuple[int, int]]]]:
    """Per layer: (W_QK, W_VP, head blocks) in the full F x F feature space, one sign-aligned
    product pair per head placed at its features (heads' VP rows summed)."""
    from ..model.extract import model_products
    out = []
    for heads in model_products(model):
        F = heads[0][3].shape[1]
        QK, VP = np.zeros((F, F)), np.zeros((F, F))
        blocks = []
        for lo, hi, qk, vp in heads:
            qk, vp = qk.numpy(), vp.numpy()
            s = align_sign(qk)
            QK[lo:hi, lo:hi] += s * qk
            VP[lo:hi, :] += s * vp
            blocks.append((lo, hi))
        out.append((QK, VP, blocks))
    return out


def align_sign(qk: np.ndarray) -> float:
    """+1 or −1: the sign making the large entries of ``qk`` (|w| > 1.5·mean|w|) sum positive."""
    tau = TAU * float(np.abs(qk).mean())
    big = qk[np.abs(qk) > tau]
    total = float(big.sum()) if big.size else 0.0
    if total == 0.0:
        total = float(np.trace(qk))
    return -1.0 if total < 0 else 1.0


def pattern_masks(mc) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EAGLE's support in the full feature space: (QK mask, VP mask, A-feature indicator).
    QK: the A diagonal; VP: the A diagonal plus C/D→C/D of the same C column on every machine."""
    if mc.regime == "distributed":
        w = mc.d // mc.machines + mc.d_query
        local = np.arange(mc.machines * w) % w
        is_a = local < mc.d // mc.machines
        cidx = np.where(is_a, -1, local - mc.d // mc.machines)
    else:
        F = mc.d + mc.d_query
        is_a = np.arange(F) < mc.d
        cidx = np.where(is_a, -1, np.arange(F) - mc.d)
    F = is_a.size
    eye = np.eye(F, dtype=bool)
    qk = eye & is_a[:, None]
    vp = qk | ((cidx[:, None] >= 0) & (cidx[:, None] == cidx[None, :]))
    return qk, vp, is_a


def energy_share(W: np.ndarray, mask: np.ndarray) -> float:
    tot = float((W * W).sum())
    return float((W[mask] ** 2).sum()) / tot if tot > 0 else math.nan


def haar_average_diag_share(d: int, r: int, k: int, draws: int = 200, seed: int = 0) -> float:
    """Mean share of the energy on the diagonal of the average of ``k`` independent ``S Sᵀ``
    (S a Haar d x r orthonormal frame): the reference for the compute-limited average."""
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(draws):
        P = np.zeros((d, d))
        for _ in range(k):
            Q, R = np.linalg.qr(rng.standard_normal((d, r)))
            S = Q * np.sign(np.diag(R))
            P += S @ S.T / k
        shares.append(float((np.diag(P) ** 2).sum() / (P * P).sum()))
    return float(np.mean(shares))


def average_group(ckpts: Sequence[Tuple[int, str]]) -> Dict[str, Any]:
    """Load, align and average one group; models whose config differs from the first seed's are
    left out (listed in ``excluded``)."""
    from ..model.train import load_checkpoint
    base = None
    seeds, per_seed, excluded, paths = [], [], [], []
    for seed, path in ckpts:
        model, cfg, _ = load_checkpoint(path)
        model = model.double()
        if cfg.model.regime != "distributed" and cfg.model.heads != 1:
            excluded.append((seed, f"{cfg.model.heads} heads (averaging heads is meaningless)"))
            continue
        key = (cfg.model, cfg.data, {k: v for k, v in vars(cfg.optim).items() if k != "seed"})
        if base is None:
            base, mc = key, cfg.model
        elif key != base:
            excluded.append((seed, "model/data/optimiser config differs from the first seed's"))
            continue
        seeds.append(seed)
        paths.append(path)
        per_seed.append(full_products(model))
    if not seeds:
        return dict(seeds=[], excluded=excluded)
    L = len(per_seed[0])
    mean = [(np.mean([p[l][0] for p in per_seed], 0), np.mean([p[l][1] for p in per_seed], 0))
            for l in range(L)]
    std = [(np.std([p[l][0] for p in per_seed], 0), np.std([p[l][1] for p in per_seed], 0))
           for l in range(L)]
    return dict(seeds=seeds, excluded=excluded, mc=mc, per_seed=per_seed, mean=mean, std=std,
                paths=paths)


def median_loss(paths: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
    """Training loss of every seed at the regularly logged steps (every 50th) they share
    (``metrics.csv`` next to each checkpoint: the loss of that step's batch): steps, median, min, max over seeds (paper
    Fig. 9 plots the median over runs)."""
    curves = []
    for p in paths:
        f = os.path.join(os.path.dirname(p), "metrics.csv")
        if not os.path.isfile(f):
            return None
        rows = report.read_csv(f)
        curves.append({int(r["step"]): float(r["loss"]) for r in rows if r.get("loss")})
    # the regular grid only: runs also log extra rows at their own spike steps, and steps that
    # every seed logged for that reason would select spikes
    steps = sorted(t for t in set.intersection(*(set(c) for c in curves)) if t % 50 == 0)
    if not steps:
        return None
    L = np.array([[c[t] for t in steps] for c in curves])          # (seeds, steps)
    return dict(step=np.array(steps), median=np.median(L, 0), min=L.min(0), max=L.max(0))


def group_checks(group: str, g: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per layer: pattern energy of the average and of the seeds, VP sign share, gauge spread."""
    mc = g["mc"]
    mq, mv, is_a = pattern_masks(mc)
    A = np.where(is_a)[0]
    k = len(g["seeds"])
    haar = (haar_average_diag_share(mc.d, mc.r, k) if mc.regime == "compute_limited" else math.nan)
    rows = []
    for l, (QK, VP) in enumerate(g["mean"]):
        seeds = [p[l] for p in g["per_seed"]]
        a1 = np.array([np.mean(np.diag(q)[A]) for q, _, _ in seeds])
        a2 = np.array([np.mean(np.diag(v)[A]) for _, v, _ in seeds])
        neg = []
        for _, v, _ in seeds:
            big = v[np.abs(v) > TAU * np.abs(v).mean()]
            neg.append(float((big < 0).mean()) if big.size else math.nan)
        row = dict(group=group, layer=l + 1, seeds=k,
                   qk_pattern_share_avg=energy_share(QK, mq),
                   qk_pattern_share_seeds=float(np.mean([energy_share(q, mq) for q, _, _ in seeds])),
                   vp_pattern_share_avg=energy_share(VP, mv),
                   vp_pattern_share_seeds=float(np.mean([energy_share(v, mv) for _, v, _ in seeds])),
                   vp_large_negative_share=float(np.nanmean(neg)),
                   alpha1_mean=float(a1.mean()),
                   alpha1_cv=float(a1.std() / abs(a1.mean())) if a1.mean() else math.nan,
                   alpha12_mean=float((a1 * a2).mean()),
                   alpha12_cv=float((a1 * a2).std() / abs((a1 * a2).mean()))
                   if (a1 * a2).mean() else math.nan)
        if mc.regime == "compute_limited":
            sub = np.ix_(A, A)
            row.update(qk_a_diag_share_avg=energy_share(QK[sub], np.eye(A.size, dtype=bool)),
                       qk_a_diag_share_seeds=float(np.mean(
                           [energy_share(q[sub], np.eye(A.size, dtype=bool)) for q, _, _ in seeds])),
                       haar_avg_diag_share=haar)
        rows.append(row)
    return rows


def seedavg(root: str = DEFAULT_ROOT, out: Optional[str] = None,
            groups: Optional[Sequence[str]] = None) -> SweepResult:
    """Average every requested group's seeds (module docstring); returns a small result with
    ``headline`` and ``files``."""
    found = discover(root)
    groups = list(groups) if groups else [g for g in DEFAULT_GROUPS if g in found]
    missing = [g for g in groups if g not in found]
    if missing:
        raise ValueError(f"groups {missing} have no <group>-seed<K>/final.pt under {root!r}; "
                         f"found: {sorted(found)}")
    out = out or os.path.join("runs", "bench", "seedavg")
    report.ensure_dir(out)
    command = report.command_line("eagle-dist bench seedavg",
                                  dict(root=root, out=out, groups=groups))
    files, checks, cells, listing = [], [], [], []
    losses: Dict[str, Dict[str, np.ndarray]] = {}
    found_seeds: Dict[str, List[int]] = {}
    for group in groups:
        g = average_group(found[group])
        found_seeds[group] = g["seeds"]
        listing.append(dict(group=group, seeds=",".join(str(s) for s in g["seeds"]) or "—",
                            excluded="; ".join(f"seed {s}: {why}" for s, why in g["excluded"])
                            or "—"))
        if not g["seeds"]:
            continue
        rows = group_checks(group, g)
        checks += rows
        for l, ((QK, VP), (sq, sv)) in enumerate(zip(g["mean"], g["std"])):
            for name, M, S in (("W_QK", QK, sq), ("W_VP", VP, sv)):
                for i, j in np.ndindex(M.shape):
                    cells.append(dict(group=group, layer=l + 1, matrix=name, row=i, col=j,
                                      mean=float(f"{M[i, j]:.6g}"), std=float(f"{S[i, j]:.4g}")))
        files.append(_heatmap(out, group, g))
        lc = median_loss(g["paths"])
        if lc is not None:
            losses[group] = lc
        log.info("seedavg %s: seeds %s", group, g["seeds"])
    files.append(report.write_csv(cells, os.path.join(out, "seedavg.csv")))
    files.append(report.write_csv(checks, os.path.join(out, "seedavg_checks.csv")))
    if losses:
        files.append(report.write_csv(
            [dict(group=gname, step=int(t), median=float(f"{m:.6g}"), min=float(f"{a:.6g}"),
                  max=float(f"{b:.6g}"))
             for gname, lc in losses.items()
             for t, m, a, b in zip(lc["step"], lc["median"], lc["min"], lc["max"])],
            os.path.join(out, "seedavg_loss.csv")))
        files.append(report.plot_panels(
            os.path.join(out, "seedavg_loss.png"),
            [dict(title=f"{gname}: training loss, median of {len(found_seeds[gname])} seeds",
                  xlabel="step", ylabel="batch loss (MSE)", logy=True, series=[
                      dict(x=lc["step"], y=lc["median"], label="median over seeds",
                           color="#1f77b4")])
             for gname, lc in losses.items()], ncols=min(3, len(losses)),
            title="Median training loss over seeds at the logged steps (every 50th batch), "
                  "paper Fig. 9 (spikes of single seeds: seedavg_loss.csv, min/max)"))
    headline = {f"{r['group']}_layer{r['layer']}_qk_pattern_avg": r["qk_pattern_share_avg"]
                for r in checks if r["layer"] == 1}
    sections = {"Seeds": report.markdown_table(listing, {"group": "group", "seeds averaged": "seeds",
                                                         "left out": "excluded"})}
    if losses:
        sections["Training loss over seeds (Fig. 9)"] = report.markdown_table(
            [dict(group=gname, final=lc["median"][-1], last=float(np.median(lc["median"][-20:])),
                  spikes=int(np.sum(lc["max"] > 10 * lc["median"])), logged=len(lc["step"]),
                  worst=float(lc["max"].max()))
             for gname, lc in losses.items()],
            {"group": "group", "median loss, last logged step": "final",
             "median of the median over the last 20 logged steps": "last",
             "logged steps where some seed is > 10x the median": lambda r:
                 f"{r['spikes']} of {r['logged']}",
             "largest logged batch loss": "worst"})
    table = report.markdown_table(checks, {
        "group": "group", "layer": "layer", "seeds": "seeds",
        "QK energy on EAGLE's pattern: average / seeds": lambda r:
            f"{r['qk_pattern_share_avg']:.3f} / {r['qk_pattern_share_seeds']:.3f}",
        "VP energy on EAGLE's pattern: average / seeds": lambda r:
            f"{r['vp_pattern_share_avg']:.3f} / {r['vp_pattern_share_seeds']:.3f}",
        "large VP entries negative": lambda r: f"{r['vp_large_negative_share']:.2f}",
        "α₁ mean (CV over seeds)": lambda r: f"{r['alpha1_mean']:.3g} ({r['alpha1_cv']:.2f})",
        "α₁α₂ mean (CV)": lambda r: f"{r['alpha12_mean']:.3g} ({r['alpha12_cv']:.2f})",
        "C-L: A-block diagonal share, average / seeds / Haar average": lambda r:
            (f"{r['qk_a_diag_share_avg']:.3f} / {r['qk_a_diag_share_seeds']:.3f} / "
             f"{r['haar_avg_diag_share']:.3f}") if "qk_a_diag_share_avg" in r else "—"})
    notes = [
        "Sign alignment per seed, layer and head: the large W_QK entries (|w| > 1.5·mean|w|) sum "
        "positive; W_VP takes the same sign (the pair's symmetry). 'large VP entries negative' "
        "is the share of W_VP's large entries below zero after that, averaged over seeds.",
        "EAGLE's pattern: W_QK on the A diagonal; W_VP on the A diagonal and the C/D channel "
        "(C column j to C column j, on every machine pair in the distributed regime). 'average' "
        "is the share of the seed-averaged matrix, 'seeds' the mean share of the seeds' own.",
        "α₁ = mean of W_QK's A diagonal, α₂ = mean of W_VP's A diagonal (aligned); the scale "
        "gauge (c·W_QK, W_VP/c) is not fixed by training, so α₁ may vary across seeds while "
        "the map's α₁α₂ does not; CV = std/|mean| over seeds. The last layer's α₂ is ≈ 0 "
        "(its A update is never read), so its α₁α₂ CV is not meaningful.",
        "Compute-limited: share of the A block's energy on its diagonal, for the seed average, "
        "for the seeds, and for the average of as many independent Haar S Sᵀ (200 draws; equal "
        "weights): the paper's C.3 says the averaged sketch is close to the identity.",
        "seedavg_loss.png (paper Fig. 9): each seed's `metrics.csv` loss (the batch loss at "
        "every 50th step) at the steps all seeds logged; median, min and max over seeds.",
        "Deterministic (no timing); distributed groups of untied heads (`distributed`) and "
        "shared heads (`distributed_shared`) are averaged separately.",
    ]
    md = report.write_markdown(os.path.join(out, "summary.md"),
                               "Seed-averaged, sign-aligned weights (paper Fig. 12)", command,
                               table, notes, machine=report.machine_description(),
                               sections=sections, files=[os.path.basename(f) for f in files])
    files.append(md)
    return SweepResult("seedavg", out, checks, listing, headline, files, command)


def _heatmap(out: str, group: str, g: Dict[str, Any]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    L = len(g["mean"])
    fig, axes = plt.subplots(L, 2, figsize=(8.4, 3.7 * L), squeeze=False)
    for l, (QK, VP) in enumerate(g["mean"]):
        for ax, W, name in ((axes[l, 0], QK, "W_QK"), (axes[l, 1], VP, "W_VP")):
            v = float(np.abs(W).max()) or 1.0
            im = ax.imshow(W, cmap="RdBu_r", vmin=-v, vmax=v)
            ax.set_title(f"layer {l + 1}: {name}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{group}: mean of {len(g['seeds'])} sign-aligned seeds "
                 f"({', '.join(str(s) for s in g['seeds'])})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = os.path.join(out, f"seedavg_{group}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _cmd(args) -> int:
    return print_headline(seedavg(args.root, args.out, args.groups))


def add_parser(bsub) -> None:
    """Register ``seedavg`` under ``eagle-dist bench``."""
    p = bsub.add_parser("seedavg", help="seed-averaged, sign-aligned weights (paper Fig. 12)",
                        description=seedavg.__doc__.split("\n")[0])
    p.add_argument("--root", default=DEFAULT_ROOT,
                   help="folder with <group>-seed<K>/final.pt (default benchmarks/results/train)")
    p.add_argument("--out", default=os.path.join("runs", "bench", "seedavg"))
    p.add_argument("--groups", type=strs, default=None,
                   help="default: those of " + ",".join(DEFAULT_GROUPS) + " that exist")
    p.set_defaults(fn=_cmd)
