"""``eagle-dist`` end to end: subprocesses for the real entry point, ``main([...])`` in-process for
the cheap argument checks."""
import csv
import json
import re
import subprocess
import sys

import pytest

from eagle_dist import solve
from eagle_dist.cli import main
from eagle_dist.data import controlled


def run_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "eagle_dist.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def check_run_files(out, method, *, converged=True):
    """The JSON and CSV a method writes agree with each other and with themselves."""
    js = _load_json(out / f"{method}.json")
    s, hist = js["summary"], js["history"]
    assert s["method"] == method
    assert s["iterations"] == len(hist) >= 1
    assert [h["iteration"] for h in hist] == list(range(1, len(hist) + 1))
    assert s["error"] == pytest.approx(hist[-1]["error"], rel=1e-6)
    assert all(h1["time_s"] <= h2["time_s"] for h1, h2 in zip(hist, hist[1:]))
    assert s["time_s"] >= hist[-1]["time_s"]
    if converged:
        assert s["status"] == "converged"
    with open(out / f"{method}_history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(hist)
    assert float(rows[-1]["error"]) == pytest.approx(hist[-1]["error"], rel=1e-12)
    return s, hist


def test_solve_synthetic_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run_cli("solve", "--n", "24", "--d", "20", "--kappa", "100", "--seed", "3",
                "--methods", "eagle,cg", "--record-error", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = (out / "summary.md").read_text()
    for m in ("eagle", "cg"):
        assert f"| {m} | centralized |" in summary
        assert f"| {m} | centralized |" in r.stdout
        s, hist = check_run_files(out, m)
        assert s["error"] < 1e-8
        assert s["regime"] == "centralized" and s["workers"] == 1
    # the reported error is the error of the same solve done in-process (deterministic)
    p = controlled(24, 20, 2, 2, kappa=100, seed=3)
    e = _load_json(out / "eagle.json")["summary"]
    mine = solve(p, "eagle", tol=1e-10, max_iter=1000, seed=3, record_error=True)
    assert e["iterations"] == mine.iterations
    # the same deterministic computation in both places: equal to rounding (was rel=0.5)
    assert e["error"] == pytest.approx(mine.error, rel=1e-9, abs=1e-15)


@pytest.mark.slow          # 20-40 s (rank-revealing step of a 1007 x 1007 matrix in a subprocess)
def test_solve_shipped_mtx(tmp_path):
    out = tmp_path / "dwt"
    r = run_cli("solve", "--mtx", "HB/dwt_1007", "--methods", "eagle", "--record-error",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "HB/dwt_1007" in r.stdout and "A=1000x1000" in r.stdout
    s, _ = check_run_files(out, "eagle")
    assert s["error"] < 1e-8


def test_solve_sketched(tmp_path):
    out = tmp_path / "sk"                 # in-process: the entry point is tested above and below
    assert main(["solve", "--n", "32", "--d", "32", "--kappa", "10", "--sketch-size", "8",
                 "--sketch-kind", "sample", "--methods", "eagle,sgd", "--target-error", "1e-2",
                 "--max-iter", "20000", "--out", str(out)]) == 0
    for m in ("eagle", "sgd"):
        s, hist = check_run_files(out, m)
        assert s["regime"] == "sketched" and s["sketch_size"] == 8 and s["sketch_kind"] == "sample"
        assert s["error"] <= 1e-2 < hist[-2]["error"]       # stopped on the target, not earlier


def test_info_prints_json():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    import torch
    assert info["torch"] == torch.__version__
    assert isinstance(info["cuda_available"], bool) and isinstance(info["torch_threads"], int)
    for key in ("numpy", "scipy", "ray", "cupy", "eagle_dist"):
        assert key in info


@pytest.mark.parametrize("argv,msg", [
    # regression: --sketch-size 0 was treated as "no sketch" (falsy) and ran unsketched, exit 0
    (["--sketch-size", "0"], "sketch_size=0 must be an integer in 1..d = 1..16"),
    (["--sketch-size", "17"], "sketch_size=17"),
    (["--methods", "sgd", "--sketch-size", "0"], "sketch_size=0"),
    (["--methods", "sgd"], "needs sketch_size"),
    (["--methods", "newton"], "--methods: unknown newton"),
    (["--tol", "0"], "tol=0.0 must be a positive"),
    (["--tol=-1e-3"], "tol=-0.001 must be a positive"),
    (["--max-iter", "0"], "max_iter=0 must be a positive integer"),
    (["--target-error", "-1"], "target_error=-1.0"),
    (["--eta", "1.5"], "eta=1.5"),
    (["--gamma", "2"], "gamma=2.0"),
    (["--kappa", "0.5"], "kappa=0.5"),
    (["--rank", "0"], "rank=0"),
    (["--noise", "-1"], "noise=-1.0"),
    (["--n", "0"], "n=0"),
    (["--distribution", "cauchy"], "cauchy"),
    (["--mtx", "/nonexistent/m.mtx"], "/nonexistent/m.mtx"),
    (["--mtx", "HB/not_shipped"], "HB/not_shipped"),
    (["--device", "tpu"], "device='tpu' is not a device"),
    (["--workers", "0"], "workers=0 must be a positive integer"),
    (["--workers", "-1"], "workers=-1 must be a positive integer"),
    (["--methods", ","], "names no method"),
    (["--device", "meta"], "device='meta' is not a device"),
    (["--n", "1000000", "--d", "1000000"], "GiB of memory"),
    # argparse's own checks
    (["--dtype", "float16"], "--dtype"),
    (["--sketch-kind", "gaussian"], "--sketch-kind"),
    (["--max-iter", "ten"], "--max-iter"),
])
def test_bad_arguments_exit_2(capsys, argv, msg):
    base = ["solve", "--n", "16", "--d", "16"]
    with pytest.raises(SystemExit) as ei:
        main(base + argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert msg in err, err


def test_unconverged_run_exits_3(tmp_path, capsys):
    out = tmp_path / "short"
    rc = main(["solve", "--n", "16", "--d", "16", "--kappa", "1e3", "--methods", "eagle",
               "--max-iter", "2", "--out", str(out)])
    assert rc == 3
    s = _load_json(out / "eagle.json")["summary"]
    assert s["status"] == "max_iterations" and s["iterations"] == 2


def test_bad_mtx_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.mtx"
    bad.write_text("%%MatrixMarket matrix coordinate complex general\n2 2 1\n1 1 1.0 2.0\n")
    with pytest.raises(SystemExit) as ei:
        main(["solve", "--mtx", str(bad)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "complex" in err


def test_solve_alpha_distribution_uses_its_own_shards(tmp_path, caplog):
    from eagle_dist.distributed import alpha_problem
    out = tmp_path / "alpha"
    with caplog.at_level("INFO", logger="eagle_dist"):
        code = main(["solve", "--distribution", "alpha", "--alpha", "0.35", "--n", "40", "--d", "40",
                     "--workers", "3", "--kappa", "100", "--dq", "1", "--methods", "eagle",
                     "--target-error", "1e-8", "--max-iter", "2000", "--out", str(out),
                     "--mode", "paper"])
    assert code == 0
    s, _ = check_run_files(out, "eagle")
    assert s["regime"] == "distributed" and s["workers"] == 3
    assert s["error"] <= 1e-8
    # the logged α is the generator's α, computed on the generator's shards (not contiguous ones
    # of some other split): recompute it independently
    p, _ = alpha_problem(40, 40, 3, alpha=0.35, kappa_max=100, n_query=2, d_query=1, seed=0)
    logged = [r.getMessage() for r in caplog.records if "diversity index α" in r.getMessage()]
    assert len(logged) == 1 and f"{p.meta['alpha']:.3g}" in logged[0]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_solve_warns_when_shards_have_small_alpha(caplog):
    # a square A split by columns: each shard sees d/M < n directions, α ≪ 1 (README)
    with caplog.at_level("INFO", logger="eagle_dist"):
        code = main(["solve", "--n", "40", "--d", "40", "--kappa", "100", "--workers", "2",
                     "--methods", "eagle", "--max-iter", "20", "--mode", "paper"])
    assert code == 3                                   # not converged in 20 rounds: exit status 3
    warn = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warn) == 1 and "is small" in warn[0] and "rounds per decade" in warn[0]


@pytest.mark.slow           # ~30-55 s: the README's main job end to end (python -m pytest -m slow)
def test_demo_main_job_end_to_end(tmp_path):
    """The README's first command: a shipped SuiteSparse system solved centrally, then a sharded
    problem on real Ray actors (2 here, to keep CI short) against distributed GD."""
    out = tmp_path / "demo"
    r = run_cli("demo", "--out", str(out), "--workers", "2", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "HB/dwt_1007" in summary and "w A = B" in summary
    cen = _load_json(out / "centralized_eagle.json")["summary"]
    assert cen["status"] == "converged" and cen["error"] < 1e-10
    cg = _load_json(out / "centralized_cg.json")["summary"]
    assert cg["iterations"] >= 100 * cen["iterations"]      # second order vs CG on this system
    dist = _load_json(out / "distributed_eagle_paper.json")["summary"]
    assert dist["backend"] == "ray/gloo" and dist["workers"] == 2
    assert dist["status"] == "converged" and dist["error"] <= 1e-8
    gram = _load_json(out / "distributed_eagle_gram.json")["summary"]
    assert gram["status"] == "converged" and gram["error"] <= 1e-8
    gd = _load_json(out / "distributed_gd_paper.json")["summary"]
    assert gd["bytes_per_worker_per_round"] == dist["bytes_per_worker_per_round"]   # same messages
    # GD runs a fixed number of rounds; the rounds it needs come from its exact recurrence
    from eagle_dist.cli import GD_DEMO_ROUNDS
    assert gd["iterations"] == GD_DEMO_ROUNDS and gd["status"] == "max_iterations"
    needed = int(re.search(r"needs ([\d,]+) rounds to 1e-8", summary).group(1).replace(",", ""))
    assert needed > 1000 * dist["iterations"]
    assert "How to read these tables" in summary and "start-up" in summary
