"""Training checkpoints: written atomically, loaded as tensors and plain data only (a crafted
pickle cannot run code), checked against their own config (step counter, weight shapes)."""
from __future__ import annotations

import glob
import os
import re
from typing import Optional

import torch

from .config import TrainConfig, train_config_from_dict
from .transformer import LinearTransformer



def save_checkpoint(path: str, model: LinearTransformer, opt_state, step: int, cfg: TrainConfig,
                    extra: Optional[dict] = None) -> None:
    """Write atomically (a ``.tmp`` renamed into place); a failed write (a full disk) leaves no
    ``.tmp`` behind and raises an ``OSError`` that says which file and why."""
    tmp = path + ".tmp"
    try:
        torch.save(dict(model=model.state_dict(), optim=opt_state, step=step,
                        config=cfg.to_dict(), extra=extra or {}), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:       # torch reports a full disk as RuntimeError
        try:
            os.remove(tmp)
        except OSError:
            pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"could not write checkpoint {path} ({first[:200]}); free disk space or "
                      "choose another run.dir, then resume with --resume") from None


def load_checkpoint(path: str, map_location="cpu"):
    """``(model, cfg, payload)`` from a checkpoint written by :func:`save_checkpoint`."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist; pass a .pt file written by "
                         "eagle-dist train (a run's final.pt or checkpoints/step_*.pt)")
    try:
        # weights_only: tensors and plain data only — a crafted pickle cannot run code here
        # (the config is stored as a plain dict, see save_checkpoint)
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything that is not our checkpoint
        import pickle
        if isinstance(exc, pickle.UnpicklingError):    # torch's text advises weights_only=False
            why = "it holds pickled objects other than tensors and plain data"
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            why = f"{type(exc).__name__}: {first[:200]}"
        raise ValueError(f"{path}: not a readable eagle-dist checkpoint ({why}); checkpoints "
                         "are loaded as tensors and plain data only, never as arbitrary pickled "
                         "objects — use a .pt written by eagle-dist train") from None
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise ValueError(f"{path}: not an eagle-dist training checkpoint (no config/model inside)")
    cfg = train_config_from_dict(payload["config"], path)
    step = payload.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not (0 <= step <= cfg.optim.steps):
        raise ValueError(f"{path}: step={step!r} must be an integer in 0..optim.steps = "
                         f"{cfg.optim.steps}; the checkpoint is damaged or was edited")
    model = LinearTransformer(cfg.model, seed=cfg.optim.seed)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(x.strip() for x in first[1:3]) if len(first) > 1 else str(exc)[:200]
        raise ValueError(f"{path}: the weights do not match the model its config describes "
                         f"({detail[:300]}); the checkpoint is damaged or was edited") from None
    return model, cfg, payload


def init_from(model: LinearTransformer, cfg: TrainConfig, path: str) -> None:
    """Copy a checkpoint's weights into ``model`` (``run.init_from``); its model config must
    be this run's."""
    src, src_cfg, _ = load_checkpoint(path)
    if src_cfg.model != cfg.model:
        diff = {k: (v, getattr(cfg.model, k)) for k, v in vars(src_cfg.model).items()
                if getattr(cfg.model, k) != v}
        raise ValueError(f"run.init_from={path!r}: the checkpoint's model config differs from "
                         f"this run's (checkpoint, run): {diff}; start from a checkpoint of the "
                         "same model")
    with torch.no_grad():
        for p, q in zip(model.parameters(), src.parameters()):
            p.copy_(q.to(p.dtype))


def latest_checkpoint(run_dir: str) -> Optional[str]:
    paths = [p for p in glob.glob(os.path.join(run_dir, "checkpoints", "step_*.pt"))
             if re.fullmatch(r"step_\d+\.pt", os.path.basename(p))]   # not step_abc.pt
    if not paths:
        return None
    return max(paths, key=lambda p: int(os.path.basename(p)[5:-3]))
