"""YAML configs (validation, inheritance) and the torchrun / `eagle-dist run` entry points."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from eagle_dist.config import load_config, save_config


def _write(path, body):
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_shipped_configs_load():
    for name in ("distributed", "distributed_gd", "suitesparse_sharded"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.solve.method in ("eagle", "gd")
    gd = load_config("configs/distributed_gd.yaml")
    assert gd.solve.method == "gd" and gd.problem.source == "alpha"     # inherited problem


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*wrokers"):
        load_config(_write(tmp_path / "a.yaml", {"solve": {"wrokers": 4}}))
    with pytest.raises(ValueError, match="unknown section"):
        load_config(_write(tmp_path / "b.yaml", {"sovle": {}}))
    with pytest.raises(ValueError, match="solve.max_iter"):
        load_config(_write(tmp_path / "c.yaml", {"solve": {"max_iter": "many"}}))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("configs/distributed_gd.yaml", {"solve": {"workers": 2}})
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(str(tmp_path / "c.yaml"))
    assert again == cfg


def _small_config(tmp_path, backend="inprocess"):
    return _write(tmp_path / "run.yaml", {
        "problem": {"source": "alpha", "n": 30, "d": 30, "kappa": 100.0, "d_query": 1},
        "solve": {"method": "eagle", "workers": 2, "backend": backend, "target_error": 1e-8,
                  "max_iter": 300, "timeout": 30, "mode": "paper"},
        "output": {"dir": str(tmp_path / "out")}})


def test_eagle_dist_run_writes_results(tmp_path):
    cfg = _small_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "eagle_dist.cli", "run", "--config", cfg],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["summary"]["status"] == "converged" and res["summary"]["error"] <= 1e-8
    # the paper's message (n + n')·d' plus the verification probe's column
    assert res["summary"]["bytes_per_worker_per_round"] == (30 + 2) * (1 + 1) * 8
    assert res["summary"]["mode"] == "paper" and res["summary"]["probe_gap"] < 1e-8
    assert (tmp_path / "out" / "config.yaml").exists()


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_entry_two_ranks(tmp_path):
    cfg = _small_config(tmp_path)
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node=2", "-m",
                           "eagle_dist.distributed.torchrun", "--config", cfg],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["summary"]["backend"] == "torchrun/gloo"
    assert res["summary"]["workers"] == 2
    assert res["summary"]["error"] <= 1e-8


def test_torchrun_entry_without_env_explains(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eagle_dist.distributed.torchrun", "--config",
                           _small_config(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torchrun" in proc.stderr


def test_problem_sources_name_every_generator():
    """config (floor 1) lists the sources itself; they must match the data package's."""
    from eagle_dist.config import PROBLEM_SOURCES
    from eagle_dist.data.generators import DISTRIBUTIONS
    assert set(PROBLEM_SOURCES) == {"controlled", "alpha", "mtx", "store", "paper_training",
                                    *DISTRIBUTIONS}
