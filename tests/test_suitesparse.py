"""The paper's SuiteSparse protocol (eagle_dist.data.suitesparse.protocol_step / load_suitesparse)
and the ``bench suitesparse`` sweep (eagle_dist.bench.suitesparse)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from eagle_dist import solve
from eagle_dist.data import load_mtx, load_suitesparse
from eagle_dist.data.suitesparse import protocol_step


def _check_completion(p, dense, D):
    """The completed w reproduces the whole held-out row of the file from the chosen rows."""
    step = p.meta["protocol"]
    rows, b = step["rows"], step["b_row"]
    full = D @ dense[rows, :]
    held_out = dense[[b], :]
    assert np.linalg.norm(full - held_out) <= 1e-8 * np.linalg.norm(held_out)


def test_protocol_dwt_1007(tmp_path):
    p = load_suitesparse("HB/dwt_1007", c_block="identity", rhs="auto", cache_dir=tmp_path,
                         report=True)
    step = p.meta["protocol"]
    assert step["rank"] == step["numerical_rank"] == 1000 and not step["transposed"]
    assert step["block_rank"] == 1000 and p.A.shape == (1000, 1000)
    # the chosen block's condition number (paper: 2.97e3)
    assert 2e3 < step["block_cond"] < 4e3
    assert step["block_sigma_min"] > step["threshold"] > 0
    assert step["threshold"] == pytest.approx(1007 * np.finfo(float).eps * step["sigma_max"])
    assert p.meta["rhs"] == "row" and not step["b_row_zero"]
    w = np.linalg.solve(p.A.T, p.B.T).T          # A is invertible: w A = B has one solution
    _check_completion(p, load_mtx("HB/dwt_1007").toarray(), w)


def test_protocol_rectangular_abb313(tmp_path):
    # HB/abb313 is 313 x 176 of rank 128: a rank-deficient rectangular matrix
    p = load_suitesparse("HB/abb313", c_block="identity", cache_dir=tmp_path, report=True)
    step = p.meta["protocol"]
    assert step["shape"] == [313, 176] and step["rank"] == 128 == step["block_rank"]
    assert np.linalg.matrix_rank(p.A) == 128
    sv = np.linalg.svd(p.A, compute_uv=False)     # the reported κ is the chosen block's
    assert step["block_cond"] == pytest.approx(sv[0] / sv[-1], rel=1e-8)
    r = solve(p, "eagle", target_residual=1e-12, max_iter=500)
    assert r.converged
    _check_completion(p, load_mtx("HB/abb313").toarray(), r.D)
    # c_block="rest": D̂ ≠ 0 and the completion is the held-out row on the other columns
    q = load_suitesparse("HB/abb313", cache_dir=tmp_path)
    rq = solve(q, "eagle", tol=1e-12, max_iter=500)
    assert rq.converged and np.linalg.norm(q.D_true) > 0.1
    np.testing.assert_allclose(rq.D, q.D_true, atol=1e-8 * np.linalg.norm(q.D_true))


def test_protocol_cache(tmp_path):
    a = protocol_step("HB/abb313", cache_dir=tmp_path)
    files = os.listdir(tmp_path)
    assert not a["cached"] and len(files) == 1 and a["sha256"][:24] in files[0]
    b = protocol_step("HB/abb313", cache_dir=tmp_path)
    assert b["cached"] and {k: b[k] for k in a if k not in ("cached", "seconds")} == \
        {k: a[k] for k in a if k not in ("cached", "seconds")}
    # a broken entry is recomputed, not trusted
    (tmp_path / files[0]).write_text("{not json")
    assert not protocol_step("HB/abb313", cache_dir=tmp_path)["cached"]
    assert json.loads((tmp_path / files[0]).read_text())["rank"] == 128
    # without the block's SVD: no block κ, and a separate cache entry
    c = protocol_step("HB/abb313", cache_dir=tmp_path, block_stats=False)
    assert c["block_cond"] is None and c["rank"] == 128 and len(os.listdir(tmp_path)) == 2
    assert load_suitesparse("HB/abb313").meta["protocol"]["block_cond"] is None


def _write(tmp_path, X, name):
    path = tmp_path / name
    scipy.io.mmwrite(str(path), scipy.sparse.coo_matrix(X))
    return path


def test_zero_rhs_fallback(tmp_path):
    # rank 3 block plus two rows that are zero on its columns: the protocol's B would be 0
    rng = np.random.default_rng(0)
    X = np.zeros((5, 3))
    X[:3] = rng.standard_normal((3, 3))
    path = _write(tmp_path, X, "zero_rows.mtx")
    p_row = load_suitesparse(path, c_block="identity")
    assert not np.any(p_row.B) and p_row.meta["protocol"]["b_row_zero"]
    p = load_suitesparse(path, c_block="identity", rhs="auto", seed=3)
    assert p.meta["rhs"] == "random" and np.linalg.norm(p.B) > 0
    w = np.random.default_rng(3).standard_normal((1, 3))
    np.testing.assert_allclose(p.B, w @ p.A)                # consistent: B = w_true A
    np.testing.assert_allclose(solve(p, "lstsq-gelsd").D, w, atol=1e-10)
    with pytest.raises(ValueError, match="^rhs="):
        load_suitesparse(path, rhs="zero")


def test_orient_auto_transposes_full_row_rank(tmp_path):
    X = np.random.default_rng(1).standard_normal((3, 6))     # full row rank: no row for B
    path = _write(tmp_path, X, "wide.mtx")
    with pytest.raises(ValueError, match="rows-1"):
        load_suitesparse(path)
    p = load_suitesparse(path, orient="auto", c_block="identity")
    assert p.meta["transposed"] and p.A.shape == (3, 3)
    with pytest.raises(ValueError, match="^orient="):
        protocol_step(path, orient="sideways")


# ---------------------------------------------------------------------------------------------
# eagle-dist bench suitesparse

def test_bench_suitesparse_quick_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("EAGLE_DIST_CACHE", str(tmp_path / "auto-cache"))    # auto's cost model
    from eagle_dist.bench.report import read_csv
    from eagle_dist.cli import main
    rng = np.random.default_rng(0)
    X = np.zeros((12, 8))
    X[:8] = rng.standard_normal((8, 8))                     # B would be 0: random rule
    extra = _write(tmp_path, X, "user_zero_rows.mtx")
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["bench", "suitesparse", "--quick", "--no-progress", "--out", str(out),
                 "--cache-dir", str(cache), "--matrices", "HB/abb313,HB/ash958",
                 "--max-rank", "200", "--mtx", str(extra)]) == 0
    rows = read_csv(out / "suitesparse_summary.csv")
    mats = {r["matrix"] for r in rows}
    assert mats == {"HB/abb313", "HB/ash958", "user_zero_rows"}
    methods = {"eagle", "lstsq-gelsd", "lstsq-gelsy", "cg", "lsmr", "lsqr", "auto"}
    # every matrix x method x tolerance is a row
    assert {(r["matrix"], r["method"], float(r["tolerance"])) for r in rows} == \
        {(m, k, t) for m in mats for k in methods for t in (1e-3, 1e-8)}
    for r in rows:
        if r["matrix"] == "HB/ash958":                      # rank 292 > --max-rank 200
            assert r["status"] == "skipped" and "max-rank" in r["detail"]
            continue
        assert r["status"] == "converged", r
        assert float(r["rel_residual_sq_median"]) <= float(r["tolerance"]), r
        assert float(r["time_s_median"]) > 0
    it = {(r["matrix"], r["method"], float(r["tolerance"])): float(r["iterations_median"])
          for r in rows}
    assert it[("HB/abb313", "cg", 1e-8)] > it[("HB/abb313", "cg", 1e-3)]
    infos = {r["matrix"]: r for r in read_csv(out / "suitesparse_matrices.csv")}
    assert infos["user_zero_rows"]["rhs"] == "random" and infos["HB/abb313"]["rhs"] == "row"
    assert infos["HB/abb313"]["rank"] == "128" and float(infos["HB/abb313"]["block_cond"]) > 1
    md = (out / "summary.md").read_text()
    assert "eagle-dist bench suitesparse" in md and "--mtx" in md and "Machine:" in md
    assert "random w_true·A" in md and "| HB/ash958 | skipped" in md
    with open(out / "suitesparse_time_vs_tolerance.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(cache)) == 3                      # every protocol run, cached


def test_bench_suitesparse_bad_arguments(tmp_path):
    from eagle_dist.bench.suitesparse import suitesparse_sweep
    with pytest.raises(ValueError, match="methods"):
        suitesparse_sweep(str(tmp_path), methods=["gd"], quick=True)
    with pytest.raises(ValueError, match="tolerances"):
        suitesparse_sweep(str(tmp_path), tolerances=[2.0], quick=True)
    with pytest.raises(ValueError, match="--mtx"):
        suitesparse_sweep(str(tmp_path), mtx=[str(tmp_path / "nope.mtx")], quick=True)
    with pytest.raises(ValueError, match="max_rank"):
        suitesparse_sweep(str(tmp_path), max_rank=0, quick=True)
