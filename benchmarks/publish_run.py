"""Copy a finished training run (and its extraction) into benchmarks/results/train/<name>.

    python benchmarks/publish_run.py RUN_DIR NAME [--strip PREFIX]

Copies config.yaml, final.pt, loss.png, metrics.csv, summary.md, test.csv, extract.log and
extraction/ (when present). Machine-specific path prefixes (``--strip``, default the parent of
``runs/``) are removed from the text files, and from the config stored inside final.pt by loading
and re-saving it with torch — never by editing the binary (a byte-level replace corrupts the zip
archive; four committed checkpoints were broken that way and restored with this script). The
copied checkpoint is loaded back before the script reports success.
"""
from __future__ import annotations

import argparse
import os
import shutil
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("name", help="folder name under benchmarks/results/train")
    ap.add_argument("--strip", default=None,
                    help="path prefix to remove (default: everything before 'runs/')")
    a = ap.parse_args(argv)
    src = os.path.abspath(a.run_dir)
    prefix = a.strip
    if prefix is None:
        i = src.find(os.sep + "runs" + os.sep)
        prefix = src[:i + 1] if i >= 0 else ""
    here = os.path.dirname(os.path.abspath(__file__))
    publish(src, os.path.join(here, "results", "train", a.name), prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
