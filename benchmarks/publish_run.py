"""Copy a finished training run (and its extraction) into benchmarks/results/train/<name>.

    python benchmarks/publish_run.py RUN_DIR NAME [--strip PREFIX] [--extract]
    python benchmarks/publish_run.py --verdict-only NAME [NAME ...]

Copies config.yaml, final.pt, loss.png, metrics.csv, summary.md, test.csv, extract.log and
extraction/ (when present). Machine-specific path prefixes (``--strip``, default the parent of
``runs/``) are removed from the text files, and from the config stored inside final.pt by loading
and re-saving it with torch — never by editing the binary (a byte-level replace corrupts the zip
archive; four committed checkpoints were broken that way and restored with this script). The
copied checkpoint is loaded back before the script reports success.

The training summary's verdict line is recomputed with the current rule
(:func:`eagle_dist.model.train.verdict`: the one verdict, structure AND error level, that
``eagle-dist extract`` also gives) — ``--verdict-only`` does only that for runs already published.
``--extract`` then runs the extraction exactly as for every published run::

    eagle-dist extract --checkpoint benchmarks/results/train/NAME/final.pt \
        --out benchmarks/results/train/NAME/extraction > benchmarks/results/train/NAME/extract.log
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

TEXT = ("config.yaml", "metrics.csv", "summary.md", "test.csv", "extract.log")
BINARY = ("loss.png",)


def _strip(text: str, prefix: str) -> str:
    return text.replace(prefix, "") if prefix else text


def _strip_obj(obj, prefix: str):
    if isinstance(obj, str):
        return _strip(obj, prefix)
    if isinstance(obj, dict):
        return {k: _strip_obj(v, prefix) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_obj(v, prefix) for v in obj]
    return obj


def publish(src: str, dest: str, prefix: str) -> None:
    import torch
    from eagle_dist.model.train import load_checkpoint
    final = os.path.join(src, "final.pt")
    if not os.path.isfile(final):
        raise SystemExit(f"{src}: no final.pt (is the run finished?)")
    os.makedirs(dest, exist_ok=True)
    for name in TEXT:
        p = os.path.join(src, name)
        if os.path.isfile(p):
            with open(p, newline="") as f:          # keep the csv module's line ends
                text = f.read()
            with open(os.path.join(dest, name), "w", newline="") as f:
                f.write(_strip(text, prefix))
    for name in BINARY:
        p = os.path.join(src, name)
        if os.path.isfile(p):
            shutil.copyfile(p, os.path.join(dest, name))
    payload = torch.load(final, map_location="cpu", weights_only=True)
    payload["config"] = _strip_obj(payload["config"], prefix)
    torch.save(payload, os.path.join(dest, "final.pt"))
    load_checkpoint(os.path.join(dest, "final.pt"))          # it must load back
    ex = os.path.join(src, "extraction")
    if os.path.isdir(ex):
        out = os.path.join(dest, "extraction")
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(ex)):
            p = os.path.join(ex, name)
            if name.endswith((".md", ".csv", ".log")):
                with open(p, newline="") as f:
                    text = f.read()
                with open(os.path.join(out, name), "w", newline="") as f:
                    f.write(_strip(text, prefix))
            elif os.path.isfile(p):
                shutil.copyfile(p, os.path.join(out, name))
    print(f"published {src} -> {dest}")


def refresh_verdict(dest: str) -> str:
    """Rewrite the verdict paragraph of ``dest/summary.md`` with the current rule (the run's own
    test set and evaluation, as at the end of training); returns the new line."""
    import torch
    from eagle_dist.model.data import fixed_test_set, norm_guard
    from eagle_dist.model.train import evaluate, load_checkpoint, verdict
    torch.set_num_threads(1)
    model, cfg, _ = load_checkpoint(os.path.join(dest, "final.pt"))
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
    model = model.to(dtype)
    test = fixed_test_set(cfg.model, cfg.data, cfg.eval.test_size, cfg.eval.test_seed, dtype=dtype)
    t = evaluate(model, test, guard=norm_guard(cfg.model, cfg.data, cfg.optim.seed))
    line = verdict(model, cfg, t).text
    path = os.path.join(dest, "summary.md")
    lines = open(path).read().split("\n")
    idx = [i for i, x in enumerate(lines) if x.startswith(("Verdict:", "**Verdict"))]
    if len(idx) != 1:
        raise SystemExit(f"{path}: expected one verdict line, found {len(idx)}")
    lines[idx[0]] = line
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return line


def run_extraction(name: str) -> int:
    """The published extraction command, run from the repository root (relative paths in the
    log), stdout into NAME/extract.log."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.join("benchmarks", "results", "train", name)
    with open(os.path.join(root, rel, "extract.log"), "w") as log:
        return subprocess.call(["eagle-dist", "extract", "--checkpoint",
                                os.path.join(rel, "final.pt"), "--out",
                                os.path.join(rel, "extraction")], cwd=root, stdout=log)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("name", nargs="*", help="folder name under benchmarks/results/train")
    ap.add_argument("--strip", default=None,
                    help="path prefix to remove (default: everything before 'runs/')")
    ap.add_argument("--extract", action="store_true",
                    help="then run eagle-dist extract into NAME/extraction (log: NAME/extract.log)")
    ap.add_argument("--verdict-only", action="store_true",
                    help="only rewrite the summary verdict of the published runs NAME ...")
    a = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    if a.verdict_only:
        for name in ([a.run_dir] if a.run_dir else []) + a.name:
            print(f"{name}: {refresh_verdict(os.path.join(here, 'results', 'train', name))}")
        return 0
    if a.run_dir is None or len(a.name) != 1:
        ap.error("give RUN_DIR and one NAME (or --verdict-only NAME ...)")
    src = os.path.abspath(a.run_dir)
    prefix = a.strip
    if prefix is None:
        i = src.find(os.sep + "runs" + os.sep)
        prefix = src[:i + 1] if i >= 0 else ""
    dest = os.path.join(here, "results", "train", a.name[0])
    publish(src, dest, prefix)
    print(f"summary verdict: {refresh_verdict(dest)}")
    if a.extract:
        rc = run_extraction(a.name[0])
        print(f"extraction: rc {rc} (0: EAGLE, 4: not EAGLE), "
              f"{os.path.join(dest, 'extract.log')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
