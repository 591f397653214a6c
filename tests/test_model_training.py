"""Training: short runs beat the zero predictor, resume and schedules are exact, compiled =
eager, parallel training = single process, blow-ups are counted (split from test_model.py so
that the two pytest-xdist processes share the model tests evenly)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eagle_dist.model.config import load_train_config
from eagle_dist.model.extract import planted_model
from eagle_dist.model.train import (load_checkpoint, save_checkpoint, train, train_loop,
                                    use_compile)


def cfg_of(*over):
    return load_train_config(None, list(over))


# ---------------------------------------------------------------------------------------------
# training


# the default suite trains two regimes here (distributed training runs in
# test_parallel_training_matches_single_process); the other two are `slow` (~10 s each)
@pytest.mark.parametrize("regime,factor,extra", [
    ("unconstrained", 5.0, ()),
    pytest.param("distributed", 5.0, (), marks=pytest.mark.slow),
    pytest.param("compute_limited", 5.0, ("model.r=9",), marks=pytest.mark.slow),
    ("compute_limited", 2.5, ())])
def test_short_training_beats_the_zero_predictor(regime, factor, extra):
    """300 steps of batch 256 (≈10 s on one core): 9.6x (unconstrained) and 5.7x (distributed)
    below the zero predictor, measured. The compute-limited regime with a sketch of width
    r = 9 = d/2 reaches 5.95x (measured). With the paper's r = 5 the model learns more slowly:
    3.0x here; 600 steps reach a median of 5.8x but the MEAN explodes on a few prompts (as in the
    full-recipe run, benchmarks/results/train), so its bar in a CI-sized run stays at 2.5x."""
    c = cfg_of(f"model.regime={regime}", "model.init_std=0.1", "eval.test_size=2000",
               "eval.every=100000", "run.threads=1", "optim.batch=256", "optim.lr=3e-3",
               "optim.steps=300", *extra)
    res = train_loop(c, write=False)
    assert res.test["finite"] and res.test["zero"] / res.test["mse"] >= factor, res.test


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    over = ["optim.batch=64", "optim.steps=12", "run.checkpoint_every=6", "eval.every=6",
            "eval.test_size=64", "model.init_std=0.1", "optim.lr=5e-3", "run.threads=1",
            "run.log_every=1"]
    full = cfg_of(*over, f"run.dir={tmp_path / 'full'}")
    r_full = train_loop(full)
    part = cfg_of(*over, f"run.dir={tmp_path / 'part'}")
    train_loop(part, stop_at=6)                          # interrupted after step 6
    r_res = train_loop(part, resume=True)
    assert r_res.losses == r_full.losses                 # bit for bit
    m1, _, _ = load_checkpoint(str(tmp_path / "full" / "final.pt"))
    m2, _, _ = load_checkpoint(str(tmp_path / "part" / "final.pt"))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    def rows(run):                                       # every column but the wall-clock
        return [r.rsplit(",", 1)[0] for r in (tmp_path / run / "metrics.csv").read_text().splitlines()]
    assert rows("part") == rows("full")
    for other in ("optim.seed=9", "optim.lr=1e-3", "optim.schedule=cosine"):
        with pytest.raises(ValueError, match="different model/data/seed/optim"):
            train_loop(cfg_of(*over, other, f"run.dir={tmp_path / 'part'}"), resume=True)


def test_cosine_schedule_resumes_exactly_and_init_from_starts_from_a_checkpoint(tmp_path):
    """optim.schedule=cosine: lr(t) = lr (1 + cos(π t / T)) / 2, a function of the step, so an
    interrupted run resumes bit for bit; run.init_from copies a checkpoint's weights (a planted
    model) and refuses one of another model."""
    from eagle_dist.model.train import lr_at
    over = ["optim.batch=32", "optim.steps=8", "run.checkpoint_every=4", "eval.every=4",
            "eval.test_size=32", "model.init_std=0.1", "optim.lr=5e-3", "run.threads=1",
            "optim.schedule=cosine"]
    c = cfg_of(*over)
    assert lr_at(c.optim, 0) == 5e-3 and abs(lr_at(c.optim, 4) - 2.5e-3) < 1e-15
    full = train_loop(cfg_of(*over, f"run.dir={tmp_path / 'f'}"))
    part = cfg_of(*over, f"run.dir={tmp_path / 'p'}")
    train_loop(part, stop_at=4)
    assert train_loop(part, resume=True).losses == full.losses
    planted = planted_model(c, [-0.02] * 4, [-0.04] * 4)
    save_checkpoint(str(tmp_path / "planted.pt"), planted, None, 0, c)
    init = cfg_of(*over, "optim.steps=1", "optim.lr=1e-12", f"run.init_from={tmp_path / 'planted.pt'}",
                  f"run.dir={tmp_path / 'i'}")
    train_loop(init)
    m, _, _ = load_checkpoint(str(tmp_path / "i" / "final.pt"))
    for a, b in zip(m.parameters(), planted.parameters()):
        assert torch.allclose(a.double(), b, atol=1e-6)
    with pytest.raises(ValueError, match="model config differs"):
        train_loop(cfg_of(*over, "model.layers=2", f"run.init_from={tmp_path / 'planted.pt'}",
                          f"run.dir={tmp_path / 'j'}"))


@pytest.mark.slow       # ~13 s (a torch.compile build); the eager path is tested by default
def test_compiled_training_matches_eager_and_resumes_bit_for_bit(tmp_path):
    """run.compile=true (torch.compile of the step) trains the same model as eager mode to
    rounding (float64), and a compiled run resumes bit for bit; auto compiles long runs only."""
    over = ["optim.batch=32", "optim.steps=6", "run.checkpoint_every=3", "eval.every=3",
            "eval.test_size=32", "model.init_std=0.2", "optim.lr=1e-2", "run.threads=1",
            "run.dtype=float64", "model.layers=2"]
    eager = train_loop(cfg_of(*over, "run.compile=false", f"run.dir={tmp_path / 'e'}"))
    comp = train_loop(cfg_of(*over, "run.compile=true", f"run.dir={tmp_path / 'c'}"))
    assert comp.compiled and not eager.compiled
    np.testing.assert_allclose(comp.losses, eager.losses, rtol=1e-10)
    assert comp.losses[0] != comp.losses[-1]
    part = cfg_of(*over, "run.compile=true", f"run.dir={tmp_path / 'p'}")
    train_loop(part, stop_at=3)
    assert train_loop(part, resume=True).losses == comp.losses
    assert use_compile(cfg_of("optim.steps=20000"), "none")
    assert not use_compile(cfg_of("optim.steps=1999"), "none")
    assert not use_compile(cfg_of("optim.steps=20000", "model.regime=distributed"), "machine")


@pytest.mark.parametrize("regime,mode", [
    ("unconstrained", "data"), ("distributed", "machine"),
    pytest.param("distributed_shared", "machine", marks=pytest.mark.slow)])   # ~17 s; same path
def test_parallel_training_matches_single_process(tmp_path, regime, mode):
    """2 gloo processes: DDP (batch slices) and machine-parallel (one process per machine
    block, differentiable all-reduce; with shared heads a replica of the shared weights per
    rank and their gradients summed) give the single-process losses and weights to rounding."""
    shared = regime == "distributed_shared"
    over = ["optim.steps=5", "optim.batch=32", "eval.test_size=32", "eval.every=5",
            "run.dtype=float64", "run.threads=1", "model.init_std=0.2", "optim.lr=1e-2",
            f"model.regime={regime.replace('_shared', '')}", "model.machines=2",
            f"model.shared_heads={str(shared).lower()}"]
    single = train(cfg_of(*over, f"run.dir={tmp_path / 's'}"))
    par = train(cfg_of(*over, f"run.dir={tmp_path / 'p'}", f"parallel.mode={mode}",
                       "parallel.workers=2"))
    assert par.world == 2 and par.mode == mode
    np.testing.assert_allclose(par.losses, single.losses, rtol=1e-10)
    assert single.losses[0] != single.losses[-1]          # it trained
    m1, _, _ = load_checkpoint(str(tmp_path / "s" / "final.pt"))
    m2, _, _ = load_checkpoint(str(tmp_path / "p" / "final.pt"))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_blow_ups_are_counted_not_hidden():
    c = cfg_of("optim.batch=64", "optim.steps=40", "optim.lr=0.5", "optim.clip=0",
               "model.init_std=0.3", "eval.test_size=64", "eval.every=100000", "run.threads=1")
    try:
        res = train_loop(c, write=False)
    except FloatingPointError as exc:                    # diverged for good: said so
        assert "non-finite" in str(exc)
        return
    assert res.spikes + res.skipped > 0 or not res.test["finite"]
