"""Training and checkpoint faults end in one clear error, never a crash, a lost run or a silent
success (issue 17: edited step counters, step_abc.pt, mismatched tensors, a full disk, a run
that ends far above the zero predictor)."""
from __future__ import annotations

import os

import pytest
import torch

from eagle_dist.model.config import load_train_config
from eagle_dist.model.train import (latest_checkpoint, load_checkpoint, save_checkpoint,
                                    train_loop)
from eagle_dist.model.transformer import LinearTransformer

OVER = ["optim.steps=4", "optim.batch=16", "eval.test_size=16", "eval.every=2",
        "run.checkpoint_every=2", "run.threads=1", "model.init_std=0.1"]


def _run(tmp_path, *extra):
    cfg = load_train_config(None, OVER + [f"run.dir={tmp_path / 'r'}", *extra])
    train_loop(cfg, stop_at=2)
    return cfg, tmp_path / "r" / "checkpoints" / "step_000002.pt"


def test_an_edited_step_counter_is_refused_on_resume(tmp_path):
    cfg, ck = _run(tmp_path)
    payload = torch.load(ck, weights_only=True)
    payload["step"] = 3                         # the name says 2, the losses say 2
    torch.save(payload, ck)
    with pytest.raises(ValueError, match="edited or damaged"):
        train_loop(cfg, resume=True)
    payload["step"] = 10 ** 6                   # beyond optim.steps
    torch.save(payload, ck)
    with pytest.raises(ValueError, match="step=1000000"):
        load_checkpoint(str(ck))


def test_odd_checkpoint_names_are_ignored_not_a_crash(tmp_path):
    cfg, ck = _run(tmp_path)
    (ck.parent / "step_abc.pt").write_bytes(b"x")
    assert latest_checkpoint(str(tmp_path / "r")) == str(ck)
    assert train_loop(cfg, resume=True).steps == 4


def test_weights_that_do_not_match_the_config_are_named(tmp_path):
    cfg = load_train_config(None, OVER)
    m = LinearTransformer(cfg.model)
    state = m.state_dict()
    key = next(iter(state))
    state[key] = torch.zeros(3, 3)
    torch.save(dict(model=state, optim=None, step=0, config=cfg.to_dict(), extra={}),
               tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match the model"):
        load_checkpoint(str(tmp_path / "bad.pt"))


def test_a_full_disk_leaves_no_tmp_and_says_so(tmp_path, monkeypatch):
    cfg = load_train_config(None, OVER)
    m = LinearTransformer(cfg.model)

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="free disk space"):
        save_checkpoint(str(tmp_path / "c.pt"), m, None, 0, cfg)
    assert os.listdir(tmp_path) == []


def test_a_run_that_ends_far_above_the_zero_predictor_fails(tmp_path):
    """optim.lr=10 used to end at a test MSE of 5.9e55 and exit 0."""
    from eagle_dist.cli import main
    rc = main(["train", "--out", str(tmp_path / "lr"), "optim.lr=10", "optim.steps=30",
               "optim.batch=32", "eval.test_size=64", "eval.every=30", "run.threads=1",
               "optim.clip=0"])
    assert rc == 3
