"""Files a user receives (checkpoints, column stores) must never run code or reach outside their
folder — regression tests for issue 17's security items."""
from __future__ import annotations

import os

import pytest
import torch


class _Payload:
    """Unpickling this object would run ``os.system`` (the classic pickle exploit)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    """A .pt whose pickle calls os.system: ``eagle-dist extract`` / ``load_checkpoint`` and
    ``train --resume`` refuse it with a clear error and the payload never runs."""
    from eagle_dist.model.config import load_train_config
    from eagle_dist.model.train import load_checkpoint, train_loop
    from eagle_dist.cli import main
    marker = tmp_path / "PWNED"
    cfg = load_train_config(None, ["optim.steps=2", "optim.batch=8", "eval.test_size=8",
                                   "eval.every=2", "run.threads=1", f"run.dir={tmp_path / 'run'}"])
    evil = dict(model={}, optim=None, step=1, config=cfg.to_dict(), extra=_Payload(str(marker)))
    bad = tmp_path / "evil.pt"
    torch.save(evil, bad)
    with pytest.raises(ValueError, match="not a readable eagle-dist checkpoint"):
        load_checkpoint(str(bad))
    with pytest.raises(SystemExit) as exit_:
        main(["extract", "--checkpoint", str(bad), "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    os.makedirs(tmp_path / "run" / "checkpoints")
    torch.save(evil, tmp_path / "run" / "checkpoints" / "step_000001.pt")
    with pytest.raises(ValueError, match="not a readable eagle-dist checkpoint"):
        train_loop(cfg, resume=True)
    assert not marker.exists()
