"""``eagle-dist bench noise``: models trained on noiseless vs noisy prompts (paper Figs. 13-14).

For each pair of checkpoints (the same regime and recipe; one trained with ``data.noise_var = 0``,
one with a positive noise variance, the paper's 0.01):

* test MSE of both models on a noiseless and on a noisy test set (the same seeded prompts, the
  noisy one with the noisy model's variance added to all of X), mean and median, against the
  hidden block D and against the Nyström estimate D̂ = B A⁺ C of the (noisy) prompt (the paper's
  target under noise is ambiguous, so both are reported);
* the extraction of each model on its own training distribution (verdict, η̂, γ̂ per layer, the
  scaling exponent, Table 1 maximum) — Fig. 14's quantities under noise;
* how far the weights moved: per layer, ``‖W_noisy − W_clean‖_F / ‖W_clean‖_F`` of the products
  W_QK and W_VP (one kept head), and a plot of both models' η̂, γ̂ per layer (Fig. 13's question).

Writes ``noise.csv``, ``weights.csv``, ``noise_scalars.png`` and ``summary.md`` in ``--out``.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Sequence


from .report import machine_description, markdown_table


def add_parser(sub) -> None:
    p = sub.add_parser("noise", help="noiseless- vs noisy-trained models (paper Figs. 13-14)")
    p.add_argument("--pair", action="append", required=True, metavar="CLEAN.pt:NOISY.pt",
                   help="a noiseless and a noisy checkpoint of the same regime (repeatable)")
    p.add_argument("--prompts", type=int, default=2000, help="test prompts per test set")
    p.add_argument("--out", default="runs/bench/noise")
    p.set_defaults(fn=run)


def _mse_rows(model, X, targets: Dict[str, "object"]) -> Dict[str, float]:
    import torch
    with torch.no_grad():
        pred = model(X)
    out = {}
    for name, T in targets.items():
        e = (pred - T).pow(2).mean(dim=(1, 2))
        out[f"{name}_mean"] = float(e.mean())
        out[f"{name}_median"] = float(e.median())
    return out


def compare_pair(clean_ckpt: str, noisy_ckpt: str, prompts: int) -> Dict[str, object]:
    import dataclasses
    import torch
    from ..model.data import fixed_test_set, nystrom
    from ..model.extract import extract, model_products
    from ..model.train import load_checkpoint
    mc_, cc, _ = load_checkpoint(clean_ckpt)
    mn_, cn, _ = load_checkpoint(noisy_ckpt)
    if cc.model != cn.model:
        raise ValueError(f"--pair: {clean_ckpt} and {noisy_ckpt} are different models "
                         f"({cc.model} vs {cn.model}); pair checkpoints of the same regime")
    if cc.data.noise_var != 0 or cn.data.noise_var <= 0:
        raise ValueError(f"--pair CLEAN:NOISY: {clean_ckpt} must be trained with noise_var = 0 "
                         f"(has {cc.data.noise_var}) and {noisy_ckpt} with noise_var > 0 "
                         f"(has {cn.data.noise_var})")
    mc_, mn_ = mc_.double().eval(), mn_.double().eval()
    m = cc.model
    sets = {}
    for label, var in (("clean", 0.0), ("noisy", cn.data.noise_var)):
        dc = dataclasses.replace(cc.data, noise_var=var, target="D")
        X = fixed_test_set(m, dc, prompts, cc.eval.test_seed, dtype=torch.float64).X
        sets[label] = (X, {"D": X[:, m.n:, m.d:], "Dhat": nystrom(X, m.n, m.d)})
    rows = []
    for model_label, model in (("noiseless-trained", mc_), ("noisy-trained", mn_)):
        for set_label, (X, targets) in sets.items():
            zero = {f"zero_{k}": float(T.pow(2).mean()) for k, T in targets.items()}
            rows.append(dict(regime=m.regime, seed=cc.optim.seed, model=model_label,
                             test_set=set_label, **_mse_rows(model, X, targets), **zero))
    ex_c = extract(clean_ckpt, prompts=prompts)
    ex_n = extract(noisy_ckpt, prompts=prompts)
    weights = []
    pc, pn = model_products(mc_), model_products(mn_)
    for l, (rc, rn) in enumerate(zip(pc, pn)):
        for h, ((_, _, qc, vc), (_, _, qn, vn)) in enumerate(zip(rc, rn)):
            # the factorisation leaves a sign per head (W_QK -> -W_QK, W_VP -> -W_VP): align
            s = 1.0 if float((qc * qn).sum()) >= 0 else -1.0
            weights.append(dict(regime=m.regime, layer=l + 1, head=h,
                                qk_rel_diff=float((s * qn - qc).norm() / qc.norm()),
                                vp_rel_diff=float((s * vn - vc).norm() / vc.norm()),
                                eta_clean=ex_c.eta_hat[l], eta_noisy=ex_n.eta_hat[l],
                                gamma_clean=ex_c.gamma_hat[l], gamma_noisy=ex_n.gamma_hat[l]))
    extraction = []
    for label, ex in (("noiseless-trained", ex_c), ("noisy-trained", ex_n)):
        extraction.append(dict(regime=m.regime, model=label, verdict="EAGLE structure"
                               if ex.has_structure else "no EAGLE structure",
                               eta_hat=" / ".join(f"{x:.3g}" for x in ex.eta_hat[:-1]),
                               ratio=ex.ratio, exponent=ex.exponent, table1_max=max(ex.table1),
                               transformer=ex.mse["transformer"],
                               rule=ex.mse["extracted rule (replay)"]))
    return dict(rows=rows, weights=weights, extraction=extraction, noise_var=cn.data.noise_var,
                clean=clean_ckpt, noisy=noisy_ckpt)


def _plot(results: Sequence[dict], out: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        w = [r for r in res["weights"] if r["head"] == 0]
        layers = [r["layer"] for r in w]
        for key, mark in (("eta", "o"), ("gamma", "s")):
            ax.plot(layers, [r[f"{key}_clean"] for r in w], mark + "-", label=f"{key} (noiseless)")
            ax.plot(layers, [r[f"{key}_noisy"] for r in w], mark + "--", label=f"{key} (noisy)")
        ax.set(title=w[0]["regime"] if w else "", xlabel="layer", ylabel="fitted constant",
               yscale="symlog")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "noise_scalars.png"), dpi=90)
    plt.close(fig)


def _write_csv(path: str, rows: List[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def run(args) -> int:
    if args.prompts < 10:
        raise ValueError(f"--prompts={args.prompts} must be at least 10")
    pairs = []
    for p in args.pair:
        clean, sep, noisy = p.partition(":")
        if not sep or not clean or not noisy:
            raise ValueError(f"--pair {p!r} must look like CLEAN.pt:NOISY.pt")
        pairs.append((clean, noisy))
    os.makedirs(args.out, exist_ok=True)
    results = [compare_pair(c, n, args.prompts) for c, n in pairs]
    rows = [r for res in results for r in res["rows"]]
    weights = [r for res in results for r in res["weights"]]
    extraction = [r for res in results for r in res["extraction"]]
    _write_csv(os.path.join(args.out, "noise.csv"), rows)
    _write_csv(os.path.join(args.out, "weights.csv"), weights)
    _plot(results, args.out)

    def g(x):
        return f"{x:.3g}" if isinstance(x, float) and math.isfinite(x) else str(x)
    cmd = "eagle-dist bench noise " + " ".join(f"--pair {c}:{n}" for c, n in pairs) + \
        f" --prompts {args.prompts} --out {args.out}"
    L = ["# Noiseless- vs noisy-trained models", "", f"Command: `{cmd}`", "",
         f"Machine: {machine_description()}.", "",
         f"Test sets: {args.prompts} prompts each, the same seeded prompts with and without "
         f"noise (variance {results[0]['noise_var']:g} on all of X). D: the hidden block (noisy on "
         "the noisy set); D̂ = B A⁺ C of the prompt. On the noiseless set D = D̂.", "",
         "## Test MSE (mean / median per prompt)", "",
         markdown_table(rows, {
             "regime": "regime", "model": "model", "test set": "test_set",
             "vs D (mean / median)": lambda r: f"{g(r['D_mean'])} / {g(r['D_median'])}",
             "vs D̂ (mean / median)": lambda r: f"{g(r['Dhat_mean'])} / {g(r['Dhat_median'])}",
             "zero predictor vs D / D̂": lambda r: f"{g(r['zero_D'])} / {g(r['zero_Dhat'])}"}),
         "", "## Extraction of each model on its own training distribution", "",
         markdown_table(extraction, {
             "regime": "regime", "model": "model", "verdict": "verdict",
             "η̂ layers 1..L-1": "eta_hat", "median γ̂/η̂": lambda r: g(r["ratio"]),
             "exponent": lambda r: g(r["exponent"]), "Table 1 max": lambda r: g(r["table1_max"]),
             "transformer / rule MSE": lambda r: f"{g(r['transformer'])} / {g(r['rule'])}"}),
         "", "## How far the weights moved (noisy vs noiseless, sign-aligned)", "",
         markdown_table(weights, {
             "regime": "regime", "layer": "layer", "head": "head",
             "‖ΔW_QK‖/‖W_QK‖": lambda r: g(r["qk_rel_diff"]),
             "‖ΔW_VP‖/‖W_VP‖": lambda r: g(r["vp_rel_diff"]),
             "η̂ noiseless / noisy": lambda r: f"{g(r['eta_clean'])} / {g(r['eta_noisy'])}",
             "γ̂ noiseless / noisy": lambda r: f"{g(r['gamma_clean'])} / {g(r['gamma_noisy'])}"}),
         "", "Plot: `noise_scalars.png` (η̂, γ̂ per layer, both models).", ""]
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(L))
    print(f"wrote {args.out}/summary.md")
    return 0
