"""The all-runs table of benchmarks/results/train/summary.md, recomputed from the published runs.

    python benchmarks/seeds_table.py > benchmarks/results/train/seeds.md

For every ``benchmarks/results/train/<run>/final.pt``: test MSE mean / median on the run's fixed
10,000-prompt test set (its own data config: noisy runs on noisy prompts), raw and norm-guarded
(prompts with ‖A‖₂ above the training distribution's 95 % quantile scaled into range, the
prediction scaled back), the reductions against the zero predictor, and the extraction's
verdict, η̂ (layer 1), median γ̂/η̂, exponent and Table 1 maximum read from
``<run>/extraction/report.md``. float32, as trained.
"""
from __future__ import annotations

import glob
import os
import re
import sys


def _extraction(run: str) -> dict:
    p = os.path.join(run, "extraction", "report.md")
    if not os.path.isfile(p):
        return {}
    t = open(p).read()
    out = {"verdict": "EAGLE structure" if "EAGLE structure found" in t else "no EAGLE structure"}
    m = re.search(r"over layers 1-\d+: \*\*([-0-9.e+na]+)\*\* \(EAGLE: 2\)", t)
    out["exponent"] = m.group(1) if m else "—"
    m = re.search(r"Median γ̂/η̂ over layers 1-\d+: \*\*([-0-9.e+na]+)\*\*", t)
    out["ratio"] = m.group(1) if m else "—"
    m = re.search(r"^\| 1 \|(?:[^|\n]*\|){6}\s*([-0-9.e+]+)\s*\|", t, re.M)
    out["eta1"] = m.group(1) if m else "—"
    m = re.search(r"^Maximum ([0-9.e+-]+) against", t, re.M)
    out["table1"] = f"{float(m.group(1)):.2g}" if m else "—"
    return out


def main() -> int:
    import torch
    from eagle_dist.model.data import fixed_test_set, norm_guard
    from eagle_dist.model.train import evaluate, load_checkpoint
    torch.set_num_threads(1)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train")
    rows = ["| run | test MSE mean / median | norm-guarded mean / median | reduction raw / guarded "
            "(mean) | extraction | η̂ layer 1 | γ̂/η̂ median | exponent | Table 1 max |",
            "|---|---|---|---|---|---|---|---|---|"]
    for ck in sorted(glob.glob(os.path.join(root, "*", "final.pt"))):
        run = os.path.dirname(ck)
        model, cfg, _ = load_checkpoint(ck)
        test = fixed_test_set(cfg.model, cfg.data, cfg.eval.test_size, cfg.eval.test_seed)
        t = evaluate(model, test, guard=norm_guard(cfg.model, cfg.data, cfg.optim.seed))
        ex = _extraction(run)
        red = t["zero"] / t["mse"]
        rows.append(
            f"| {os.path.basename(run)} | {t['mse']:.3g} / {t['median']:.3g} | "
            f"{t['guarded_mse']:.3g} / {t['guarded_median']:.3g} | "
            f"{red:.1f}x / {t['zero'] / t['guarded_mse']:.1f}x | {ex.get('verdict', '—')} | "
            f"{ex.get('eta1', '—')} | {ex.get('ratio', '—')} | {ex.get('exponent', '—')} | "
            f"{ex.get('table1', '—')} |")
        print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(["# All published runs", "",
                     "Command: `python benchmarks/seeds_table.py > benchmarks/results/train/seeds.md`"
                     " (float32, each run's own 10,000-prompt test set; norm guard = the training "
                     "distribution's 95 % quantile of ‖A‖₂).", ""] + rows + [""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
