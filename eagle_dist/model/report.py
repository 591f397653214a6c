"""The extraction report: ``report.md``, ``table1.csv``, ``scalars.csv``, ``sparsity_sweep.csv``
and the figures (weight heatmaps, the compute-limited sketch spectrum, the Fig. 10 sparsity sweep)
of an :class:`eagle_dist.model.extract.Extraction`."""
from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING, List

import numpy as np
import torch

from .compress import QK_LEVELS, TAU_FACTOR, VP_LEVELS
from .structure import haar_projection_entries
from .transformer import LinearTransformer

if TYPE_CHECKING:                                   # extract imports this module
    from .extract import Extraction

#: paper Table 1 maxima (per-entry mean squared difference), by regime
PAPER_TABLE1 = {"unconstrained": 5.27e-4, "distributed": 1.40e-4, "compute_limited": 1.4e-5}
PAPER_TABLE1_ROWS = {"unconstrained": [0, 2.36e-4, 5.27e-4, 3.70e-4, 2.16e-4],
                     "distributed": [0, 0.62e-4, 1.40e-4, 1.28e-4, 1.32e-4],
                     "compute_limited": [0, 0.01e-4, 0.02e-4, 0.13e-4, 0.14e-4]}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def write_report(ex: Extraction, model: LinearTransformer, out: str) -> str:
    """report.md, extraction.json, table1.csv, scalars.csv, sparsity_sweep.csv/png (Fig. 10) and
    per-layer heatmaps (PNG) in ``out``."""
    os.makedirs(out, exist_ok=True)
    c = model.cfg
    L = []
    L += [f"# Algorithm extraction: {ex.regime}", "",
          f"Checkpoint `{ex.checkpoint}`; {ex.prompts} test prompts (float64).", ""]
    L += [ex.verdict.text, ""]
    if ex.has_structure and not ex.verdict.eagle:
        L += ["The structure tests pass (pattern, replay, signs); the verdict also weighs the "
              "error level — see `eagle_dist.model.verdict`.", ""]
    elif not ex.has_structure:
        L += ["The scalars below are what the fit returns; they do not describe an algorithm "
              "this model implements.", ""]
    L += ["## Test MSE (4 layers)", "", "Per-prompt MSE over the hidden block's entries; mean and "
          "median over the prompts (the verdict compares medians).", "",
          "| predictor | mean | vs zero | median |", "|---|---|---|---|"]
    zero = ex.mse["zero predictor"]
    for k, v in ex.mse.items():
        med = ex.medians.get(k)
        L.append(f"| {k} | {v:.4g} | {zero / v if v > 0 else float('inf'):.1f}x | "
                 f"{'—' if med is None else f'{med:.4g}'} |")
    if ex.noise_var > 0:
        L += ["", f"Noisy prompts (variance {ex.noise_var:g} on all of X, D included): the "
              f"noiseless calibration does not apply and no predictor gets below ≈ "
              f"{ex.noise_var:g}; the reference rules above ran on the same noisy prompts.", ""]
    else:
        L += ["", "Calibration (4-layer reference iterations on 1,024 noiseless prompts of this "
              "distribution, numpy): EAGLE-like ≈ 6.4e-3 (14.5x), best constants ≈ 1.8e-3, "
              "GD-like 0.017-0.026.", ""]
    L += ["## Fidelity (paper Table 1): mean (Z_ℓ^TF − Z_ℓ^alg)² per entry", "",
          "| layer | this model | least-squares scalars | paper |", "|---|---|---|---|"]
    paper = PAPER_TABLE1_ROWS.get(ex.regime, [])
    for l, v in enumerate(ex.table1):
        p = f"{paper[l]:.2e}" if l < len(paper) else ""
        q = f"{ex.table1_lsq[l]:.3e}" if l < len(ex.table1_lsq) else "—"
        L.append(f"| {l} | {v:.3e} | {q} | {p} |")
    mx = max(ex.table1)
    L += ["", f"Maximum {mx:.3e} against the paper's {PAPER_TABLE1[ex.regime]:.2e} "
          f"({'within' if mx <= PAPER_TABLE1[ex.regime] else 'ABOVE'} the paper's bound). "
          "'this model': the scalars read off the products' diagonals (the paper's method); "
          "'least-squares scalars': the one-scalar-per-block EAGLE rule fitted to the "
          "transformer's own layer updates (teacher-forced least squares) — if it is no closer, "
          "the gap lies in the model's off-pattern weights, not in how the scalars are read.", ""]
    L += ["## Per-layer scalars and the scaling law", "",
          "α₁ from W_QK's A block, α₂ from W_VP's A block, α₃ from W_VP's C block (sign-aligned: "
          "α₁ > 0); max‖A_ℓ‖₂ over the test batch from the transformer's own activations; "
          "η̂ = −α₁α₂·max‖A_ℓ‖², γ̂ = −α₁α₃·max‖A_ℓ‖²" +
          (" · M (the heads' sum absorbs the mean's 1/M)" if ex.regime == "distributed" else "") +
          ".", "",
          "| layer | α₁ | α₂ | α₃ | α₁α₂ | α₁α₃ | max‖A_ℓ‖₂ | η̂ | γ̂ | γ̂/η̂ |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for s, m, e, g in zip(ex.structures, ex.batch_max_norm, ex.eta_hat, ex.gamma_hat):
        a1, a2, a3 = np.mean(s.alpha1), np.mean(s.alpha2), np.mean(s.alpha3)
        L.append(f"| {s.layer + 1} | {a1:.4g} | {a2:.4g} | {a3:.4g} | "
                 f"{np.mean([x * y for x, y in zip(s.alpha1, s.alpha2)]):.4g} | "
                 f"{np.mean([x * y for x, y in zip(s.alpha1, s.alpha3)]):.4g} | {m:.3g} | {e:.3g} | "
                 f"{g:.3g} | {g / e if e else float('nan'):.3g} |")
    k = max(1, len(ex.eta_hat) - 1)
    L += ["", f"Fitted exponent p in |α₁α₂| ∝ max‖A_ℓ‖^(−p) over layers 1-{k}: **{ex.exponent:.2f}** "
          f"(EAGLE: 2). Median γ̂/η̂ over layers 1-{k}: **{ex.ratio:.2f}** (paper ≈ 1.92). Mean η̂ "
          f"{np.mean(ex.eta_hat[:k]):.3g}, mean γ̂ {np.mean(ex.gamma_hat[:k]):.3g} over layers 1-{k} "
          "(paper ≈ 1 and ≈ 1.9). The last layer is left out: its A update never reaches the "
          "readout (D_L depends on A_{L-1}), so training does not determine its α₁α₂.", ""]
    L += ["## Structure", "", "| layer | W_QK on pattern | W_VP on pattern | W_QK on C/D features |"
          + (" rank QK / VP (A block) | sketch gap QK vs VP | VP asymmetry | QK-VP subspace cos |"
             if ex.regime == "compute_limited" else "")
          + (" VP to other machines' A | C-channel cross/self |" if ex.regime == "distributed" else ""),
          "|---|---|---|---|" + {"compute_limited": "---|---|---|---|",
                                  "distributed": "---|---|"}.get(ex.regime, "")]
    for s in ex.structures:
        row = f"| {s.layer + 1} | {s.qk_pattern:.3f} | {s.vp_pattern:.3f} | {s.qk_query_share:.3f} |"
        if ex.regime == "compute_limited":
            row += (f" {s.rank_qk} / {s.rank_vp} | {s.sketch_gap:.2f} | {s.vp_asymmetry:.2f} |"
                    f" {s.subspace_cos:.2f} |")
        if ex.regime == "distributed":
            row += f" {s.cross_a_share:.3f} | {s.cross_c_share:.3f} |"
        L.append(row)
    if ex.regime == "compute_limited":
        L += ["", f"Sketch test: numerical rank of the A blocks (singular values > 0.1·max) against "
              f"r = {c.r}; the paper reports rank r and a QK-vs-VP gap of 0.28. Sketched EAGLE "
              "needs W_VP's A block to be the same projection as W_QK's: symmetric (VP asymmetry "
              "‖VA − VAᵀ‖/‖VA‖ = 0) on the same subspace (smallest principal cosine between W_QK's "
              f"sketch and W_VP's top-{c.r} column space = 1). S Sᵀ of a Haar "
              f"S ({c.d}x{c.r}), spectral norm 1: diagonal mean {ex.haar['diag_mean']:.3f} ± "
              f"{ex.haar['diag_std']:.3f}, off-diagonal std {ex.haar['off_std']:.3f}; the learned "
              "blocks' normalised spectra are in scalars.csv.", ""]
        L += _cl_entry_stats(ex, model)
        L += _cl_spectrum_table(ex, model)
    if ex.regime == "distributed":
        L += ["", "Communication pattern: 'VP to other machines' A' is the share of head μ's "
              "W_VP energy written into other machines' A columns (EAGLE: 0); 'C-channel "
              "cross/self' compares the C/D block a head writes to another machine with the one "
              "it writes to itself (EAGLE: 1, the same c everywhere).", ""]
    L += _compression_section(ex)
    L += ["Heatmaps: `weights_layer<ℓ>.png` (W_QK and W_VP of the kept head / every machine)" +
          ("; the sketch-spectrum plot: `sketch_spectrum.png`." if ex.regime == "compute_limited"
           else "."), ""]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(out, "table1.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "mean_sq_diff", "mean_sq_diff_lsq", "paper"])
        for l, v in enumerate(ex.table1):
            w.writerow([l, v, ex.table1_lsq[l] if l < len(ex.table1_lsq) else "",
                        paper[l] if l < len(paper) else ""])
    with open(os.path.join(out, "scalars.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "head", "alpha1", "alpha2", "alpha3", "batch_max_normA", "eta_hat",
                    "gamma_hat", "qk_pattern", "vp_pattern", "spectrum_qk"])
        for s, m, e, g in zip(ex.structures, ex.batch_max_norm, ex.eta_hat, ex.gamma_hat):
            for h in range(len(s.alpha1)):
                w.writerow([s.layer + 1, h, s.alpha1[h], s.alpha2[h], s.alpha3[h], m, e, g,
                            s.qk_pattern, s.vp_pattern, " ".join(f"{x:.4f}" for x in s.spectrum_qk)])
    _write_sweep(ex, out)
    _write_json(ex, out)
    _heatmaps(model, out)
    if ex.regime == "compute_limited":
        _sketch_spectrum_plot(model, out)
    return path


def _a_blocks_normalised(model: LinearTransformer, l: int):
    """Layer l's W_QK and W_VP A blocks, each scaled to spectral norm 1 and sign-aligned."""
    d = model.cfg.d
    QK, VP = model.layers[l].heads[0].products()
    out = []
    for W in (QK[:d, :d].double(), VP[:d, :d].double()):
        W = W / torch.linalg.matrix_norm(W, 2)
        out.append(W if float(W.diagonal().mean()) >= 0 else -W)
    return out


def _cl_spectrum_table(ex: Extraction, model: LinearTransformer) -> List[str]:
    """The sketch-spectrum test in numbers: a Haar sketch's S Sᵀ is a rank-r projection, so its
    normalised spectrum is r ones then zeros."""
    r = model.cfg.r
    rows = ["| layer | QK: σ_r/σ₁ | QK: energy beyond r | VP: σ_r/σ₁ | VP: energy beyond r |",
            "|---|---|---|---|---|"]
    for l in range(len(model.layers)):
        cells = []
        for W in _a_blocks_normalised(model, l):
            sv = torch.linalg.svdvals(W)
            cells += [f"{float(sv[r - 1] / sv[0]):.3f}",
                      f"{float(sv[r:].pow(2).sum() / sv.pow(2).sum()):.3f}"]
        rows.append(f"| {l + 1} | " + " | ".join(cells) + " |")
    rows.append("| Haar S Sᵀ | 1.000 | 0.000 | 1.000 | 0.000 |")
    return ["", "Sketch spectrum (plot: `sketch_spectrum.png`): singular values of the A blocks "
            f"normalised by the largest; S Sᵀ of a Haar S is a rank-{r} projection (σ₁ = … = σ_r "
            "= 1, nothing beyond r).", ""] + rows + [""]


def _sketch_spectrum_plot(model: LinearTransformer, out: str, draws: int = 200) -> None:
    """sketch_spectrum.png: the A blocks' normalised spectra per layer against a Haar sketch's
    projection, and their entry distributions against S Sᵀ's (diagonal / off-diagonal)."""
    plt = _pyplot()
    if plt is None:
        return
    c = model.cfg
    hd, ho = haar_projection_entries(c.d, c.r, draws)
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    idx = np.arange(1, c.d + 1)
    ax[0].step(idx, [1.0] * c.r + [0.0] * (c.d - c.r), "k--", where="mid", label="Haar S Sᵀ")
    ld, lo = [], []
    for l in range(len(model.layers)):
        QA, VA = _a_blocks_normalised(model, l)
        ax[0].plot(idx, torch.linalg.svdvals(QA).numpy(), "o-", ms=3, label=f"W_QK layer {l + 1}")
        ax[0].plot(idx, torch.linalg.svdvals(VA).numpy(), "x:", ms=3, label=f"W_VP layer {l + 1}")
        ld += QA.diagonal().tolist()
        lo += QA[~torch.eye(c.d, dtype=torch.bool)].tolist()
    ax[0].set(xlabel="index", ylabel="σ_i / σ_1", title=f"A-block spectra (r = {c.r})")
    ax[0].legend(fontsize=6, ncol=2)
    for a, learned, haar, name in ((ax[1], ld, hd, "diagonal"), (ax[2], lo, ho, "off-diagonal")):
        bins = np.linspace(min(min(learned), min(haar)), max(max(learned), max(haar)), 40)
        a.hist(haar, bins=bins, density=True, alpha=0.5, label="Haar S Sᵀ")
        a.hist(learned, bins=bins, density=True, alpha=0.5, label="W_QK A blocks (all layers)")
        a.set(title=f"{name} entries (spectral norm 1)", xlabel="value")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sketch_spectrum.png"), dpi=90)
    plt.close(fig)


def _cl_entry_stats(ex: Extraction, model: LinearTransformer) -> List[str]:
    rows = ["| layer | diag mean (normalised) | diag std | off-diag std |", "|---|---|---|---|"]
    for l in range(len(model.layers)):
        QA, _ = _a_blocks_normalised(model, l)
        off = QA[~torch.eye(QA.shape[0], dtype=torch.bool)]
        rows.append(f"| {l + 1} | {float(QA.diagonal().mean()):.3f} | {float(QA.diagonal().std()):.3f}"
                    f" | {float(off.std()):.3f} |")
    rows.append(f"| Haar S Sᵀ | {ex.haar['diag_mean']:.3f} | {ex.haar['diag_std']:.3f} | "
                f"{ex.haar['off_std']:.3f} |")
    return ["", "Entry statistics of the W_QK A block (normalised to spectral norm 1, sign-aligned) "
            "against S Sᵀ of a Haar S (Fig. 4):", ""] + rows + [""]


def _heatmaps(model: LinearTransformer, out: str) -> None:
    plt = _pyplot()
    if plt is None:
        return
    for l, layer in enumerate(model.layers):
        H = len(layer.heads)
        fig, axes = plt.subplots(H, 2, figsize=(8, 3.6 * H), squeeze=False)
        for h, head in enumerate(layer.heads):
            QK, VP = head.products()
            for ax, W, name in ((axes[h, 0], QK, "W_QK"), (axes[h, 1], VP, "W_VP")):
                v = float(W.abs().max()) or 1.0
                im = ax.imshow(W.numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
                ax.set_title(f"layer {l + 1} head {h}: {name}", fontsize=9)
                fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"weights_layer{l + 1}.png"), dpi=90)
        plt.close(fig)


def _compression_section(ex: "Extraction") -> List[str]:
    """Pruning, sparsification, quantisation and the Fig. 10 sweep."""
    which = "all heads" if ex.merged_heads else "1 head"
    L = ["", "## Pruning, sparsification, quantisation", "", "| model | test MSE |", "|---|---|"]
    for size, v in ex.pruning:
        L.append(f"| {size} head(s) per layer | {v:.4g} |")
    if ex.merged_heads:
        L.append(f"| merged: one EAGLE head with the heads' summed scalars (replay) | "
                 f"{ex.replay_mse:.4g} |")
    names = {"trained": "trained (all heads)", "pruned": "pruned (1 head)",
             "sparsified": f"sparsified ({which})", "quantised": f"quantised ({which})"}
    for k, v in ex.sparsify_mse.items():
        L.append(f"| {names.get(k, k)} | {v:.4g} |")
    if ex.merged_heads:
        L += ["", f"Pruning to the single most important head per layer (by ΔMSE) loses the model "
              f"(test MSE {ex.sparsify_mse['pruned']:.3g} vs {ex.mse['transformer']:.3g} with all "
              f"{ex.pruning[0][0]} heads): the heads share the update. Every head reads the same "
              "features, so heads with EAGLE's pattern add up to one EAGLE layer whose scalars are "
              "the sums of the heads' α₁α₂ and α₁α₃; the scalars, the scaling law, Table 1 and the "
              "replay above use that merged head (α₁ := 1, α₂ = Σ α₁α₂, α₃ = Σ α₁α₃), and the "
              "pattern shares are the heads' weighted means. The sparsified and quantised rows "
              "sparsify and quantise every head."]
    L += ["", f"Sparsified: every entry with |w| ≤ τ = {TAU_FACTOR} × mean |w| (per matrix) set to "
          f"0. Quantised: then 1-D k-means (exact) over all entries of each sparsified matrix, "
          f"zeros included, with one level pinned at 0 — {QK_LEVELS} free level for W_QK (α₁), "
          f"{VP_LEVELS} for W_VP (α₂, α₃) — every entry replaced by its nearest level "
          "(`eagle_dist.model.compress`). Levels besides 0, per layer: " +
          "; ".join(f"L{l + 1} QK {np.round(lv['qk'], 4).tolist()} VP {np.round(lv['vp'], 4).tolist()}"
                    for l, lv in enumerate(ex.levels)), ""]
    if ex.sweep:
        L += ["### Sparsity sweep (paper Fig. 10): `sparsity_sweep.png`, `sparsity_sweep.csv`", "",
              f"Test MSE ({ex.prompts} prompts) of the sparsified and of the sparsified + quantised "
              f"model ({which}) against the threshold factor f (τ = f × mean |w| per matrix); the "
              f"transformer's test MSE is {ex.mse['transformer']:.4g}.", "",
              "| f | entries kept | sparsified | quantised |", "|---|---|---|---|"]
        for r in ex.sweep:
            L.append(f"| {r['factor']:g} | {100 * r['kept']:.1f} % | {r['sparsified']:.4g} | "
                     f"{r['quantised']:.4g} |")
        L.append("")
    return L


def _write_json(ex: "Extraction", out: str) -> None:
    """extraction.json: the report's headline numbers, for tables across runs
    (benchmarks/seeds_table.py)."""
    import json

    def num(x):
        x = float(x)
        return x if np.isfinite(x) else None
    k = max(1, len(ex.eta_hat) - 1)
    data = dict(
        regime=ex.regime, checkpoint=ex.checkpoint, prompts=ex.prompts,
        verdict=dict(label=ex.verdict.label, eagle=ex.verdict.eagle, level=ex.verdict.level,
                     unstable=ex.verdict.unstable, structure=ex.has_structure,
                     reasons=list(ex.reasons)),
        mse={k2: num(v) for k2, v in ex.mse.items()},
        median={k2: num(v) for k2, v in ex.medians.items()},
        compressed={k2: num(v) for k2, v in ex.sparsify_mse.items()},
        levels=ex.levels, eta_hat=[num(x) for x in ex.eta_hat],
        gamma_hat=[num(x) for x in ex.gamma_hat], exponent=num(ex.exponent),
        ratio=num(ex.ratio), mean_eta_hat=num(np.mean(ex.eta_hat[:k])),
        mean_gamma_hat=num(np.mean(ex.gamma_hat[:k])),
        table1=[num(x) for x in ex.table1], table1_max=num(max(ex.table1)),
        table1_lsq=[num(x) for x in ex.table1_lsq],
        qk_pattern=[num(s.qk_pattern) for s in ex.structures],
        vp_pattern=[num(s.vp_pattern) for s in ex.structures],
        cross_a_share=[num(s.cross_a_share) for s in ex.structures],
        cross_c_share=[num(s.cross_c_share) for s in ex.structures],
        sweep=ex.sweep)
    with open(os.path.join(out, "extraction.json"), "w") as f:
        json.dump(data, f, indent=1)


def _write_sweep(ex: "Extraction", out: str) -> None:
    if not ex.sweep:
        return
    with open(os.path.join(out, "sparsity_sweep.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["factor", "kept_fraction", "mse_sparsified", "mse_quantised", "mse_transformer"])
        for r in ex.sweep:
            w.writerow([r["factor"], r["kept"], r["sparsified"], r["quantised"],
                        ex.mse["transformer"]])
    plot_sweep(ex.sweep, ex.mse["transformer"], f"{ex.regime}, {ex.prompts} prompts",
               os.path.join(out, "sparsity_sweep.png"))


def plot_sweep(rows, transformer_mse: float, title: str, path: str) -> None:
    """The Fig. 10 plot: test MSE of the sparsified and sparsified + quantised model against the
    threshold factor, the transformer's as a dotted line."""
    plt = _pyplot()
    if plt is None:
        return
    f = [r["factor"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.semilogy(f, [r["sparsified"] for r in rows], "o-", ms=3, label="sparsified")
    ax.semilogy(f, [r["quantised"] for r in rows], "s-", ms=3, label="sparsified + quantised")
    ax.axhline(transformer_mse, color="k", ls=":", label="transformer")
    ax.axvline(TAU_FACTOR, color="grey", lw=0.6)
    ax.set_xlabel("threshold factor f (τ = f · mean|w|)")
    ax.set_ylabel("test MSE")
    ax.set_title(f"Fig. 10 sweep: {title}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["write_report", "plot_sweep", "PAPER_TABLE1", "PAPER_TABLE1_ROWS"]
