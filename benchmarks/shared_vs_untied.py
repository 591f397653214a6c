"""Distributed regime: shared heads (paper B.4) against untied heads, from the published extractions.

Reads ``benchmarks/results/train/<run>/extraction/extraction.json`` (written by ``eagle-dist
extract``) for every published ``distributed-seed*`` (untied) and ``distributed_shared-seed*``
run and prints a Markdown comparison: Table 1 per layer (median and range over seeds) against the
paper's distributed column, γ̂/η̂, the C-channel cross/self factor, the share of W_VP written into
other machines' A, the test MSE of the 2,000 extraction prompts and the verdict. Blow-ups on fresh
prompts come from ``evaluation.csv`` when it is there.

    python benchmarks/shared_vs_untied.py > benchmarks/results/train/shared_vs_untied.md
"""
import csv
import glob
import json
import os
import statistics as st
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train")
PAPER_T1 = [6.20e-5, 1.40e-4, 1.28e-4, 1.32e-4]      # paper Table 1, distributed, layers 1-4
PAPER_RATIO = 1.92


def load(group: str):
    out = {}
    for path in sorted(glob.glob(os.path.join(HERE, f"{group}-seed*", "extraction", "extraction.json"))):
        run = path.split(os.sep)[-3]
        with open(path) as f:
            out[run] = json.load(f)
    return out


def spread(xs, fmt="{:.2e}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(st.median(xs))} [{fmt.format(min(xs))}, {fmt.format(max(xs))}]"


def evaluation():
    path = os.path.join(HERE, "evaluation.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def main() -> int:
    groups = {"untied (ablation)": load("distributed"), "shared (paper B.4)": load("distributed_shared")}
    ev = evaluation()
    L = ["# Distributed regime: shared heads against untied heads", "",
         "Command: `python benchmarks/shared_vs_untied.py > benchmarks/results/train/shared_vs_untied.md` "
         "(from each published run's `extraction/extraction.json`, 2,000 extraction prompts, float64; "
         "blow-ups from `evaluation.csv`). Cells: median [min, max] over seeds.", "",
         "| | " + " | ".join(f"{g}, seeds {', '.join(r.rsplit('seed', 1)[1] for r in runs)}"
                             for g, runs in groups.items()) + " | paper |",
         "|---|" + "---|" * len(groups) + "---|"]

    def row(label, fn, fmt="{:.2e}", paper="—"):
        cells = [spread([fn(d) for d in runs.values()], fmt) for runs in groups.values()]
        L.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")

    for layer in range(1, 5):
        row(f"Table 1, layer {layer}", lambda d, l=layer: d["table1"][l], paper=f"{PAPER_T1[layer - 1]:.2e}")
    row("Table 1, max over layers", lambda d: d["table1_max"], paper=f"{max(PAPER_T1):.2e}")
    row("γ̂/η̂, median of layers 1-3", lambda d: d["ratio"], "{:.2f}", paper=f"≈ {PAPER_RATIO}")
    row("η̂ mean, layers 1-3", lambda d: d["mean_eta_hat"], "{:.2f}", paper="≈ 1")
    row("γ̂ mean, layers 1-3", lambda d: d["mean_gamma_hat"], "{:.2f}", paper="≈ 1.9")
    row("exponent p (EAGLE 2)", lambda d: d["exponent"], "{:.2f}", paper="2")
    for layer in range(4):
        row(f"C-channel cross/self, layer {layer + 1} (EAGLE 1)", lambda d, l=layer: d["cross_c_share"][l],
            "{:.3f}")
    row("W_VP energy into other machines' A, max over layers (EAGLE 0)",
        lambda d: max(d["cross_a_share"]), "{:.4f}")
    row("test MSE, transformer (2,000 prompts)", lambda d: d["mse"]["transformer"], "{:.3e}")
    row("median MSE, transformer", lambda d: d["median"]["transformer"] if isinstance(d["median"], dict)
        else d["median"], "{:.3e}")
    def verdicts(runs):
        labels = [d["verdict"]["label"] if isinstance(d["verdict"], dict) else str(d["verdict"])
                  for d in runs.values()]
        return ", ".join(f"{lab} {labels.count(lab)}/{len(labels)}" for lab in sorted(set(labels)))
    L.append("| extraction verdict | " + " | ".join(verdicts(r) for r in groups.values()) + " | EAGLE |")
    for label, key in (("raw blow-ups per 100,000 fresh prompts", "raw_per_100k"),
                       ("norm-guarded blow-ups per 100,000", "guarded_per_100k"),
                       ("safeguarded blow-ups (count)", "safe_blowups")):
        cells = []
        for g, runs in groups.items():
            xs = [float(ev[r][key]) for r in runs if r in ev and ev[r].get(key) not in (None, "")]
            cells.append(spread(xs, "{:.3g}") + (f" ({len(xs)} models)" if xs else ""))
        L.append(f"| {label} | " + " | ".join(cells) + " | — |")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
